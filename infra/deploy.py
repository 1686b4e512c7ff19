"""``make deploy ENV=...``: refuse to deploy a build baked for another environment.

The edge bundle carries its stack's names and replica table in ``edge_config.json`` (the
edge has no environment variables); ``sam build`` bakes the environment it was given
(``make build ENV=...``, default dev). Deploying a dev build to prod would give prod's edge
dev's replica table; the edge would notice at cold start, rename itself and read from the
home region only (it logs an error), but the deploy is where to stop it. Also refused: an
environment whose replica regions are unusable (``infra.environments``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra import environments

BUILD_DIR = environments.ROOT / ".aws-sam" / "build"


def check(env: str, build_dir: Path = BUILD_DIR) -> str | None:
    """Why ``build_dir`` must not be deployed to ``env`` (None: it may)."""
    environment = environments.load(env)
    problems = environment.problems()
    if problems:
        return f"samconfig.toml, {env}: " + "; ".join(problems)
    config_path = build_dir / "EdgeFunction" / "edge_config.json"
    if not config_path.exists():
        return f"no edge bundle in {build_dir}: make build ENV={env} first"
    # SAM writes the built template only once every resource has built: without it, `sam deploy`
    # would deploy the source template (functions/edge unbuilt, no layers' packages).
    if not (build_dir / "template.yaml").exists():
        return f"the build in {build_dir} did not finish (no template.yaml): make build ENV={env} again"
    baked = json.loads(config_path.read_text())
    if baked.get("stack") != environment.stack:
        return (f"the build is for stack {baked.get('stack')!r}, not {environment.stack!r} ({env}): "
                f"make build ENV={env}, then deploy")
    if sorted(baked.get("replica_regions") or []) != sorted(environment.replica_regions):
        return (f"the build bakes replicas {baked.get('replica_regions')} but {env} lists "
                f"{environment.replica_regions}: make build ENV={env} again")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    checking = sub.add_parser("check")
    checking.add_argument("--env", required=True, choices=environments.names())
    checking.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    args = parser.parse_args(argv)
    why = check(args.env, args.build_dir)
    if why:
        print(f"refused: {why}", file=sys.stderr)
        return 2
    print(f"the build in {args.build_dir} is {args.env}'s ({environments.load(args.env).stack})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
