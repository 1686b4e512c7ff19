"""An item's per-shard row: its tiles overall and per country, totals, decayed popularity,
stock and co-visitation neighbours, as seen on one Kinesis shard; how one event changes it;
and the item as readers see it, merged over its shards (``ItemView``)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from personalize.ingest import windows
from personalize.ingest.events import MEASURE_INDEX, Event

from .tuning import (
    COVISIT_HALF_LIFE_MS,
    INTERACTION_WEIGHTS,
    ITEM_COUNTRIES,
    NEIGHBOURS,
    OTHER_COUNTRY,
    POPULARITY_HALF_LIFE_MS,
)


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


def apply_item_event(row: ItemRow, event: Event, event_key: int, reorder: bool = False,
                     quantity: int | None = None) -> None:
    """Count one event (not late: the batch drops those) into the item's row; ``reorder``:
    the shopper had bought the item in an earlier order (``is_reorder``); ``quantity``: what
    it counts for (aggregation passes 1: shared scores count shoppers, ``credits``; default:
    the event's own quantity for carts and purchases)."""
    ts = event.ts
    if event.type == "stock":
        current = row.stock
        if current is None or (current[1], current[2]) < (ts, event_key):
            row.stock = [event.stock, ts, event_key]
        return
    if event.type == "catalogue":  # the shop's own details (its listing is the catalogue's)
        if event.department:
            row.category = event.department
        if event.price is not None:
            row.price = event.price
        return
    measure = MEASURE_INDEX[event.type]
    qty = quantity if quantity is not None else (event.quantity if measure >= 2 else 1)
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


def shrink_item(row: ItemRow) -> None:
    """Size guard's last resort: keep the strongest half of the neighbours and the busiest
    half of the countries."""
    ranked = sorted(row.neighbours.items(), key=lambda kv: -kv[1][0])
    row.neighbours = dict(ranked[: len(ranked) // 2])
    busiest = sorted(row.countries, key=lambda c: -len(row.countries[c]))
    row.countries = {c: row.countries[c] for c in busiest[: len(busiest) // 2]}


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
