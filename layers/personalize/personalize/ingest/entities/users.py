"""A shopper's row: everything ranking needs about the shopper (tiles, category affinity,
the items they touched, their recent items), msgpack, read by serving with one GetItem; and
how one event changes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from personalize.ingest import windows
from personalize.ingest.events import MEASURE_INDEX, MEASURES, Event

from .tuning import (
    AFFINITY_HALF_LIFE_MS,
    COVISIT_WINDOW_MS,
    INTERACTION_WEIGHTS,
    ORDER_GAP_MS,
    PURCHASE_DECAY,
    RECENT_ITEMS,
    RECENT_KEY_MASK,
    SESSION_MS,
    USER_CATEGORIES,
    USER_ITEMS,
)

# Item stats in a shopper's row: a list per item, these positions (compact: the row is read
# on every request and stays under one 4 KB read unit).
I_VIEWS, I_CLICKS, I_CARTS, I_PURCHASES, I_LAST_TS = 0, 1, 2, 3, 4
I_DECAYED = 5        # decayed purchase weight x DECAYED_SCALE (an int), as of order I_LAST_ORDER
I_LAST_ORDER = 6     # the shopper's order count when the item was last bought (0: never)
I_ORDERS = 7         # how many of the shopper's orders held the item
I_LAST_BUY_S = 8     # event time of the last purchase, epoch seconds (0: never)
I_BUY_SPAN_H = 9     # hours from the first purchase to the last
I_FIRST_ORDER = 10   # the shopper's order count when the item was first bought (0: never)
# The item's open add-to-cart (not bought since): seconds from it to the item's last event
# (I_LAST_TS), plus one; 0: none. Relative, so it takes a byte or two (see ``cart_time_s``).
I_CART_AGE_S = 11
ITEM_STATS = (*MEASURES, "last_ts", "decayed_purchases_x1000", "last_order", "orders", "last_purchase_s",
              "purchase_span_h", "first_order", "open_cart_age_s")
DECAYED_SCALE = 1000
# Shopper-level order stats (``UserRow.orders``), these positions.
O_COUNT, O_BASKET_ITEMS, O_FIRST_TS, O_LAST_TS, O_LAST_BUY_TS, O_REORDER_ITEMS = 0, 1, 2, 3, 4, 5


@dataclass(slots=True)
class UserRow:
    """The shopper's serving row.

    ``items``: item -> stats (positions ``I_*``) for at most ``USER_ITEMS`` items: the ones
    with the highest decayed purchase weight, the items of the current session always kept;
    ``recent``: [item, ts, event-id hash] for the last ``RECENT_ITEMS`` interactions in
    event-time order; ``affinity``: category -> [decayed weight, as-of ts]; ``totals``:
    all-time counts per measure; ``last_ts``: newest event; ``orders``: [order count,
    distinct items over all orders, first and last order's time, last purchase time,
    of the distinct items those bought in an earlier order too].
    """

    tiles: dict[int, list[int]] = field(default_factory=dict)
    affinity: dict[str, list] = field(default_factory=dict)
    items: dict[str, list] = field(default_factory=dict)
    recent: list[list] = field(default_factory=list)
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    last_ts: int = 0
    orders: list[int] = field(default_factory=lambda: [0, 0, 0, 0, 0, 0])

    def to_obj(self) -> dict:
        # An item's last stat (the open cart's age) is left out when 0, as most are: the row
        # stays within one 4 KB read unit (``from_obj`` puts the 0 back).
        items = {item: stats if stats[-1] else stats[:-1] for item, stats in self.items.items()}
        return {"t": self.tiles, "a": self.affinity, "i": items, "r": self.recent,
                "n": self.totals, "l": self.last_ts, "o": self.orders}

    @classmethod
    def from_obj(cls, obj: dict | None) -> UserRow:
        if not obj:
            return cls()
        items = obj["i"]
        for stats in items.values():  # rows written before the order stats existed; a closed cart
            if len(stats) < len(ITEM_STATS):
                stats.extend([0] * (len(ITEM_STATS) - len(stats)))
        return cls(obj["t"], obj["a"], items, obj["r"], obj["n"], obj["l"], obj.get("o") or [0, 0, 0, 0, 0, 0])

    @property
    def order_count(self) -> int:
        return self.orders[O_COUNT]

    def decayed(self, stats: list) -> float:
        """The item's decayed purchase weight as of the shopper's latest order."""
        return decayed_weight(stats[I_DECAYED], self.orders[O_COUNT] - stats[I_LAST_ORDER]) / DECAYED_SCALE


def decayed_weight(weight: float, orders_ago: int) -> float:
    return weight * PURCHASE_DECAY ** orders_ago if weight else 0.0


def first_purchase_s(stats: list) -> int:
    return stats[I_LAST_BUY_S] - stats[I_BUY_SPAN_H] * 3600 if stats[I_LAST_BUY_S] else 0


def covisit_sources(row: UserRow, event: Event, event_key: int) -> list[str]:
    """Items this shopper touched shortly before ``event`` (in event time).

    Ordered by (ts, event-id hash), so the answer is the same whether or not the row
    already holds the event: a redelivered batch yields the same co-visits.
    """
    ts = event.ts
    floor = ts - COVISIT_WINDOW_MS
    key = event_key & RECENT_KEY_MASK
    own = event.item_id
    out = []
    for item, t, k in reversed(row.recent):  # newest first; stop at the window's edge
        if t < floor:
            break
        if (t < ts or (t == ts and k < key)) and item != own:  # (t, k) < (ts, key)
            out.append(item)
    return out


def apply_user_event(row: UserRow, event: Event, event_key: int) -> None:
    """Count one event (not late: the batch drops those) into the shopper's row."""
    measure = MEASURE_INDEX.get(event.type)
    if measure is None:  # impressions leave the shopper's features unchanged
        return
    ts = event.ts
    qty = event.quantity if measure >= 2 else 1
    minute = ts // windows.MINUTE_MS  # windows.add, inline: the hot path
    tile = row.tiles.get(minute)
    if tile is None:
        tile = row.tiles[minute] = [0, 0, 0, 0]
    tile[measure] += qty
    row.totals[measure] += qty
    if ts > row.last_ts:
        row.last_ts = ts

    item = event.item_id
    stats = row.items.get(item)
    if stats is None:
        if len(row.items) >= USER_ITEMS:
            _evict_weakest_item(row, ts)
        stats = row.items[item] = [0, 0, 0, 0, ts, 0, 0, 0, 0, 0, 0, 0]
    cart_s = cart_time_s(stats)
    stats[measure] += qty
    if ts > stats[I_LAST_TS]:
        stats[I_LAST_TS] = ts
    if measure == 2:
        cart_s = max(cart_s, ts // 1000)
    elif measure == 3 and ts // 1000 >= cart_s:
        cart_s = 0  # bought: no longer in the cart
    stats[I_CART_AGE_S] = stats[I_LAST_TS] // 1000 - cart_s + 1 if cart_s else 0
    if measure == 3:
        _count_purchase(row, stats, ts)

    recent = row.recent
    event_key &= RECENT_KEY_MASK
    entry = [item, ts, event_key]
    if not recent or (recent[-1][1], recent[-1][2]) <= (ts, event_key):
        recent.append(entry)
    else:  # late arrival: keep event-time order
        recent.append(entry)
        recent.sort(key=lambda e: (e[1], e[2]))
    if len(recent) > RECENT_ITEMS:
        del recent[: len(recent) - RECENT_ITEMS]

    if event.category:
        weight = INTERACTION_WEIGHTS[measure]
        current = row.affinity.get(event.category)
        if current is None:
            row.affinity[event.category] = [weight, ts]
            if len(row.affinity) > USER_CATEGORIES:
                weakest = min(row.affinity, key=lambda c: windows.decay(
                    row.affinity[c][0], row.affinity[c][1], ts, AFFINITY_HALF_LIFE_MS))
                del row.affinity[weakest]
        else:
            as_of = max(ts, current[1])
            current[0] = (windows.decay(current[0], current[1], as_of, AFFINITY_HALF_LIFE_MS)
                          + windows.decay(weight, ts, as_of, AFFINITY_HALF_LIFE_MS))
            current[1] = as_of


def _count_purchase(row: UserRow, stats: list, ts: int) -> None:
    """A purchase opens a new order when the shopper bought nothing for ``ORDER_GAP_MS``
    (a late purchase joins the current order); the item's weight counts once per order."""
    orders = row.orders
    if orders[O_COUNT] == 0 or ts > orders[O_LAST_BUY_TS] + ORDER_GAP_MS:
        orders[O_COUNT] += 1
        orders[O_LAST_TS] = ts
        if orders[O_COUNT] == 1:
            orders[O_FIRST_TS] = ts
    if ts > orders[O_LAST_BUY_TS]:
        orders[O_LAST_BUY_TS] = ts
    n = orders[O_COUNT]
    if stats[I_LAST_ORDER] != n:
        if stats[I_ORDERS]:
            orders[O_REORDER_ITEMS] += 1
        else:
            stats[I_FIRST_ORDER] = n
        stats[I_DECAYED] = round(decayed_weight(stats[I_DECAYED], n - stats[I_LAST_ORDER])) + DECAYED_SCALE
        stats[I_LAST_ORDER] = n
        stats[I_ORDERS] += 1
        orders[O_BASKET_ITEMS] += 1
    ts_s = ts // 1000
    last_s = stats[I_LAST_BUY_S]
    if last_s == 0:
        stats[I_LAST_BUY_S] = ts_s
    else:
        first_s = first_purchase_s(stats)
        if ts_s > last_s:
            stats[I_LAST_BUY_S] = last_s = ts_s
        stats[I_BUY_SPAN_H] = round((last_s - min(first_s, ts_s)) / 3600)


def cart_time_s(stats: list) -> int:
    """Event time (epoch seconds) of the item's add-to-cart not bought since; 0: none."""
    age = stats[I_CART_AGE_S]
    return stats[I_LAST_TS] // 1000 - age + 1 if age else 0


def in_cart(stats: list, now_ms: int) -> bool:
    """The item is in the shopper's cart at ``now_ms``: added within the current session
    (``SESSION_MS``) and not bought since (a purchase in the same second ends it)."""
    cart_s = cart_time_s(stats)
    return cart_s > 0 and cart_s * 1000 >= now_ms - SESSION_MS


def is_reorder(row: UserRow, event: Event) -> bool:
    """A purchase of an item the shopper first bought in an earlier order (more than
    ``ORDER_GAP_MS`` before): the same answer before and after the row applied the event."""
    if event.type != "purchase":
        return False
    stats = row.items.get(event.item_id)
    return stats is not None and stats[I_LAST_BUY_S] > 0 and first_purchase_s(stats) * 1000 < event.ts - ORDER_GAP_MS


def _evict_weakest_item(row: UserRow, ts: int) -> None:
    """Make room: drop the item outside the current session with the lowest decayed
    purchase weight (oldest first among equals; views and carts weigh nothing)."""
    session = ts - SESSION_MS
    n = row.orders[O_COUNT]
    weakest = min(row.items.items(), key=lambda kv: (
        kv[1][I_LAST_TS] >= session, decayed_weight(kv[1][I_DECAYED], n - kv[1][I_LAST_ORDER]), kv[1][I_LAST_TS],
        kv[0]))[0]
    del row.items[weakest]


def prune_user(row: UserRow, now_ms: int) -> None:
    windows.prune(row.tiles, now_ms)


def shrink_user(row: UserRow) -> None:
    """Size guard's last resort: a quarter of the items, half of the recent ones, a quarter of
    the categories."""
    while len(row.items) > max(1, USER_ITEMS // 4):
        _evict_weakest_item(row, row.last_ts)
    del row.recent[: len(row.recent) // 2]
    while len(row.affinity) > USER_CATEGORIES // 4:
        del row.affinity[min(row.affinity, key=lambda c: row.affinity[c][0])]
