"""Experiment figures for build/bench.json (`experiment`)."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np

from infra.local.stack import LocalStack
from personalize import identity
from personalize.rollout import flags

from .simulation import BASE_RATE, guardrail_kills, naive_kills, ramp_kills, simulate, simulate_ramps
from .streams import post_events


def served_variant(endpoint: str, cookie: str) -> str:
    """The variant the local stack's front serves to the shopper with ``cookie``."""
    req = urllib.request.Request(endpoint + "/recommendations?k=1", headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())["variant"]

def assigned_share(n: int = 100_000) -> float:
    doc = flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.02, "exp-bench")
    rollout = flags.Rollout(flags.CachedDocumentStore(lambda: doc), "ranker-mlp/v1")
    return sum(rollout.assign(f"user-{i}").variant == flags.CHALLENGER for i in range(n)) / n


def kill_to_zero_s() -> tuple[float, float]:
    """On the local stack: a 2% experiment, then a kill; seconds until no response names
    the challenger (and the share served before the kill)."""
    stack = LocalStack(snapshot_interval_s=1.0, guardrail_interval_s=3600).start()
    try:
        now = int(time.time() * 1000)
        events = [{"event_id": f"k{n}", "type": "view", "user_id": f"bg{n % 50}", "item_id": f"sku-{n % 500}",
                   "ts": now} for n in range(3000)]
        post_events(stack, events)
        stack.poller.drain(60)
        stack.functions["snapshot"]({})
        stack.resources.deploy_flags(flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.02, "exp-k"))
        users = [f"shopper-{i}" for i in range(3000)]
        cookies = {u: "rt_uid=" + identity.cookie_value(u, stack.signing_key) for u in users}

        def variant(user):
            return served_variant(stack.endpoint, cookies[user])

        deadline = time.time() + 60  # the flags reach serving within AppConfig's poll interval (15 s)
        challengers: list[str] = []
        while not challengers and time.time() < deadline:  # until the start has propagated
            challengers = [u for u in users if variant(u) == flags.CHALLENGER]
        share = len(challengers) / len(users)
        stack.resources.deploy_flags(
            flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.0, "exp-k", kill_switch=True))
        started = time.perf_counter()
        while time.perf_counter() - started < 120:
            if all(variant(u) == flags.CHAMPION for u in challengers):
                return time.perf_counter() - started, share
            time.sleep(0.1)
        raise AssertionError("the challenger was still served 120 s after the kill")
    finally:
        stack.stop()


def kill_during_rollout_s() -> float:
    """On the local stack: a 2% experiment ramping to 25% (a gradual deployment still in
    progress), then the guardrail's kill path (stop the ramp, deploy share 0 all at once);
    seconds from the kill call until no response names the challenger."""
    from personalize.adapters.appconfig import ALL_AT_ONCE, GRADUAL

    stack = LocalStack(snapshot_interval_s=1.0, guardrail_interval_s=3600).start()
    try:
        now = int(time.time() * 1000)
        post_events(stack, [{"event_id": f"r{n}", "type": "view", "user_id": f"bg{n % 50}",
                                      "item_id": f"sku-{n % 500}", "ts": now} for n in range(2000)])
        stack.poller.drain(60)
        stack.functions["snapshot"]({})
        admin = stack.resources.flag_admin()  # the local AppConfig: the template's 10-minute ramp
        admin.deploy(flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.02, "exp-r"), ALL_AT_ONCE, "start")
        admin.deploy(flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.25, "exp-r", earlier_steps=[200]),
                     GRADUAL, "ramp to 25%")
        users = [f"shopper-{i}" for i in range(400)]
        cookies = {u: "rt_uid=" + identity.cookie_value(u, stack.signing_key) for u in users}

        def variant(user):
            return served_variant(stack.endpoint, cookies[user])

        deadline = time.time() + 60  # the flags reach serving within AppConfig's poll interval (15 s)
        challengers: list[str] = []
        while not challengers and time.time() < deadline:
            challengers = [u for u in users if variant(u) == flags.CHALLENGER]
        started = time.perf_counter()
        admin.deploy(flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.0, "exp-r", kill_switch=True,
                                            earlier_steps=[200, 2500]), ALL_AT_ONCE, "guardrail kill")
        while time.perf_counter() - started < 120:
            if all(variant(u) == flags.CHAMPION for u in challengers):
                return time.perf_counter() - started
            time.sleep(0.1)
        raise AssertionError("the challenger was still served 120 s after the kill")
    finally:
        stack.stop()


def run() -> dict:
    # A gradual rollout (2% -> 10% -> 25%) while conversion drifts: each step analysed apart.
    aa = simulate_ramps(1.0, seed=1)
    worse = simulate_ramps(0.8, seed=2)
    first = ramp_kills(*worse)
    killed = first[first >= 0]
    n_b = np.cumsum(worse[3])
    flat_aa = simulate(BASE_RATE, seed=1)
    seconds, served_share = kill_to_zero_s()
    return {
        "assigned_share": round(assigned_share(), 5),
        "served_share_before_kill": round(served_share, 4),
        "aa_false_kill_rate": float((ramp_kills(*aa) >= 0).mean()),
        "pooled_across_ramps_false_kill_rate": float((ramp_kills(*aa, stratified=False) >= 0).mean()),
        "aa_false_kill_rate_constant_share": float((guardrail_kills(*flat_aa) >= 0).mean()),
        "naive_repeated_test_false_kill_rate": float((naive_kills(*flat_aa) >= 0).mean()),
        "kill_power_20pct": float((first >= 0).mean()),
        "median_impressions_to_kill_20pct": float(np.median(n_b[killed])),
        "impressions_counted": "challenger impressions; ramp 2% -> 10% -> 25% of 10,000 per tick, "
                               "conversion drifting 6% -> 4%",
        "kill_to_zero_s": round(seconds, 2),
        "kill_during_rollout_s": round(kill_during_rollout_s(), 2),
    }
