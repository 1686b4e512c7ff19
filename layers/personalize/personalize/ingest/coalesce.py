"""Stock updates, coalesced before the stream.

A viral item's shop sends a stock level with every purchase: hundreds a second for one
item, all on one shard (stock is keyed by item, so that one shard decides its sold-out
transitions in order), whose limit is 1,000 records a second for everything on it.
Serving only needs the level's side of two lines: sold out (0) and low stock
(``LOW_STOCK``: dropped when the sold-out list cannot be confirmed fresh). So ``collect``
lets through, per item:

* the newest of a request's stock events for it (older ones in the same request are
  superseded);
* at most one a second above the low-stock line (per collect instance: instances share
  nothing; N warm instances let through at most N a second);
* every level at or below the line, and the first one back above it, at once.

What is coalesced is answered as such (``coalesced`` in the response: superseded, not an
error, not to be retried). The stored level of a well-stocked item may then lag by one
second's purchases until its next update; whether it is sold out or low never does.
"""

from __future__ import annotations

from collections import OrderedDict

LOW_STOCK = 5  # = serving.snapshots.LOW_STOCK (ingest may not import serving; a test holds them equal)
INTERVAL_MS = 1_000
MAX_ITEMS = 100_000  # items remembered per instance (the oldest forgotten first)


class StockGate:
    def __init__(self, interval_ms: int = INTERVAL_MS, max_items: int = MAX_ITEMS):
        self.interval_ms = interval_ms
        self.max_items = max_items
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()  # item -> (let through at, level)
        self.coalesced = 0

    def admit(self, item_id: str, level: int, now_ms: int) -> bool:
        last = self._last.get(item_id)
        if last is not None and level > LOW_STOCK and last[1] > LOW_STOCK and now_ms - last[0] < self.interval_ms:
            self.coalesced += 1
            return False
        self._last[item_id] = (now_ms, level)
        self._last.move_to_end(item_id)
        while len(self._last) > self.max_items:
            self._last.popitem(last=False)
        return True


def newest_stock_events(events: list) -> set[int]:
    """Indexes of a request's stock events superseded by a newer one for the same item."""
    newest: dict[str, tuple[tuple, int]] = {}
    superseded: set[int] = set()
    for index, obj in enumerate(events):
        if type(obj) is not dict or obj.get("type") != "stock" or type(obj.get("item_id")) is not str:
            continue
        ts = obj.get("ts")
        order = (ts if type(ts) is int else -1, str(obj.get("event_id")), index)
        current = newest.get(obj["item_id"])
        if current is None:
            newest[obj["item_id"]] = (order, index)
        elif order > current[0]:
            superseded.add(current[1])
            newest[obj["item_id"]] = (order, index)
        else:
            superseded.add(index)
    return superseded
