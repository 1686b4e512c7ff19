"""AWS's limits under real traffic (issue 19): build/bench.json ``limits``, a contract.

One function per key, registered in ``KEYS``; other modules named ``tests/bench/limits_*.py``
add theirs (each with its own ``run()`` returning a dict of ``limits`` keys), so two streams
of work add keys without editing the same lines. Every figure comes from the model the fakes
and the local stack enforce (``personalize.adapters.limits``) on a manual clock, so a run
is deterministic and as fast as the machine allows; ``*_before`` keys measure the design
this issue replaced on the same workload (the same model, or its unit arithmetic where the
old code is gone).
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import io
import json
import math
import pkgutil
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

from personalize import identity, keys
from personalize.adapters import limits as model
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.limits import DynamoLimits, KinesisLimits, ManualClock
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import ITEMS, MemoryRowStore
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.stream import MemoryEventStream
from personalize.adapters.userstore import MemoryUserStore
from personalize.ingest import catalogue, entities, journal
from personalize.ingest.aggregation import StreamRecord
from personalize.ingest.catalogue import Membership, MembershipCache
from personalize.ingest.collect import PUBLIC, SERVER, Collector, Request
from personalize.ingest.events import parse_event
from personalize.ingest.pipeline import Ingestor
from personalize.serving import snapshot_job, snapshots
from personalize.serving.availability import Availability
from personalize.serving.catalogue_store import PARTS, Catalogue, Part

T0 = 1_790_000_000_000
TIMEOUT_S = 60.0  # the snapshot function's (template.yaml)
S3_BYTES_PER_S = 50e6  # a Lambda's S3 transfer, conservative
S3_REQUEST_S = 0.03


class _Static:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


# --- limits.viral_item_hot_shard_records_per_s ----------------------------------------------


BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def viral_item_hot_shard(seconds: int = 10, rate: int = 3000, purchase_share: float = 0.1,
                         collect_instances: int = 10) -> dict:
    """One item at ``rate`` events/s, half anonymous (browsers), half signed-in shoppers; the
    shop's backend sends a stock level per purchase, each in its own request, spread over
    ``collect_instances`` warm collect instances. 4 shards (an on-demand stream's start).
    The figure: records offered to the busiest shard in any second (accepted or not)."""
    clock = ManualClock()
    kinesis = KinesisLimits(4, clock)
    stream = MemoryEventStream(kinesis, attempts=1)
    membership = _Static(Membership.of(["viral"]))
    collectors = [Collector(stream, identity.KeyRing.static("bench"), None, clock=lambda: T0 / 1000 + clock.now(),
                            catalogue=membership) for _ in range(collect_instances)]
    rng = random.Random(19)
    old_keys: Counter = Counter()  # (second, shard) under the previous keying: anonymous and stock by item
    level, n = 1_000_000, 0
    ticks = 20
    for second in range(seconds):
        for tick in range(ticks):
            now_ms = T0 + second * 1000 + tick * 1000 // ticks
            anonymous, shoppers = [], []
            for _ in range(rate // ticks):
                n += 1
                kind = "purchase" if rng.random() < purchase_share else rng.choice(["view", "click", "add_to_cart"])
                event = {"event_id": f"v{n}", "type": kind, "item_id": "viral", "ts": now_ms}
                if n % 2:
                    anonymous.append(event)
                    old_keys[(second, kinesis.shard_of("viral"))] += 1
                else:
                    event["user_id"] = f"shopper-{rng.randrange(2_000_000)}"
                    shoppers.append(event)
                    old_keys[(second, kinesis.shard_of(event["user_id"]))] += 1
            stock = []
            for event in anonymous + shoppers:
                if event["type"] == "purchase":
                    level -= 1
                    stock.append({"event_id": f"s{event['event_id']}", "type": "stock", "item_id": "viral",
                                  "ts": now_ms, "stock": level})
                    old_keys[(second, kinesis.shard_of("viral"))] += 1
            for chunk in range(0, len(anonymous), 25):  # a browser each: its address is its anonymous identity
                collectors[chunk % collect_instances].handle(Request(
                    PUBLIC, json.dumps({"events": anonymous[chunk:chunk + 25]}), content_type="application/json",
                    viewer_address=f"203.{second % 256}.{tick}.{chunk // 25}:443", user_agent=BROWSER))
            for chunk in range(0, len(shoppers), 25):
                collectors[chunk % collect_instances].handle(
                    Request(SERVER, json.dumps({"events": shoppers[chunk:chunk + 25]})))
            for k, event in enumerate(stock):
                collectors[k % collect_instances].handle(Request(SERVER, json.dumps(event)))
            clock.advance(1 / ticks)
    return {
        "viral_item_hot_shard_records_per_s": round(kinesis.offered.peak()),
        "viral_item_hot_shard_records_per_s_before": max(old_keys.values()),
        "viral_item_throttled_records": kinesis.throttled_records,
        "viral_item_stock_updates_per_s_reaching_the_stream": round(
            sum(1 for key, _ in stream.records if key == "viral") / seconds, 1),
    }


# --- limits.soldout_* ---------------------------------------------------------------------------


def soldout_churn(sold_out: int = 320_000, churn_per_minute: float = 0.10, instances: int = 500,
                  seconds: int = 8, shards: int = 4, batches_per_s: int = 5) -> dict:
    """``sold_out`` items sold out; ``churn_per_minute`` of them change state a minute
    (half sell out, half come back), written by aggregate's batches (``shards`` x
    ``batches_per_s``); ``instances`` warm serving instances refresh once a second
    (staggered). Per-partition write and read units per second, from the model."""
    clock = ManualClock(60.0)
    dynamo = DynamoLimits(clock)
    log = MemorySoldOut(dynamo)
    rng = random.Random(5)
    base_ms = T0
    readers = [Availability(log, lambda: int(base_ms + clock.now() * 1000)) for _ in range(instances)]
    for reader in readers:
        reader.load(base_ms)  # warm: read from the snapshot's build on
    dynamo.read_usage.clear()
    dynamo.write_usage.clear()
    transitions_per_s = sold_out * churn_per_minute / 60
    per_batch = max(1, round(transitions_per_s / (shards * batches_per_s)))
    ids = [f"sku-{n:07d}" for n in range(sold_out)]
    batch_no = 0
    for _ in range(seconds):
        events = []  # (offset in the second, what)
        for shard in range(shards):
            for b in range(batches_per_s):
                events.append((b / batches_per_s + shard * 0.01, ("write", shard)))
        for i in range(instances):
            events.append((i / instances, ("read", i)))
        start = clock.now()
        for offset, (kind, who) in sorted(events):
            clock.t = start + offset
            now_ms = int(base_ms + clock.now() * 1000)
            if kind == "write":
                batch_no += 1
                entries = [[rng.choice(ids), rng.choice("sr"), now_ms] for _ in range(per_batch)]
                log.append(entries, f"src{who}#{batch_no}-{batch_no}", now_ms)
            else:
                readers[who].load(base_ms)
        clock.t = start + 1.0
    # The design this replaced, in AWS's unit arithmetic: 16 parts under one partition key,
    # each UpdateItem (ADD and DELETE apart) billed at its whole part, every instance reading
    # all 16 parts (BatchGetItem, eventually consistent) each second.
    part_bytes = 2 + 7 + 2 + 8 + 5 + sold_out // 16 * len(ids[0])
    parts_per_batch = 16 * (1 - (15 / 16) ** per_batch)
    before_wcu = shards * batches_per_s * 2 * parts_per_batch * model.write_units(part_bytes)
    before_rcu = instances * 16 * model.read_units(part_bytes, consistent=False)
    return {
        "soldout_churn_max_partition_wcu_per_s": round(dynamo.write_usage.peak(), 1),
        "soldout_max_partition_rcu_per_s": round(dynamo.read_usage.peak(), 1),
        "soldout_churn_max_partition_wcu_per_s_before": round(before_wcu),
        "soldout_max_partition_rcu_per_s_before": round(before_rcu),
        "soldout_transitions_per_s": round(transitions_per_s, 1),
        "soldout_serving_instances": instances,
        "soldout_rows_read_per_instance_per_s": round(sum(r.rows_read for r in readers) / instances / seconds, 1),
        "soldout_partitions_throttled": dynamo.throttled,
    }


# --- limits.snapshot_* ----------------------------------------------------------------------------


def botocore_parse_us(row_bytes: int, samples: int = 20) -> float:
    """What botocore takes to parse one item of a BatchGetItem answer of that size (the
    in-memory store skips it; the deployed job pays it)."""
    import botocore.session
    from botocore.parsers import create_parser

    shape = botocore.session.get_session().get_service_model("dynamodb").operation_model("BatchGetItem").output_shape
    blob = base64.b64encode(b"x" * max(1, row_bytes)).decode()
    items = [{"pk": {"S": f"i#sku-{n}"}, "sk": {"S": "s#shardId-000000000001"}, "row": {"B": blob},
              "aux": {"B": "AAAA"}, "v": {"N": "7"}, "expires_at": {"N": "1830000000"}} for n in range(100)]
    body = json.dumps({"Responses": {"t": items}, "UnprocessedKeys": {}}).encode()
    parser = create_parser("json")
    started = time.perf_counter()
    for _ in range(samples):
        parser.parse({"status_code": 200, "headers": {}, "body": body}, shape)
    return (time.perf_counter() - started) / (samples * 100) * 1e6


def _zipf_items(rng: np.random.Generator, n_items: int, size: int) -> np.ndarray:
    ranks = rng.zipf(1.1, size=size * 2)
    return ranks[ranks <= n_items][:size] - 1


def snapshot_job_at(scale: float) -> dict:
    """The snapshot job's steady-state run with the workload scaled as a whole: ``scale`` x
    (1,000,000 published items, anonymous traffic at 1,000 events/s, the snapshot's bound
    ``MAX_ITEMS_SERVED``), so that each part of the job's work (the catalogue's parts, the
    rows of what changed, the tracked items) shrinks alike and a power law through three
    scales extrapolates to the full size. The catalogue's parts, an hour of the scaled
    traffic through the real aggregation (anonymous, keyed by event id over 4 shards: the
    item rows and the journal), a first run, one more minute of traffic, then the run that
    is measured. Its time: this process's CPU for the whole run + DynamoDB reads from the
    read-unit model (at a new on-demand table's 12,000 units/s) + botocore's parsing of each
    item read (measured) + S3 transfers (50 MB/s, 30 ms a request). The day's dedupe rows
    are not built: the job never reads one (tests/unit/test_snapshot_job.py holds it to
    that); the ``before`` figure adds what a Scan over them would read."""
    n_items = int(1_000_000 * scale)
    rate = 1000 * scale
    head = max(50, int(snapshots.MAX_ITEMS_SERVED * scale))
    with _scaled_pools(scale):
        return _snapshot_job_at(scale, n_items, rate, head)


@contextlib.contextmanager
def _scaled_pools(scale: float):
    """The snapshot's pools, scaled with the workload (at scale 1, the code's own sizes)."""
    saved = {name: getattr(snapshots, name) for name in ("POPULAR_POOL", "TRENDING_POOL", "COUNTRY_POOL")}
    try:
        for name, size in saved.items():
            setattr(snapshots, name, max(5, int(size * scale)))
        yield
    finally:
        for name, size in saved.items():
            setattr(snapshots, name, size)


def _snapshot_job_at(scale: float, n_items: int, rate: float, head: int) -> dict:
    now = {"s": T0 / 1000 - 3600}
    clock = ManualClock()
    dynamo = DynamoLimits(clock)
    store = MemoryRowStore(clock=lambda: now["s"], limits=None)
    artifacts = MemoryArtifacts()
    ids = [f"sku-{i:07d}" for i in range(n_items)]
    parts = Catalogue({n: Part(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, bool))
                       for n in range(PARTS)})
    parts.write(store, parts.apply([[i, journal.IMPLICIT, T0 - 86_400_000] for i in ids]), 2_000_000_000)
    ingestor = Ingestor(store, MemoryQuarantine(), clock=lambda: now["s"])
    rng = np.random.default_rng(int(scale * 1000))
    seq = {s: 10**20 for s in range(4)}
    shards = KinesisLimits(4, clock)
    countries = ["US", "FR", "DE", "GB", "JP", "ES", "IT", "BR"]
    n_event = 0

    def traffic(seconds: int) -> None:
        nonlocal n_event
        per_batch = 1000
        total = int(rate * seconds)
        picks = _zipf_items(rng, n_items, total)
        kinds = rng.choice(["view", "click", "add_to_cart", "purchase"], size=len(picks), p=[0.6, 0.25, 0.1, 0.05])
        by_shard: dict[int, list] = {s: [] for s in range(4)}
        for k, (item, kind) in enumerate(zip(picks.tolist(), kinds.tolist())):
            n_event += 1
            ts = int(now["s"] * 1000 + k * seconds * 1000 // max(1, total))
            event = {"event_id": f"a{n_event}", "type": kind, "item_id": ids[item], "ts": ts,
                     "country": countries[n_event % len(countries)], "route": "public",
                     "actor": f"ip~{n_event % 20_000}"}  # 20,000 browsers, a few events a minute each
            by_shard[shards.shard_of(event["actor"])].append(event)  # keyed by anonymous identity
        for shard, events in by_shard.items():
            for start in range(0, len(events), per_batch):
                batch = []
                for e in events[start:start + per_batch]:
                    seq[shard] += 1
                    data = json.dumps(e).encode()
                    batch.append(StreamRecord.of(str(seq[shard]), parse_event(e, anonymous_ok=True),
                                                 f"bench:shardId-{shard:012d}", e["ts"], data))
                now["s"] = max(now["s"], batch[-1].event.ts / 1000)
                ingestor.run(f"shardId-{shard:012d}", batch, [], int(now["s"] * 1000),
                             "arn:aws:kinesis:us-east-1:123456789012:stream/bench")

    traffic(3600)
    snapshot_job.publish(store, artifacts, lambda: now["s"], max_items=head)  # the run before (untimed)
    traffic(60)
    now["s"] += 1
    store.limits = dynamo
    dynamo.read_usage.clear()
    gets_before = artifacts.gets
    puts_before = sum(len(v) for v in artifacts.versions.values())
    started = time.perf_counter()
    report = snapshot_job.publish(store, artifacts, lambda: now["s"], max_items=head)
    cpu_s = time.perf_counter() - started
    store.limits = None
    units = dynamo.read_usage.total()
    rows_bytes = [len(r[0]) + len(r[1]) for k, r in store.tables[ITEMS].items() if k[0].startswith("i#")]
    parse_s = report.rows_read * botocore_parse_us(int(np.mean(rows_bytes))) / 1e6
    ddb_s = max(units / model.TABLE_INITIAL_READ_UNITS_PER_S,
                dynamo.read_usage.peak() / model.PARTITION_READ_UNITS_PER_S)
    s3_bytes = sum(len(artifacts.objects[k]) for k in artifacts.objects)
    s3_requests = artifacts.gets - gets_before + sum(len(v) for v in artifacts.versions.values()) - puts_before
    s3_s = s3_bytes / S3_BYTES_PER_S + s3_requests * S3_REQUEST_S
    total_s = cpu_s + ddb_s + parse_s + s3_s
    # What the scan-based job read: every item row and a day of dedupe rows (86,400 s of
    # anonymous events, ~25 bytes an id), eventually consistent, in 1 MB pages.
    item_bytes = sum(rows_bytes) * n_items / max(1, len(rows_bytes))
    dedupe_bytes = 86_400 * rate * 25
    scan_units = (item_bytes + dedupe_bytes) / 8192
    scan_s = scan_units / model.TABLE_INITIAL_READ_UNITS_PER_S + (item_bytes / max(1, np.mean(rows_bytes))) * (
        botocore_parse_us(int(np.mean(rows_bytes))) / 1e6) + n_items * 70e-6  # + the build, ~70 us an item
    return {"scale": scale, "published_items": report.published_items, "events_per_s": rate,
            "snapshot_items": report.items, "changed_items": report.changed_items, "rows_read": report.rows_read,
            "read_units": round(units, 1), "cpu_s": round(cpu_s, 3), "dynamodb_s": round(ddb_s, 3),
            "parse_s": round(parse_s, 3), "s3_s": round(s3_s, 3), "total_s": round(total_s, 3),
            "snapshot_bytes": report.bytes, "membership_bytes": len(artifacts.objects[snapshot_job.MEMBERSHIP_KEY]),
            "stages_ms": report.stages_ms, "scan_total_s_before": round(scan_s, 2)}


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(exponent, value at scale 1) of a power law through the points (least squares, log-log)."""
    x = np.log([p[0] for p in points])
    y = np.log([max(p[1], 1e-9) for p in points])
    b, a = np.polyfit(x, y, 1)
    return float(b), float(math.exp(a))


