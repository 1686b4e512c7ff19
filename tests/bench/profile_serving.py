"""``make profile-serving``: where a warm edge request's time goes, stage by stage.

The warm edge handler (``functions/edge/app.py``, the real serving state over in-memory
adapters: the shopper's row as msgpack bytes, decoded as a GetItem answer is) answers
``--requests`` requests for 500 shoppers of a 10,000-item flash-sale snapshot. Each stage's
function is wrapped with a ``perf_counter_ns`` timer that counts its own time only (a
stage called inside another is taken out of it), and the outermost call is timed too: the
table's rows add up to the measured total, the timers' own cost in the last row. A second
pass without the timers gives the true per-request time, and the floor (tests/bench/
serving_floor.py) runs interleaved with it. A third pass, also beside the floor, serves each
shopper's candidates and features from a dict (``without_candidates_features``): what every other stage
costs, and so what a 2.0x budget leaves for them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
import types
from collections import defaultdict

from infra.local.lambda_events import context
from infra.local.stack import cloudfront_event
from personalize import identity, telemetry
from personalize.serving import cloudfront, prepared, ranking, recommendations

from .serving_floor import Floor, PackedUserStore, in_memory_edge, interleaved, summary, without_candidates_features

KEY = "profile-signing-key"


class Stages:
    """Exclusive nanoseconds per stage over wrapped functions."""

    def __init__(self):
        self.ns: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self._children: list[int] = []

    def wrap(self, owner, attr: str, stage: str) -> None:
        fn = getattr(owner, attr)
        perf, children, ns, calls = time.perf_counter_ns, self._children, self.ns, self.calls

        def timed(*args, **kwargs):
            children.append(0)
            started = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = perf() - started
                inner = children.pop()
                ns[stage] += spent - inner
                calls[stage] += 1
                if children:
                    children[-1] += spent

        setattr(owner, attr, timed)


def setup(users: int = 500):
    from . import serving as bench_serving

    _, _, snap, store = bench_serving.snapshot_of_10k_items()
    rows = bench_serving.shoppers(store, users)
    packed = PackedUserStore.of(rows)
    module, recommender = in_memory_edge(snap.encode(), packed, KEY)
    user_ids = list(rows)
    events = [cloudfront_event("GET", "/recommendations", {"k": "10"},
                               {"cookie": "rt_uid=" + identity.cookie_value(u, KEY), "x-country": "US"})
              for u in user_ids]
    return module, recommender, packed, user_ids, events


def instrument(module, recommender) -> Stages:
    stages = Stages()
    w = stages.wrap
    w(module, "lambda_handler", "Powertools logger context, correlation id")
    w(module.figures, "flush", "EMF flush every 5 s (serialise, print)")
    w(telemetry, "record_answer", "figures: counts, histogram (container + home)")
    w(cloudfront, "handle", "CloudFront event glue")
    w(module, "serve", "edge serve() glue")
    w(cloudfront, "header_values", "parse: headers, cookie, query")
    w(identity, "cookie_from_headers", "parse: headers, cookie, query")
    w(cloudfront, "query", "parse: headers, cookie, query")
    w(recommendations, "parse_query", "parse: headers, cookie, query")
    w(recommender.keys, "verified_user", "cookie verify (HMAC)")
    w(recommender, "choose_variant", "variant (flags)")
    w(identity, "issue_rec_id", "rec_id (nonce, HMAC)")
    w(recommender, "current_served", "snapshot as served (refresh checks)")
    w(prepared.Served, "inputs", "candidates and features")
    w(recommender.users, "get", "row read + msgpack unpack")
    w(ranking, "candidates", "candidates")
    w(ranking, "feature_matrix", "features")
    ranker = recommender.choose_variant("x").ranker
    w(ranker, "score", "model glue (column select)")
    w(ranker.session, "run", "ONNX run")
    w(ranking, "top_k", "top-k")
    w(recommender, "on_scored", "scored-candidates log (1% sample)")
    w(recommender, "recommend", "recommend() glue (body, items list)")
    if hasattr(cloudfront, "_ENCODER"):
        w(cloudfront._ENCODER, "encode", "response JSON encode")
    else:  # code from before the encoder was kept (to profile it too)
        cloudfront.json = types.SimpleNamespace(dumps=json.dumps)
        w(cloudfront.json, "dumps", "response JSON encode")
    w(cloudfront, "generated", "response headers")
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print("profile-serving: building a 10,000-item snapshot and 500 shoppers' rows ...", flush=True)
    module, recommender, packed, user_ids, events = setup()
    ctx = context("edge")
    n = args.requests
    now_ms = int(time.time() * 1000)
    floor = Floor(recommender, packed.packed, user_ids, "US", 10, now_ms)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        answer = module.lambda_handler(events[0], ctx)
        body = json.loads(answer["body"])
        assert body["items"] and not body["fallback"], body
        times = interleaved(lambda e: module.lambda_handler(e, ctx), events, floor, user_ids, n)
        emf_bytes = len(out.getvalue())
        plain = summary(times)
        same = sum(floor.top_items(u) == [i["item_id"] for i in json.loads(
            module.lambda_handler(events[j], ctx)["body"])["items"]] for j, u in enumerate(user_ids[:50]))

    # Headroom: the same, with candidates and features memoised per shopper.
    with contextlib.redirect_stdout(io.StringIO()):
        bare, hits = without_candidates_features(recommender, lambda e: module.lambda_handler(e, ctx), events, floor,
                                                 user_ids, n)

    stages = instrument(module, recommender)
    totals, per_request = [], []
    perf = time.perf_counter_ns
    with contextlib.redirect_stdout(io.StringIO()):
        for i in range(200):  # warm the wrappers
            module.lambda_handler(events[i % len(events)], ctx)
        for i in range(n):
            stages.ns.clear()
            t = perf()
            module.lambda_handler(events[i % len(events)], ctx)
            totals.append(perf() - t)
            per_request.append(dict(stages.ns))
    # A shared machine preempts some requests: the table averages the 90% fastest requests
    # (by total), so one descheduled request does not land on whichever stage it hit.
    cut = sorted(totals)[int(len(totals) * 0.9) - 1]
    kept = [i for i, t in enumerate(totals) if t <= cut]
    names = sorted({k for r in per_request for k in r}, key=lambda k: -sum(per_request[i].get(k, 0) for i in kept))
    total_us = sum(totals[i] for i in kept) / len(kept) / 1000
    print(f"\nwarm edge handler, {n} requests, k=10, {body['candidates']} candidates, "
          f"model {body['model']}; microseconds per request, mean over the {len(kept)} requests "
          f"at or below the profiled p90 ({cut / 1000:.0f} us); profiled: timers included\n")
    print(f"  {'stage':58s} {'us/req':>8s} {'share':>6s} {'p50 us':>7s}")
    accounted = 0.0
    for stage in names:
        values = [per_request[i].get(stage, 0) / 1000 for i in kept]
        us = sum(values) / len(kept)
        accounted += us
        print(f"  {stage:58s} {us:8.1f} {us / total_us:6.1%} {statistics.median(values):7.1f}")
    rest = total_us - accounted
    print(f"  {'timers themselves (outside every stage)':58s} {rest:8.1f} {rest / total_us:6.1%}")
    print(f"  {'total (measured around lambda_handler)':58s} {total_us:8.1f}")

    with contextlib.redirect_stdout(io.StringIO()):
        response = module.lambda_handler(events[0], ctx)
    encode = []
    payload = json.loads(response["body"])
    for _ in range(2000):
        t = perf()
        json.dumps(payload, separators=(",", ":"))
        encode.append(perf() - t)
    print(f"\nresponse: body {len(response['body'])} bytes, whole CloudFront answer "
          f"{len(json.dumps(response))} bytes; json.dumps of the body p50 {statistics.median(encode) / 1000:.1f} us; "
          f"EMF output {emf_bytes / (n + 200 + 1):.0f} bytes per request")
    print(f"\nunprofiled, interleaved with the floor ({n} requests each, same shoppers):")
    print(f"  handler p50 {plain['p50_ms']:.3f} ms  p99 {plain['p99_ms']:.3f} ms")
    print(f"  floor   p50 {plain['floor_p50_ms']:.3f} ms  p99 {plain['floor_p99_ms']:.3f} ms")
    print(f"  ratio   p50 {plain['ratio_p50']:.2f}x  p99 {plain['ratio_p99']:.2f}x  (goal <= 2.0x, issue 23)")
    print(f"  in CPU time (this thread's: without the waits a busy machine adds): handler p50 "
          f"{plain['cpu_p50_ms']:.3f} ms p99 {plain['cpu_p99_ms']:.3f} ms, "
          f"floor p50 {plain['cpu_floor_p50_ms']:.3f} ms p99 {plain['cpu_floor_p99_ms']:.3f} ms, "
          f"ratio p50 {plain['cpu_ratio_p50']:.2f}x p99 {plain['cpu_ratio_p99']:.2f}x")
    print(f"  the floor's top 10 equals the handler's for {same} of 50 shoppers")

    left = 2.0 - bare["ratio_p50"]
    print(f"\nwithout per-request candidates and features (each shopper's memoised: "
          f"{hits} of {n + 200} requests read them from the dict), interleaved with the floor:")
    print(f"  handler p50 {bare['p50_ms']:.3f} ms  p99 {bare['p99_ms']:.3f} ms; "
          f"floor p50 {bare['floor_p50_ms']:.3f} ms  p99 {bare['floor_p99_ms']:.3f} ms")
    print(f"  ratio   p50 {bare['ratio_p50']:.2f}x  p99 {bare['ratio_p99']:.2f}x: every other stage beside the floor")
    # In floors (each pass's own, measured beside it): the machine's speed may move between passes.
    print(f"  candidates and features take {plain['ratio_p50'] - bare['ratio_p50']:.2f} floors at p50; "
          f"2.0x leaves them {left:.2f} ({left * bare['floor_p50_ms'] * 1000:.0f} us at this floor)")

if __name__ == "__main__":
    main()
