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
* One identity, one shopper's worth (``entities.credits``). The deciding row (the shopper's,
  or an anonymous identity's actor row) grants each event its credits: the item's measure
  once per identity and window, the variant's counters once per shopper and analysis. Items
  and variants apply only what was granted, items with quantity 1. A grant is stored with
  the deciding row and names its event, so redeliveries, retries and resends get the same
  answer.
  Events of automated clients (``bot``) and anonymous events without an identity are
  granted nothing shared (they still count in nothing else: they have no shopper's row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from personalize import keys
from personalize.adapters.rowstore import ITEMS, USERS, Change, Stored  # noqa: F401 - re-exported
from personalize.codec import pack
from personalize.ingest import catalogue, entities, windows
from personalize.ingest.events import ITEM_TYPES, MEASURE_INDEX, Event

# DynamoDB refuses items over 400 KB (names and values); the guard keeps a margin.
MAX_ROW_BYTES = 350_000
LATE_MS = windows.LONGEST_WINDOW_MINUTES * windows.MINUTE_MS
# A row expires after this long without an event (DynamoDB TTL). Grocery shoppers come
# back after weeks, so a shopper's history is kept for over a year. A dedupe row only has
# to outlive the 24 h retry horizon of its newest id.
ROW_TTL_MS = {"user": 400 * entities.DAY_MS, "item": 400 * entities.DAY_MS, "variant": 400 * entities.DAY_MS,
              "dedupe": entities.DEDUPE_HORIZON_MS + entities.HOUR_MS,
              # an anonymous identity's credits matter for their window and the one after it
              "actor": 2 * entities.CREDIT_WINDOW_MS + entities.HOUR_MS}


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
        id_hash = entities.id_hash
        return cls(int(sequence_number), id_hash(f"{source}/{sequence_number}"), event, id_hash(event.event_id),
                   event.ts if arrival_ms is None else arrival_ms, raw)


@dataclass
class BatchStats:
    events: int = 0
    late: int = 0
    duplicates: int = 0
    already_applied: int = 0
    anonymous: int = 0
    # Accepted events that moved nothing shared: the identity's credit was already used in
    # the window (or the identity is a bot, or unknown).
    not_credited: int = 0
    # Items with stock events in this batch -> their stock level after it (applied now or
    # by an earlier delivery), and before it (this shard's row as loaded): the sold-out
    # transitions (``journal.availability_entries``).
    stock_levels: dict[str, int] = field(default_factory=dict)
    stock_before: dict[str, int | None] = field(default_factory=dict)
    stock_ts: dict[str, int] = field(default_factory=dict)
    # The catalogue (``catalogue``): listing changes of this batch, item -> (listed, ts,
    # event key), the newest per item; items the shop's backend spoke about (published).
    listings: dict[str, tuple[bool, int, int]] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)  # item -> newest event time
    unlisted: int = 0  # public events about items the shop has not published: counted nowhere
    # Records that could not be applied (sequence number -> why): aggregate again without them.
    poison: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Entity:
    kind: str
    table: str
    key: tuple[str, str]
    row: object
    aux: entities.Aux
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


def _anonymous_dedupe_key(r: StreamRecord, source: str) -> tuple[str, str]:
    return keys.anonymous_dedupe_key(source, windows.minute_of(r.event.ts), r.event_key % entities.DEDUPE_BUCKETS)


def rows_needed(records: list[StreamRecord], shard: str, source: str | None = None) -> dict[str, set[tuple[str, str]]]:
    """The keys of every row this batch may change, per table."""
    source = source or shard
    user_ids: set[str] = set()
    item_ids: set[str] = set()
    variants: set[tuple[str, str]] = set()
    items: set[tuple[str, str]] = set()
    for r in records:  # ids first, each key formatted once per batch
        e = r.event
        if e.type in ITEM_TYPES:  # the item's row, whatever else it carries
            if e.item_id is not None:
                item_ids.add(e.item_id)
            continue
        if e.user_id is not None:
            user_ids.add(e.user_id)
        else:
            items.add(_anonymous_dedupe_key(r, source))
            if e.actor is not None and not e.bot:
                items.add(keys.actor_key(e.actor))
        if e.item_id is not None:
            item_ids.add(e.item_id)
        if e.variant is not None:
            variants.add((e.rec_id, e.variant))
    items.update(keys.item_key(item_id, shard) for item_id in item_ids)
    items.update(keys.variant_key(keys.experiment_of(rec_id), variant, shard) for rec_id, variant in variants)
    return {USERS: {keys.user_key(user_id) for user_id in user_ids}, ITEMS: items}


