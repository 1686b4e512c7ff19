"""The training replay: the in-session task ranks what is still to be bought, and the
parallel replay (aggregation in one process, snapshots and examples in another) gives the
same examples as the serial one."""

import numpy as np
import pytest

from models.instacart import load_orders
from models.replay import replay

USERS = {"ic1", "ic7", "ic13", "ic21"}


@pytest.fixture(scope="module")
def orders():
    return [o for o in load_orders() if o.user_id in USERS]


@pytest.fixture(scope="module")
def serial(orders):
    return list(replay(orders, 0.05, seed=3, progress=False))


def test_the_parallel_replay_gives_the_same_examples(orders, serial):
    parallel = list(replay(orders, 0.05, seed=3, progress=False, parallel=True))
    assert len(parallel) == len(serial) > 50
    for a, b in zip(serial, parallel):
        assert (a.order.order_id, a.kind, a.split, a.cut, a.n_true) == (b.order.order_id, b.kind, b.split, b.cut,
                                                                         b.n_true)
        np.testing.assert_array_equal(a.candidates, b.candidates)
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.y, b.y)


def test_in_the_session_the_cart_is_not_a_candidate_and_blind_does_not_know_it(serial):
    by = {}
    for ex in serial:
        by.setdefault((ex.order.order_id, ex.kind), ex)
    sessions = [ex for ex in serial if ex.kind == "session"]
    assert sessions and any(ex.split == "train" for ex in sessions)
    blind_knew_nothing = 0
    for ex in sessions:
        cart = set(ex.order.products[:ex.cut])
        named = {ex.snapshot_items[c] for c in ex.candidates}
        assert not cart & named  # ranking.candidates took the cart out, from the shopper's row
        rest = set(ex.order.products[ex.cut:]) - cart
        assert ex.n_true == len(rest) and {ex.snapshot_items[c] for c in ex.candidates[ex.y]} <= rest
        if ex.split == "train":
            continue
        blind, blind_cart = by[(ex.order.order_id, "blind")], by[(ex.order.order_id, "blind_cart")]
        blind_named = {blind.snapshot_items[c] for c in blind.candidates}
        assert not cart & {blind_cart.snapshot_items[c] for c in blind_cart.candidates}
        assert not blind.y[[blind.snapshot_items[c] in cart for c in blind.candidates]].any()  # never the truth
        blind_knew_nothing += bool(cart & blind_named)
    assert blind_knew_nothing > 0  # the shoppers' usual items, already in the cart, are blind's candidates
