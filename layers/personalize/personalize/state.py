"""Entity state kept in the feature store, and how one event changes it.

Three kinds of entity, each one DynamoDB item (see ``keys``):

* a shopper's row: everything ranking needs about the shopper (tiles, category affinity,
  the items they touched, their recent items), msgpack, read by serving with one GetItem;
* an item's per-shard row: its tiles overall and per country, totals, decayed popularity,
  stock and co-visitation neighbours, as seen on one Kinesis shard;
* an experiment variant's per-shard row: impressions, clicks, add-to-carts, purchases and
  revenue attributed through ``rec_id``/``variant``.

Items and variants are split by source shard so that each row has exactly one writer (the
shard's batch) and a hot item's write rate is bounded by the number of shards, not by its
traffic; readers merge the rows of one item (``merge_item_rows``).

Plain Python, no AWS: training replays history through the same functions.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field

from . import windows
from .events import MEASURE_INDEX, MEASURES, Event

# Tuning, in one place. Half-lives are in event time.
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
INTERACTION_WEIGHTS = (1.0, 2.0, 4.0, 8.0)  # view, click, add_to_cart, purchase
AFFINITY_HALF_LIFE_MS = DAY_MS
POPULARITY_HALF_LIFE_MS = 7 * DAY_MS
COVISIT_WINDOW_MS = 30 * 60_000
COVISIT_HALF_LIFE_MS = 7 * DAY_MS
RECENT_ITEMS = 20
USER_ITEMS = 64
# A shopper's purchases belong to one order until this long passes without a purchase.
ORDER_GAP_MS = 60 * 60_000
# ``recent`` orders same-millisecond events by 32 bits of their id hash: enough for a stable
# order, and the serving row stays within one 4 KB read unit (dedupe keeps all 64 elsewhere).
RECENT_KEY_MASK = 0xFFFFFFFF
# What the shopper touched this recently is their current session: never evicted from the row.
SESSION_MS = 60 * 60_000
# Per-order decay of an item's purchase weight: sum of PURCHASE_DECAY ** orders_ago over the
# orders that held the item (TIFU-KNN's personal part). Chosen on each shopper's penultimate
# order of the Instacart sample (``make train`` reports the grid and refuses a stale value).
PURCHASE_DECAY = 0.85
USER_CATEGORIES = 16
NEIGHBOURS = 20
# An item row keeps per-country tiles for its ``ITEM_COUNTRIES`` busiest countries; the rest
# are folded into ``OTHER_COUNTRY`` (a user-assigned ISO code, never a real country).
ITEM_COUNTRIES = 24
OTHER_COUNTRY = "ZZ"
# Client retries of an ``event_id`` are recognised for this long after its first arrival
# (DESIGN 4): by the shopper's row (its aux, written with it: no extra write), and for
# events without a shopper by a dedupe row per shard, event minute and id bucket. A shopper
# row holds at most ``DEDUPE_IDS_PER_SHOPPER`` ids (about 25 bytes each): past that (more
# than one event every 22 s around the clock, i.e. a bot), the oldest are forgotten first.
DEDUPE_HORIZON_MS = DAY_MS
DEDUPE_IDS_PER_SHOPPER = 4_000
DEDUPE_IDS = 8_000
DEDUPE_BUCKETS = 16
# Watermarks of sources (stream and shard) not seen for this long are dropped: longer than
# the stream's retention, so no record of theirs can be delivered again.
WATERMARK_IDLE_MS = 8 * DAY_MS
MAX_HOLES = 64


def id_hash(text: str, _blake2b=hashlib.blake2b, _from_bytes=int.from_bytes) -> int:
    """A 64-bit key (the contract's ids are valid UTF-8; ``surrogatepass`` keeps anything
    else hashable instead of raising)."""
    return _from_bytes(_blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


@dataclass(slots=True)
class Aux:
    """Bookkeeping that makes writes exactly-once in effect; never served.

    ``wm``: per source (stream and shard, ``keys.source_key``), [the highest Kinesis sequence
    number already applied (as text), when it last moved (epoch s)]. Sources idle for
    ``WATERMARK_IDLE_MS`` are dropped (no record of theirs can come back), so the map stays
    small however often the stream reshards. ``seen``: on a shopper's row, the event ids of
    the last 24 h (``DedupeRow``), atomic with the counts they guard.
    """

    wm: dict[str, list] = field(default_factory=dict)
    seen: dict[int, list[int]] = field(default_factory=dict)  # a shopper's: see ``DedupeRow``
    # [source, first, last sequence number (text), noted at (epoch s)]: ranges under the
    # watermark this row has NOT applied (the trigger gave up on them; see ``Progress``).
    holes: list[list] = field(default_factory=list)

    def mark(self, source: str) -> int:
        entry = self.wm.get(source)
        if entry is None:  # a row written before watermarks named the stream: by shard id alone
            entry = self.wm.get(source.rsplit(":", 1)[-1])
            if entry is None or type(entry) is list:
                return -1
        return int(entry[0] if type(entry) is list else entry)  # older rows: the bare number

    def advance(self, source: str, seq: int, now_ms: int) -> None:
        mark = self.mark(source)
        legacy = source.rsplit(":", 1)[-1]
        if legacy != source:
            self.wm.pop(legacy, None)
        self.wm[source] = [str(max(seq, mark)), now_ms // 1000]
        floor = (now_ms - WATERMARK_IDLE_MS) // 1000
        for other in [k for k, v in self.wm.items() if type(v) is list and v[1] < floor]:
            del self.wm[other]

    def in_hole(self, source: str, seq: int) -> bool:
        return any(h[0] == source and int(h[1]) <= seq <= int(h[2]) for h in self.holes)

    def note_holes(self, source: str, base_mark: int, new_mark: int, holes: list[tuple[int, int]],
                   now_ms: int) -> None:
        """The row moves from ``base_mark`` to ``new_mark``, past ``holes`` (ranges given up
        on): the part above its old mark was not applied here; remember it for a replay."""
        for lo, hi in holes:
            if base_mark < hi < new_mark:
                entry = [source, str(max(lo, base_mark + 1)), str(hi), now_ms // 1000]
                if not any(h[:3] == entry[:3] for h in self.holes):
                    self.holes.append(entry)
        floor = (now_ms - WATERMARK_IDLE_MS) // 1000
        self.holes = [h for h in self.holes if h[3] >= floor][-MAX_HOLES:]

    def fill(self, source: str, lo: int, hi: int) -> None:
        """A replay applied [lo, hi] of ``source`` here: what is left of the holes."""
        kept = []
        for h in self.holes:
            a, b = int(h[1]), int(h[2])
            if h[0] != source or b < lo or a > hi:
                kept.append(h)
                continue
            if a < lo:
                kept.append([h[0], str(a), str(lo - 1), h[3]])
            if b > hi:
                kept.append([h[0], str(hi + 1), str(b), h[3]])
        self.holes = kept

    def to_obj(self) -> list:
        return [self.wm, self.seen, self.holes] if self.holes else [self.wm, self.seen]

    @classmethod
    def from_obj(cls, obj: list | None) -> Aux:
        if not obj:
            return cls()
        seen = obj[1] if len(obj) > 1 else {}
        if seen and type(next(iter(seen.values()))) is not list:
            seen = {}  # a v1 row's 64 crc32 ids: not comparable with 64-bit keys
        return cls(obj[0], seen, obj[2] if len(obj) > 2 else [])  # fresh from msgpack: no copy needed


COMPLETE = "*"


@dataclass(slots=True)
class Progress:
    """Per source (stream and shard), what the trigger last attempted, so that a range it
    gave up on (retries exhausted: on to the next records, the range to the on-failure
    queue) is known as a *hole*: rows that later move their watermark past it note which
    part they never applied, and ``make replay-failures`` applies exactly that.

    ``attempt`` / ``end``: the first and last sequence numbers of the last batch whose
    attempt was recorded (before any row is written; the trigger retries a batch from its
    start, from its lowest failed record, or bisected); ``done``: ``COMPLETE``, or the lowest
    sequence number it reported failed, or None (it never finished); ``holes``: [first,
    last, noted at (epoch s)] within the stream's retention.
    """

    attempt: str | None = None
    end: str | None = None
    done: str | None = None
    holes: list[list] = field(default_factory=list)

    def begin(self, first: int, last: int, now_ms: int, successor=None) -> bool:
        """A batch [first, last]. Notes as a hole whatever the trigger moved past without
        finishing: the rest of the last attempt, or records no attempt was ever recorded
        for (``successor(seq)``: the stream's next sequence number after ``seq``; after
        None, its oldest). False for a redelivery of older records (progress untouched)."""
        lo = None
        if self.attempt is None:
            if successor is not None:
                lo = successor(None)
        else:
            attempt = int(self.attempt)
            if first < attempt:
                return False
            if first == attempt and self.done == COMPLETE:
                return True  # a redelivery of a finished batch: nothing new
            if self.done == COMPLETE:
                if successor is not None:
                    lo = successor(int(self.end))
            else:  # nothing of it done (None), or what was below its lowest failure
                lo = attempt if self.done is None else int(self.done)
        if lo is not None and lo < first:
            self.holes.append([str(lo), str(first - 1), now_ms // 1000])
        floor = (now_ms - WATERMARK_IDLE_MS) // 1000
        self.holes = [h for h in self.holes if h[2] >= floor][-MAX_HOLES:]
        self.attempt, self.end, self.done = str(first), str(last), None
        return True

    def finish(self, lowest_failed: int | None) -> None:
        self.done = COMPLETE if lowest_failed is None else str(lowest_failed)

    def ranges(self) -> list[tuple[int, int]]:
        return [(int(h[0]), int(h[1])) for h in self.holes]

    def to_obj(self) -> dict:
        return {"a": self.attempt, "e": self.end, "d": self.done, "h": self.holes}

    @classmethod
    def from_obj(cls, obj: dict | None) -> Progress:
        if not obj:
            return cls()
        return cls(obj["a"], obj["e"], obj["d"], obj["h"])


NEW, REDELIVERED, DUPLICATE = 0, 1, 2


@dataclass(slots=True)
class DedupeRow:
    """Client event ids seen in the last 24 h (by arrival) of one scope: event-id key ->
    [key of the record that first carried it, its arrival (epoch s)].

    A record whose event id was first carried by another record is a client's resend
    (``DUPLICATE``); by the same record, a redelivery (``REDELIVERED``: each row applies it
    unless its watermark says it already has)."""

    seen: dict[int, list[int]] = field(default_factory=dict)

    def check(self, event_key: int, record_key: int, arrival_ms: int) -> int:
        first = self.seen.get(event_key)
        if first is None:
            self.seen[event_key] = [record_key, arrival_ms // 1000]
            return NEW
        return REDELIVERED if first[0] == record_key else DUPLICATE

    def prune(self, newest_arrival_ms: int, cap: int = DEDUPE_IDS) -> None:
        floor = (newest_arrival_ms - DEDUPE_HORIZON_MS) // 1000
        seen = self.seen
        if len(seen) > cap or any(v[1] < floor for v in seen.values()):
            kept = sorted(((v[1], k) for k, v in seen.items() if v[1] >= floor), reverse=True)[:cap]
            self.seen = {k: seen[k] for _, k in kept}

    def to_obj(self) -> dict:
        return {"s": self.seen}

    @classmethod
    def from_obj(cls, obj: dict | None) -> DedupeRow:
        if not obj:
            return cls()
        return cls(obj["s"])


# --- shoppers -------------------------------------------------------------------------


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


# --- items ----------------------------------------------------------------------------


@dataclass(slots=True)
class ItemRow:
    """One item as seen on one shard (merge the shards' rows with ``merge_item_rows``).

    ``popularity``: [decayed interaction weight, as-of ts]; ``stock``: [level, ts,
    event-id hash] of the newest stock event or None; ``neighbours``: co-visited item ->
    [decayed weight, as-of ts], the ``NEIGHBOURS`` strongest; ``reorders``: purchases by
    shoppers who had bought the item in an earlier order (``is_reorder``).
    """

    tiles: dict[int, list[int]] = field(default_factory=dict)
    countries: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    totals: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    popularity: list = field(default_factory=lambda: [0.0, 0])
    stock: list | None = None
    neighbours: dict[str, list] = field(default_factory=dict)
    category: str | None = None
    price: float | None = None
    reorders: int = 0

    def to_obj(self) -> dict:
        return {"t": self.tiles, "c": self.countries, "n": self.totals, "p": self.popularity,
                "s": self.stock, "nb": self.neighbours, "cat": self.category, "pr": self.price, "ro": self.reorders}

    @classmethod
    def from_obj(cls, obj: dict | None) -> ItemRow:
        if not obj:
            return cls()
        return cls(obj["t"], obj["c"], obj["n"], obj["p"], obj["s"], obj["nb"], obj["cat"], obj["pr"],
                   obj.get("ro", 0))


def apply_item_event(row: ItemRow, event: Event, event_key: int, reorder: bool = False) -> None:
    """Count one event (not late: the batch drops those) into the item's row; ``reorder``:
    the shopper had bought the item in an earlier order (``is_reorder``)."""
    ts = event.ts
    if event.type == "stock":
        current = row.stock
        if current is None or (current[1], current[2]) < (ts, event_key):
            row.stock = [event.stock, ts, event_key]
        return
    measure = MEASURE_INDEX[event.type]
    qty = event.quantity if measure >= 2 else 1
    minute = ts // windows.MINUTE_MS  # windows.add, inline: the hot path
    tile = row.tiles.get(minute)
    if tile is None:
        tile = row.tiles[minute] = [0, 0, 0, 0]
    tile[measure] += qty
    if event.country:
        tiles = row.countries.get(event.country)
        if tiles is None:
            country = event.country if len(row.countries) < ITEM_COUNTRIES else OTHER_COUNTRY
            tiles = row.countries.get(country)
            if tiles is None:
                tiles = row.countries[country] = {}
        tile = tiles.get(minute)
        if tile is None:
            tile = tiles[minute] = [0, 0, 0, 0]
        tile[measure] += qty
    row.totals[measure] += qty
    if reorder:
        row.reorders += qty
    pop = row.popularity
    weight = INTERACTION_WEIGHTS[measure] * qty
    if ts >= pop[1]:  # in order (the usual case): decay the total to this event, add it
        pop[0] = windows.decay(pop[0], pop[1], ts, POPULARITY_HALF_LIFE_MS) + weight
        pop[1] = ts
    else:  # late: the event's weight decays to the row's time
        pop[0] += windows.decay(weight, ts, pop[1], POPULARITY_HALF_LIFE_MS)
    if event.category:
        row.category = event.category
    if event.price is not None:
        row.price = event.price


def add_covisits(row: ItemRow, sources: list[str], ts: int) -> None:
    """Strengthen the item's links to ``sources``; the list is cut to the strongest
    ``NEIGHBOURS`` once per batch (``prune_item``), not per event."""
    neighbours = row.neighbours
    get = neighbours.get
    half_life = COVISIT_HALF_LIFE_MS
    for other in sources:
        current = get(other)
        if current is None:
            neighbours[other] = [1.0, ts]
            continue
        at = current[1]
        if ts == at:
            current[0] += 1.0
        elif ts > at:
            current[0] = current[0] * 0.5 ** ((ts - at) / half_life) + 1.0
            current[1] = ts
        else:  # a late event: its link has already decayed to the row's time
            current[0] += 0.5 ** ((at - ts) / half_life)


def prune_user(row: UserRow, now_ms: int) -> None:
    windows.prune(row.tiles, now_ms)


def shrink(row: object) -> None:
    """Last resort of the size guard (every row is bounded by construction; this only runs
    if a bound was set wrong): keep the strongest half of whatever a row holds most of."""
    if isinstance(row, DedupeRow):
        row.prune(max((v[1] for v in row.seen.values()), default=0) * 1000, cap=len(row.seen) // 2)
    elif isinstance(row, ItemRow):
        ranked = sorted(row.neighbours.items(), key=lambda kv: -kv[1][0])
        row.neighbours = dict(ranked[: len(ranked) // 2])
        busiest = sorted(row.countries, key=lambda c: -len(row.countries[c]))
        row.countries = {c: row.countries[c] for c in busiest[: len(busiest) // 2]}
    elif isinstance(row, UserRow):
        while len(row.items) > max(1, USER_ITEMS // 4):
            _evict_weakest_item(row, row.last_ts)
        del row.recent[: len(row.recent) // 2]
        while len(row.affinity) > USER_CATEGORIES // 4:
            del row.affinity[min(row.affinity, key=lambda c: row.affinity[c][0])]


def prune_item(row: ItemRow, now_ms: int) -> None:
    """Drop tiles that have left every window (an item row can outlive its traffic) and
    keep the ``NEIGHBOURS`` strongest co-visited items."""
    windows.prune(row.tiles, now_ms)
    if len(row.neighbours) > NEIGHBOURS:
        def strongest_first(kv, half_life=COVISIT_HALF_LIFE_MS):  # windows.decay, inline
            weight, at = kv[1]
            return -(weight * 0.5 ** ((now_ms - at) / half_life) if now_ms > at else weight), kv[0]

        # = sorted(...)[:NEIGHBOURS], without sorting all of them
        row.neighbours = dict(heapq.nsmallest(NEIGHBOURS, row.neighbours.items(), key=strongest_first))
    for country in list(row.countries):
        windows.prune(row.countries[country], now_ms)
        if not row.countries[country]:
            del row.countries[country]


@dataclass(slots=True)
class ItemView:
    """An item merged over its per-shard rows, as readers see it."""

    tiles: dict[int, list[int]]
    countries: dict[str, dict[int, list[int]]]
    totals: list[int]
    popularity: float
    popularity_ts: int
    stock: int | None
    neighbours: dict[str, float]
    category: str | None
    price: float | None
    reorders: int = 0


def merge_item_rows(rows: list[ItemRow], now_ms: int) -> ItemView:
    """One item's shard rows as one view (read-only: it may share the rows' dicts)."""
    if len(rows) == 1:  # the common case: no copies
        row = rows[0]
        return ItemView(row.tiles, row.countries, row.totals, windows.decay(
            row.popularity[0], row.popularity[1], now_ms, POPULARITY_HALF_LIFE_MS), now_ms,
            None if row.stock is None else row.stock[0],
            {other: windows.decay(w, ts, now_ms, COVISIT_HALF_LIFE_MS) for other, (w, ts) in row.neighbours.items()},
            row.category, row.price, row.reorders)
    tiles: dict[int, list[int]] = {}
    countries: dict[str, dict[int, list[int]]] = {}
    totals = [0, 0, 0, 0]
    popularity = 0.0
    stock = None
    neighbours: dict[str, float] = {}
    category = price = None
    reorders = 0
    for row in rows:
        reorders += row.reorders
        windows.merge_into(tiles, row.tiles)
        for country, ctiles in row.countries.items():
            windows.merge_into(countries.setdefault(country, {}), ctiles)
        for i in range(4):
            totals[i] += row.totals[i]
        popularity += windows.decay(row.popularity[0], row.popularity[1], now_ms, POPULARITY_HALF_LIFE_MS)
        if row.stock is not None and (stock is None or (stock[1], stock[2]) < (row.stock[1], row.stock[2])):
            stock = row.stock
        for other, (weight, ts) in row.neighbours.items():
            neighbours[other] = neighbours.get(other, 0.0) + windows.decay(weight, ts, now_ms, COVISIT_HALF_LIFE_MS)
        category = row.category or category
        price = row.price if row.price is not None else price
    return ItemView(tiles, countries, totals, popularity, now_ms, None if stock is None else stock[0],
                    neighbours, category, price, reorders)


# --- experiment variants --------------------------------------------------------------

VARIANT_COUNTERS = ("impressions", "clicks", "add_to_carts", "purchases")


@dataclass(slots=True)
class VariantRow:
    """Counters attributed to one experiment variant on one shard."""

    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    revenue: float = 0.0
    last_ts: int = 0

    def to_obj(self) -> dict:
        return {"n": self.counts, "rev": self.revenue, "l": self.last_ts}

    @classmethod
    def from_obj(cls, obj: dict | None) -> VariantRow:
        if not obj:
            return cls()
        return cls(obj["n"], obj["rev"], obj["l"])


def apply_variant_event(row: VariantRow, event: Event) -> None:
    if event.type == "impression":
        row.counts[0] += 1
    elif event.type == "click":
        row.counts[1] += 1
    elif event.type == "add_to_cart":
        row.counts[2] += 1
    elif event.type == "purchase":
        row.counts[3] += 1
        if event.price is not None:
            row.revenue += event.price * event.quantity
    if event.ts > row.last_ts:
        row.last_ts = event.ts
