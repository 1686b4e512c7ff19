"""Training-serving parity: features computed offline by the training replay equal, value
for value, the online features after the same events go through POST /events, Kinesis and
functions/aggregate under moto: before orders and in the middle of one (the session
features, and the cart taken out of the candidates), with every candidate source serving
uses (own items, co-visits, the request's context item, the country pools)."""

import numpy as np
import pytest

from models.instacart import load_orders, order_events
from models.replay import Replayer
from personalize import keys
from personalize.adapters.userstore import DynamoUserStore
from personalize.ingest import entities
from personalize.serving import features, ranking
from personalize.settings import FEATURES_TABLE

USERS = ("ic1", "ic7", "ic13")


@pytest.fixture(scope="module")
def orders():
    return [o for o in load_orders() if o.user_id in USERS]


def online_items(pipeline, now_ms):
    store = pipeline.rows
    by_item: dict[str, list] = {}
    for (pk, _), stored in store.scan_prefix("items", "i#"):
        by_item.setdefault(keys.item_id_of(pk), []).append(entities.ItemRow.from_obj(stored.row))
    return {item: entities.merge_item_rows(rows, now_ms) for item, rows in by_item.items()}


COUNTRY = "FR"


def check(offline, online_users, t, context_item=None, cart=()) -> int:
    checked = 0
    for user_id in USERS:
        off, on = offline.user_row(user_id), online_users.get(user_id)
        assert (off is None) == (on is None)
        if off is None:
            continue
        assert features.user_features(on, t) == features.user_features(off, t)
        snap = offline.build_snapshot(t)
        cands = ranking.candidates(snap, off, COUNTRY, context_item, now_ms=t)
        np.testing.assert_array_equal(ranking.candidates(snap, on, COUNTRY, context_item, now_ms=t), cands)
        if cart and user_id == cart[0]:  # the shopper mid-order: what is in their cart is not a candidate
            assert {snap.items[c] for c in ranking.cart_indexes(snap, on, t)} == set(cart[1])
            assert not {snap.items[c] for c in cands} & set(cart[1])
        np.testing.assert_allclose(ranking.feature_matrix(snap, on, cands, t, context_item),
                                   ranking.feature_matrix(snap, off, cands, t, context_item), rtol=1e-6)
        checked += 1
    return checked


def test_replay_and_aggregate_compute_the_same_features(pipeline, stack, orders):
    offline = Replayer()
    ingestor = pipeline.aggregate.processor.ingestor
    # The sample is dated 2026-01: its rows' TTL has passed by the wall clock, so every
    # reader here runs on the replay's clock, as the aggregate function does.
    clock = {"now_s": 0.0}
    online_users = DynamoUserStore(stack.names[FEATURES_TABLE.logical_id], entities.UserRow.from_obj,
                                   clock=lambda: clock["now_s"])
    ingestor.store.clock = lambda: clock["now_s"]
    ingestor.clock = lambda: clock["now_s"]  # and judges arrival (lateness, bounds) by it
    pipeline.collect.collector.clock = lambda: clock["now_s"]  # the backend sends each order as it happens
    checked = sessions = 0
    for n, order in enumerate(orders):
        if n % 7 == 3:  # a sample of times: just before some of the orders
            checked += check(offline, online_users, order.placed_ms - 1)
        events = [{**e, "country": COUNTRY} for e in order_events(order)]
        cut = len(order.products) // 2 if n % 5 == 2 and len(order.products) >= 4 else 0
        parts = [events[:cut], events[cut:]] if cut else [events]
        for k, part in enumerate(parts):
            clock["now_s"] = part[-1]["ts"] / 1000
            status, answer = pipeline.post({"events": part})
            assert (status, answer["accepted"]) == (202, len(part))
            clock["now_s"] = part[-1]["ts"] / 1000
            ingestor.clock = lambda: clock["now_s"]  # aggregate runs as the order happens
            pipeline.drain()
            offline.apply(part, part[-1]["ts"])
            if k == 0 and cut:
                # Mid-order: half of the cart is in, a product page asks with the last item.
                sessions += check(offline, online_users, part[-1]["ts"] + 1, order.products[cut - 1],
                                  (order.user_id, order.products[:cut]))
    assert checked >= 10 and sessions >= 5
    t = orders[-1].checkout_ms + 1
    on_items, off_items = online_items(pipeline, t), {
        keys.item_id_of(pk): entities.merge_item_rows([entities.ItemRow.from_obj(s.row)], t)
        for (pk, _), s in offline.rows["items"].items() if pk.startswith("i#")}
    assert set(on_items) == set(off_items)
    assert sum(v.reorders for v in off_items.values()) > 0
    for item, view in off_items.items():
        assert on_items[item].totals == view.totals
        assert on_items[item].reorders == view.reorders
        assert on_items[item].popularity == pytest.approx(view.popularity, rel=1e-9)
        assert on_items[item].neighbours == pytest.approx(view.neighbours, rel=1e-9)
