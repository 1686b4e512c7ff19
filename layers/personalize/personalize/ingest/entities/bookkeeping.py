"""What makes writes exactly-once in effect, never served: per-row watermarks and holes
(``Aux``), per-source progress (``Progress``) and the 24 h ids of client events (``DedupeRow``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from personalize.keys import id_hash  # noqa: F401 - part of this module's interface

from .credits import Credits
from .tuning import DEDUPE_HORIZON_MS, DEDUPE_IDS, MAX_HOLES, WATERMARK_IDLE_MS


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
    # On a shopper's row: what the shopper has moved in shared scores (``credits``).
    credits: Credits = field(default_factory=Credits)

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
        if self.credits:
            return [self.wm, self.seen, self.holes, self.credits.to_obj()]
        return [self.wm, self.seen, self.holes] if self.holes else [self.wm, self.seen]

    @classmethod
    def from_obj(cls, obj: list | None) -> Aux:
        if not obj:
            return cls()
        seen = obj[1] if len(obj) > 1 else {}
        if seen and type(next(iter(seen.values()))) is not list:
            seen = {}  # a v1 row's 64 crc32 ids: not comparable with 64-bit keys
        # fresh from msgpack: no copy needed
        return cls(obj[0], seen, obj[2] if len(obj) > 2 else [], Credits.from_obj(obj[3] if len(obj) > 3 else None))
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


def shrink_dedupe(row: DedupeRow) -> None:
    """Size guard's last resort: keep the newer half of the ids."""
    row.prune(max((v[1] for v in row.seen.values()), default=0) * 1000, cap=len(row.seen) // 2)
