"""Cold starts of the regional ``recommend`` function from two or more trees of this repository,
in one run against one local stack.

    .venv/bin/python -m tests.bench.cold_recommend OLD_TREE NEW_TREE [--runs 9]

(``git worktree add ../old <commit>`` makes a tree; the Makefile's ``PYTHONPATH`` is needed.)
Each tree's handler and domain package are copied and compiled as its layer ships them; then a
new process per run imports the handler, as Lambda's init does: imports, config, clients, flags,
model, snapshot and sold-out list (it builds at import), as the function's role, as Lambda names
it (``AWS_LAMBDA_FUNCTION_NAME``). The trees alternate, the order reversed every other round.
Prints each tree's median init time."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from infra import bytecode
from infra.local.stack import LocalStack

from . import serving

_INIT = """
import sys, time
t0 = time.perf_counter()
sys.path[:0] = [{handler!r}, {layer!r}]
import app
print((time.perf_counter() - t0) * 1000)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    stack = LocalStack(snapshot_interval_s=1.0).start()
    work = Path(tempfile.mkdtemp(prefix="cold-recommend-"))
    try:
        serving.load_flash_sale(stack, 3000)
        stack.poller.stop()  # the inits' reads wait on the moto server, not on its neighbours
        for schedule in stack._schedules:
            schedule.stop()
        role = stack.resources.identities.functions["recommend"]
        env = {**os.environ, "AWS_ENDPOINT_URL": stack.aws_endpoint, "AWS_LAMBDA_FUNCTION_NAME": "recommend",
               "AWS_ACCESS_KEY_ID": role.access_key_id, "AWS_SECRET_ACCESS_KEY": role.secret_access_key,
               "AWS_SESSION_TOKEN": role.session_token or "", "POWERTOOLS_TRACE_DISABLED": "1"}
        programs = []
        for n, tree in enumerate(args.trees):
            into = work / str(n)
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(tree / "functions" / "recommend", into / "handler", ignore=skip)
            shutil.copytree(tree / "layers" / "personalize", into / "layer", ignore=skip)
            bytecode.precompile(into, sys.executable)
            programs.append(_INIT.format(handler=str(into / "handler"), layer=str(into / "layer")))
        results: list[list[float]] = [[] for _ in programs]
        for round_ in range(args.runs):
            order = list(range(len(programs)))
            for n in order if round_ % 2 == 0 else reversed(order):
                out = subprocess.run([sys.executable, "-c", programs[n]], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    raise SystemExit(f"{args.trees[n]}: the init failed: {out.stderr[-3000:]}")
                results[n].append(float(out.stdout.strip().splitlines()[-1]))
        for tree, runs in zip(args.trees, results):
            print(f"{tree}: init {statistics.median(runs):.1f} ms (median of {len(runs)}; "
                  f"{min(runs):.0f}-{max(runs):.0f})")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
