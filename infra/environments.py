"""The deployed environments (dev, prod) as ``samconfig.toml`` declares them, read in one place.

``samconfig.toml`` is where an operator writes, once per environment, the stack name, the
region (us-east-1: Lambda@Edge functions are created there) and the parameter overrides,
among them the **replica regions**: where the features table, the cookie signing key and
anything else an edge reads near itself have a copy (``ReplicaRegion1..4``; see
``personalize.regions`` for the other list, the edge execution regions fixed by AWS, each
mapped to its nearest replica). Everything that acts on a deployed stack (the edge build,
``make deploy``/``delete``/``smoke``, the operations CLIs) reads the environment from here.

``python -m infra.environments prod`` prints the environment and which replica each edge
execution region reads.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMCONFIG = ROOT / "samconfig.toml"
DEFAULT = "dev"  # plain `sam build` / `make build` build for this one
NAMES = ("dev", "prod")
REPLICA_SLOTS = 4  # ReplicaRegion1..4 in template.yaml
HOME_REGION = "us-east-1"


class SamConfigError(ValueError):
    """samconfig.toml does not describe a usable environment."""


@dataclass(frozen=True)
class Environment:
    name: str
    stack: str
    region: str
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def replica_regions(self) -> list[str]:
        """The regions the operator chose, in slot order, without empty slots."""
        return [r for r in (self.parameters.get(f"ReplicaRegion{n}", "") for n in range(1, REPLICA_SLOTS + 1)) if r]

    def problems(self) -> list[str]:
        """What is wrong with this environment's replica regions (empty: nothing)."""
        from personalize import regions

        out = []
        replicas = self.replica_regions
        extra = [k for k in self.parameters if k.startswith("ReplicaRegion")
                 and k not in {f"ReplicaRegion{n}" for n in range(1, REPLICA_SLOTS + 1)}]
        if extra:
            out.append(f"{', '.join(extra)}: the template has {REPLICA_SLOTS} replica slots (ReplicaRegion1..4)")
        if len(set(replicas)) != len(replicas):
            out.append(f"a replica region is listed twice: {replicas}")
        if self.region in replicas:
            out.append(f"{self.region} is the home region, not a replica")
        unknown = [r for r in replicas if r not in regions.KNOWN_REGIONS]
        if unknown:
            out.append(f"unknown region(s) {unknown}: no round-trip figures to choose them by (personalize.regions)")
        if self.region != HOME_REGION:
            out.append(f"region {self.region}: Lambda@Edge functions must be created in {HOME_REGION}")
        return out


def _parameters(overrides: str) -> dict[str, str]:
    import shlex

    out = {}
    for token in shlex.split(overrides or ""):
        name, sep, value = token.partition("=")
        if not sep:
            raise SamConfigError(f"parameter override {token!r} is not Name=Value")
        out[name] = value
    return out


def load(name: str, path: Path = SAMCONFIG) -> Environment:
    config = tomllib.loads(path.read_text())
    if name not in config or name == "default":
        raise SamConfigError(f"no environment {name!r} in {path.name} (known: {', '.join(names(path))})")
    section = config[name]
    deploy = section.get("deploy", {}).get("parameters", {})
    return Environment(name=name, stack=section["global"]["parameters"]["stack_name"],
                       region=deploy.get("region", HOME_REGION),
                       parameters=_parameters(deploy.get("parameter_overrides", "")))


def names(path: Path = SAMCONFIG) -> list[str]:
    config = tomllib.loads(path.read_text())
    return [k for k, v in config.items() if isinstance(v, dict) and k != "default"]


def main(argv: list[str] | None = None) -> int:
    from personalize import regions

    name = (argv if argv is not None else sys.argv[1:] or [DEFAULT])[0]
    env = load(name)
    print(f"{env.name}: stack {env.stack} in {env.region}; replica regions: {', '.join(env.replica_regions) or 'none'}")
    for problem in env.problems():
        print(f"  problem: {problem}")
    print("edge execution region -> replica it reads (round trip, read timeout)")
    for region, entry in regions.replica_table(env.region, env.replica_regions).items():
        print(f"  {region:15} -> {entry['replica']:15} {entry['rtt_ms']:4d} ms  {entry['timeout_s'] * 1000:4.0f} ms")
    return 1 if env.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
