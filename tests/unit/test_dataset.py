"""The point-in-time dataset's protocol (models.dataset): per-shopper windows, item features
from returning shoppers' training orders only, new shoppers held out entirely, nothing from
after a decision, and a test split that only the ledger opens (once per candidate)."""

import math

import numpy as np
import pytest

from models import dataset as ds
from models.instacart import load_orders, order_events
from models.ledger import AlreadyReadError, TestLedger
from models.replay import Replayer
from personalize.ingest.aggregation import ITEMS
from personalize.serving import ranking

USERS = 30


@pytest.fixture(scope="module")
def built():
    return ds.InstacartBuilder(users=USERS, parallel=False, progress=False).build()


@pytest.fixture(scope="module")
def orders():
    return ds.InstacartBuilder(users=USERS).orders()


def test_each_shopper_is_tested_on_their_last_order_and_validated_on_the_one_before(built, orders):
    last = {}
    for o in orders:
        last.setdefault(o.user_id, []).append(o.number)
    test = built._unsealed("test")
    val = built.split("validation")
    assert sorted(test.user) == sorted(last) == sorted(val.user)
    for user, number in zip(test.user, test.order_number):
        assert number == max(last[user])
    for user, number in zip(val.user, val.order_number):
        assert number == sorted(last[user])[-2]
    train = built.split("train")
    for user, number in zip(train.user, train.order_number):
        assert 2 <= number <= sorted(last[user])[-3]


def test_about_a_fifth_of_the_shoppers_are_new_and_none_of_their_orders_trains(built):
    users = {b.user for b in built.baskets}
    new = {b.user for b in built.baskets if b.cohort == "new"}
    assert len(new) == round(len(users) * ds.NEW_SHOPPER_SHARE)
    for kind in ("order", "session"):
        assert not set(built.split("train", kind).user) & new
    assert set(built.split("validation", cohort="new").user) == new
    assert {b.split for b in built.baskets if b.user in new} == {"history", "validation", "test"}


def test_new_shoppers_are_chosen_by_a_keyed_hash_stable_when_shoppers_are_added():
    users = [f"ic{i}" for i in range(1, 101)]
    few = ds.new_shoppers(users[:50], 0.2, 1)
    many = ds.new_shoppers(users, 0.2, 1)
    assert len(few & many) >= 6 and ds.new_shoppers(list(reversed(users)), 0.2, 1) == many
    assert ds.new_shoppers(users, 0.2, 2) != many


def test_item_rows_count_only_returning_shoppers_training_orders(orders):
    """The replay with the protocol's feeds: the item rows' purchase totals are exactly the
    training orders' purchases; a validation or test basket adds nothing shared."""
    users = sorted({o.user_id for o in orders})
    new = ds.new_shoppers(users, ds.NEW_SHOPPER_SHARE, ds.SEED)
    splits = ds.protocol_splits(orders, new)
    feeds = {o.order_id for o in orders if splits[o.order_id] == "train"}
    replayer = Replayer()
    from models.replay import _commands

    for _ in _commands(orders, False, replayer, False, splits, feeds, 10**9):
        pass
    # One shopper's worth (credits): a product counts once per shopper per credit window.
    from personalize.ingest.entities.credits import window_of
    purchases = len({(o.user_id, p, window_of(o.placed_ms)) for o in orders if o.order_id in feeds
                     for p in o.products})
    held_out = sum(len(o.products) for o in orders if o.order_id not in feeds)
    from personalize.ingest import entities

    totals = sum(entities.ItemRow.from_obj(s.row).totals[3] for (pk, _), s in replayer.rows[ITEMS].items()
                 if pk.startswith("i#"))
    assert held_out > 0 and totals == purchases
    # ... while every shopper's own row holds all of their orders (their history)
    for user in users:
        row = replayer.user_row(user)
        assert row.totals[3] == sum(len(o.products) for o in orders if o.user_id == user)


def test_a_decision_sees_only_what_came_before_it(built):
    """Before order n the shopper's row holds at most n - 1 orders (two on one day count as
    one); the items still to buy are the order's own; an item bought for the first time in
    this order has no purchase history."""
    val = built.split("validation")
    orders_col = ranking.INDEX["user_orders_log"]
    bought_col = ranking.INDEX["ui_purchases_log"]
    history = {}
    for b in built.baskets:
        history.setdefault(b.user, {})[b.number] = set(b.products.tolist())
    checked = 0
    for g in range(len(val)):
        X = val.X[val.rows(g)]
        n = int(val.order_number[g])
        assert np.all(X[:, orders_col] <= math.log1p(n - 1) + 1e-6) and X[0, orders_col] > 0
        before = set().union(*(history[val.user[g]][k] for k in range(1, n)))
        truth = set(val.truth_of(g).tolist())
        assert truth == history[val.user[g]][n]
        items = val.items[val.rows(g)]
        for item, bought in zip(items.tolist(), X[:, bought_col]):
            if item not in before:
                assert bought == 0
                checked += 1
    assert checked > 100


def test_the_test_split_is_sealed_and_read_once_per_candidate(built, tmp_path):
    with pytest.raises(ds.SealedError):
        built.split("test")
    ledger = TestLedger(tmp_path / "reads.jsonl")
    window = ledger.read(built, "ranker-x/v9", "abc")
    assert len(window["order"]) == USERS
    with pytest.raises(AlreadyReadError):
        ledger.read(built, "ranker-x/v9", "abc")
    ledger.read(built, "ranker-x/v9", "def")  # another candidate (new content) reads once too
    ledger.read(built, "ranker-x/v9", "abc", reason="the evaluator had a bug")
    entries = ledger.entries()
    assert [e["digest"] for e in entries] == ["abc", "def", "abc"]
    assert entries[-1]["reread_reason"] == "the evaluator had a bug" and entries[0]["dataset"] == built.id


def test_a_dataset_survives_its_files_and_is_reused_only_with_the_same_id(built, tmp_path):
    built.save(tmp_path)
    again = ds.Dataset.load(tmp_path)
    assert again.id == built.id and again.items == built.items and len(again.baskets) == len(built.baskets)
    for key, g in built.groups.items():
        h = again.groups[key]
        for name, value in g.arrays().items():
            np.testing.assert_array_equal(getattr(h, name), value)
    other = ds.InstacartBuilder(users=USERS, new_share=0.3)
    assert other.id() != ds.InstacartBuilder(users=USERS).id()


def test_catalogue_items_are_candidates_without_statistics(built):
    """Every product is listed before the first order, so an item bought only in held-out
    orders can be ranked (as in the shop), with zero item purchases."""
    train_items = {p for b in built.baskets if b.split == "train" for p in b.products.tolist()}
    col = ranking.INDEX["item_purchases_log"]
    g = built._unsealed("test")
    outside = [(i, x) for i, x in zip(g.items.tolist(), g.X[:, col]) if i not in train_items]
    assert outside and all(x == 0 for _, x in outside)


def test_order_events_are_the_replay_s_only_input():
    o = load_orders()[0]
    assert {e["type"] for e in order_events(o)} == {"add_to_cart", "purchase"}
