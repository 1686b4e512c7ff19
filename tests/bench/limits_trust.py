"""``limits`` figures of issue 19's trust half, for build/bench.json (merged into ``limits`` by
``tests/bench/run.py`` with the other ``limits_*`` modules; the keys are a contract):

* ``kill_to_zero_s``: a kill issued while a ramp is BAKING, AppConfig's real poll minimum
  (15 s), until no container serves the challenger, idle ones included. Virtual time: the
  real session, store and assignment code (``FlagSession``, ``CachedDocumentStore``,
  ``Rollout``) in hundreds of simulated containers against ``appconfig_fake`` (deployment
  states, the data API's rules); a container's background refresh resumes only at its next
  invocation (Lambda freezes it between them) and its result serves the one after that.
* ``one_client_trending_gain_ratio``: one client (one address, through the real collect
  and aggregate) buys 1,000 units of a published long-tail item, in one event and in 1,000;
  the item's trending gain over one unit bought once by one shopper.
* ``one_account_false_kill_rate``: the guardrail's A/A false-kill rate over 1,000 simulated
  experiments (the ramp 2% -> 10% -> 25% while conversion drifts: ``simulation``) when one
  account replays 10,000 GETs and their impressions; what that account adds to the counters
  is measured through the real serving, collect and aggregate code, then added to every
  simulated experiment. Budget: the clean rate + 0.01.
* ``one_account_power``: a 20%-worse challenger while one account floods clicks (10,000
  lists, an impression and a click each), in the challenger or in the champion (shielding
  it), the worse of the two. Budget: the clean power - 0.05.
"""

from __future__ import annotations

import heapq
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personalize import identity
from personalize.adapters import appconfig
from personalize.adapters import appconfig_fake as fake
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import MemoryRowStore
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.stream import MemoryEventStream
from personalize.adapters.userstore import MemoryUserStore
from personalize.ingest import collect, entities
from personalize.ingest.aggregation import ITEMS, StreamRecord
from personalize.ingest.events import parse_event
from personalize.ingest.pipeline import Ingestor
from personalize.rollout import experiments, flags
from personalize.serving import snapshots
from personalize.serving.models import load_folder
from personalize.serving.recommendations import Recommender, Variant

from .simulation import ramp_kills, simulate_ramps

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = (ROOT / "infra" / "flags" / "schema" / "rollout.schema.json").read_text()
KEY = "bench-signing-key"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
CHAMPION, CHALLENGER_MODEL = "ranker-mlp/v1", "ranker-linear/v1"


# --- kill_to_zero_s ------------------------------------------------------------------------------------


class Frozen:
    """A Lambda container's background work: submitted during one invocation, resumed at the
    next (nothing runs while the container is frozen)."""

    def __init__(self):
        self.pending: list = []

    def submit(self, fn):
        self.pending.append(fn)

    def resume(self):
        pending, self.pending = self.pending, []
        for fn in pending:
            fn()


@dataclass
class Container:
    rollout: flags.Rollout
    executor: Frozen
    rate_per_s: float
    next_at: float


def _container(world, clock, rate_per_s: float, first_at: float) -> Container:
    session = appconfig.FlagSession(lambda: fake.FakeAppConfigData(world), "app", "env", "prof", clock=clock)
    executor = Frozen()
    store = flags.CachedDocumentStore(session.fetch, flags.REFRESH_S, clock=clock, executor=executor,
                                      bundled=flags.rollout_document(CHAMPION, None, 0.0, "none"))
    return Container(flags.Rollout(store, CHAMPION), executor, rate_per_s, first_at)