def _poison(stats: BatchStats, r: StreamRecord, exc: Exception) -> None:
    stats.poison[r.seq] = f"could not apply: {type(exc).__name__}: {exc}"[:500]


class _Batch:
    """One batch's entities, each loaded once and looked up once per batch by id (its key
    formatted once), and what the batch has counted so far."""

    def __init__(self, shard: str, source: str, loaded: dict[tuple[str, str], Stored],
                 replay: tuple[int, int] | None):
        self.shard, self.source, self.loaded, self.replay = shard, source, loaded, replay
        self.stats = BatchStats()
        self.entities: dict[tuple[str, str], _Entity] = {}
        self.items: dict[str, _Entity] = {}
        self.variants: dict[tuple[str, str], _Entity] = {}

    def entity(self, kind: str, table: str, key: tuple[str, str], cls) -> _Entity:
        ent = self.entities.get(key)
        if ent is None:
            stored = self.loaded.get(key) or Stored()
            aux = entities.Aux.from_obj(stored.aux)
            ent = self.entities[key] = _Entity(kind, table, key, cls.from_obj(stored.row), aux, stored.version,
                                               aux.mark(self.source))
            if self.replay is not None and aux.holes:
                ent.holes = tuple((int(h[1]), int(h[2])) for h in aux.holes if h[0] == self.source)
        return ent

    def item(self, item_id: str) -> _Entity:
        ent = self.items.get(item_id)
        if ent is None:
            ent = self.items[item_id] = self.entity("item", ITEMS, keys.item_key(item_id, self.shard),
                                                    entities.ItemRow)
        return ent

    def variant(self, rec_id: str, variant: str) -> _Entity:
        variant_id = (keys.experiment_of(rec_id), variant)
        ent = self.variants.get(variant_id)
        if ent is None:
            ent = self.variants[variant_id] = self.entity(
                "variant", ITEMS, keys.variant_key(*variant_id, self.shard), entities.VariantRow)
        return ent


@dataclass(slots=True)
class _Routed:
    """A batch's records by the row that decides whether each counts."""

    by_user: dict[str, list[StreamRecord]] = field(default_factory=dict)
    stock: list[StreamRecord] = field(default_factory=list)
    anonymous: list[StreamRecord] = field(default_factory=list)
    newest_arrival: int = 0
    late: int = 0


def aggregate_batch(
    records: list[StreamRecord],
    shard: str,
    loaded: dict[tuple[str, str], Stored],
    now_ms: int,
    source: str | None = None,
    holes: list[tuple[int, int]] = (),
    replay: tuple[int, int] | None = None,
    listed: Callable[[str], bool] | None = None,
) -> tuple[list[Change], BatchStats]:
    """Apply a batch (records in sequence order, late ones included) to the loaded rows.

    ``shard`` names the per-shard item and variant rows; ``source`` (stream and shard,
    ``keys.source_key``; default: the shard) keys the watermarks. If ``stats.poison`` is not
    empty, the changes must not be written: drop those records, reload, aggregate again.
    ``listed``: whether the shop has published an item (``catalogue.Membership``); when
    given, events that came by the public route about any other item count for nothing
    (``stats.unlisted``); the batch's own catalogue events and the items the shop's backend
    speaks about in it count as published (``catalogue.batch_listing``).
    """
    batch = _Batch(shard, source or shard, loaded, replay)
    if listed is not None or any(r.event.from_server for r in records):
        listed = catalogue.batch_listing(records, listed, batch.stats)
    routed = _route(records, listed, batch.stats)
    batch.stats.events, batch.stats.late = len(records), routed.late
    accepted = _count_shoppers(batch, routed.by_user)
    accepted += _count_anonymous(batch, routed.anonymous)
    _apply_stock(batch, routed.stock)
    _count_items_and_variants(batch, accepted)
    return _changes(batch, holes, now_ms, routed.newest_arrival), batch.stats


