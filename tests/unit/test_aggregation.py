"""The batch algorithm with the in-memory store: counts, replays, duplicates, late events."""

import pytest

from personalize import keys
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import MemoryRowStore
from personalize.ingest import entities
from personalize.ingest.aggregation import ITEMS, USERS, StreamRecord
from personalize.ingest.events import parse_event
from personalize.ingest.pipeline import Ingestor
from personalize.serving import features

T0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
SHARD = "shardId-000000000000"


NOW = T0 + 30_000


class Stream:
    """Hands out increasing sequence numbers, as a shard does; records arrive at ``NOW``
    unless told otherwise."""

    def __init__(self):
        self.seq = 10**20

    def records(self, *events, arrival_ms=NOW):
        out = []
        for e in events:
            self.seq += 1
            out.append(StreamRecord.of(str(self.seq), parse_event(e, anonymous_ok=True), SHARD, arrival_ms))
        return out


def ev(n, kind="view", user="u1", item="i1", ts=T0, **extra):
    return {"event_id": f"e{n}", "type": kind, "user_id": user, "item_id": item, "ts": ts, **extra}


@pytest.fixture
def store():
    return MemoryRowStore(clock=lambda: NOW / 1000)  # the ingestor's clock: TTLs as it sets them


@pytest.fixture
def ingestor(store):
    return Ingestor(store, MemoryQuarantine(), clock=lambda: (T0 + 30_000) / 1000)


def user(store, user_id="u1"):
    stored = store.get(USERS, keys.user_key(user_id))
    return entities.UserRow.from_obj(stored.row)


def item(store, item_id="i1"):
    rows = store.query(ITEMS, f"i#{item_id}")
    return entities.merge_item_rows([entities.ItemRow.from_obj(r.row) for r in rows], T0 + 30_000)


def run(ingestor, records):
    return ingestor.run(SHARD, records, [], T0 + 30_000)


def test_counts_land_on_shopper_and_item(ingestor, store):
    stream = Stream()
    run(ingestor, stream.records(ev(1), ev(2, "click"), ev(3, "add_to_cart", quantity=2), ev(4, "view", user="u2")))
    f = features.user_features(user(store), T0 + 30_000)
    assert (f["views_1m"], f["clicks_10m"], f["add_to_carts_1h"]) == (1, 1, 2)
    # Shared scores count shoppers (issue 19): u1's two units in the cart are one shopper's.
    assert item(store).totals == [2, 1, 1, 0]


def test_a_batch_delivered_twice_counts_once(ingestor, store):
    batch = Stream().records(*(ev(n, "view" if n % 3 else "click", item=f"i{n % 4}") for n in range(30)))
    run(ingestor, batch)
    before = (user(store).to_obj(), item(store, "i1"))
    writes = store.writes
    result = run(ingestor, batch)
    assert (user(store).to_obj(), item(store, "i1")) == before
    assert result.already_applied == 30
    assert store.writes == writes, "a fully applied batch needs no write"


def test_retry_after_partial_write_applies_the_rest_once(ingestor, store, monkeypatch):
    batch = Stream().records(ev(1), ev(2, "click"), ev(3, item="i2"))
    real_put = store.put
    failing = {keys.item_key("i1", SHARD)}

    def flaky_put(table, change, expires_at):
        if change.key in failing:
            from personalize.adapters.rowstore import ThrottledError
            raise ThrottledError("throttled")
        real_put(table, change, expires_at)

    monkeypatch.setattr(store, "put", flaky_put)
    first = run(ingestor, batch)
    assert first.failed_seqs == {batch[0].seq, batch[1].seq}
    failing.clear()
    # Lambda retries from the lowest failed sequence number: here the whole batch.
    run(ingestor, batch)
    assert user(store).totals == [2, 1, 0, 0]
    assert item(store, "i1").totals == [1, 1, 0, 0]
    assert item(store, "i2").totals == [1, 0, 0, 0]


def test_a_resent_event_id_is_ignored(ingestor, store):
    stream = Stream()
    run(ingestor, stream.records(ev(1, "purchase", price=3.0)))
    result = run(ingestor, stream.records(ev(1, "purchase", price=3.0), ev(2, "view")))
    assert result.duplicates == 1
    assert user(store).totals == [1, 0, 0, 1]
    assert item(store).totals == [1, 0, 0, 1]


def test_late_events_miss_only_the_windows(ingestor, store):
    """Issue 10 #3: an event over an hour old used to vanish from totals, stock, co-visits
    and experiment counters too."""
    late = T0 - 61 * 60_000
    rec = "exp1~abc"
    result = run(ingestor, Stream().records(
        ev(1, item="a", ts=late - 60_000), ev(2, "purchase", item="b", ts=late, quantity=3, price=2.0,
                                              rec_id=rec, variant="champion"),
        {"event_id": "s1", "type": "stock", "item_id": "b", "ts": late, "stock": 0}, ev(3)))
    assert result.late == 3
    f = features.user_features(user(store), NOW)
    assert (f["views_1h"], f["purchases_1h"]) == (1, 0), "windows hold only the recent view"
    assert user(store).totals == [2, 0, 0, 3]
    assert item(store, "b").totals == [0, 0, 0, 1] and item(store, "b").stock == 0  # one shopper bought
    assert set(item(store, "b").neighbours) == {"a"}
    row = entities.VariantRow.from_obj(store.query(ITEMS, keys.variant_pk("exp1", "champion"))[0].row)
    # The shopper counts as exposed and as a buyer (issue 19: the unit is the shopper); revenue is
    # the purchase's.
    assert (row.counts, row.revenue) == ([1, 0, 0, 1], 6.0)


