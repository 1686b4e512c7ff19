"""The snapshot job at scale (issue 19, item 5): it reads only what it publishes (never a
scan over the day's dedupe rows), stops before its timeout and keeps the last good
snapshot, and publishes a snapshot bounded by the candidate pools, not the catalogue."""

from __future__ import annotations

import json

import pytest

from personalize.adapters import limits
from personalize.adapters.artifacts import POINTER_KEY, MemoryArtifacts
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import ITEMS, MemoryRowStore
from personalize.ingest import entities
from personalize.ingest.aggregation import StreamRecord
from personalize.ingest.events import parse_event
from personalize.ingest.pipeline import Ingestor
from personalize.serving import snapshot_job, snapshots

NOW = 1_790_000_000_000
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"


class Feed:
    def __init__(self, store, clock):
        self.ingestor = Ingestor(store, MemoryQuarantine(), clock=clock)
        self.clock = clock
        self.seq = 10**20

    def run(self, events, shard="shardId-000000000000"):
        batch = []
        for e in events:
            self.seq += 1
            batch.append(StreamRecord.of(str(self.seq), parse_event(e, anonymous_ok=True), f"x:{shard}",
                                         int(self.clock() * 1000), json.dumps(e).encode()))
        result = self.ingestor.run(shard, batch, [], int(self.clock() * 1000), ARN)
        assert not result.failed_seqs


def test_the_job_reads_no_dedupe_row_and_never_scans():
    """Issue 19: the job scanned the whole items table, a day of anonymous dedupe rows
    included, under its 60 s timeout (this test failed: the Scan read every dedupe row)."""
    now = {"s": NOW / 1000}
    model = limits.DynamoLimits(limits.ManualClock())
    store = MemoryRowStore(clock=lambda: now["s"], limits=model)
    feed = Feed(store, lambda: now["s"])
    feed.run([{"event_id": f"c{n}", "type": "catalogue", "item_id": f"sku-{n}", "listed": True, "ts": NOW,
               "route": "server"} for n in range(50)])
    for minute in range(30):  # anonymous traffic: one dedupe row per minute and bucket
        now["s"] = NOW / 1000 + 60 * minute
        feed.run([{"event_id": f"a{minute}-{n}", "type": "view", "item_id": f"sku-{n % 50}",
                   "ts": int(now["s"] * 1000), "route": "public"} for n in range(200)])
    dedupe = [k for k in store.tables[ITEMS] if k[0].startswith("d#")]
    assert len(dedupe) > 100
    store.scan_prefix = None  # any scan fails the test
    model.read_usage.clear()
    report = snapshot_job.publish(store, MemoryArtifacts(), lambda: now["s"])
    assert report.items == 50
    read = {pk for (_, pk) in model.read_usage.peak_by_key()}
    assert not [pk for pk in read if pk.startswith("d#")], "not one dedupe row read"
    assert {pk[:2] for pk in read} <= {"j#", "cp", "i#"}


def test_the_job_tracks_what_it_published_between_runs_and_reads_only_changes():
    now = {"s": NOW / 1000}
    store = MemoryRowStore(clock=lambda: now["s"], limits=None)
    artifacts = MemoryArtifacts()
    feed = Feed(store, lambda: now["s"])
    feed.run([{"event_id": f"v{n}", "type": "purchase", "user_id": f"u{n}", "item_id": f"sku-{n}", "ts": NOW,
               "route": "server"} for n in range(20)])
    first = snapshot_job.publish(store, artifacts, lambda: now["s"])
    assert first.items == 20 and first.changed_items == 20
    now["s"] += 600  # ten minutes of nothing, then one item changes
    feed.run([{"event_id": "late", "type": "view", "user_id": "u1", "item_id": "sku-3", "ts": int(now["s"] * 1000),
               "route": "server"}])
    second = snapshot_job.publish(store, artifacts, lambda: now["s"])
    assert second.items == 20 and second.changed_items == 1 and second.journal_rows == 1


def test_the_snapshot_is_bounded_by_the_pools_not_the_catalogue():
    """Issue 19: the snapshot grew with every id ever seen (887 KB at 10,000 items, ~90 MB at
    a million)."""
    views = {}
    for n in range(3000):
        row = entities.ItemRow()
        row.popularity = [float(3000 - n), NOW]
        row.totals = [3000 - n, 0, 0, 0]
        views[f"sku-{n}"] = entities.merge_item_rows([row], NOW)
    trending = entities.ItemRow()
    for k in range(10):
        trending.tiles[NOW // 60_000 - k] = [0, 0, 0, 0]
    trending.tiles[NOW // 60_000] = [50, 10, 0, 0]
    trending.neighbours = {"sku-2999": [5.0, NOW]}
    trending.popularity = [0.5, NOW]
    views["rising"] = entities.merge_item_rows([trending], NOW)
    snap = snapshots.build(views, NOW, "b", max_items=500)
    assert len(snap.items) == 500 and snap.bounded == 2501
    assert {"rising", "sku-2999", "sku-0", "sku-1"} <= set(snap.items), "the pools, their neighbours, the head"
    assert snap.items[snap.trending[0]] == "rising"
    small = snapshots.build(dict(list(views.items())[:100]), NOW, "s", max_items=500)
    assert len(small.items) == 100 and small.bounded == 0


def test_a_run_past_its_deadline_publishes_nothing_and_the_last_good_stays():
    now = {"s": NOW / 1000}
    store = MemoryRowStore(clock=lambda: now["s"], limits=None)
    artifacts = MemoryArtifacts()
    Feed(store, lambda: now["s"]).run([{"event_id": "p", "type": "purchase", "user_id": "u", "item_id": "sku",
                                        "ts": NOW, "route": "server"}])
    snapshot_job.publish(store, artifacts, lambda: now["s"])
    good = artifacts.objects[POINTER_KEY]
    clock = limits.ManualClock()
    deadline = limits.Deadline(60, clock)
    clock.advance(50)  # the journal and catalogue took 50 s of the function's 60
    now["s"] += 60
    with pytest.raises(snapshot_job.DeadlineError):
        snapshot_job.publish(store, artifacts, lambda: now["s"], snapshot_job.Deadline(
            deadline.get_remaining_time_in_millis))
    assert artifacts.objects[POINTER_KEY] == good
    age = snapshot_job.published_age_s(artifacts, now["s"])
    assert age == pytest.approx(60.0), "what the SnapshotAgeSeconds metric reports (its alarm at 240 s)"


def test_the_pointer_names_the_exact_versions_it_publishes():
    store = MemoryRowStore(limits=None)
    artifacts = MemoryArtifacts()
    for n in range(3):
        snapshot_job.publish(store, artifacts, lambda n=n: NOW / 1000 + n)
    doc = json.loads(artifacts.objects[POINTER_KEY])
    assert doc["formats"]["2"]["version_id"] == "v3" and doc["catalogue"]["version_id"] == "v3"
    assert snapshots.ItemSnapshot.decode(artifacts.get(doc["formats"]["2"]["key"], "v1")).built_at_ms == NOW
    assert doc["key"] == snapshot_job.snapshot_key(1), "format-1 readers (an older release) read this key"