def _route(records: list[StreamRecord], listed: Callable[[str], bool] | None = None,
           stats: BatchStats | None = None) -> _Routed:
    """Stock and catalogue: the item's row, whatever else they carry; a shopper's event: the
    shopper's row and then the items; no shopper: item-level aggregates only (after its
    dedupe row). A public event about an item the shop has not published: nowhere."""
    routed = _Routed()
    by_user, stock, anonymous = routed.by_user, routed.stock, routed.anonymous
    newest_arrival = late = 0
    for r in records:
        e = r.event
        arrival = r.arrival_ms
        if arrival > newest_arrival:
            newest_arrival = arrival
        if listed is not None and e.item_id is not None and e.type in MEASURE_INDEX and not e.from_server \
                and not listed(e.item_id):
            stats.unlisted += 1
            continue
        if arrival - e.ts >= LATE_MS:
            late += 1  # left out of the windows only (see the module's docstring)
        if e.type in ITEM_TYPES:
            stock.append(r)
        elif e.user_id is not None:
            user_records = by_user.get(e.user_id)
            if user_records is None:
                by_user[e.user_id] = [r]
            else:
                user_records.append(r)
        else:
            anonymous.append(r)
    routed.newest_arrival, routed.late = newest_arrival, late
    return routed


# record, co-visit sources, is a reorder, its credits (``entities.ITEM | EXPOSED | COUNTER``)
_Accepted = tuple[StreamRecord, list[str], bool, int]


def _grant(credits: entities.Credits, r: StreamRecord, new: bool) -> int:
    """The shared scores this record may move, as its identity's deciding row grants them."""
    e = r.event
    if e.bot:
        return 0
    granted = 0
    measure = MEASURE_INDEX.get(e.type)
    if measure is not None and e.item_id is not None and credits.grant_item(
            e.item_id, measure, r.event_key, r.arrival_ms, new):
        granted = entities.ITEM
    if e.variant is not None and e.user_id is not None:
        experiment = keys.experiment_of(e.rec_id)
        if credits.grant_variant(experiment, e.variant, 0, r.event_key, r.arrival_ms, new):
            granted |= entities.EXPOSED
        counter = entities.VARIANT_COUNTER.get(e.type)
        if counter is not None and credits.grant_variant(experiment, e.variant, counter, r.event_key, r.arrival_ms,
                                                         new):
            granted |= entities.COUNTER
    return granted


def _count_shoppers(batch: _Batch, by_user: dict[str, list[StreamRecord]]) -> list[_Accepted]:
    """Per shopper, in event-time order (so co-visits do not depend on arrival order): a
    resend of an event id seen in the last 24 h changes nothing; a record the row already
    holds (its watermark) is not applied again but still counts for the items it touches."""
    stats = batch.stats
    accepted: list[_Accepted] = []
    covisit_sources, apply_user_event = entities.covisit_sources, entities.apply_user_event
    is_reorder = entities.is_reorder
    for user_id, user_records in by_user.items():
        user = batch.entity("user", USERS, keys.user_key(user_id), entities.UserRow)
        check = entities.DedupeRow(user.aux.seen).check
        row = user.row
        if len(user_records) > 1:
            user_records.sort(key=_event_order)  # stable: a resend after its original
        for r in user_records:
            try:
                verdict = check(r.event_key, r.seq_key, r.arrival_ms)
                if verdict == entities.DUPLICATE:
                    stats.duplicates += 1
                    continue
                e = r.event
                seq = r.seq
                if seq <= user.base_mark and user.applied(seq):
                    stats.already_applied += 1
                    sources = covisit_sources(row, e, r.event_key) if e.item_id else []
                    if verdict == entities.NEW:  # its id had been forgotten (over the cap): remember it again
                        _touch(user, r)
                    granted = _grant(user.aux.credits, r, False)
                else:
                    sources = (covisit_sources(row, e, r.event_key)
                               if e.item_id and e.type in MEASURE_INDEX else [])
                    apply_user_event(row, e, r.event_key)
                    granted = _grant(user.aux.credits, r, True)
                    user.seqs.append(seq)  # _touch, inline
                    user.changed = True
                    if e.ts > user.last_ts:
                        user.last_ts = e.ts
                # Same answer before and after the row applied it (entities.is_reorder).
                accepted.append((r, sources, e.type == "purchase" and e.item_id is not None and is_reorder(row, e),
                                 granted))
            except Exception as exc:  # noqa: BLE001 - whatever it is, it costs only this record
                _poison(stats, r, exc)
    return accepted


