"""Cold starts of two or more trees of this repository, in one run against one local stack.

    .venv/bin/python -m tests.bench.cold_ab OLD_TREE NEW_TREE [--runs 7] [--rtt-ms 10]

(``git worktree add ../old <commit>`` makes a tree; the Makefile's ``PYTHONPATH`` is needed.)
Each tree's edge handler and domain package are copied and compiled as its bundle ships them,
then the cold-edge child of ``tests/bench/serving.py`` runs on each in turn, alternated with
the bare-imports floor (the order reversed every other round, so a busy neighbour slows all
alike). Prints per tree the median cold start, its ratio to the floor, and the median of what
follows the imports (the imports move by 100 ms and more between processes: compare that).
``--rtt-ms``: sleep this long before each AWS request leaves (loopback has no round trip).
``--runtime-sdk``: each tree twice, with the bundle's trimmed AWS SDK and with this
interpreter's whole one (as the Lambda runtime's would be).
``--function recommend``: the regional function's init instead (it builds at import: imports,
config, clients, flags, model, snapshot and sold-out list), in a new process as its role, as
Lambda names it; its tree's handler and domain package compiled as its layer ships them.
Prints each tree's median init (the floor is the edge's, printed for the day's speed)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from infra import bytecode, edge_build
from infra.local.stack import LocalStack

from . import lambda_site, serving

_RECOMMEND_INIT = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
sys.path[:0] = [{handler!r}, {layer!r}, {site!r}]  # run with python -S: as in Lambda, no site-packages
import app
print(json.dumps({{"ms": (time.perf_counter() - t0) * 1000, "cpu_ms": (time.process_time() - c0) * 1000}}))
"""


def recommend_init(tree: Path, into: Path) -> str:
    """The regional function's init program for ``tree``, its code copied into ``into``."""
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(tree / "functions" / "recommend", into / "handler", ignore=skip)
    shutil.copytree(tree / "layers" / "personalize", into / "layer", ignore=skip)
    bytecode.precompile(into, sys.executable)
    # The dependencies layer (requirements/runtime.txt with what they require) and the runtime's SDK.
    runtime = [line.split("==")[0].strip() for line in (tree / "requirements" / "runtime.txt").read_text().splitlines()
               if "==" in line and not line.lstrip().startswith("#")]
    site = lambda_site.make(into / "site", lambda_site.closure(runtime))
    return _RECOMMEND_INIT.format(handler=str(into / "handler"), layer=str(into / "layer"), site=str(site))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--runtime-sdk", action="store_true")
    parser.add_argument("--function", choices=("edge", "recommend"), default="edge")
    args = parser.parse_args()
    if args.function == "recommend" and (args.runtime_sdk or args.rtt_ms):
        parser.error("--runtime-sdk and --rtt-ms are the edge's")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    stack = LocalStack(snapshot_interval_s=1.0).start()
    work = Path(tempfile.mkdtemp(prefix="cold-ab-"))
    try:
        serving.load_flash_sale(stack, 3000)
        stack.poller.stop()  # the cold edges' reads wait on the moto server, not on its neighbours
        for schedule in stack._schedules:
            schedule.stop()
        env = serving.child_env(AWS_ENDPOINT_URL=stack.aws_endpoint, AWS_LAMBDA_FUNCTION_NAME=args.function)
        if args.function == "recommend":  # deployed, Lambda gives it its role's credentials
            role = stack.resources.identities.functions["recommend"]
            env.update(AWS_ACCESS_KEY_ID=role.access_key_id, AWS_SECRET_ACCESS_KEY=role.secret_access_key,
                       AWS_SESSION_TOKEN=role.session_token or "", POWERTOOLS_TRACE_DISABLED="1")
            names = [str(tree) for tree in args.trees]
            programs = [recommend_init(tree, work / str(n)) for n, tree in enumerate(args.trees)]
        else:
            variants = [(tree, sdk) for tree in args.trees for sdk in ((True, False) if args.runtime_sdk else (True,))]
            names = [f"{tree}{'' if sdk else ' (whole SDK)'}" for tree, sdk in variants]
            programs = [serving.compiled_edge(tree, stack, args.rtt_ms, work / str(n), sdk=sdk)
                        for n, (tree, sdk) in enumerate(variants)]
        results: list[list[dict]] = [[] for _ in programs]
        floor: list[float] = []
        floor_cpu: list[float] = []
        floor_program = serving.bare_imports(work / "floor", serving.edge_site(work / "floor-site"))
        (work / "floor").mkdir()
        edge_build.vendor_sdk(work / "floor")  # the floor's SDK: the edge bundle's
        bytecode.precompile(work / "floor", sys.executable)
        for round_ in range(args.runs):
            order = [*range(len(programs)), None]
            for n in order if round_ % 2 == 0 else reversed(order):
                if n is None:
                    out = subprocess.run(serving.child(floor_program), capture_output=True, text=True, check=True,
                                         env=serving.child_env())
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    floor.append(result["ms"])
                    floor_cpu.append(result["cpu_ms"])
                    continue
                out = subprocess.run(serving.child(programs[n]), capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    raise SystemExit(f"{names[n]}: the cold {args.function} failed: {out.stderr[-3000:]}")
                results[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
        floor_ms = statistics.median(floor)
        floor_cpu_ms = statistics.median(floor_cpu)
        print(f"bare imports: {floor_ms:.1f} ms (median of {len(floor)}), CPU {floor_cpu_ms:.1f} ms; "
              f"{args.rtt_ms:g} ms per AWS request")
        for tree, runs in zip(names, results):
            cold = statistics.median(r["ms"] for r in runs)
            if args.function == "recommend":
                low, high = min(r["ms"] for r in runs), max(r["ms"] for r in runs)
                print(f"{tree}: init {cold:.1f} ms ({low:.0f}-{high:.0f}), "
                      f"CPU {statistics.median(r['cpu_ms'] for r in runs):.1f} ms")
                continue
            after = statistics.median(r["ms"] - r["import_ms"] for r in runs)
            busy = sorted({b for r in runs for b in r["busy"]})
            running = sorted({n for r in runs for n in r.get("native_running", ())})
            cpu = statistics.median(r["cpu_ms"] for r in runs) if all("cpu_ms" in r for r in runs) else float("nan")
            print(f"{tree}: {cold:.1f} ms ({cold / floor_ms:.2f}x), after the imports {after:.1f} ms, "
                  f"CPU {cpu:.1f} ms ({cpu / floor_cpu_ms:.2f}x)"
                  f"{', busy at the answer: ' + ', '.join(busy) if busy else ''}"
                  f"{', threads using CPU after the answer: ' + ', '.join(running) if running else ''}")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
