"""Ingest figures for build/bench.json (`ingest`): throughput of the aggregate handler and
the DynamoDB writes it really makes on a skewed flash-sale stream."""

from __future__ import annotations

import contextlib
import io
import os
import time

from moto import mock_aws

from infra.local import handlers, resources
from infra.local.lambda_events import context
from personalize import keys
from personalize.adapters import aws
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import MemoryRowStore
from personalize.ingest.catalogue import Membership, MembershipCache
from personalize.ingest.pipeline import Ingestor

from .streams import FlashSale, kinesis_batches


def _entities(event: dict) -> set[tuple]:
    out = {("user", event["user_id"]), ("item", event["item_id"])}
    if event.get("variant"):
        out.add(("variant", keys.experiment_of(event.get("rec_id")), event["variant"]))
    return out


def write_floor(batches: list[dict]) -> tuple[int, int]:
    """(distinct entities per batch summed over batches, one write per entity per event)."""
    import base64
    import json

    floor = naive = 0
    for batch in batches:
        touched: set = set()
        for record in batch["Records"]:
            event = json.loads(base64.b64decode(record["kinesis"]["data"]))
            entities = _entities(event)
            naive += len(entities)
            shard = record["eventID"].split(":")[0]
            # Items and variants are rows per shard; a batch comes from one shard.
            touched |= {(*e, shard) for e in entities}
        floor += len(touched)
    return floor, naive


def _clock_after(events):
    end_s = (events[-1]["ts"] + 1000) / 1000
    return lambda: end_s


def floor_events_per_s(batches: list[dict], n_events: int, loads=None) -> tuple[float, float]:
    """The least work in Python that aggregate could do with the same records: decode each
    record (base64, JSON: the standard library's unless ``loads`` is given) and count it into
    its shopper's, item's and the item's country's minute tile, in plain dicts (no validation,
    dedupe, watermarks, rows or writes). Returns (events per second, per CPU second)."""
    import base64
    import json

    users: dict = {}
    items: dict = {}
    countries: dict = {}
    measures = {"view": 0, "click": 1, "add_to_cart": 2, "purchase": 3}
    b64decode, loads = base64.b64decode, loads or json.loads
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in batches:
        for record in batch["Records"]:
            event = loads(b64decode(record["kinesis"]["data"]))
            measure = measures.get(event["type"])
            if measure is None:
                continue
            minute = event["ts"] // 60_000
            for tiles, key in ((users, event["user_id"]), (items, event["item_id"]),
                               (countries, (event["item_id"], event["country"]))):
                entity = tiles.get(key)
                if entity is None:
                    entity = tiles[key] = {}
                tile = entity.get(minute)
                if tile is None:
                    tile = entity[minute] = [0, 0, 0, 0]
                tile[measure] += 1
    return n_events / (time.perf_counter() - started), n_events / (time.process_time() - cpu_started)


def published(events) -> MembershipCache:
    """The shop's catalogue (every item of the stream), as aggregate holds it: public events
    about them count (the membership check is part of the work measured)."""
    membership = Membership.of({e["item_id"] for e in events if e.get("item_id")}, "bench")
    return MembershipCache(lambda etag: (membership, "bench") if etag is None else None, refresh_s=3600)


def throughput_in_memory(aggregate, batches, events) -> tuple[float, float]:
    """Events per second and per CPU second of the handler, in-process, in-memory store (no
    throughput limits: the stream is replayed faster than its own clock; the ``limits``
    section measures partitions)."""
    aggregate.processor._ingestor = Ingestor(MemoryRowStore(clock=_clock_after(events), limits=None),
                                            MemoryQuarantine(), clock=_clock_after(events),
                                            catalogue=published(events))
    ctx = context("aggregate")
    sink = io.StringIO()  # EMF metrics are printed per invocation, as in Lambda; not shown here
    started, cpu_started = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sink):
        for batch in batches:
            response = aggregate.lambda_handler(batch, ctx)
            assert response == {"batchItemFailures": []}, response
    return len(events) / (time.perf_counter() - started), len(events) / (time.process_time() - cpu_started)


def fault_injection(n: int) -> dict:
    """tests/faults.py over ``n`` seeds (the ones `make test` runs are 0..299; these follow)."""
    from tests import faults

    result = faults.run_many(range(1_000_000, 1_000_000 + n))
    failing = result.pop("_failing")
    for out in failing[:5]:
        print(f"bench: fault schedule {out.seed} lost {out.lost}, doubled {out.doubled}: {out.replay_hint()}")
        for line in out.diffs[:5]:
            print("   ", line)
    return result


