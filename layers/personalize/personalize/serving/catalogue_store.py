"""The catalogue as the snapshot job keeps it: every item the shop ever listed or delisted,
as 64-bit keys (``keys.id_hash``) with the event time and state of its newest listing
change, split by key over ``PARTS`` rows of the items table (``cp#<n>``), 17 bytes an item:
about 66 KB a part at a million items. Only the snapshot job writes them (one run at a
time), and only the parts a run changes; it reads them all on each run (~17 MB at a
million items, packed arrays: no per-item parsing).

Listing rules (the journal's flags, ``ingest.journal``): a ``catalogue`` event's state wins
when it is newer than the item's; an implicit publish (any other event of the shop's
backend) lists only an item the catalogue does not know, so an item the shop delisted
stays delisted until a ``catalogue`` event lists it again.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from personalize.adapters.rowstore import ITEMS, Change, RowStore
from personalize.ingest import journal
from personalize.ingest.catalogue import Membership
from personalize.keys import id_hash

PARTS = 256
PK_PREFIX = "cp#"


def part_key(n: int) -> tuple[str, str]:
    return f"{PK_PREFIX}{n}", "part"


@dataclass
class Part:
    hashes: np.ndarray  # uint64, sorted
    ts: np.ndarray  # int64: event time of the newest listing change
    listed: np.ndarray  # bool
    version: int = 0

    def to_obj(self) -> dict:
        return {"h": self.hashes.astype("<u8").tobytes(), "t": self.ts.astype("<i8").tobytes(),
                "l": self.listed.astype(np.uint8).tobytes()}

    @classmethod
    def from_obj(cls, obj: dict | None, version: int) -> Part:
        if not obj:
            return cls(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, bool), version)
        return cls(np.frombuffer(obj["h"], "<u8").astype(np.uint64), np.frombuffer(obj["t"], "<i8").astype(np.int64),
                   np.frombuffer(obj["l"], np.uint8).astype(bool), version)

    def apply(self, changes: list[tuple[int, int, int]]) -> bool:
        """Fold (key, flag, ts) listing changes in; True when anything changed."""
        index = {int(h): i for i, h in enumerate(self.hashes.tolist())} if changes else {}
        hashes, ts, listed = self.hashes.tolist(), self.ts.tolist(), self.listed.tolist()
        changed = False
        for h, flag, when in changes:
            i = index.get(h)
            if i is None:  # a new item: any listing change lists or delists it
                index[h] = len(hashes)
                hashes.append(h)
                ts.append(when)
                listed.append(flag != journal.DELISTED)
                changed = True
            elif flag != journal.IMPLICIT and when > ts[i]:  # the shop's newer word (kept: order matters)
                ts[i], listed[i] = when, flag == journal.LISTED
                changed = True
        if changed:
            order = np.argsort(np.array(hashes, dtype=np.uint64), kind="stable")
            self.hashes = np.array(hashes, dtype=np.uint64)[order]
            self.ts = np.array(ts, dtype=np.int64)[order]
            self.listed = np.array(listed, dtype=bool)[order]
        return changed


class Catalogue:
    """All parts, read at once."""

    def __init__(self, parts: dict[int, Part]):
        self.parts = parts

    @classmethod
    def read(cls, store: RowStore) -> Catalogue:
        keys = [part_key(n) for n in range(PARTS)]
        found = store.get_many(ITEMS, keys)
        parts = {}
        for n, key in enumerate(keys):
            stored = found.get(key)
            parts[n] = Part.from_obj(stored.row if stored else None, stored.version if stored else 0)
        return cls(parts)

    def apply(self, changes: list[list]) -> set[int]:
        """The journal's listing changes ([item, flag, ts]); the parts that changed."""
        by_part: dict[int, list[tuple[int, int, int]]] = {}
        for item, flag, ts in changes:
            h = id_hash(item)
            by_part.setdefault(h % PARTS, []).append((h, int(flag), int(ts)))
        return {n for n, part_changes in by_part.items() if self.parts[n].apply(part_changes)}

    def write(self, store: RowStore, changed: set[int], expires_at: int) -> None:
        """The changed parts, each conditional on the version read (one writer: a conflict
        means another run overlapped; the next run reads again)."""
        for n in sorted(changed):
            part = self.parts[n]
            store.put(ITEMS, Change(ITEMS, part_key(n), "catalogue", part.to_obj(), [], part.version, [], 0),
                      expires_at)
            part.version += 1

    def membership(self, version: str = "") -> Membership:
        listed = [p.hashes[p.listed] for p in self.parts.values() if len(p.hashes)]
        hashes = np.sort(np.concatenate(listed)) if listed else np.zeros(0, np.uint64)
        out = array("Q")
        out.frombytes(hashes.astype("<u8").tobytes())
        return Membership(out, version)

    def __len__(self) -> int:
        return sum(int(p.listed.sum()) for p in self.parts.values())