def test_lateness_is_judged_by_arrival_not_by_processing_time(ingestor, store):
    """A backlog processed two hours late: events that arrived on time are not late."""
    stream = Stream()
    records = stream.records(ev(1, ts=T0 - 2 * 3_600_000), arrival_ms=T0 - 2 * 3_600_000 + 1000)
    result = run(ingestor, records)
    assert result.late == 0 and user(store).totals == [1, 0, 0, 0]


def test_out_of_order_events_land_in_their_own_minute(ingestor, store):
    run(ingestor, Stream().records(ev(1, ts=T0), ev(2, "click", ts=T0 - 5 * 60_000)))
    f = features.user_features(user(store), T0 + 30_000)
    assert (f["clicks_1m"], f["clicks_10m"], f["views_1m"]) == (0, 1, 1)
    assert [i for i, _, _ in user(store).recent] == ["i1", "i1"]


def test_click_rate_10m_matches_a_hand_computation(ingestor, store):
    # 8 views and 3 clicks in the last 10 minutes; 5 views and 4 clicks before that.
    events, n = [], 0
    for minutes_ago, kind in [(0, "view")] * 3 + [(4, "view")] * 5 + [(9, "click")] * 3 + \
            [(12, "view")] * 5 + [(30, "click")] * 4:
        n += 1
        events.append(ev(n, kind, item=f"i{n}", ts=T0 - minutes_ago * 60_000))
    run(ingestor, Stream().records(*events))
    f = features.user_features(user(store), T0 + 30_000)
    assert f["click_rate_10m"] == pytest.approx(3 / 8)
    assert (f["views_1h"], f["clicks_1h"]) == (13, 7)


def test_click_rate_is_zero_without_views(ingestor, store):
    run(ingestor, Stream().records(ev(1, "click")))
    assert features.user_features(user(store), T0 + 30_000)["click_rate_10m"] == 0.0


def test_covisits_link_items_touched_together_and_survive_replay(ingestor, store):
    batch = Stream().records(ev(1, item="a", ts=T0 - 120_000), ev(2, item="b", ts=T0 - 60_000),
                             ev(3, item="c", ts=T0), ev(4, item="z", user="u2", ts=T0))
    run(ingestor, batch)
    first = item(store, "c").neighbours
    assert set(first) == {"a", "b"}
    run(ingestor, batch)
    assert item(store, "c").neighbours == first
    assert item(store, "z").neighbours == {}


def test_stock_is_the_newest_level_whatever_the_arrival_order(ingestor, store):
    stock = [{"event_id": f"s{n}", "type": "stock", "item_id": "i1", "ts": T0 + n, "stock": level}
             for n, level in [(2, 0), (1, 7)]]
    run(ingestor, Stream().records(*stock))
    assert item(store).stock == 0


def test_variant_counters_are_attributed_through_rec_id(ingestor, store):
    rec = "exp1~abc"
    run(ingestor, Stream().records(
        {"event_id": "m1", "type": "impression", "user_id": "u1", "items": ["i1", "i2"], "ts": T0,
         "rec_id": rec, "variant": "challenger"},
        ev(2, "click", rec_id=rec, variant="challenger"),
        ev(3, "purchase", price=10.0, quantity=2, rec_id=rec, variant="challenger")))
    rows = store.query(ITEMS, keys.variant_pk("exp1", "challenger"))
    row = entities.VariantRow.from_obj(rows[0].row)
    assert row.counts == [1, 1, 0, 1]
    assert row.revenue == 20.0


def test_serving_row_of_a_heavy_shopper_fits_one_4_kb_read_unit(ingestor, store):
    events = [ev(n, ["view", "click", "add_to_cart", "purchase"][n % 4], item=f"item-{n:06d}",
                 ts=T0 - (n % 60) * 60_000, category=f"cat-{n % 30}") for n in range(2000)]
    run(ingestor, Stream().records(*events))
    from personalize.adapters.rowstore import pack
    row = user(store)
    assert len(row.items) == entities.USER_ITEMS
    assert len(pack(row.to_obj())) < 4096


def test_synthetic_traffic_moves_its_own_row_and_no_shared_figure(ingestor, store):
    """make smoke's shopper and test item (keys.SYNTHETIC_PREFIX): the shopper's row counts
    them (the smoke check reads it back), no item, co-visit or experiment figure does."""
    shopper, item_id = keys.SYNTHETIC_PREFIX + "shopper", keys.SYNTHETIC_PREFIX + "item"
    stream = Stream()
    run(ingestor, stream.records(
        ev(1, "view", user=shopper, item="real-1"), ev(2, "click", user=shopper, item=item_id, ts=T0 + 1),
        ev(3, "view", user="u9", item=item_id, ts=T0 + 2), ev(4, "view", user="u9", item="real-2", ts=T0 + 3)))
    assert user(store, shopper).totals != [0, 0, 0, 0]  # its own row: the freshness check reads it
    assert store.query(ITEMS, f"i#{item_id}") == []
    assert item(store, "real-1").totals == [0, 0, 0, 0] or not store.query(ITEMS, "i#real-1")
    real_2 = item(store, "real-2")  # a real shopper's view counts, without a link to the test item
    assert real_2.totals[0] == 1
    assert item_id not in str([r.row for r in store.query(ITEMS, "i#real-2")])  # no co-visit link
