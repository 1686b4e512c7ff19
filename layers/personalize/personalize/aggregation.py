"""One Kinesis batch in, the changed entity rows out: the heart of ``aggregate``.

Pure: the caller loads the rows (``rows_needed``), calls ``aggregate_batch``, and writes
back the changes with a condition on each row's version. No AWS here.

Exactly once in effect: every row remembers, per source shard, the highest sequence
number it has applied (``Aux.wm``). A redelivered record is skipped by every row that
already holds it and applied by those that do not, so a batch delivered twice, or retried
after a partial failure or a timeout, changes no count twice. A client resending the same
``event_id`` in a new record is recognised through the shopper's (or, for stock events, the
item's) recent event ids and ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from . import keys, state, windows
from .events import MEASURE_INDEX, Event


@dataclass(slots=True)
class StreamRecord:
    """A valid event with its place in the stream."""

    seq: int
    seq_key: int
    event: Event
    event_key: int

    @classmethod
    def of(cls, sequence_number: str, event: Event) -> StreamRecord:
        return cls(int(sequence_number), state.id_hash(sequence_number), event, state.id_hash(event.event_id))


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


@dataclass
class BatchStats:
    events: int = 0
    late: int = 0
    duplicates: int = 0
    already_applied: int = 0
    # Items with stock events in this batch -> their stock level after it (applied now or
    # by an earlier delivery), for the sold-out list.
    stock_levels: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Entity:
    kind: str
    table: str
    key: tuple[str, str]
    row: object
    aux: state.Aux
    version: int
    base_mark: int = -1  # the shard's watermark as loaded, before this batch
    seqs: list[int] = field(default_factory=list)
    changed: bool = False
    last_ts: int = 0

    def applied(self, seq: int) -> bool:
        """Already applied by an earlier delivery (not by this batch: its records are
        applied out of sequence order, per shopper in event-time order)."""
        return seq <= self.base_mark


def rows_needed(records: list[StreamRecord], shard: str) -> dict[str, set[tuple[str, str]]]:
    """The keys of every row this batch may change, per table."""
    users: set[tuple[str, str]] = set()
    items: set[tuple[str, str]] = set()
    for r in records:
        e = r.event
        if e.user_id is not None:
            users.add(keys.user_key(e.user_id))
        if e.item_id is not None:
            items.add(keys.item_key(e.item_id, shard))
        if e.variant is not None:
            items.add(keys.variant_key(keys.experiment_of(e.rec_id), e.variant, shard))
    return {USERS: users, ITEMS: items}


def aggregate_batch(
    records: list[StreamRecord],
    shard: str,
    loaded: dict[tuple[str, str], Stored],
    now_ms: int,
) -> tuple[list[Change], BatchStats]:
    """Apply a batch (records in sequence order, late ones included) to the loaded rows."""
    stats = BatchStats()
    entities: dict[tuple[str, str], _Entity] = {}

    def entity(kind: str, table: str, key: tuple[str, str], cls) -> _Entity:
        ent = entities.get(key)
        if ent is None:
            stored = loaded.get(key) or Stored()
            aux = state.Aux.from_obj(stored.aux)
            ent = entities[key] = _Entity(kind, table, key, cls.from_obj(stored.row), aux, stored.version,
                                          int(aux.wm.get(shard, -1)))
        return ent

    by_user: dict[str, list[StreamRecord]] = defaultdict(list)
    stock_records: list[StreamRecord] = []
    anonymous: list[StreamRecord] = []
    for r in records:
        e = r.event
        stats.events += 1
        if windows.is_late(e.ts, now_ms):
            stats.late += 1
            continue
        if e.type == "stock":  # by type, whatever else the event carries
            stock_records.append(r)
        elif e.user_id is None:  # an anonymous shopper: item-level aggregates only
            anonymous.append(r)
        else:
            by_user[e.user_id].append(r)

    # Per shopper, in event-time order, so co-visits do not depend on arrival order.
    accepted: list[tuple[StreamRecord, list[str], bool]] = []
    for user_id, user_records in by_user.items():
        user = entity("user", USERS, keys.user_key(user_id), state.UserRow)
        user_records.sort(key=lambda r: (r.event.ts, r.event_key))
        for r in user_records:
            e = r.event
            aux = user.aux
            if user.applied(r.seq):
                stats.already_applied += 1
                if aux.is_duplicate(r.event_key, r.seq_key):
                    continue
                sources = state.covisit_sources(user.row, e, r.event_key) if e.item_id else []
            else:
                if aux.is_duplicate(r.event_key, r.seq_key):
                    stats.duplicates += 1
                    _touch(user, shard, r)
                    continue
                sources = (state.covisit_sources(user.row, e, r.event_key)
                           if e.item_id and e.type in MEASURE_INDEX else [])
                state.apply_user_event(user.row, e, r.event_key)
                aux.remember(r.event_key, r.seq_key)
                _touch(user, shard, r)
            accepted.append((r, sources, e.item_id is not None and state.is_reorder(user.row, e)))

    for r in stock_records:
        item = entity("item", ITEMS, keys.item_key(r.event.item_id, shard), state.ItemRow)
        if item.applied(r.seq):
            stats.already_applied += 1
            stats.stock_levels[r.event.item_id] = item.row.stock[0] if item.row.stock else r.event.stock
            continue
        if item.aux.is_duplicate(r.event_key, r.seq_key):
            stats.duplicates += 1
        else:
            state.apply_item_event(item.row, r.event, r.event_key)
            item.aux.remember(r.event_key, r.seq_key)
        _touch(item, shard, r)
        stats.stock_levels[r.event.item_id] = item.row.stock[0]

    # Anonymous events have no shopper row: their client retries are recognised by the item
    # row (or, for impressions, the variant row) that their partition key keeps on one shard.
    for r in anonymous:
        e = r.event
        if e.item_id is not None:
            ent = entity("item", ITEMS, keys.item_key(e.item_id, shard), state.ItemRow)
        elif e.variant is not None:
            ent = entity("variant", ITEMS, keys.variant_key(keys.experiment_of(e.rec_id), e.variant, shard),
                         state.VariantRow)
        else:
            continue  # an anonymous impression outside any experiment changes nothing
        if ent.applied(r.seq):
            stats.already_applied += 1
            if not ent.aux.is_duplicate(r.event_key, r.seq_key):
                accepted.append((r, [], False))
            continue
        if ent.aux.is_duplicate(r.event_key, r.seq_key):
            stats.duplicates += 1
            _touch(ent, shard, r)
            continue
        ent.aux.remember(r.event_key, r.seq_key)
        accepted.append((r, [], False))

    for r, sources, reorder in accepted:
        e = r.event
        if e.item_id is not None and e.type in MEASURE_INDEX:
            item = entity("item", ITEMS, keys.item_key(e.item_id, shard), state.ItemRow)
            if not item.applied(r.seq):
                state.apply_item_event(item.row, e, r.event_key, reorder)
                if sources:
                    state.add_covisits(item.row, sources, e.ts)
                _touch(item, shard, r)
        if e.variant is not None:
            key = keys.variant_key(keys.experiment_of(e.rec_id), e.variant, shard)
            variant = entity("variant", ITEMS, key, state.VariantRow)
            if not variant.applied(r.seq):
                state.apply_variant_event(variant.row, e)
                _touch(variant, shard, r)

    changes = []
    for ent in entities.values():
        if not ent.changed:
            continue
        ent.aux.advance(shard, max(ent.seqs))
        if ent.kind == "user":
            state.prune_user(ent.row, now_ms)
        elif ent.kind == "item":
            state.prune_item(ent.row, now_ms)
        changes.append(Change(ent.table, ent.key, ent.kind, ent.row.to_obj(), ent.aux.to_obj(),
                              ent.version, ent.seqs, ent.last_ts))
    return changes, stats


def _touch(ent: _Entity, shard: str, r: StreamRecord) -> None:
    # The watermark moves once per row at the end of the batch (the highest of ``seqs``).
    ent.seqs.append(r.seq)
    ent.changed = True
    if r.event.ts > ent.last_ts:
        ent.last_ts = r.event.ts