def kill_to_zero(seed: int = 7, busy: int = 60, idle_probes: int = 120) -> dict:
    """Seconds from the kill (issued while the ramp bakes) until no container answers the
    challenger: busy containers (0.05 to 20 requests/s) simulated request by request, and idle
    ones probed at every moment after the kill, having last served at every moment before it."""
    rng = random.Random(seed)
    clock = {"now": 0.0}
    now = lambda: clock["now"]  # noqa: E731
    world = fake.AppConfigWorld(now)
    world.create_profile("prof", [{"Type": "JSON_SCHEMA", "Content": SCHEMA}])
    world.create_strategy("once", 0, 0)
    world.create_strategy("ramp", 10, 5, 20)  # template.yaml GradualStrategy
    admin = appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once", appconfig.GRADUAL: "ramp"},
                                     fetch=None, client=fake.FakeAppConfig(world), clock=now,
                                     sleep=lambda s: clock.__setitem__("now", clock["now"] + s))
    start = flags.rollout_document(CHAMPION, CHALLENGER_MODEL, 0.02, "exp")
    ramp = flags.rollout_document(CHAMPION, CHALLENGER_MODEL, 0.25, "exp", earlier_steps=[200])
    kill = flags.rollout_document(CHAMPION, CHALLENGER_MODEL, 0.0, "exp", kill_switch=True, earlier_steps=[200, 2500])
    admin.deploy(start, appconfig.ALL_AT_ONCE, "start")
    ramped_at = 60.0
    kill_at = ramped_at + 12 * 60  # the ramp deployed for 10 minutes, baking for 5: in its bake
    users = [f"shopper-{i}" for i in range(20_000)]
    challenged = [u for u in users if flags.bucket(u, "exp") < flags.share_step(0.25)]  # the challenger at 25%
    rates = [0.05, 0.2, 1.0, 5.0, 20.0]
    containers = [_container(world, now, rates[i % len(rates)], rng.uniform(0, 60)) for i in range(busy)]
    # Idle containers: warm until ``last`` before the kill, then nothing until one request at
    # ``probe`` after it (the adversarial moments: every pair on a grid).
    lasts = np.linspace(0.0, 60.0, 13)
    probes = np.linspace(0.0, 90.0, max(2, idle_probes // len(lasts)))
    idle = [(_container(world, now, 0.0, rng.uniform(0, 60)), float(last), float(probe))
            for last in lasts for probe in probes]
    events: list[tuple[float, int, str]] = []
    for i, c in enumerate(containers):
        events.append((c.next_at, i, "busy"))
    for j, (c, _, _) in enumerate(idle):
        events.append((c.next_at, j, "idle-warm"))
    events.append((ramped_at, -1, "ramp"))
    events.append((kill_at, -1, "kill"))
    horizon = kill_at + 150
    last_challenger = kill_at
    issued = None
    killed_state = None
    heapq.heapify(events)
    while events:
        at, index, kind = heapq.heappop(events)
        if at > horizon:
            break
        clock["now"] = at
        if kind == "ramp":
            admin.deploy(ramp, appconfig.GRADUAL, "ramp to 25%")
            continue
        if kind == "kill":
            killed_state = [d["State"] for d in world.deployments("env")][-1]
            admin.kill(kill, "guardrail kill")
            issued = clock["now"]
            continue
        c = containers[index] if kind == "busy" else idle[index][0]
        c.executor.resume()  # what the previous invocation started, before this one is served
        user = rng.choice(challenged)
        served = c.rollout.assign(user).variant
        if served == flags.CHALLENGER and issued is not None:
            last_challenger = max(last_challenger, at)
        if kind == "busy":
            heapq.heappush(events, (at + rng.expovariate(c.rate_per_s), index, "busy"))
        elif kind == "idle-warm":
            _, last, probe = idle[index]
            following = at + rng.expovariate(1.0)
            if following < kill_at - last:
                heapq.heappush(events, (following, index, "idle-warm"))
            else:
                heapq.heappush(events, (kill_at + probe, index, "idle-probe"))
    assert issued is not None and killed_state == "BAKING", killed_state
    return {"kill_to_zero_s": round(last_challenger - issued, 2), "kill_issued_in_state": killed_state,
            "kill_containers": busy + len(idle), "kill_poll_interval_s": appconfig.MIN_POLL_S,
            "kill_flags_max_age_s": flags.FLAGS_MAX_AGE_S}


# --- the real pipeline, in memory ---------------------------------------------------------------------


class Pipeline:
    """collect (public and server routes) -> the stream -> aggregate, in memory."""

    def __init__(self, now_ms: int):
        self.now_ms = now_ms
        # What one identity can move, not throughput: the shard and partition limits (the limits
        # model, on its own clock) are measured by tests/bench/limits.py.
        self.stream = MemoryEventStream(limits=None)
        self.store = MemoryRowStore(clock=lambda: self.now_ms / 1000, limits=None)
        self.ingestor = Ingestor(self.store, MemoryQuarantine(), clock=lambda: self.now_ms / 1000)
        self.collector = collect.Collector(self.stream, identity.KeyRing.static(KEY), None,
                                           clock=lambda: self.now_ms / 1000)
        self.seq = 10**20

    def post(self, events: list[dict], route: str = collect.PUBLIC, **request) -> None:
        for start in range(0, len(events), collect.MAX_EVENTS):
            body = json.dumps({"events": events[start:start + collect.MAX_EVENTS]})
            fields = {"content_type": "application/json", "user_agent": BROWSER} if route == collect.PUBLIC else {}
            status, answer, _ = self.collector.handle(collect.Request(route, body, **{**fields, **request}),
                                                      self.now_ms)
            if status != 202 or answer["rejected"]:
                raise AssertionError(f"collect answered {status}: {answer}")
            # A client that keeps to its identity's rate (ingest.actors.EVENTS_PER_S; 429 otherwise).
            self.now_ms += int(len(events[start:start + collect.MAX_EVENTS]) / 5 * 1000) + 1000

    def drain(self) -> None:
        records = []
        for _, data in self.stream.records:
            self.seq += 1
            records.append(StreamRecord.of(str(self.seq), parse_event(json.loads(data), anonymous_ok=True),
                                           "bench", self.now_ms, data))
        self.stream.records.clear()
        for start in range(0, len(records), 1000):
            result = self.ingestor.run("shardId-000000000000", records[start:start + 1000], [], self.now_ms)
            assert not result.failed_seqs

    def item(self, item_id: str) -> entities.ItemView | None:
        rows = [entities.ItemRow.from_obj(s.row) for s in self.store.query(ITEMS, f"i#{item_id}") if s.row]
        return entities.merge_item_rows(rows, self.now_ms) if rows else None


def _trending(view: entities.ItemView | None, now_ms: int) -> float:
    if view is None:
        return 0.0
    snap = snapshots.build({"x": view}, now_ms, "t")
    return float(snap.matrix[0, snapshots.ITEM_COLUMNS.index("item_trending_log")])


def one_client_trending_gain(now_ms: int) -> dict:
    item, control = "tail-item-7", "tail-item-8"
    ratios = {}
    for shape in ("one_event", "many_events"):
        p = Pipeline(now_ms)
        # The shop's backend speaks for the catalogue: its events publish their items.
        p.post([{"event_id": f"stock-{i}", "type": "stock", "item_id": i, "stock": 5000, "ts": p.now_ms}
                for i in (item, control)], collect.SERVER)
        p.post([{"event_id": "honest", "type": "purchase", "item_id": control, "ts": p.now_ms}],
               viewer_address="198.51.100.20:443")
        if shape == "one_event":
            attack = [{"event_id": "whale", "type": "purchase", "item_id": item, "quantity": 1000, "ts": p.now_ms}]
        else:
            attack = [{"event_id": f"whale-{n}", "type": "purchase", "item_id": item, "ts": p.now_ms}
                      for n in range(1000)]
        p.post(attack, viewer_address="203.0.113.66:443")
        p.drain()
        one_unit = _trending(p.item(control), p.now_ms)
        ratios[shape] = _trending(p.item(item), p.now_ms) / one_unit if one_unit else float("inf")
    return {"one_client_trending_gain_ratio": round(max(ratios.values()), 4),
            "one_client_trending_gain_ratio_by_shape": {k: round(v, 4) for k, v in ratios.items()}}


# --- one account against the guardrail ------------------------------------------------------------------


def _attacker(experiment: str, variant: str) -> str:
    share = flags.share_step(0.02)
    for n in range(100_000):
        user = f"mallory-{n}"
        if (flags.bucket(user, experiment) < share) == (variant == flags.CHALLENGER):
            return user
    raise AssertionError("no account lands in the variant")


def one_account_delta(variant: str, click: bool, requests: int = 10_000) -> experiments.Counters:
    """What one account adds to its variant's counters with ``requests`` GETs (real serving:
    signed rec_ids), an impression for each list and, with ``click``, a click on it (real
    collect, public route, its own cookie), through the real aggregate."""
    now_ms = int(time.time() * 1000)
    document = flags.rollout_document(CHAMPION, CHALLENGER_MODEL, 0.02, "exp-attack")
    rollout = flags.Rollout(flags.CachedDocumentStore(lambda: document), CHAMPION)
    rankers = {k: load_folder(ROOT / "models" / k) for k in (CHAMPION, CHALLENGER_MODEL)}

    def choose(user_id):
        assignment = rollout.assign(user_id)
        return Variant(assignment.variant, rankers[assignment.model], assignment.experiment)

    artifacts = MemoryArtifacts()
    views = {f"sku-{i}": entities.merge_item_rows([entities.ItemRow(totals=[i, 0, 0, i % 5],
                                                                    popularity=[float(i), now_ms])], now_ms)
             for i in range(400)}
    artifacts.put_snapshot("v1", snapshots.build(views, now_ms, "v1").encode(), {})
    user = _attacker("exp-attack", variant)
    row = entities.UserRow()
    entities.apply_user_event(row, parse_event({"event_id": "seed", "type": "view", "user_id": user,
                                                "item_id": "sku-1", "ts": now_ms}), 1)
    recommender = Recommender(MemoryUserStore({user: row}), artifacts, MemorySoldOut(), KEY, choose,
                              log_sample_rate=0)
    recommender.warm()
    cookie = identity.cookie_value(user, KEY)
    events = []
    for n in range(requests):
        answer = recommender.recommend({"k": "5"}, cookie, "US", now_ms).body
        assert answer["variant"] == variant
        events.append({"event_id": f"imp-{n}", "type": "impression", "items": [i["item_id"] for i in answer["items"]],
                       "rec_id": answer["rec_id"], "ts": now_ms})
        if click:
            events.append({"event_id": f"click-{n}", "type": "click", "item_id": answer["items"][0]["item_id"],
                           "rec_id": answer["rec_id"], "ts": now_ms})
    p = Pipeline(now_ms)
    p.post(events, cookie=cookie)
    p.drain()
    analysed = flags.analysis_id("exp-attack", flags.share_step(0.02))
    return experiments.read_counters(p.store, analysed)[variant]


def _with(arrays, arm: str, delta: experiments.Counters, tick: int):
    conv_a, n_a, conv_b, n_b, step = arrays
    n_a, n_b, conv_a, conv_b = n_a.copy(), n_b.copy(), conv_a.copy(), conv_b.copy()
    if arm == flags.CHALLENGER:
        n_b[tick] += delta.impressions
        conv_b[:, tick] += delta.purchases
    else:
        n_a[tick] += delta.impressions
        conv_a[:, tick] += delta.purchases
    return conv_a, n_a, conv_b, n_b, step


def _killed(arrays, within: int | None = None) -> float:
    first = ramp_kills(*arrays)
    return float(((first >= 0) & (first < (within or first.max() + 1))).mean())


def guardrail_under_one_account(requests: int = 10_000, tick: int = 5) -> dict:
    """The attack lands at ``tick``, early in the 2% step, when one account weighs most. Power
    is measured within that step (``RAMP``'s first 30 ticks): over the whole ramp a 20%-worse
    challenger is always killed, so only the first step shows what an attack could take away."""
    from .simulation import RAMP

    step_end = RAMP[1][0]
    aa, worse = simulate_ramps(1.0, seed=1), simulate_ramps(0.8, seed=2)
    replay = one_account_delta(flags.CHALLENGER, click=False, requests=requests)
    powers = {}
    for arm in (flags.CHALLENGER, flags.CHAMPION):
        flood = one_account_delta(arm, click=True, requests=requests)
        powers[arm] = _killed(_with(worse, arm, flood, tick), step_end)
    # What the same attacks did before issue 19, when every list counted an impression.
    per_list = experiments.Counters(impressions=requests)
    return {
        "one_account_false_kill_rate": _killed(_with(aa, flags.CHALLENGER, replay, tick)),
        "clean_aa_false_kill_rate": _killed(aa),
        "one_account_power": min(powers.values()), "clean_power_20pct": _killed(worse, step_end),
        "one_account_power_by_arm": powers,
        "power_measured_within_ticks": step_end,
        "clean_power_20pct_whole_ramp": _killed(worse),
        "one_account_counted": {"shoppers": replay.impressions, "clicks": replay.clicks, "requests": requests},
        "one_account_false_kill_rate_if_each_list_counted": _killed(_with(aa, flags.CHALLENGER, per_list, tick)),
        "one_account_power_if_each_list_counted": _killed(_with(worse, flags.CHAMPION, per_list, tick), step_end),
        "one_account_simulations": int(aa[0].shape[0]),
    }


def run() -> dict:
    started = time.perf_counter()
    figures = kill_to_zero()
    figures.update(one_client_trending_gain(int(time.time() * 1000)))
    figures.update(guardrail_under_one_account())
    figures["trust_seconds"] = round(time.perf_counter() - started, 1)
    return figures
