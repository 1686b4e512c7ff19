"""``make loadtest``: a bounded load test against the local stack on loopback.

Concurrent shoppers post events and fetch recommendations for a fixed time; then every
accepted event is reconciled: counted in its shopper's features, or in the quarantine with
a reason. Results go to ``build/bench.json`` under ``load``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from infra.local.stack import LocalStack
from infra.local.template import ROOT
from personalize import identity, settings
from personalize.adapters.quarantine import SqsQuarantine

BENCH = ROOT / "build" / "bench.json"


def call(endpoint: str, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(endpoint + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def seed(stack: LocalStack) -> None:
    now = int(time.time() * 1000)
    events = [{"event_id": f"seed-{n}", "type": "view", "user_id": f"seed-{n % 100}", "item_id": f"sku-{n % 600}",
               "ts": now} for n in range(3000)]
    for start in range(0, len(events), 500):
        call(stack.endpoint, "POST", "/server/events", {"events": events[start:start + 500]})
    stack.poller.drain(60)
    stack.functions["snapshot"]({})


def run(duration_s: float = 30.0, shoppers: int = 8, events_per_post: int = 5) -> dict:
    stack = LocalStack(snapshot_interval_s=2.0, guardrail_interval_s=3600).start()
    try:
        seed(stack)
        stop_at = time.monotonic() + duration_s
        latencies: dict[str, list[float]] = {"events": [], "recommendations": []}
        counts = {"errors": 0, "accepted": 0, "rejected": 0, "requests": 0}
        lock = threading.Lock()

        def shopper(worker: int) -> None:
            user = f"load-{worker}"
            cookie = {"Cookie": "rt_uid=" + identity.cookie_value(user, stack.signing_key), "X-Country": "FR"}
            n = 0
            while time.monotonic() < stop_at:
                events = []
                for _ in range(events_per_post):
                    n += 1
                    events.append({"event_id": f"{user}-{n}", "type": "click" if n % 4 == 0 else "view",
                                   "item_id": f"sku-{(worker * 37 + n) % 600}",
                                   "ts": int(time.time() * 1000)})
                for kind, method, path, body, headers in (
                        ("events", "POST", "/events", {"events": events}, cookie),  # the browser's own
                        ("recommendations", "GET", "/recommendations?k=10", None, cookie)):
                    started = time.perf_counter()
                    try:
                        status, answer = call(stack.endpoint, method, path, body, headers)
                    except Exception:
                        status, answer = 0, {}
                    elapsed = (time.perf_counter() - started) * 1000
                    with lock:
                        counts["requests"] += 1
                        latencies[kind].append(elapsed)
                        if status not in (200, 202):
                            counts["errors"] += 1
                        if kind == "events" and status == 202:
                            counts["accepted"] += answer["accepted"]
                            counts["rejected"] += len(answer["rejected"])

        started = time.monotonic()
        with ThreadPoolExecutor(shoppers) as pool:
            list(pool.map(shopper, range(shoppers)))
        elapsed = time.monotonic() - started
        stack.poller.drain(120)
        counted = 0
        for worker in range(shoppers):
            status, f = call(stack.endpoint, "GET", f"/features/users/load-{worker}")
            if status == 200:
                counted += f["views_total"] + f["clicks_total"]
        queue = stack.resources.names[settings.QUARANTINE_QUEUE.logical_id]
        quarantined = SqsQuarantine(queue).receive_all()
        everything = latencies["events"] + latencies["recommendations"]
        return {
            "duration_s": round(elapsed, 1), "concurrent_shoppers": shoppers,
            "requests_per_s": round(counts["requests"] / elapsed, 1),
            "p50_ms": round(statistics.median(everything), 2), "p99_ms": round(float(np.percentile(everything, 99)), 2),
            "recommendations_p50_ms": round(statistics.median(latencies["recommendations"]), 2),
            "recommendations_p99_ms": round(float(np.percentile(latencies["recommendations"], 99)), 2),
            "events_p50_ms": round(statistics.median(latencies["events"]), 2),
            "events_p99_ms": round(float(np.percentile(latencies["events"], 99)), 2),
            "errors": counts["errors"], "events_accepted": counts["accepted"],
            "events_counted_in_features": counted, "events_quarantined": len(quarantined),
            "events_lost": counts["accepted"] - counted - len(quarantined),
        }
    finally:
        stack.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--shoppers", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"load test: {args.shoppers} concurrent shoppers for {args.seconds:.0f}s on the local stack ...", flush=True)
    figures = run(args.seconds, args.shoppers)
    results = json.loads(BENCH.read_text()) if BENCH.exists() else {}
    results["load"] = figures
    BENCH.parent.mkdir(parents=True, exist_ok=True)
    BENCH.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(json.dumps(figures, indent=2))
    ok = figures["events_lost"] == 0 and figures["errors"] == 0
    print(f"load test {'passed' if ok else 'FAILED'}: {figures['events_lost']} events lost, "
          f"{figures['errors']} errors; wrote {BENCH}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
