"""The shopper row remembers what the shopper buys: decayed purchase weights per order, the
eviction that keeps the strongest items and the current session, and the order-cycle
features ranking computes from it."""

import math

import numpy as np
import pytest

from personalize.ingest import entities
from personalize.ingest.events import parse_event
from personalize.serving import ranking, snapshots

DAY = entities.DAY_MS
T0 = 1_790_000_000_000
LAM = entities.PURCHASE_DECAY


def buy(row, items, ts, kind="purchase"):
    for k, item in enumerate(items):
        event = parse_event({"event_id": f"{kind}-{item}-{ts}", "type": kind, "user_id": "u", "item_id": item,
                             "ts": ts + k})
        entities.apply_user_event(row, event, entities.id_hash(event.event_id))


def order(row, items, ts):
    buy(row, items, ts, "add_to_cart")
    buy(row, items, ts + 60_000)


def test_decayed_weight_counts_each_order_once_and_decays_per_order():
    row = entities.UserRow()
    order(row, ["milk", "bread", "milk"], T0)          # milk twice in one order: one order
    order(row, ["milk"], T0 + 7 * DAY)
    order(row, ["eggs"], T0 + 14 * DAY)
    order(row, ["eggs"], T0 + 21 * DAY)
    assert row.order_count == 4
    assert row.decayed(row.items["milk"]) == pytest.approx(LAM ** 3 + LAM ** 2, abs=2e-3)
    assert row.decayed(row.items["eggs"]) == pytest.approx(LAM + 1, abs=2e-3)
    assert row.items["milk"][entities.I_ORDERS] == 2
    assert row.items["milk"][entities.I_PURCHASES] == 3
    assert row.orders[entities.O_BASKET_ITEMS] == 2 + 1 + 1 + 1


def test_a_full_row_keeps_the_staples_and_the_new_session():
    row = entities.UserRow()
    staples = [f"staple-{i}" for i in range(10)]
    for n in range(8):  # each order: the staples and 30 things bought once (240 distinct items)
        order(row, staples + [f"once-{n}-{i}" for i in range(30)], T0 + n * 7 * DAY)
    assert len(row.items) == entities.USER_ITEMS
    assert set(staples) <= set(row.items)
    # A new session carts 12 new things: none evicts another before checkout.
    fresh = [f"new-{i}" for i in range(12)]
    buy(row, fresh, T0 + 60 * DAY, "add_to_cart")
    assert set(fresh) <= set(row.items) and set(staples) <= set(row.items)
    buy(row, fresh, T0 + 60 * DAY + 60_000)
    assert set(fresh) <= set(row.items) and set(staples) <= set(row.items)
    assert len(row.items) == entities.USER_ITEMS


def test_rows_written_before_the_order_stats_still_load():
    old = {"t": {}, "a": {}, "i": {"x": [1, 0, 0, 2, T0]}, "r": [], "n": [1, 0, 0, 2], "l": T0}
    row = entities.UserRow.from_obj(old)
    assert row.items["x"][entities.I_LAST_ORDER] == 0 and row.order_count == 0
    order(row, ["x"], T0 + DAY)
    assert row.decayed(row.items["x"]) == pytest.approx(1.0)


def test_reorders_are_purchases_of_items_bought_in_an_earlier_order():
    row = entities.UserRow()
    order(row, ["milk"], T0)
    again = parse_event({"event_id": "p2", "type": "purchase", "user_id": "u", "item_id": "milk", "ts": T0 + DAY})
    first = parse_event({"event_id": "p3", "type": "purchase", "user_id": "u", "item_id": "tea", "ts": T0 + DAY})
    assert entities.is_reorder(row, again) and not entities.is_reorder(row, first)
    entities.apply_user_event(row, again, 1)
    entities.apply_user_event(row, first, 2)
    assert entities.is_reorder(row, again) and not entities.is_reorder(row, first)  # same answer once applied


def test_ranking_features_follow_the_shoppers_own_cycle():
    row = entities.UserRow()
    for n in range(4):  # coffee every 10 days, bread in the first order only
        order(row, ["coffee"] + (["bread"] if n == 0 else []), T0 + n * 10 * DAY)
    snap = snapshots.build({}, T0, "t")
    snap = snapshots.ItemSnapshot("t", T0, ["bread", "coffee", "tea"], np.zeros((3, len(snapshots.ITEM_COLUMNS)),
                                  dtype=np.float32), np.ones(3, bool), np.array([2], np.int32),
                                  np.zeros(0, np.int32), {}, {}, np.zeros(4, np.int32), np.zeros(0, np.int32),
                                  np.zeros(0, np.float32))
    now = T0 + 50 * DAY  # 20 days after the last coffee: twice its cycle
    cands = ranking.candidates(snap, row, now_ms=now)
    X = ranking.feature_matrix(snap, row, cands, now)
    at = {snap.items[c]: X[p] for p, c in enumerate(cands)}
    f = ranking.INDEX
    assert at["coffee"][f["ui_cycle_log"]] == pytest.approx(math.log1p(2.0), abs=0.01)
    assert at["coffee"][f["ui_basket_rate"]] == pytest.approx(1.0)
    assert at["bread"][f["ui_basket_rate"]] == pytest.approx(0.25)
    assert at["bread"][f["ui_orders_since_log"]] == pytest.approx(math.log1p(3))
    assert at["coffee"][f["ui_decayed"]] > at["bread"][f["ui_decayed"]] > 0
    assert at["tea"][f["ui_decayed"]] == 0 and at["tea"][f["ui_cycle_log"]] == -1
    assert at["coffee"][f["user_orders_log"]] == pytest.approx(math.log1p(4))
    assert at["coffee"][f["user_basket_log"]] == pytest.approx(math.log1p(5 / 4))
    # 20 days since the last order, every 10 days on average.
    assert at["coffee"][f["user_order_cycle_log"]] == pytest.approx(math.log1p(2.0), abs=0.01)
    assert list(cands[:2]) == [snap.index["coffee"], snap.index["bread"]]  # strongest own items first