def _count_anonymous(batch: _Batch, records: list[StreamRecord]) -> list[_Accepted]:
    """Events without a shopper: a dedupe row per source, event minute and id bucket
    decides whether each is a resend."""
    stats = batch.stats
    accepted: list[_Accepted] = []
    for r in records:
        try:
            dedupe = batch.entity("dedupe", ITEMS, _anonymous_dedupe_key(r, batch.source), entities.DedupeRow)
            verdict = dedupe.row.check(r.event_key, r.seq_key, r.arrival_ms)
            if verdict == entities.DUPLICATE:
                stats.duplicates += 1
                continue
            if verdict == entities.NEW:
                # As _touch, but the row's horizon (its TTL, ``expires_at``) runs on arrival,
                # the server's clock, never on the client's event time.
                dedupe.seqs.append(r.seq)
                dedupe.changed = True
                if r.arrival_ms > dedupe.last_ts:
                    dedupe.last_ts = r.arrival_ms
            stats.anonymous += 1
            e = r.event
            granted = 0
            if e.actor is not None and not e.bot:
                actor = batch.entity("actor", ITEMS, keys.actor_key(e.actor), entities.ActorRow)
                new = not actor.applied(r.seq)
                granted = _grant(actor.row.credits, r, new)
                if new:
                    _touch(actor, r)
            accepted.append((r, [], False, granted))
        except Exception as exc:  # noqa: BLE001
            _poison(stats, r, exc)
    return accepted


def _apply_stock(batch: _Batch, records: list[StreamRecord]) -> None:
    """Stock levels and catalogue details are idempotent (the newest by event time wins): no
    dedupe needed."""
    stats = batch.stats
    for r in records:
        try:
            item_id = r.event.item_id
            item = batch.item(item_id)
            if r.event.type == "stock" and item_id not in stats.stock_before:
                stats.stock_before[item_id] = item.row.stock[0] if item.row.stock else None
            if item.applied(r.seq):
                stats.already_applied += 1
            else:
                entities.apply_item_event(item.row, r.event, r.event_key)
                _touch(item, r)
            if r.event.type == "stock":
                stats.stock_levels[item_id] = item.row.stock[0] if item.row.stock else r.event.stock
                stats.stock_ts[item_id] = item.row.stock[1] if item.row.stock else r.event.ts
        except Exception as exc:  # noqa: BLE001
            _poison(stats, r, exc)


