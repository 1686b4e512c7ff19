"""The shop owns the catalogue (DESIGN 3.1, issue 19): only published items are accepted from
the public route, count in shared scores, enter a snapshot or the bundled fallback; a
delisted item leaves serving within the stock-out budget. In memory, end to end: collect ->
the stream's records -> aggregate -> the snapshot job -> serving."""

from __future__ import annotations

import json

import pytest

from personalize import identity, keys
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import ITEMS, MemoryRowStore
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.stream import MemoryEventStream
from personalize.adapters.userstore import MemoryUserStore
from personalize.ingest import catalogue, coalesce, entities, journal
from personalize.ingest.aggregation import StreamRecord
from personalize.ingest.catalogue import Membership, MembershipCache
from personalize.ingest.collect import PUBLIC, SERVER, Collector, Request, collect
from personalize.ingest.events import parse_event
from personalize.ingest.pipeline import Ingestor
from personalize.serving import degraded, snapshot_job, snapshots
from personalize.serving.recommendations import Recommender, Variant

NOW = 1_790_000_000_000
XSS = "<img src=x onerror=alert(1)>"


class Shop:
    """collect (both routes) -> records -> aggregate -> snapshot job -> serving, in memory, on
    one clock (``now``, epoch s)."""

    def __init__(self, items=("milk", "bread", "eggs", "tea", "jam")):
        self.now = NOW / 1000
        self.clock = lambda: self.now
        self.store = MemoryRowStore(clock=self.clock, limits=None)
        self.soldout = MemorySoldOut(limits_model=None)
        self.artifacts = MemoryArtifacts()
        self.cache = MembershipCache(catalogue.artifacts_loader(self.artifacts), refresh_s=0.0, clock=self.clock)
        self.ingestor = Ingestor(self.store, MemoryQuarantine(), clock=self.clock, soldout=self.soldout,
                                 catalogue=MembershipCache(catalogue.artifacts_loader(self.artifacts), refresh_s=0.0,
                                                           clock=self.clock))
        self.stream = MemoryEventStream(limits=None)
        self.collector = Collector(self.stream, identity.KeyRing.static("key"), None, clock=self.clock,
                                   catalogue=self.cache)
        self.seq = 10**20
        self.n = 0
        if items:
            self.server([{"type": "catalogue", "item_id": i, "listed": True} for i in items])
            self.snapshot()

    def _ids(self, events):
        out = []
        for e in events:
            self.n += 1
            out.append({"event_id": f"ev-{self.n}", "ts": int(self.now * 1000), **e})
        return out

    def post(self, route, events, cookie=None):
        status, body, _ = self.collector.handle(Request(route, json.dumps({"events": self._ids(events)}), cookie,
                                                        content_type="application/json",
                                                        viewer_address="198.51.100.7:443",
                                                        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"))
        assert status == 202, body
        self.last_result = self.flush()
        return body

    def server(self, events):
        return self.post(SERVER, events)

    def public(self, events, user=None):
        return self.post(PUBLIC, events, cookie=f"rt_uid={identity.cookie_value(user, 'key')}" if user else None)

    def flush(self, records=None):
        """What collect wrote (or ``records``: raw stream data), through aggregate, one shard."""
        raw = records if records is not None else [data for _, data in self.stream.records]
        self.stream.records.clear()
        batch = []
        for data in raw:
            self.seq += 1
            batch.append(StreamRecord.of(str(self.seq), parse_event(json.loads(data), anonymous_ok=True),
                                         "src:shardId-000000000000", int(self.now * 1000), data))
        if batch:
            result = self.ingestor.run("shardId-000000000000", batch, [], int(self.now * 1000),
                                       "arn:aws:kinesis:us-east-1:123456789012:stream/s")
            assert not result.failed_seqs
            return result
        return None

    def snapshot(self, **kwargs) -> snapshots.ItemSnapshot:
        self.now += 1
        snapshot_job.publish(self.store, self.artifacts, self.clock, **kwargs)
        pointer = self.artifacts.pointer_if_changed(None)
        return snapshots.ItemSnapshot.decode(self.artifacts.get(pointer.doc["formats"]["2"]["key"]))


def test_membership_is_eight_bytes_an_item_and_exact():
    items = [f"sku-{n}" for n in range(100_000)]
    membership = Membership.of(items, "v")
    data = membership.to_bytes()
    assert len(data) == 8 * 100_000 + len(catalogue.MAGIC) + 8  # a million items: 8 MB
    back = Membership.from_bytes(data)
    assert all(i in back for i in items[:1000]) and "sku-100000" not in back and XSS not in back
    assert 12 not in back  # not a string: never published
    with pytest.raises(catalogue.CatalogueError):
        Membership.from_bytes(b"garbage")


def test_public_events_about_an_unpublished_item_are_rejected_with_a_reason():
    shop = Shop()
    body = shop.public([{"type": "purchase", "item_id": XSS, "quantity": 1000},
                        {"type": "view", "item_id": "milk"},
                        {"type": "impression", "items": ["milk", XSS]}])
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [0, 2]
    assert all("not in the shop's catalogue" in r["error"] for r in body["rejected"])


@pytest.mark.parametrize("kind", ["catalogue", "stock"])
def test_only_the_shops_backend_speaks_for_the_catalogue(kind):
    shop = Shop()
    body = shop.public([{"type": kind, "item_id": "milk", "listed": False, "stock": 0}])
    assert body["accepted"] == 0 and "shop's backend" in body["rejected"][0]["error"]


def test_an_invented_item_never_trends_never_enters_a_snapshot_or_the_fallback():
    """Issue 19: one anonymous purchase of 1,000 units of an id no shop sells made it the top
    recommendation for every shopper, and the bundled fallback carried it (this test failed:
    the snapshot held the invented id, first in the popular pool)."""
    shop = Shop()
    shop.public([{"type": "view", "item_id": "milk"}, {"type": "view", "item_id": "bread"}])
    # Past collect (a stale membership, or a record on the stream by any other way):
    forged = {"event_id": "forged", "type": "purchase", "item_id": XSS, "quantity": 1000, "ts": NOW,
              "route": "public"}
    result = shop.flush([json.dumps(forged).encode()] * 3)
    assert result.unlisted == 3
    assert not [k for k in shop.store.tables.get(ITEMS, {}) if k[0] == keys.item_key(XSS, "x")[0]]
    snap = shop.snapshot()
    assert XSS not in snap.items and {"milk", "bread"} <= set(snap.items)
    assert XSS not in degraded.popular_list(snap)
    recommender = Recommender(MemoryUserStore(), shop.artifacts, shop.soldout, "key",
                              lambda user_id: Variant("champion", _ranker(), "exp"), log_sample_rate=0,
                              wall_clock=shop.clock)
    recommender.warm()
    served = [i["item_id"] for i in recommender.recommend({"k": "10"}, None, "US", NOW).body["items"]]
    assert XSS not in served and served


def test_a_new_item_is_accepted_from_the_public_route_within_one_snapshot_interval():
    shop = Shop()
    shop.server([{"type": "purchase", "user_id": "backend-order", "item_id": "new-jam", "quantity": 1}])
    body = shop.public([{"type": "view", "item_id": "new-jam"}])
    assert body["accepted"] == 0, "not published before the next snapshot"
    shop.snapshot()
    assert shop.public([{"type": "view", "item_id": "new-jam"}])["accepted"] == 1


def test_a_delisted_item_leaves_serving_at_once_and_the_catalogue_with_the_next_snapshot():
    shop = Shop()
    shop.public([{"type": "view", "item_id": i} for i in ("milk", "bread", "eggs")])
    shop.snapshot()
    recommender = Recommender(MemoryUserStore(), shop.artifacts, shop.soldout, "key",
                              lambda user_id: Variant("champion", _ranker(), "exp"), log_sample_rate=0,
                              wall_clock=shop.clock)
    recommender.warm()
    assert "milk" in _served(recommender)
    shop.server([{"type": "catalogue", "item_id": "milk", "listed": False}])
    recommender.soldout.refresh_now()  # serving's next sold-out refresh (every second)
    assert "milk" not in _served(recommender) and "bread" in _served(recommender)
    assert shop.public([{"type": "view", "item_id": "milk"}])["accepted"] == 1, "until the next snapshot"
    snap = shop.snapshot()
    assert "milk" not in snap.items
    assert shop.public([{"type": "view", "item_id": "milk"}])["accepted"] == 0


def test_an_item_the_shop_delisted_stays_delisted_whatever_else_its_backend_says():
    """A stock level or an order for a delisted item does not list it again (only a
    catalogue event does): inventory systems keep sending stock for items off the shelf."""
    shop = Shop()
    shop.server([{"type": "catalogue", "item_id": "tea", "listed": False}])
    shop.snapshot()
    shop.now += 5
    shop.server([{"type": "stock", "item_id": "tea", "stock": 40}])
    shop.snapshot()
    assert shop.public([{"type": "view", "item_id": "tea"}])["accepted"] == 0
    shop.now += 5
    shop.server([{"type": "catalogue", "item_id": "tea", "listed": True}])
    shop.snapshot()
    assert shop.public([{"type": "view", "item_id": "tea"}])["accepted"] == 1


def test_any_server_event_publishes_an_item_the_catalogue_does_not_know():
    shop = Shop(items=())
    shop.server([{"type": "stock", "item_id": "flour", "stock": 9},
                 {"type": "purchase", "user_id": "o1", "item_id": "salt"}])
    snap = shop.snapshot()
    assert {"flour", "salt"} <= set(snap.items) and snap.published == 2


def test_without_a_readable_membership_collect_accepts_and_aggregate_counts():
    """Our outage (S3 unreadable before any membership was read) must not drop real traffic:
    accepted, counted unverified (a metric); an invented id still never enters a snapshot."""
    shop = Shop(items=())
    shop.artifacts.fail = True
    shop.cache.value = None
    shop.ingestor.catalogue = MembershipCache(lambda etag: (_ for _ in ()).throw(ConnectionError("s3")))
    result_body = shop.public([{"type": "view", "item_id": "whatever"}])
    assert result_body["accepted"] == 1
    shop.artifacts.fail = False
    assert "whatever" not in shop.snapshot().items


def test_stock_updates_are_coalesced_before_the_stream():
    """Issue 19 (keys that spread): a viral item's shop sends a stock level per purchase, all
    on the item's shard. At most one a second above the low-stock line gets through (per
    collect instance); every level at or below it does, at once."""
    stream = MemoryEventStream(limits=None)
    gate = coalesce.StockGate()
    lets = 0
    for n in range(300):  # 300 purchases in one second, each its own request
        level = 400 - n
        result = collect([{"event_id": f"s{n}", "type": "stock", "item_id": "viral", "ts": NOW + n, "stock": level}],
                         stream, NOW + n * 3, gate=gate)
        lets += result.accepted
        assert result.accepted + result.coalesced == 1 and not result.rejected
    assert lets == 1
    for n, level in enumerate([6, 5, 4, 0, 12]):  # the low-stock line, sold out, and the first level back up
        result = collect([{"event_id": f"t{n}", "type": "stock", "item_id": "viral", "ts": NOW + 2000 + n,
                           "stock": level}], stream, NOW + 900 + n, gate=gate)
        assert result.accepted == (0 if level == 6 else 1), level
    batch = [{"event_id": f"b{n}", "type": "stock", "item_id": "other", "ts": NOW + n, "stock": 50 - n}
             for n in range(10)]
    result = collect(batch, stream, NOW, gate=coalesce.StockGate())
    assert result.accepted == 1 and result.coalesced == 9 and result.to_body()["coalesced"] == 9
    assert json.loads(stream.records[-1][1])["stock"] == 41, "the request's newest level"


def test_the_low_stock_line_is_servings():
    assert coalesce.LOW_STOCK == snapshots.LOW_STOCK


def test_the_journal_lists_changed_items_and_listing_changes_only():
    shop = Shop(items=())
    shop.server([{"type": "catalogue", "item_id": "a", "listed": True}, {"type": "stock", "item_id": "b", "stock": 0}])
    rows = [r for k, r in shop.store.tables[ITEMS].items() if k[0].startswith(journal.PK_PREFIX)]
    assert len(rows) == 1
    row = entities_row(rows[0])
    assert row["t"] == ["a", "b"] and sorted(c[:2] for c in row["c"]) == [["a", 1], ["b", journal.IMPLICIT]]


def entities_row(raw):
    from personalize.codec import unpack

    return unpack(raw[0])


def _served(recommender) -> list[str]:
    return [i["item_id"] for i in recommender.recommend({"k": "10"}, None, "US", NOW).body["items"]]


def _ranker():
    from pathlib import Path

    from personalize.serving.models import load_folder

    return load_folder(Path(__file__).resolve().parents[2] / "models" / "ranker-mlp" / "v1")


def test_aggregate_keeps_an_unpublished_items_events_out_of_the_shoppers_row_too():
    shop = Shop()
    stored_before = dict(shop.store.tables.get("users", {}))
    forged = {"event_id": "f1", "type": "click", "user_id": "alice", "item_id": "ghost", "ts": NOW, "route": "public"}
    shop.flush([json.dumps(forged).encode()])
    assert shop.store.tables.get("users", {}) == stored_before
    assert entities.UserRow is not None


def _counting_cache(shop, load=None, refresh_s=10.0):
    loads = []
    load = load or catalogue.artifacts_loader(shop.artifacts)
    shop.ingestor.catalogue = MembershipCache(lambda etag: loads.append(etag) or load(etag), refresh_s=refresh_s,
                                              clock=shop.clock, wall_clock=shop.clock)
    return loads


@pytest.mark.parametrize("after_s", [0.5, 1.0, 5.0])
def test_an_event_collect_admitted_counts_though_aggregates_membership_was_older(after_s):
    """collect's cache refreshed first and admitted a click on a just-published item;
    aggregate's, refreshed every 10 s as deployed, did not have it yet: it reads again rather
    than count an accepted event nowhere (the smoke test lost such a click, 2026-12-07),
    however soon after its own last read the click comes."""
    shop = Shop()
    loads = _counting_cache(shop)
    shop.public([{"type": "view", "item_id": "milk"}], user="alice")  # aggregate's membership, read now
    shop.server([{"type": "catalogue", "item_id": "new-jam", "listed": True}])
    snapshot_job.publish(shop.store, shop.artifacts, shop.clock)  # published at once, no time passing
    shop.now += after_s
    before = len(loads)
    assert shop.public([{"type": "click", "item_id": "new-jam"}], user="alice")["accepted"] == 1
    assert shop.last_result.unlisted == 0
    assert len(loads) == before + 1, "read again once, before counting the click nowhere"
    key = keys.item_key("new-jam", "shardId-000000000000")
    assert entities.ItemRow.from_obj(shop.store.get_many("items", [key])[key].row).totals[1] == 1  # the click


def _forged(shop, n, items, arrival_ms=None):
    records = [StreamRecord.of(str(10**21 + n * 10 + k), parse_event(
        {"event_id": f"f{n}-{k}", "type": "click", "user_id": "mallory", "item_id": item,
         "ts": int(shop.now * 1000), "route": "public"}, anonymous_ok=True),
        "src:shardId-000000000000", int(shop.now * 1000) if arrival_ms is None else arrival_ms, b"{}")
        for k, item in enumerate(items)]
    result = shop.ingestor.run("shardId-000000000000", records, [], int(shop.now * 1000),
                               "arn:aws:kinesis:us-east-1:123456789012:stream/s")
    assert not result.failed_seqs
    return result


def test_events_about_unpublished_items_read_the_membership_at_most_once_a_batch():
    """Records collect would have refused (straight onto the stream, or admitted unverified
    while S3 was unreadable): one conditional read a batch however many items it names; none
    for events that reached the stream before the last read started; while reads fail, no
    more often than the regular refresh."""
    shop = Shop()
    loads = _counting_cache(shop)
    assert _forged(shop, 0, ["ghost-0"]).unlisted == 1
    first = len(loads)
    for n in range(1, 11):
        shop.now += 0.1
        assert _forged(shop, n, [f"ghost-{n}-{k}" for k in range(5)]).unlisted == 5
    assert len(loads) == first + 10  # one a batch, not one an event
    late = _forged(shop, 11, ["ghost-late"], arrival_ms=int(shop.now * 1000) - 2000)  # a retried old batch
    assert late.unlisted == 1 and len(loads) == first + 10  # the last read saw all collect could have

    good = catalogue.artifacts_loader(shop.artifacts)

    def then_down(etag):
        if len(down) > 1:  # the first read worked; S3 is down from then on
            raise ConnectionError("s3 down")
        return good(etag)

    down = _counting_cache(shop, load=then_down)
    for n in range(30):  # 3 s of batches
        shop.now += 0.1
        assert _forged(shop, 100 + n, [f"ghost-down-{n}"]).unlisted == 1  # the last good membership decides
    assert len(down) == 2  # the first read, one that failed; then no more often than get() (every 10 s)
    shop.now += 10
    _forged(shop, 200, ["ghost-later"])
    assert len(down) == 3


def test_every_pass_of_a_run_sees_the_same_listing_so_a_resent_click_counts_once():
    """The attacker review's case: a deciding row fails, the snapshot job publishes the item
    meanwhile, and the run aggregates the rest again. Had the second pass found the item
    published where the first had not, the item would count a click no shopper row holds,
    and the browser's resend of it (same event id) would count again."""
    shop = Shop()
    _counting_cache(shop)
    shop.public([{"type": "view", "item_id": "milk"}], user="alice")  # aggregate's membership, read now
    shop.server([{"type": "catalogue", "item_id": "new-jam", "listed": True}])  # journalled, not yet published

    def record(event_id, kind, item, user):
        shop.seq += 1
        data = json.dumps({"event_id": event_id, "type": kind, "item_id": item, "user_id": user,
                           "ts": int(shop.now * 1000), "route": "public"}).encode()
        return StreamRecord.of(str(shop.seq), parse_event(json.loads(data), anonymous_ok=True),
                               "src:shardId-000000000000", int(shop.now * 1000), data)

    batch = [record("click-1", "click", "new-jam", "alice"), record("v-2", "view", "milk", "bob")]
    real, first = shop.store.put_many, [True]

    def put_many(pairs):  # bob's deciding row is throttled; meanwhile new-jam is published
        if not first[0]:
            return real(pairs)
        first[0] = False
        snapshot_job.publish(shop.store, shop.artifacts, shop.clock)
        shop.now += 1.5
        failing = [p for p in pairs if batch[1].seq in p[1].seqs]
        return real([p for p in pairs if p not in failing]) + [(p[1], RuntimeError("throttled")) for p in failing]

    shop.store.put_many = put_many
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    shop.ingestor.run("shardId-000000000000", batch, [], int(shop.now * 1000), arn)
    shop.store.put_many = real
    shop.now += 1
    shop.ingestor.run("shardId-000000000000", [batch[1]], [], int(shop.now * 1000), arn)  # Lambda's retry
    shop.ingestor.run("shardId-000000000000", [record("click-1", "click", "new-jam", "alice")], [],
                      int(shop.now * 1000), arn)  # the browser resends it
    key = keys.item_key("new-jam", "shardId-000000000000")
    stored = shop.store.get_many("items", [key]).get(key)
    assert (entities.ItemRow.from_obj(stored.row).totals[1] if stored else 0) == 1  # once: neither lost nor twice
