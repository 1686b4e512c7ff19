"""The event contract (DESIGN 3.1): validation of one shopper action.

Validation is hand-written rather than schema-driven because it sits on the ingest hot
path (tens of thousands of events per second per core); tests pin every rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "stock", "impression")
# Events that count as an interaction with an item, in the order of the measures kept in
# every tile: views, clicks, add-to-carts, purchases.
MEASURES = ("views", "clicks", "add_to_carts", "purchases")
MEASURE_INDEX = {"view": 0, "click": 1, "add_to_cart": 2, "purchase": 3}

MAX_ID_CHARS = 128
MAX_EVENT_ID_CHARS = 64
MAX_TAG_CHARS = 128
MAX_IMPRESSION_ITEMS = 100
# Event times before 2000-01-01 are almost always seconds sent where milliseconds belong.
MIN_TS_MS = 946_684_800_000
# Clocks drift; an event further ahead of the receiver's clock than this is rejected.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000


class EventError(ValueError):
    """An event that breaks the contract; the message says which rule."""


@dataclass(slots=True)
class Event:
    event_id: str
    type: str
    ts: int
    user_id: str | None = None
    item_id: str | None = None
    category: str | None = None
    country: str | None = None
    price: float | None = None
    quantity: int = 1
    stock: int | None = None
    rec_id: str | None = None
    variant: str | None = None
    items: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """The contract form, without fields that are unset."""
        out = {"event_id": self.event_id, "type": self.type, "ts": self.ts}
        for name in ("user_id", "item_id", "category", "country", "price", "stock", "rec_id", "variant"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.quantity != 1:
            out["quantity"] = self.quantity
        if self.items:
            out["items"] = list(self.items)
        return out


def _string(obj: dict, name: str, max_chars: int, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise EventError(f"{name} is required")
        return None
    if type(value) is not str:
        raise EventError(f"{name} must be a string")
    if not 0 < len(value) <= max_chars:
        raise EventError(f"{name} must be 1-{max_chars} characters")
    return value


def _integer(obj: dict, name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    # bool is an int subclass; JSON true is not a number here.
    if type(value) is not int:
        if type(value) is float and value.is_integer():
            return int(value)
        raise EventError(f"{name} must be an integer")
    return value


def parse_event(obj: object, now_ms: int | None = None) -> Event:
    """Validate a decoded JSON value against the contract and return the event.

    ``now_ms`` is the receiver's clock; when given, events dated further in the future
    than ``MAX_FUTURE_SKEW_MS`` are rejected. Unknown fields are ignored.
    """
    if type(obj) is not dict:
        raise EventError("event must be a JSON object")
    event_id = _string(obj, "event_id", MAX_EVENT_ID_CHARS, True)
    kind = obj.get("type")
    if kind not in MEASURE_INDEX and kind not in ("stock", "impression"):
        raise EventError(f"type must be one of {', '.join(EVENT_TYPES)}")
    ts = _integer(obj, "ts")
    if ts is None:
        raise EventError("ts is required")
    if ts < MIN_TS_MS:
        raise EventError("ts must be epoch milliseconds (after 2000-01-01)")
    if now_ms is not None and ts > now_ms + MAX_FUTURE_SKEW_MS:
        raise EventError("ts is more than 5 minutes in the future")
    user_id = _string(obj, "user_id", MAX_ID_CHARS, kind != "stock")
    item_id = _string(obj, "item_id", MAX_ID_CHARS, kind != "impression")
    event = Event(event_id, kind, ts, user_id, item_id)

    if "category" in obj:
        event.category = _string(obj, "category", MAX_TAG_CHARS, False)
    country = obj.get("country")
    if country is not None:
        if type(country) is not str or len(country) != 2 or not country.isascii() or not country.isalpha():
            raise EventError("country must be an ISO 3166 alpha-2 code")
        event.country = country.upper()
    price = obj.get("price")
    if price is not None:
        if type(price) not in (int, float) or not math.isfinite(price) or price < 0:
            raise EventError("price must be a number >= 0")
        event.price = float(price)
    quantity = _integer(obj, "quantity")
    if quantity is not None:
        if quantity < 1:
            raise EventError("quantity must be an integer >= 1")
        event.quantity = quantity
    stock = _integer(obj, "stock")
    if kind == "stock":
        if stock is None:
            raise EventError("stock is required for stock events")
        if stock < 0:
            raise EventError("stock must be an integer >= 0")
        event.stock = stock
    if "rec_id" in obj:
        event.rec_id = _string(obj, "rec_id", MAX_TAG_CHARS, False)
    if "variant" in obj:
        event.variant = _string(obj, "variant", MAX_TAG_CHARS, False)
    if kind == "impression":
        items = obj.get("items")
        if type(items) is not list or not items:
            raise EventError("items must be a non-empty list of item ids for impression events")
        if len(items) > MAX_IMPRESSION_ITEMS:
            raise EventError(f"items holds at most {MAX_IMPRESSION_ITEMS} item ids")
        for item in items:
            if type(item) is not str or not 0 < len(item) <= MAX_ID_CHARS:
                raise EventError(f"items must hold item ids of 1-{MAX_ID_CHARS} characters")
        event.items = tuple(items)
    return event


def partition_key(event: Event) -> str:
    """Kinesis partition key: the shopper, so that one shopper's events stay in order on
    one shard; stock events have no shopper and go by item."""
    return event.item_id if event.type == "stock" else event.user_id  # type: ignore[return-value]
