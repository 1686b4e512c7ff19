"""The shop owns the catalogue (DESIGN 3.1): which items are published.

The server route speaks for the catalogue: any event the shop's backend sends publishes its
item, and a ``catalogue`` event publishes (``listed: true``) or delists one. Only published
items can be recommended, trend, or enter a snapshot or the bundled fallback; public events
about any other item are refused by ``collect`` with a reason and count for nothing shared
in ``aggregate``.

How the catalogue travels (up to 1,000,000 items, so membership stays compact):

* ``aggregate`` notes each batch's listing changes in its journal (``ingest.journal``), and
  a delisting in the availability log too (it leaves serving within the stock-out budget);
* the snapshot job folds the journal into the catalogue (``serving.catalogue_store``: parts
  of the items table, 17 bytes an item) and publishes ``Membership`` beside each snapshot:
  the sorted 64-bit keys (``keys.id_hash``) of the published items, 8 bytes an item (8 MB
  at a million);
* ``collect`` and ``aggregate`` hold that membership in memory (``MembershipCache``), so an
  item the shop publishes is accepted from the public route within one snapshot interval.
"""

from __future__ import annotations

import bisect
import logging
import sys
import time
from array import array
from collections.abc import Callable, Iterable

from personalize.keys import id_hash

log = logging.getLogger(__name__)

MAGIC = b"RTCATv1\n"
REFRESH_S = 10.0  # how often a holder asks whether a newer membership was published
# A public event about an item this holder's membership lacks may have been admitted by collect
# against its own, newer, one: read again unless the last read started this long after the
# event reached the stream (see fresher(); Kinesis's arrival stamps and Lambda's clock differ
# by milliseconds, this is the margin).
ARRIVAL_SKEW_MS = 1000
REFRESH_SETTING = "CATALOGUE_REFRESH_S"  # the local stack's schedules run every few seconds: so does this


def refresh_s() -> float:
    from personalize import settings

    return float(settings.int_setting(REFRESH_SETTING, int(REFRESH_S), 1, 300))


class CatalogueError(ValueError):
    """A membership document that does not decode: refused, the last good kept."""


class Membership:
    """The published items, as a sorted array of their 64-bit keys (``keys.id_hash``)."""

    def __init__(self, hashes: array, version: str = ""):
        self.hashes = hashes
        self.version = version

    @classmethod
    def of(cls, item_ids: Iterable[str], version: str = "") -> Membership:
        return cls.from_hashes(id_hash(i) for i in item_ids)

    @classmethod
    def from_hashes(cls, hashes: Iterable[int], version: str = "") -> Membership:
        return cls(array("Q", sorted(set(hashes))), version)

    def __contains__(self, item_id: object) -> bool:
        if type(item_id) is not str:
            return False
        h = id_hash(item_id)
        hashes = self.hashes
        i = bisect.bisect_left(hashes, h)
        return i < len(hashes) and hashes[i] == h

    def __len__(self) -> int:
        return len(self.hashes)

    def to_bytes(self) -> bytes:
        data = array("Q", self.hashes)
        if sys.byteorder != "little":
            data.byteswap()
        return MAGIC + len(data).to_bytes(8, "little") + data.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, version: str = "") -> Membership:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
            raise CatalogueError("not a catalogue membership document")
        count = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
        body = data[len(MAGIC) + 8:]
        if len(body) != count * 8:
            raise CatalogueError(f"membership says {count} items, holds {len(body) // 8}")
        hashes = array("Q")
        hashes.frombytes(body)
        if sys.byteorder != "little":
            hashes.byteswap()
        if any(hashes[i] >= hashes[i + 1] for i in range(min(len(hashes) - 1, 64))):  # a cheap sanity check
            raise CatalogueError("membership keys are not sorted")
        return cls(hashes, version)


EMPTY = Membership(array("Q"), "none")


