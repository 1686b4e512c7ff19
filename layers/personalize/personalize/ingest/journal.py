"""What a batch tells the readers that must not scan the tables: one journal item per batch
(items table) and, when something became (un)available, one availability item (features
table, ``adapters.soldout``). Both are written before the batch's item rows, so a reader
never sees an item row whose change it was not told about; a retried batch writes them
again (harmless: a journal lists facts, not increments).

* The journal (``j#<minute>#<bucket>``, sorted by write time): the items whose rows the
  batch changes (the snapshot job re-reads exactly those, never a scan over the table and
  its dedupe rows) and the catalogue changes (``catalogue``: an item published or
  delisted, with its event time; the job folds them into the catalogue).
* The availability entries: sold out (stock reached 0) and back in stock on this shard's
  row, which is the item's (stock events are keyed by item), and listings.
"""

from __future__ import annotations

import hashlib
import json

from personalize import keys
from personalize.adapters import soldout as availability
from personalize.ingest.entities import DAY_MS

BUCKETS = 16  # journal partitions per minute: a batch's write lands on its source's
TTL_MS = 8 * DAY_MS  # longer than a stalled snapshot job would go unnoticed
PK_PREFIX = "j#"
MINUTE_MS = 60_000
DELISTED, LISTED, IMPLICIT = 0, 1, 2  # a journal's listing flags


def bucket_of(source: str) -> int:
    return hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=2).digest()[0] % BUCKETS


def journal_key(source: str, first: int, last: int, now_ms: int, row: dict) -> tuple[str, str]:
    """The row is written once (``put_once``): its key carries a digest of what it lists, so
    a retry at the same millisecond that lists something else is a row of its own, not a
    write that finds the key taken (see ``availability_writer``)."""
    digest = hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=8).hexdigest()
    return (f"{PK_PREFIX}{now_ms // MINUTE_MS}#{bucket_of(source)}",
            f"{now_ms:013d}#{source}#{first}-{last}#{digest}")


def journal_partitions(minute: int) -> list[str]:
    return [f"{PK_PREFIX}{minute}#{b}" for b in range(BUCKETS)]


def journal_row(shard: str, changes, stats, membership) -> dict | None:
    """The batch's journal, or None when it changes no item and no listing."""
    touched = sorted({keys.item_id_of(c.key[0]) for c in changes if c.kind == "item"})
    listings = [[item, 1 if listed else 0, ts] for item, (listed, ts, _) in sorted(stats.listings.items())]
    listed_now = {item for item, *_ in listings}
    # Items the shop's backend spoke about: published if the catalogue does not know them yet
    # (IMPLICIT: an item the shop delisted stays delisted until a catalogue event lists it).
    for item in sorted(set(stats.published) - listed_now):
        if membership is None or item not in membership:
            listings.append([item, IMPLICIT, stats.published[item]])
    if not touched and not listings:
        return None
    return {"shard": shard, "t": touched, "c": listings}


def availability_writer(source: str, first: int, last: int, entries: list[list]) -> str:
    """The writer an availability item is written as: the batch's range and a digest of
    what it says. An attempt's retry at the same clock millisecond (a simulated clock, a
    clock that stood still) lands on the very item again only if it says the same: the log
    keeps the first item written under a key, so a retry that says something else (it
    applied records the first attempt had cut, its rows' "before" differs) must not share
    it, or its transitions are dropped."""
    digest = hashlib.blake2b(json.dumps(entries).encode(), digest_size=8).hexdigest()
    return f"{source}#{first}-{last}#{digest}"


def availability_entries(stats, restate: bool = False) -> list[list]:
    """Sold-out and restock transitions of this batch (this shard's row is the item's), and
    the shop's listing changes. ``restate``: the batch may retry an attempt that logged a
    transition its rows never got (the row's "before" cannot tell): every stock item's state."""
    entries = []
    for item, level in sorted(stats.stock_levels.items()):
        before = stats.stock_before.get(item)
        was_out = before == 0
        if (level == 0) != was_out or restate:
            entries.append([item, availability.SOLD_OUT if level == 0 else availability.IN_STOCK,
                            stats.stock_ts.get(item, 0)])
    for item, (listed, ts, _) in sorted(stats.listings.items()):
        entries.append([item, availability.LISTED if listed else availability.DELISTED, ts])
    return entries