def snapshot_scaling(scales=(0.01, 0.02, 0.05)) -> dict:
    runs = [snapshot_job_at(s) for s in scales]
    exponent, at_1m = _fit([(r["scale"], r["total_s"]) for r in runs])
    bytes_exponent, bytes_1m = _fit([(r["scale"], r["snapshot_bytes"]) for r in runs])
    before_exponent, before_1m = _fit([(r["scale"], r["scan_total_s_before"]) for r in runs])
    return {
        "snapshot_job_fraction_of_timeout": round(at_1m / TIMEOUT_S, 3),
        "snapshot_job_growth_exponent": round(exponent, 3),
        "snapshot_job_s_at_1m_items": round(at_1m, 2),
        "snapshot_job_fraction_of_timeout_before": round(before_1m / TIMEOUT_S, 2),
        "snapshot_bytes_at_1m_items": round(bytes_1m),
        "snapshot_bytes_growth_exponent": round(bytes_exponent, 3),
        "snapshot_bytes_at_1m_items_before": 887_870 * 100,  # 887,870 at 10,000 items (README, 2026-11-28), linear
        "catalogue_membership_bytes_at_1m_items": len(catalogue.MAGIC) + 8 + 8 * 1_000_000,
        "snapshot_job_runs": runs,
    }


