"""``make bench``: measure the budgets and write build/bench.json (sections merged, so one
section can be re-measured alone with ``--only``)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime

from infra.local.template import ROOT

OUT = ROOT / "build" / "bench.json"
# ops last: it prices what the others measured; ``limits`` (tests/bench/limits.py) adds every
# tests/bench/limits_*.py module's keys to its own.
SECTIONS = ("ingest", "model", "serving", "experiment", "loop", "limits", "ops")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=SECTIONS, action="append", help="measure only these sections")
    parser.add_argument("--fault-schedules", type=int, metavar="N",
                        help="ingest: run N fault-injection schedules instead of 10,000 (~5 min), while "
                             "iterating; `make bench` runs them all")
    parser.add_argument("--live-shoppers", type=int, metavar="N",
                        help="loop: simulate N shoppers in the live-lift experiment instead of 28,000 (~200 s, "
                             "~5 GB), while iterating; `make bench` runs them all")
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for section in args.only or SECTIONS:
        started = time.perf_counter()
        print(f"bench: {section} ...", flush=True)
        module = __import__(f"tests.bench.{section}", fromlist=["run"])
        options = {}
        if section == "ingest" and args.fault_schedules is not None:
            options["n_fault_schedules"] = args.fault_schedules
        if section == "loop" and args.live_shoppers is not None:
            options["live_shoppers"] = args.live_shoppers
        results[section] = module.run(**options)
        print(f"bench: {section} done in {time.perf_counter() - started:.1f}s: "
              f"{json.dumps(results[section])}", flush=True)
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"] = {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