def run(n_events: int = 100_000, n_moto_events: int = 30_000, n_fault_schedules: int = 10_000) -> dict:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                        "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    sale = FlashSale()
    events = sale.events(n_events)
    batches = kinesis_batches(events)
    moto_events = events[:n_moto_events]

    with mock_aws():
        aws.reset()
        created = resources.create_all("bench")
        os.environ.update(created.env())
        # The real stream's ARN: aggregate asks it which record follows the last batch.
        moto_batches = kinesis_batches(moto_events, stream_arn=created.arns["EventsStream"])
        aggregate = handlers.load("aggregate")
        # The floor before and after the handler, the better of the two (the machine may be
        # shared: a ratio is only meaningful within one run).
        floors = [floor_events_per_s(batches, len(events))]
        events_per_s, events_per_cpu_s = throughput_in_memory(aggregate, batches, events)
        floors.append(floor_events_per_s(batches, len(events)))
        floor, floor_cpu = max(f[0] for f in floors), max(f[1] for f in floors)
        import msgspec

        floor_msgspec = floor_events_per_s(batches, len(events), msgspec.json.Decoder().decode)[0]

        # The same handler against moto, counting the write requests botocore really sends.
        aggregate = handlers.load("aggregate")
        aggregate.processor._ingestor = None
        ingestor = aggregate.processor.ingestor
        ingestor.clock = _clock_after(moto_events)
        ingestor.catalogue = published(moto_events)
        writes = {"total": 0, "hot": 0, "progress": 0}

        def count(params, **_):
            writes["total"] += 1
            pk = params["Item"]["pk"]["S"]
            if pk == "i#item-hot":
                writes["hot"] += 1
            elif pk.startswith("p#"):
                writes["progress"] += 1

        ingestor.store.client.meta.events.register("provide-client-params.dynamodb.PutItem", count)
        ctx = context("aggregate")
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            for batch in moto_batches:
                assert aggregate.lambda_handler(batch, ctx) == {"batchItemFailures": []}
        events_per_s_moto = len(moto_events) / (time.perf_counter() - started)
    aws.reset()

    faults_started = time.perf_counter()
    schedules = fault_injection(n_fault_schedules)
    schedules["fault_seconds"] = round(time.perf_counter() - faults_started, 1)

    entity_writes, naive = write_floor(moto_batches)  # not ``floor``: that is the throughput floor above
    n = len(moto_events)
    stream_seconds_at_peak = n / sale.peak_events_per_s
    return {
        "events_per_s": round(events_per_s),
        # Issue 13: the same records through the least work possible (decode, three tiles).
        "floor_events_per_s": round(floor),
        "ratio_to_floor": round(events_per_s / floor, 3),
        # The same, in events per CPU second of this process: steadier on a shared machine.
        "events_per_cpu_s": round(events_per_cpu_s),
        "floor_events_per_cpu_s": round(floor_cpu),
        "ratio_to_floor_cpu": round(events_per_cpu_s / floor_cpu, 3),
        "floor_msgspec_events_per_s": round(floor_msgspec),  # the floor with aggregate's JSON decoder
        "events_per_s_moto": round(events_per_s_moto),
        "events": len(events),
        "moto_events": n,
        "batches": len(moto_batches),
        "ddb_writes": writes["total"],
        "ddb_writes_per_event": round(writes["total"] / n, 4),
        "entity_floor_per_event": round(entity_writes / n, 4),
        "naive_writes_per_event": round(naive / n, 4),
        "writes_vs_floor": round(writes["total"] / entity_writes, 3),
        "progress_writes_per_batch": round(writes["progress"] / len(moto_batches), 2),
        "naive_vs_writes": round(naive / writes["total"], 2),
        "hot_item_share": sale.hot_share,
        "peak_events_per_s": sale.peak_events_per_s,
        "hot_item_writes_per_s": round(writes["hot"] / stream_seconds_at_peak, 2),
        "hot_partition_limit_writes_per_s": 1000,
        **schedules,
        "stream": {"shoppers": sale.shoppers, "items": sale.items, "zipf_a": sale.zipf_a,
                   "session_mean_events": sale.session_mean, "concurrent_sessions": sale.concurrent,
                   "shards": 4, "batch_size": 1000},
    }
