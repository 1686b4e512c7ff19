"""Warm edge requests of two or more trees of this repository, alternated in one run.

    .venv/bin/python -m tests.bench.warm_ab OLD_TREE NEW_TREE [--rounds 3] [--requests 3000]

(``git worktree add ../old <commit>`` makes a tree.) Each round runs every tree in turn (the
order reversed every other round, so a busy neighbour slows all alike), each in a new process
with that tree's own code on the path: ``make profile-serving``'s setup (the warm edge handler
over in-memory adapters, 500 shoppers of a 10,000-item snapshot) and its unprofiled pass, the
handler interleaved with the floor. Prints per tree the median over rounds of the handler's
p50 and p99, the floor's, their ratios, and each tree's p50 against the first tree's, paired
by round, with each round's own to show their spread; and each tree's ``ratio_p50`` against
the first tree's, paired by round: the figure to quote for a change on a shared machine, whose
speed moves between two trees' runs (the floor runs interleaved with each tree, so it moves
with it)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = """
import contextlib, io, json, time
from infra.local.lambda_events import context
from tests.bench import profile_serving
from tests.bench.serving_floor import Floor, interleaved, summary
module, recommender, packed, user_ids, events = profile_serving.setup()
ctx = context("edge")
floor = Floor(recommender, packed.packed, user_ids, "US", 10, int(time.time() * 1000))
with contextlib.redirect_stdout(io.StringIO()):
    times = interleaved(lambda e: module.lambda_handler(e, ctx), events, floor, user_ids, {requests})
print(json.dumps(summary(times)))
"""

KEYS = ("p50_ms", "p99_ms", "floor_p50_ms", "floor_p99_ms", "ratio_p50", "ratio_p99", "cpu_ratio_p50")


def run_tree(tree: Path, requests: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "layers" / "personalize"), str(tree)])}
    out = subprocess.run([sys.executable, "-c", _CHILD.format(requests=requests)], cwd=tree, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{tree}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    trees = [t.resolve() for t in args.trees]
    results: dict[Path, list[dict]] = {t: [] for t in trees}
    for round_ in range(args.rounds):
        for tree in (trees if round_ % 2 == 0 else trees[::-1]):
            results[tree].append(run_tree(tree, args.requests))
            print(f"round {round_ + 1}: {tree.name} p50 {results[tree][-1]['p50_ms']:.3f} ms", flush=True)
    first = results[trees[0]]
    for tree in trees:
        rows = results[tree]
        figures = ", ".join(f"{k} {statistics.median(r[k] for r in rows):.3f}" for k in KEYS)
        paired = [r["p50_ms"] / f["p50_ms"] for r, f in zip(rows, first)]
        against_floor = [r["ratio_p50"] / f["ratio_p50"] for r, f in zip(rows, first)]
        print(f"{tree}: {figures}\n  p50 / {trees[0].name}'s p50 {statistics.median(paired):.3f}x (median of "
              f"{len(rows)} rounds; each round: {' '.join(f'{x:.3f}' for x in paired)})\n"
              f"  ratio_p50 / {trees[0].name}'s ratio_p50 {statistics.median(against_floor):.3f}x (each round: "
              f"{' '.join(f'{x:.3f}' for x in against_floor)}; each tree against the floor run beside it: "
              f"what the machine's speed does between two trees' runs cancels)")


if __name__ == "__main__":
    main()