# --- limits.invented_item_top10_share ---------------------------------------------------------------


XSS = "<img src=x onerror=alert(1)>"


def invented_item(published_items: int = 2_000, shoppers: int = 1_000, purchases: int = 1_000) -> dict:
    """The shop publishes ``published_items``; shoppers browse them; then ``purchases``
    anonymous purchases of an id no shop sells (an XSS probe), each of quantity 1,000, sent
    to the public route and, as if past collect, straight onto the stream. The share of
    ``shoppers`` (half signed in, half anonymous, over 5 countries) whose top 10 shows it.
    Before: the same traffic counted without a catalogue and the snapshot built from every
    item row (the scan-based job)."""
    out = {mode: _invented_run(mode, published_items, shoppers, purchases) for mode in ("after", "before")}
    return {"invented_item_top10_share": out["after"]["share"],
            "invented_item_top10_share_before": out["before"]["share"],
            "invented_item_refused_at_collect": out["after"]["refused_at_collect"]}


def _invented_run(mode: str, published_items: int, shoppers: int, purchases: int) -> dict:
    from personalize.serving.recommendations import Recommender, Variant

    now = {"s": T0 / 1000}
    store = MemoryRowStore(clock=lambda: now["s"], limits=None)
    artifacts = MemoryArtifacts()
    cache = MembershipCache(catalogue.artifacts_loader(artifacts), refresh_s=0.0, clock=lambda: now["s"])
    ingestor = Ingestor(store, MemoryQuarantine(), clock=lambda: now["s"], soldout=MemorySoldOut(None),
                        catalogue=cache if mode == "after" else None)
    stream = MemoryEventStream(limits=None)
    collector = Collector(stream, identity.KeyRing.static("bench"), None, clock=lambda: now["s"],
                          catalogue=cache if mode == "after" else None)
    seq = [10**20]

    def flush(raw=None):
        records = raw if raw is not None else [d for _, d in stream.records]
        stream.records.clear()
        for start in range(0, len(records), 1000):
            batch = []
            for data in records[start:start + 1000]:
                seq[0] += 1
                batch.append(StreamRecord.of(str(seq[0]), parse_event(json.loads(data), anonymous_ok=True),
                                             "bench:shardId-0", int(now["s"] * 1000), data))
            ingestor.run("shardId-0", batch, [], int(now["s"] * 1000), "arn:aws:kinesis:::stream/b")

    items = [f"sku-{n}" for n in range(published_items)]
    rng = random.Random(3)
    n = 0
    events = [{"event_id": f"c{i}", "type": "catalogue", "item_id": item, "listed": True,
               "ts": int(now["s"] * 1000)} for i, item in enumerate(items)]
    for start in range(0, len(events), 500):
        collector.handle(Request(SERVER, json.dumps({"events": events[start:start + 500]})))
    flush()
    snapshot_job.publish(store, artifacts, lambda: now["s"])
    cache.refresh_now()
    traffic = []
    for user in range(shoppers // 2):
        for _ in range(6):
            n += 1
            traffic.append({"event_id": f"t{n}", "type": rng.choice(["view", "click", "purchase"]),
                            "user_id": f"u{user}", "item_id": items[min(int(rng.paretovariate(1.2)) - 1,
                                                                       published_items - 1)],
                            "ts": int(now["s"] * 1000), "country": rng.choice(["US", "FR", "DE", "GB", "JP"])})
    for start in range(0, len(traffic), 500):
        collector.handle(Request(SERVER, json.dumps({"events": traffic[start:start + 500]})))
    attack = [{"event_id": f"x{k}", "type": "purchase", "item_id": XSS, "quantity": 1000,
               "ts": int(now["s"] * 1000)} for k in range(purchases)]
    refused = 0
    for start in range(0, len(attack), 100):  # from a browser in the US (CloudFront's country)
        _, body, _ = collector.handle(Request(PUBLIC, json.dumps({"events": attack[start:start + 100]}),
                                              viewer_country="US", content_type="application/json",
                                              viewer_address="198.51.100.66:443", user_agent=BROWSER))
        refused += len(body.get("rejected", attack[start:start + 100]))
    flush()
    flush([json.dumps({**a, "event_id": "p" + a["event_id"], "route": "public", "country": "US",
                       "actor": f"ip~attacker-{k}"}).encode()  # as many identities as purchases: the worst case
           for k, a in enumerate(attack)])
    now["s"] += 30
    if mode == "after":
        snapshot_job.publish(store, artifacts, lambda: now["s"])
    else:  # the scan-based job: every item row the stream ever produced
        rows: dict[str, list] = {}
        for (pk, _), stored in store.scan_prefix(ITEMS, "i#"):
            rows.setdefault(keys.item_id_of(pk), []).append(entities.ItemRow.from_obj(stored.row))
        snap = snapshots.build({i: entities.merge_item_rows(r, int(now["s"] * 1000)) for i, r in rows.items()},
                               int(now["s"] * 1000), "before")
        artifacts.put_snapshot(snap.version, snap.encode(), {})
    users = MemoryUserStore({u: entities.UserRow.from_obj(s.row)
                             for (pk, _), s in store.scan_prefix("users", "u#") if (u := pk[2:])})
    recommender = Recommender(users, artifacts, MemorySoldOut(None), "bench",
                              lambda user_id: Variant("champion", champion_ranker(), "exp"), log_sample_rate=0,
                              wall_clock=lambda: now["s"])
    recommender.warm()
    shown = 0
    for k in range(shoppers):
        cookie = f"rt_uid={identity.cookie_value(f'u{k}', 'bench')}" if k % 2 == 0 else None
        body = recommender.recommend({"k": "10"}, cookie, ["US", "FR", "DE", "GB", "JP"][k % 5],
                                     int(now["s"] * 1000)).body
        shown += XSS in [i["item_id"] for i in body["items"]]
    return {"share": shown / shoppers, "refused_at_collect": refused}


def champion_ranker():
    from infra.local.template import ROOT
    from personalize.serving.models import load_folder

    champion = json.loads((ROOT / "infra" / "flags" / "initial.json").read_text())["champion_model"]["default"]
    return load_folder(ROOT / "models" / champion)


KEYS = {
    "viral_item_hot_shard_records_per_s": viral_item_hot_shard,
    "soldout_churn_max_partition_wcu_per_s": soldout_churn,  # and soldout_max_partition_rcu_per_s
    "snapshot_job_fraction_of_timeout": snapshot_scaling,  # and snapshot_bytes_at_1m_items
    "invented_item_top10_share": invented_item,
}


def run(only: set[str] | None = None) -> dict:
    out: dict = {}
    for key, measure in KEYS.items():
        if only and key not in only:
            continue
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            out.update(measure())
        out.setdefault("seconds", {})[key] = round(time.perf_counter() - started, 1)
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):  # other streams' keys
        if info.name.startswith("limits_"):
            started = time.perf_counter()
            out.update(importlib.import_module(f"tests.bench.{info.name}").run())
            out.setdefault("seconds", {})[info.name] = round(time.perf_counter() - started, 1)
    return out
