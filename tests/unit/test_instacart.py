"""The real sample becomes contract events by the documented rule."""

import pytest

from models.instacart import CART_STEP_MS, CHECKOUT_DELAY_MS, DAY_MS, HOUR_MS, START_MS, load_orders, order_events
from personalize.ingest.events import parse_event


@pytest.fixture(scope="module")
def orders():
    return load_orders()


def test_the_sample_is_whole(orders):
    assert len(orders) == 15_183
    assert len({o.user_id for o in orders}) == 593
    assert sum(len(o.products) for o in orders) == 150_000


def test_user_1_first_order_is_the_real_one(orders):
    first = min((o for o in orders if o.user_id == "ic1"), key=lambda o: o.number)
    assert first.order_id == "2539329"
    assert "196" in first.products
    assert first.placed_ms == START_MS + 8 * HOUR_MS  # order_hour_of_day 8, day 0


def test_event_times_follow_the_rule(orders):
    user = sorted((o for o in orders if o.user_id == "ic1"), key=lambda o: o.number)
    assert (user[1].placed_ms - START_MS) // DAY_MS == 15  # days_since_prior_order of order 2
    events = order_events(user[0])
    carts = [e for e in events if e["type"] == "add_to_cart"]
    buys = [e for e in events if e["type"] == "purchase"]
    assert [e["ts"] - user[0].placed_ms for e in carts] == [k * CART_STEP_MS for k in range(len(carts))]
    assert buys[0]["ts"] == carts[-1]["ts"] + CHECKOUT_DELAY_MS
    for e in events:
        parse_event(e)  # every event meets the contract
        assert "category" not in e and "price" not in e  # nothing invented