def test_session_features_mark_what_the_shopper_touched_this_hour():
    row = entities.UserRow()
    order(row, ["coffee"], T0)
    buy(row, ["tea"], T0 + 3 * DAY, "add_to_cart")
    items = ["coffee", "milk", "tea"]
    offsets = np.array([0, 0, 1, 2], np.int32)  # tea's neighbour: milk, and back
    snap = snapshots.ItemSnapshot("t", T0, items, np.zeros((3, len(snapshots.ITEM_COLUMNS)), dtype=np.float32),
                                  np.ones(3, bool), np.array([0], np.int32), np.zeros(0, np.int32), {}, {},
                                  offsets, np.array([2, 1], np.int32), np.array([3.0, 3.0], np.float32))
    cands = np.arange(3, dtype=np.int32)
    X = ranking.feature_matrix(snap, row, cands, T0 + 3 * DAY + 60_000)
    f = ranking.INDEX
    assert X[:, f["ui_in_session"]].tolist() == [0, 0, 1]
    assert X[1, f["session_covisit_log"]] == pytest.approx(math.log1p(3.0))
    assert X[:, f["session_items_log"]].tolist() == pytest.approx([math.log1p(1)] * 3)
    later = ranking.feature_matrix(snap, row, cands, T0 + 4 * DAY)  # the session is over
    assert later[:, f["ui_in_session"]].sum() == 0 and later[1, f["session_covisit_log"]] == 0


def test_the_cart_is_what_was_added_this_session_and_not_bought_since():
    row = entities.UserRow()
    order(row, ["milk", "bread"], T0)                     # added, then bought: not in the cart
    buy(row, ["milk", "eggs"], T0 + 7 * DAY, "add_to_cart")
    now = T0 + 7 * DAY + 60_000
    in_cart = {i for i, s in row.items.items() if entities.in_cart(s, now)}
    assert in_cart == {"milk", "eggs"}
    assert not any(entities.in_cart(s, now + entities.SESSION_MS + 60_000) for s in row.items.values())  # abandoned
    buy(row, ["eggs"], now)
    assert {i for i, s in row.items.items() if entities.in_cart(s, now + 1000)} == {"milk"}
    # Serving and the replay rank the rest: the cart's items are not candidates.
    snap = snapshots.ItemSnapshot("t", T0, ["bread", "eggs", "milk"], np.zeros((3, len(snapshots.ITEM_COLUMNS)),
                                  dtype=np.float32), np.ones(3, bool), np.array([0, 1, 2], np.int32),
                                  np.zeros(0, np.int32), {}, {}, np.zeros(4, np.int32), np.zeros(0, np.int32),
                                  np.zeros(0, np.float32))
    cands = ranking.candidates(snap, row, now_ms=now + 1000)
    assert sorted(snap.items[c] for c in cands) == ["bread", "eggs"]
    assert sorted(snap.items[c] for c in ranking.candidates(snap, None, now_ms=now + 1000)) == ["bread", "eggs", "milk"]


def test_rows_written_before_the_cart_time_existed_still_load():
    old = {"t": {}, "a": {}, "i": {"x": [0, 0, 1, 1, T0, 1000, 1, 1, T0 // 1000, 0, 1]}, "r": [], "n": [0, 0, 1, 1],
           "l": T0, "o": [1, 1, T0, T0, T0, 0]}
    row = entities.UserRow.from_obj(old)
    assert len(row.items["x"]) == len(entities.ITEM_STATS) and not entities.in_cart(row.items["x"], T0 + 1000)


def test_the_open_cart_survives_later_events_and_the_store():
    from personalize.adapters.rowstore import pack, unpack

    row = entities.UserRow()
    buy(row, ["tea"], T0, "add_to_cart")
    buy(row, ["tea"], T0 + 50 * 60_000, "view")           # a look 50 minutes later: the cart is from T0
    stored = entities.UserRow.from_obj(unpack(pack(row.to_obj())))
    assert entities.cart_time_s(stored.items["tea"]) == T0 // 1000
    assert entities.in_cart(stored.items["tea"], T0 + 59 * 60_000)
    assert not entities.in_cart(stored.items["tea"], T0 + 61 * 60_000)  # the session is over