def _count_items_and_variants(batch: _Batch, accepted: list[_Accepted]) -> None:
    """What the deciding rows accepted counts for its item (with its co-visits) and for the
    variant its rec_id attributes it to, unless that row already holds the record."""
    add_covisits = entities.add_covisits
    moves_variant, item_credit = entities.moves_variant, entities.ITEM
    items = batch.items
    is_synthetic = keys.is_synthetic
    for r, sources, reorder, granted in accepted:
        e = r.event
        if is_synthetic(e.user_id, e.item_id):
            continue  # a smoke check: its shopper's own row only (keys.SYNTHETIC_PREFIX)
        if sources and any(is_synthetic(s) for s in sources):
            sources = [s for s in sources if not is_synthetic(s)]
        seq = r.seq
        try:
            if e.item_id is not None and e.type in MEASURE_INDEX:
                if not granted & item_credit:
                    batch.stats.not_credited += 1
                else:
                    item = items.get(e.item_id) or batch.item(e.item_id)
                    if seq > item.base_mark or not item.applied(seq):
                        # One shopper's worth: quantity 1 (looked up per call: tests patch it).
                        entities.apply_item_event(item.row, e, r.event_key, reorder, 1)
                        if sources:
                            add_covisits(item.row, sources, e.ts)
                        item.seqs.append(seq)  # _touch, inline
                        item.changed = True
                        if e.ts > item.last_ts:
                            item.last_ts = e.ts
            if e.variant is not None and e.user_id is not None and not e.bot and moves_variant(e, granted):
                variant = batch.variant(e.rec_id, e.variant)
                if seq > variant.base_mark or not variant.applied(seq):
                    entities.apply_variant_credit(variant.row, e, granted)
                    _touch(variant, r)
        except Exception as exc:  # noqa: BLE001
            _poison(batch.stats, r, exc)


def _changes(batch: _Batch, holes: list[tuple[int, int]], now_ms: int, newest_arrival_ms: int) -> list[Change]:
    """The changed rows, each with its watermark moved and its holes noted (or, in a replay,
    filled); a row that cannot be stored sends its records to the quarantine."""
    changes = []
    source, replay = batch.source, batch.replay
    for ent in batch.entities.values():
        if not ent.changed:
            continue
        try:
            if replay is not None:
                ent.aux.fill(source, *replay)
            elif holes:
                ent.aux.note_holes(source, ent.base_mark, max(ent.seqs), holes, now_ms)
            changes.append(_finish(ent, source, now_ms, newest_arrival_ms))
        except Exception as exc:  # noqa: BLE001 - the row cannot be stored: its records are quarantined
            reason = f"row {ent.key[0]}|{ent.key[1]} cannot be stored: {type(exc).__name__}: {exc}"[:500]
            for seq in ent.seqs:
                batch.stats.poison.setdefault(seq, reason)
    return changes


def _finish(ent: _Entity, source: str, now_ms: int, newest_arrival_ms: int) -> Change:
    """Prune, then pack under the size guard."""
    ent.aux.advance(source, max(ent.seqs), now_ms)
    row = ent.row
    if ent.kind == "user":
        entities.prune_user(row, now_ms)
        seen = entities.DedupeRow(ent.aux.seen)
        seen.prune(newest_arrival_ms, entities.DEDUPE_IDS_PER_SHOPPER)
        ent.aux.seen = seen.seen
        ent.aux.credits.prune(newest_arrival_ms)
    elif ent.kind == "actor":
        row.credits.prune(newest_arrival_ms)
    elif ent.kind == "item":
        entities.prune_item(row, now_ms)
    elif ent.kind == "dedupe":
        row.prune(newest_arrival_ms)
    row_obj, aux_obj = row.to_obj(), ent.aux.to_obj()
    row_bytes, aux_bytes = pack(row_obj), pack(aux_obj)
    for _ in range(8):
        if len(row_bytes) + len(aux_bytes) <= MAX_ROW_BYTES:
            break
        entities.shrink(row)
        row_obj = row.to_obj()
        row_bytes = pack(row_obj)
    else:
        raise ValueError(f"{len(row_bytes) + len(aux_bytes)} bytes, over {MAX_ROW_BYTES}")
    return Change(ent.table, ent.key, ent.kind, row_obj, aux_obj, ent.version, ent.seqs, ent.last_ts,
                  row_bytes, aux_bytes)


def _event_order(r: StreamRecord) -> tuple[int, int]:
    return r.event.ts, r.event_key


def _touch(ent: _Entity, r: StreamRecord) -> None:
    # The watermark moves once per row at the end of the batch (the highest of ``seqs``).
    ent.seqs.append(r.seq)
    ent.changed = True
    if r.event.ts > ent.last_ts:
        ent.last_ts = r.event.ts


def expires_at(change: Change, now_ms: int) -> int:
    """The row's TTL attribute (epoch seconds)."""
    return (max(change.last_ts, now_ms) + ROW_TTL_MS[change.kind]) // 1000
