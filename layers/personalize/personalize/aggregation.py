"""One Kinesis batch in, the changed entity rows out: the heart of ``aggregate``.

Pure: the caller loads the rows (``rows_needed``), calls ``aggregate_batch``, and writes
back the changes with a condition on each row's version. No AWS here.

Exactly once in effect:

* Redelivery. Every row remembers, per source (stream and shard), the highest Kinesis
  sequence number it has applied (``Aux.wm``). A redelivered record is skipped by every row
  that already holds it and applied by those that do not, so a batch delivered twice, or
  retried after a partial failure or a timeout, changes no count twice.
* Client retries. The shopper's row (``Aux.seen``; for events without a shopper, a dedupe
  row per source, event minute and id bucket) maps the 64-bit key of every event id that
  arrived in the last 24 h to the record that first carried it: a later record with the
  same id is a resend and changes nothing, whatever arrived in between. A resend carries
  the same partition key, so it comes after the original on the same shard (or a child
  shard, which Lambda starts only when the parent is done), once the original's row has
  been written.
* Poison. Any exception while applying one record is caught and reported with the record
  (``BatchStats.poison``); the caller quarantines it and aggregates the batch again without
  it from freshly loaded rows, so nothing of it is half-applied and its neighbours count.
* Lateness. Windows count only recent minutes (pruned on every write); totals, stock,
  co-visitation, popularity and experiment counters count every accepted event, however late.
  ``late`` counts events that arrived over an hour after their event time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from . import keys, state, windows
from .codec import pack
from .events import MEASURE_INDEX, Event

# DynamoDB refuses items over 400 KB (names and values); the guard keeps a margin.
MAX_ROW_BYTES = 350_000
LATE_MS = windows.LONGEST_WINDOW_MINUTES * windows.MINUTE_MS


@dataclass(slots=True)
class StreamRecord:
    """A valid event with its place in the stream."""

    seq: int
    seq_key: int  # 64-bit key of (source, sequence number): the record's identity
    event: Event
    event_key: int  # 64-bit key of the client's event_id
    arrival_ms: int  # when Kinesis received it (lateness, the 24 h retry horizon)
    raw: bytes = b""  # the record's data, for the quarantine

    @classmethod
    def of(cls, sequence_number: str, event: Event, source: str = "", arrival_ms: int | None = None,
           raw: bytes = b"") -> StreamRecord:
        return cls(int(sequence_number), state.id_hash(f"{source}/{sequence_number}"), event,
                   state.id_hash(event.event_id), event.ts if arrival_ms is None else arrival_ms, raw)


@dataclass(slots=True)
class Stored:
    """A row as read from the store: msgpack-decoded row and aux, and its version."""

    row: dict | None = None
    aux: list | None = None
    version: int = 0


USERS = "users"
ITEMS = "items"


@dataclass(slots=True)
class Change:
    """A row to write back: conditional on ``version`` (0: must not exist yet)."""

    table: str
    key: tuple[str, str]
    kind: str
    row: dict
    aux: list
    version: int
    seqs: list[int]
    last_ts: int
    row_bytes: bytes = b""  # packed, measured by the size guard
    aux_bytes: bytes = b""


@dataclass
class BatchStats:
    events: int = 0
    late: int = 0
    duplicates: int = 0
    already_applied: int = 0
    anonymous: int = 0
    # Items with stock events in this batch -> their stock level after it (applied now or
    # by an earlier delivery), for the sold-out list.
    stock_levels: dict[str, int] = field(default_factory=dict)
    # Records that could not be applied (sequence number -> why): aggregate again without them.
    poison: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Entity:
    kind: str
    table: str
    key: tuple[str, str]
    row: object
    aux: state.Aux
    version: int
    base_mark: int = -1  # the source's watermark as loaded, before this batch
    seqs: list[int] = field(default_factory=list)
    changed: bool = False
    last_ts: int = 0

    holes: tuple = ()  # replay only: this row's unapplied ranges of the source

    def applied(self, seq: int) -> bool:
        """Already applied by an earlier delivery (not by this batch: its records are
        applied out of sequence order, per shopper in event-time order)."""
        if seq > self.base_mark:
            return False
        return not self.holes or not any(lo <= seq <= hi for lo, hi in self.holes)


def _route(e: Event) -> str:
    """stock: the item's row, whatever else it carries; a shopper's event: the shopper and
    then the items; no shopper: item-level aggregates only."""
    if e.type == "stock":
        return "stock"
    return "user" if e.user_id is not None else "anonymous"


def _anonymous_dedupe_key(r: StreamRecord, source: str) -> tuple[str, str]:
    return keys.anonymous_dedupe_key(source, windows.minute_of(r.event.ts), r.event_key % state.DEDUPE_BUCKETS)


def rows_needed(records: list[StreamRecord], shard: str, source: str | None = None) -> dict[str, set[tuple[str, str]]]:
    """The keys of every row this batch may change, per table."""
    source = source or shard
    users: set[tuple[str, str]] = set()
    items: set[tuple[str, str]] = set()
    for r in records:
        e = r.event
        route = _route(e)
        if route == "user":
            users.add(keys.user_key(e.user_id))
        elif route == "anonymous":
            items.add(_anonymous_dedupe_key(r, source))
        if e.item_id is not None:
            items.add(keys.item_key(e.item_id, shard))
        if e.variant is not None and route != "stock":
            items.add(keys.variant_key(keys.experiment_of(e.rec_id), e.variant, shard))
    return {USERS: users, ITEMS: items}


def _poison(stats: BatchStats, r: StreamRecord, exc: Exception) -> None:
    stats.poison[r.seq] = f"could not apply: {type(exc).__name__}: {exc}"[:500]


def aggregate_batch(
    records: list[StreamRecord],
    shard: str,
    loaded: dict[tuple[str, str], Stored],
    now_ms: int,
    source: str | None = None,
    holes: list[tuple[int, int]] = (),
    replay: tuple[int, int] | None = None,
) -> tuple[list[Change], BatchStats]:
    """Apply a batch (records in sequence order, late ones included) to the loaded rows.

    ``shard`` names the per-shard item and variant rows; ``source`` (stream and shard,
    ``keys.source_key``; default: the shard) keys the watermarks. If ``stats.poison`` is not
    empty, the changes must not be written: drop those records, reload, aggregate again.
    """
    source = source or shard
    stats = BatchStats()
    entities: dict[tuple[str, str], _Entity] = {}

    def entity(kind: str, table: str, key: tuple[str, str], cls) -> _Entity:
        ent = entities.get(key)
        if ent is None:
            stored = loaded.get(key) or Stored()
            aux = state.Aux.from_obj(stored.aux)
            ent = entities[key] = _Entity(kind, table, key, cls.from_obj(stored.row), aux, stored.version,
                                          aux.mark(source))
            if replay is not None and aux.holes:
                ent.holes = tuple((int(h[1]), int(h[2])) for h in aux.holes if h[0] == source)
        return ent

    by_user: dict[str, list[StreamRecord]] = defaultdict(list)
    stock_records: list[StreamRecord] = []
    anonymous_records: list[StreamRecord] = []
    newest_arrival = 0
    for r in records:
        e = r.event
        stats.events += 1
        if r.arrival_ms > newest_arrival:
            newest_arrival = r.arrival_ms
        if r.arrival_ms - e.ts >= LATE_MS:
            stats.late += 1  # left out of the windows only (see the module's docstring)
        route = _route(e)
        if route == "stock":
            stock_records.append(r)
        elif route == "user":
            by_user[e.user_id].append(r)
        else:
            anonymous_records.append(r)

    # Per shopper, in event-time order, so co-visits do not depend on arrival order.
    accepted: list[tuple[StreamRecord, list[str]]] = []
    for user_id, user_records in by_user.items():
        user = entity("user", USERS, keys.user_key(user_id), state.UserRow)
        dedupe = state.DedupeRow(user.aux.seen)
        user_records.sort(key=lambda r: (r.event.ts, r.event_key))  # stable: a resend after its original
        for r in user_records:
            try:
                verdict = dedupe.check(r.event_key, r.seq_key, r.arrival_ms)
                if verdict == state.DUPLICATE:
                    stats.duplicates += 1
                    continue
                e = r.event
                if user.applied(r.seq):
                    stats.already_applied += 1
                    sources = state.covisit_sources(user.row, e, r.event_key) if e.item_id else []
                    if verdict == state.NEW:  # its id had been forgotten (over the cap): remember it again
                        _touch(user, r)
                else:
                    sources = (state.covisit_sources(user.row, e, r.event_key)
                               if e.item_id and e.type in MEASURE_INDEX else [])
                    state.apply_user_event(user.row, e, r.event_key)
                    _touch(user, r)
                accepted.append((r, sources))
            except Exception as exc:  # noqa: BLE001 - whatever it is, it costs only this record
                _poison(stats, r, exc)

    for r in anonymous_records:
        try:
            dedupe = entity("dedupe", ITEMS, _anonymous_dedupe_key(r, source), state.DedupeRow)
            verdict = dedupe.row.check(r.event_key, r.seq_key, r.arrival_ms)
            if verdict == state.DUPLICATE:
                stats.duplicates += 1
                continue
            if verdict == state.NEW:
                _touch(dedupe, r)
            stats.anonymous += 1
            accepted.append((r, []))
        except Exception as exc:  # noqa: BLE001
            _poison(stats, r, exc)

    # Stock levels are idempotent (the newest by event time wins): no dedupe needed.
    for r in stock_records:
        try:
            item = entity("item", ITEMS, keys.item_key(r.event.item_id, shard), state.ItemRow)
            if item.applied(r.seq):
                stats.already_applied += 1
            else:
                state.apply_item_event(item.row, r.event, r.event_key)
                _touch(item, r)
            stats.stock_levels[r.event.item_id] = item.row.stock[0] if item.row.stock else r.event.stock
        except Exception as exc:  # noqa: BLE001
            _poison(stats, r, exc)

    for r, sources in accepted:
        e = r.event
        try:
            if e.item_id is not None and e.type in MEASURE_INDEX:
                item = entity("item", ITEMS, keys.item_key(e.item_id, shard), state.ItemRow)
                if not item.applied(r.seq):
                    state.apply_item_event(item.row, e, r.event_key)
                    if sources:
                        state.add_covisits(item.row, sources, e.ts)
                    _touch(item, r)
            if e.variant is not None:
                key = keys.variant_key(keys.experiment_of(e.rec_id), e.variant, shard)
                variant = entity("variant", ITEMS, key, state.VariantRow)
                if not variant.applied(r.seq):
                    state.apply_variant_event(variant.row, e)
                    _touch(variant, r)
        except Exception as exc:  # noqa: BLE001
            _poison(stats, r, exc)

    changes = []
    for ent in entities.values():
        if not ent.changed:
            continue
        try:
            if replay is not None:
                ent.aux.fill(source, *replay)
            elif holes:
                ent.aux.note_holes(source, ent.base_mark, max(ent.seqs), holes, now_ms)
            changes.append(_finish(ent, source, now_ms, newest_arrival))
        except Exception as exc:  # noqa: BLE001 - the row cannot be stored: its records are quarantined
            reason = f"row {ent.key[0]}|{ent.key[1]} cannot be stored: {type(exc).__name__}: {exc}"[:500]
            for seq in ent.seqs:
                stats.poison.setdefault(seq, reason)
    return changes, stats


def _finish(ent: _Entity, source: str, now_ms: int, newest_arrival_ms: int) -> Change:
    """Prune, then pack under the size guard."""
    ent.aux.advance(source, max(ent.seqs), now_ms)
    row = ent.row
    if ent.kind == "user":
        state.prune_user(row, now_ms)
        seen = state.DedupeRow(ent.aux.seen)
        seen.prune(newest_arrival_ms, state.DEDUPE_IDS_PER_SHOPPER)
        ent.aux.seen = seen.seen
    elif ent.kind == "item":
        state.prune_item(row, now_ms)
    elif ent.kind == "dedupe":
        row.prune(newest_arrival_ms)
    row_obj, aux_obj = row.to_obj(), ent.aux.to_obj()
    row_bytes, aux_bytes = pack(row_obj), pack(aux_obj)
    for _ in range(8):
        if len(row_bytes) + len(aux_bytes) <= MAX_ROW_BYTES:
            break
        state.shrink(row)
        row_obj = row.to_obj()
        row_bytes = pack(row_obj)
    else:
        raise ValueError(f"{len(row_bytes) + len(aux_bytes)} bytes, over {MAX_ROW_BYTES}")
    return Change(ent.table, ent.key, ent.kind, row_obj, aux_obj, ent.version, ent.seqs, ent.last_ts,
                  row_bytes, aux_bytes)


def _touch(ent: _Entity, r: StreamRecord) -> None:
    # The watermark moves once per row at the end of the batch (the highest of ``seqs``).
    ent.seqs.append(r.seq)
    ent.changed = True
    if r.event.ts > ent.last_ts:
        ent.last_ts = r.event.ts