class MembershipCache:
    """The latest published membership, re-checked at most every ``refresh_s`` (one
    conditional GET of the snapshot pointer; the document itself only when it changed).
    ``get()`` is None only while nothing could be read yet (the caller then cannot tell a
    published item from an invented one); when no snapshot was ever published, nothing is
    published: ``EMPTY``. A failed read keeps the last good membership."""

    def __init__(self, load: Callable[[str | None], tuple[Membership, str] | None], refresh_s: float = REFRESH_S,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.load = load  # (etag seen) -> (membership, its etag), or None when unchanged
        self.refresh_s = refresh_s
        self.clock = clock
        self.wall_clock = wall_clock  # epoch s, to compare with the stream's arrival times
        self.checked_wall_ms = 0
        self.last_failed = False
        self.value: Membership | None = None
        self.etag: str | None = None
        self.checked_at = float("-inf")
        self.failures = 0

    def get(self) -> Membership | None:
        if self.clock() - self.checked_at >= self.refresh_s:
            self.refresh_now()
        return self.value

    def fresher(self, arrived_ms: int) -> Membership | None:
        """The membership, read again first unless that cannot find a newer one: for an item
        an event names that this membership lacks, which a collect container may have
        admitted against its own, newer, membership (its cache refreshed first). Read again
        only if the last read started before the event reached the stream (``arrived_ms``,
        less ``ARRIVAL_SKEW_MS`` for the clocks): a read after that saw every membership
        collect could have used. Not while reads fail: then as often as ``get()`` asks."""
        if self.checked_wall_ms >= arrived_ms + ARRIVAL_SKEW_MS:
            return self.value
        if self.last_failed and self.clock() - self.checked_at < self.refresh_s:
            return self.value
        self.refresh_now()
        return self.value

    def refresh_now(self) -> bool:
        self.checked_wall_ms = int(self.wall_clock() * 1000)  # when the read started: it sees the pointer as of then
        try:
            loaded = self.load(self.etag)
        except Exception:  # noqa: BLE001 - our outage: keep the last good one
            self.failures += 1
            self.last_failed = True
            log.warning("catalogue membership unreadable; keeping the last good one", exc_info=True)
            return False
        finally:
            self.checked_at = self.clock()  # from the read's end: a slow read is never followed by another at once
        self.last_failed = False
        if loaded is not None:
            self.value, self.etag = loaded
        return True


def artifacts_loader(artifacts) -> Callable[[str | None], tuple[Membership, str] | None]:
    """Membership from the snapshot pointer the snapshot job moves (``adapters.artifacts``)."""

    def load(etag: str | None):
        pointer = artifacts.pointer_if_changed(etag)
        if pointer is None:  # unchanged; or, before any, nothing ever published
            return (EMPTY, None) if etag is None else None
        doc = pointer.doc.get("catalogue")
        if not doc:  # a snapshot of a job that predates the catalogue: nothing published
            return EMPTY, pointer.etag
        membership = Membership.from_bytes(artifacts.get(doc["key"], doc.get("version_id")), pointer.version)
        return membership, pointer.etag

    return load


def batch_listing(records, listed: Callable[[str], bool] | None, stats) -> Callable[[str], bool]:
    """Whether an item counts as published for a batch's public events: its newest
    ``catalogue`` event in the batch if it has one, else published if the shop's backend
    spoke about it in the batch, else ``listed`` (the membership; None: unknown, counted).
    Fills ``stats.listings`` and ``stats.published``."""
    listings, published = stats.listings, stats.published
    for r in records:
        e = r.event
        if e.item_id is None or not e.from_server:
            continue
        if e.type == "catalogue":
            current = listings.get(e.item_id)
            if current is None or (current[1], current[2]) < (e.ts, r.event_key):
                listings[e.item_id] = (bool(e.listed), e.ts, r.event_key)
        elif published.get(e.item_id, -1) < e.ts:
            published[e.item_id] = e.ts

    def is_listed(item_id: str) -> bool:
        change = listings.get(item_id)
        if change is not None:
            return change[0]
        if item_id in published:
            return True
        return listed is None or listed(item_id)

    return is_listed
