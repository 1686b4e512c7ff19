"""Training-serving parity: features computed offline by the training replay equal, value
for value, the online features after the same events go through POST /events, Kinesis and
functions/aggregate under moto."""

import numpy as np
import pytest

from models.instacart import load_orders, order_events
from models.replay import Replayer
from personalize import features, keys, ranking, state
from personalize.adapters.userstore import DynamoUserStore
from personalize.settings import FEATURES_TABLE

USERS = ("ic1", "ic7", "ic13")


@pytest.fixture(scope="module")
def orders():
    return [o for o in load_orders() if o.user_id in USERS]


def online_items(pipeline, now_ms):
    store = pipeline.rows
    by_item: dict[str, list] = {}
    for (pk, _), stored in store.scan_prefix("items", "i#"):
        by_item.setdefault(keys.item_id_of(pk), []).append(state.ItemRow.from_obj(stored.row))
    return {item: state.merge_item_rows(rows, now_ms) for item, rows in by_item.items()}


def test_replay_and_aggregate_compute_the_same_features(pipeline, stack, orders):
    offline = Replayer()
    ingestor = pipeline.aggregate.processor.ingestor
    # The sample is dated 2026-01: its rows' TTL has passed by the wall clock, so every
    # reader here runs on the replay's clock, as the aggregate function does.
    clock = {"now_s": 0.0}
    online_users = DynamoUserStore(stack.names[FEATURES_TABLE.logical_id], clock=lambda: clock["now_s"])
    ingestor.store.clock = lambda: clock["now_s"]
    ingestor.clock = lambda: clock["now_s"]  # and judges arrival (lateness, bounds) by it
    pipeline.collect.collector.clock = lambda: clock["now_s"]  # the backend sends each order as it happens
    checked = 0
    for n, order in enumerate(orders):
        if n % 7 == 3:  # a sample of times: just before some of the orders
            t = order.placed_ms - 1
            for user_id in USERS:
                off, on = offline.user_row(user_id), online_users.get(user_id)
                assert (off is None) == (on is None)
                if off is None:
                    continue
                assert features.user_features(on, t) == features.user_features(off, t)
                snap = offline.build_snapshot(t)
                cands = ranking.candidates(snap, off)
                np.testing.assert_array_equal(ranking.candidates(snap, on), cands)
                np.testing.assert_allclose(ranking.feature_matrix(snap, on, cands, t),
                                           ranking.feature_matrix(snap, off, cands, t), rtol=1e-6)
                checked += 1
        events = order_events(order)
        clock["now_s"] = events[-1]["ts"] / 1000
        status, answer = pipeline.post({"events": events})
        assert (status, answer["accepted"]) == (202, len(events))
        clock["now_s"] = events[-1]["ts"] / 1000
        ingestor.clock = lambda: clock["now_s"]  # aggregate runs as the order happens
        pipeline.drain()
        offline.apply(events, events[-1]["ts"])
    assert checked >= 10
    t = orders[-1].checkout_ms + 1
    on_items, off_items = online_items(pipeline, t), {
        keys.item_id_of(pk): state.merge_item_rows([state.ItemRow.from_obj(s.row)], t)
        for (pk, _), s in offline.rows["items"].items() if pk.startswith("i#")}
    assert set(on_items) == set(off_items)
    for item, view in off_items.items():
        assert on_items[item].totals == view.totals
        assert on_items[item].popularity == pytest.approx(view.popularity, rel=1e-9)
        assert on_items[item].neighbours == pytest.approx(view.neighbours, rel=1e-9)
