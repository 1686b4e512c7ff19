"""Randomized fault injection for ``aggregate`` (the way FoundationDB and Jepsen earn trust).

One *schedule* = one seed: a generated event stream (shoppers and anonymous visitors,
a hot item, stock updates some of which carry a ``user_id``, experiment attributions, late
and out-of-order events, client resends of earlier ``event_id``s, poison records), run
through the real ``functions/aggregate`` handler by a simulated event source mapping
(batches per shard, ``batchItemFailures`` honoured by retrying from the lowest failed
record, bisection of a batch whose invocation failed, redelivery of batches already
done), against the in-memory store with faults injected at random points: throttled reads
and writes, a timeout after a write succeeded, a crash between two rows, a quarantine or
sold-out write that fails, an invocation that times out after finishing, and a bug that
raises while one record is applied.

The final rows are compared with an exactly-once reference computed directly from the
accepted events (valid, first occurrence of each ``event_id``): every count too low is
*lost*, every count too high *doubled*; a poison record missing from the quarantine is lost.

Replay one seed, with the differences: ``python -m tests.faults --seed N``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field

from personalize import keys
from personalize.adapters.quarantine import MemoryQuarantine, QuarantineError
from personalize.adapters.rowstore import MemoryRowStore, RowStoreError, ThrottledError
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.stream import StreamReader
from personalize.ingest import entities, windows
from personalize.ingest import events as events_mod
from personalize.ingest.aggregation import ITEMS, USERS
from personalize.ingest.events import MEASURE_INDEX
from personalize.ingest.pipeline import Ingestor
from personalize.ingest.processor import REPLAY_EVENT_NAME

T_BASE = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/faults"
BOOM = "boom"  # applying an event of this item raises (a stand-in for any bug)
MAX_ATTEMPTS = 400


class Crash(Exception):  # noqa: N818 - the invocation dies here (timeout, out of memory)
    pass


@dataclass
class Faults:
    throttle: float
    timeout_after_write: float
    crash: float
    read: float
    quarantine: float
    soldout: float
    invocation_timeout: float
    redeliver: float


class FaultyStore(MemoryRowStore):
    def __init__(self, rng: random.Random, faults: Faults, clock):
        super().__init__(clock=clock)
        self.rng, self.faults = rng, faults

    def get_many(self, table, keys_, consistent=True):
        if self.rng.random() < self.faults.read:
            raise ThrottledError("injected: read throttled")
        return super().get_many(table, keys_, consistent)

    def put(self, table, change, expires_at):
        f, roll = self.faults, self.rng.random()
        if roll < f.crash:
            raise Crash("injected: crash before this row")
        if roll < f.crash + f.throttle:
            raise ThrottledError("injected: throttled")
        super().put(table, change, expires_at)
        if roll < f.crash + f.throttle + f.timeout_after_write:
            raise RowStoreError("injected: timed out after the write landed")
        if self.rng.random() < f.crash:
            raise Crash("injected: crash after this row")


class FaultyQuarantine(MemoryQuarantine):
    def __init__(self, rng: random.Random, p: float):
        super().__init__()
        self.rng, self.p = rng, p

    def send(self, entries):
        if self.rng.random() < self.p:
            raise QuarantineError([e["id"] for e in entries])
        super().send(entries)


class RecordedStream(StreamReader):
    """The shards as written: which record follows another."""

    def __init__(self, records: list[Record]):
        self.seqs: dict[str, list[int]] = defaultdict(list)
        for r in records:
            self.seqs[r.shard].append(r.seq)

    def successor(self, stream_arn, shard, seq):
        return next((s for s in self.seqs[shard] if seq is None or s > seq), None)


class FaultySoldOut(MemorySoldOut):
    """The availability log: a write fails before it lands, or after (the batch is retried)."""

    def __init__(self, rng: random.Random, p: float):
        super().__init__(limits_model=None)
        self.rng, self.p = rng, p

    def append(self, entries, writer, now_ms):
        roll = self.rng.random()
        if roll < self.p / 2:
            raise RuntimeError("injected: availability log write failed")
        super().append(entries, writer, now_ms)
        if roll < self.p:
            raise RuntimeError("injected: availability log write timed out after it landed")


@dataclass
class Record:
    data: bytes
    partition_key: str
    seq: int = 0
    arrival_ms: int = 0
    shard: str = ""


@dataclass
class Outcome:
    seed: int
    records: int = 0
    events: int = 0  # accepted distinct events the reference counts
    resends: int = 0
    poison: int = 0
    invocations: int = 0
    given_up: int = 0  # records the trigger skipped (then re-driven as replay-failures does)
    lost: int = 0
    doubled: int = 0
    stuck: bool = False
    diffs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.doubled and not self.stuck

    def replay_hint(self) -> str:
        return f"replay: python -m tests.faults --seed {self.seed}  (with PYTHONPATH as in the Makefile)"


# --- the stream ------------------------------------------------------------------------

POISON = [
    b"\xff\xfe not json",
    b"",
    b"[" * 5000,
    b'{"event_id": "\\ud800", "type": "view", "user_id": "u0", "item_id": "i0", "ts": %d}',
    b'{"event_id": "q", "type": "purchase", "user_id": "u0", "item_id": "i0", "quantity": 18446744073709551615,'
    b' "ts": %d}',
    b'{"event_id": "c", "type": "view", "user_id": "u0", "item_id": "i0", "country": "QQ", "ts": %d}',
    b'{"event_id": "n", "type": "view", "user_id": "u0", "item_id": "i0", "ts": NaN}',
    b'{"type": "view"}',
    b'{"event_id": "s", "type": "stock", "item_id": "i0", "stock": -1, "ts": %d}',
]


def generate(rng: random.Random) -> tuple[list[Record], list[dict]]:
    """Records in stream order, and the valid events they carry (resends included)."""
    n_users, n_items = rng.randint(1, 5), rng.randint(1, 6)
    items = ["hot"] + [f"i{k}" for k in range(n_items)] + ([BOOM] if rng.random() < 0.3 else [])
    n = rng.randint(8, 40)
    stream: list[tuple[dict | None, bytes, int]] = []
    sent: list[dict] = []
    arrival = T_BASE
    for k in range(n):
        arrival += rng.randint(0, 4000)
        roll = rng.random()
        if roll < 0.06:  # poison
            raw = rng.choice(POISON)
            stream.append((None, raw.replace(b"%d", str(arrival).encode()) if b"%d" in raw else raw, arrival))
            continue
        if roll < 0.18 and sent:  # a client resends an earlier event (same id, same body)
            stream.append((rng.choice(sent), b"", arrival))
            continue
        kind = rng.choices(["view", "click", "add_to_cart", "purchase", "impression", "stock"],
                           [40, 20, 10, 8, 8, 8])[0]
        delay = rng.choice([0, 0, rng.randint(0, 120_000), rng.randint(61 * 60_000, 180 * 60_000),
                            -rng.randint(0, 60_000)])
        event = {"event_id": f"e{k}-{rng.getrandbits(40):x}", "type": kind, "ts": arrival - delay}
        item = "hot" if rng.random() < 0.4 else rng.choice(items)
        anonymous = rng.random() < 0.2
        if anonymous and (rng.random() < 0.8 or item == BOOM):  # most anonymous events name their identity
            event["actor"] = f"ip~{rng.randrange(3)}"
        if rng.random() < 0.05 and item != BOOM:  # a known bot: counts for nothing shared
            event["bot"] = True
        if kind == "stock":
            event.update(item_id=item if item != BOOM else "hot", stock=rng.randint(0, 2))
            if rng.random() < 0.5:
                event["user_id"] = f"u{rng.randrange(n_users)}"
        else:
            if not anonymous:
                event["user_id"] = f"u{rng.randrange(n_users)}"
            if kind == "impression":
                event["items"] = rng.sample(items, min(2, len(items)))
            else:
                event["item_id"] = item
            if kind in ("add_to_cart", "purchase"):
                event["quantity"] = rng.randint(1, 5)
            if kind == "purchase":
                event["price"] = rng.randint(1, 5000) / 100
            if rng.random() < 0.5:
                event["country"] = rng.choice(["US", "FR", "DE"])
            if rng.random() < 0.3:
                event["rec_id"] = f"exp{rng.randrange(2)}~{rng.getrandbits(16):x}"
                event["variant"] = rng.choice(["champion", "challenger"])
        sent.append(event)
        stream.append((event, b"", arrival))
    records = []
    valid = []
    for seq, (event, raw, arrival) in enumerate(stream, start=1):
        if event is None:
            records.append(Record(raw, f"poison-{seq}"))
        else:
            parsed = events_mod.parse_event(event, anonymous_ok=True)
            records.append(Record(json.dumps(event).encode(), events_mod.partition_key(parsed)))
            valid.append(event)
        records[-1].seq = 10**20 + seq
        records[-1].arrival_ms = arrival
    return records, valid


def shard_of(partition_key: str, shards: int) -> str:
    import hashlib

    digest = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    return f"shardId-{digest * shards >> 128:012d}"


def kinesis_event(records: list[Record]) -> dict:
    return {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.partition_key, "sequenceNumber": str(r.seq),
                    "data": base64.b64encode(r.data).decode(), "approximateArrivalTimestamp": r.arrival_ms / 1000},
        "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{r.shard}:{r.seq}",
        "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/faults",
        "awsRegion": "us-east-1", "eventSourceARN": STREAM_ARN} for r in records]}


# --- the reference -----------------------------------------------------------------------


def reference(records: list[Record], now_ms: int) -> dict:
    """Exactly-once, computed directly: every valid event once by ``event_id``, the apply
    bug's events nowhere, stock the newest level by event time.

    Shared scores count identities (issue 19): an item's measure moves once per identity (the
    shopper, else the anonymous ``actor``; bots and unknown identities never) and credit
    window of arrival, with quantity 1. Which of an identity's events in a window carries the
    credit depends on the order batches happened to apply them in, so an item's tiles are
    checked per minute against bounds (``credits``: the candidates' minutes and countries),
    and exactly wherever the candidates agree. Variants count shoppers per counter."""
    seen: set[str] = set()
    ref: dict = {"users": defaultdict(lambda: {"n": [0] * 4, "items": defaultdict(lambda: [0] * 4), "t": {}}),
                 "items": defaultdict(lambda: {"n": [0] * 4, "t": {}, "c": defaultdict(dict)}),
                 "variants": defaultdict(lambda: [set(), set(), set(), set(), 0.0]), "stock": {},
                 "credits": defaultdict(list)}
    accepted = 0
    for r in records:
        try:
            e = events_mod.parse_event(events_mod.loads(r.data), r.arrival_ms, anonymous_ok=True)
        except events_mod.EventError:
            continue
        if e.item_id == BOOM and e.type in MEASURE_INDEX:
            continue
        if e.type == "stock":
            key = (e.ts, entities.id_hash(e.event_id))
            if e.item_id not in ref["stock"] or ref["stock"][e.item_id][0] < key:
                ref["stock"][e.item_id] = (key, e.stock)
            continue
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        accepted += 1
        measure = MEASURE_INDEX.get(e.type)
        if measure is not None:
            qty = e.quantity if measure >= 2 else 1
            if e.user_id is not None:
                u = ref["users"][e.user_id]
                u["n"][measure] += qty
                u["items"][e.item_id][measure] += qty
                windows.add(u["t"], e.ts, measure, qty)
            who = e.user_id if e.user_id is not None else e.actor
            if who is not None and not e.bot:
                ref["credits"][(who, e.item_id, measure, entities.credits.window_of(r.arrival_ms))].append(
                    (windows.minute_of(e.ts), e.country))
        if e.variant is not None and e.user_id is not None and not e.bot:
            v = ref["variants"][(keys.experiment_of(e.rec_id), e.variant)]
            v[0].add(e.user_id)  # any attributed event: the shopper was exposed
            counter = entities.VARIANT_COUNTER.get(e.type)
            if counter is not None:
                v[counter].add(e.user_id)
            if e.type == "purchase" and e.price is not None:
                v[4] += e.price * e.quantity
    for (_, item_id, measure, _) in ref["credits"]:
        ref["items"][item_id]["n"][measure] += 1
    for row in ref["users"].values():
        windows.prune(row["t"], now_ms)
    ref["accepted"] = accepted
    return ref


def _credited_tiles_diff(name: str, got: dict, credits: list[list[tuple[int, str | None]]], measure: int,
                         now_ms: int, out: Outcome, country: str | None = None) -> None:
    """An item's tiles of ``measure`` (a country's when given), pruned at ``now_ms``, against
    the credits: per minute, at least the credits all of whose candidates fall there and at
    most those with any candidate there; in all, between the credits every candidate of which
    is counted and those with any that is."""
    oldest = windows.minute_of(now_ms) - windows.LONGEST_WINDOW_MINUTES
    counted = [[m for m, c in cands if m > oldest and (country is None or c == country)] for cands in credits]
    low: dict[int, int] = defaultdict(int)
    high: dict[int, int] = defaultdict(int)
    for cands, kept in zip(credits, counted):
        if kept and len(kept) == len(cands) and len(set(kept)) == 1:
            low[kept[0]] += 1
        for minute in set(kept):
            high[minute] += 1
    total = 0
    for minute in set(got) | set(high):
        g = got.get(minute, [0] * 4)[measure] if minute > oldest else 0
        total += g
        if g < low.get(minute, 0):
            _count(f"{name} tile {minute} [{measure}] (at least)", g, low[minute], out)
        elif g > high.get(minute, 0):
            _count(f"{name} tile {minute} [{measure}] (at most)", g, high.get(minute, 0), out)
    all_in = sum(1 for cands, kept in zip(credits, counted) if kept and len(kept) == len(cands))
    any_in = sum(1 for kept in counted if kept)
    if total < all_in:
        _count(f"{name} tiles [{measure}] (at least)", total, all_in, out)
    elif total > any_in:
        _count(f"{name} tiles [{measure}] (at most)", total, any_in, out)


def _tiles_diff(name: str, got: dict, want: dict, out: Outcome) -> None:
    for minute in set(got) | set(want):
        g, w = got.get(minute, [0] * 4), want.get(minute, [0] * 4)
        for i in range(4):
            _count(f"{name} tile {minute} [{i}]", g[i], w[i], out)


def _count(name: str, got: float, want: float, out: Outcome) -> None:
    if got == want:
        return
    if got > want:
        out.doubled += got - want
    else:
        out.lost += want - got
    out.diffs.append(f"{name}: got {got}, want {want}")


def compare(store: MemoryRowStore, soldout: MemorySoldOut, quarantine: MemoryQuarantine, records: list[Record],
            now_ms: int, out: Outcome) -> None:
    ref = reference(records, now_ms)
    out.events = ref["accepted"]
    for user_id, want in ref["users"].items():
        stored = store.get(USERS, keys.user_key(user_id))
        row = entities.UserRow.from_obj(stored.row if stored else None)
        for i in range(4):
            _count(f"user {user_id} total[{i}]", row.totals[i], want["n"][i], out)
        for item, counts in want["items"].items():
            got = row.items.get(item, [0] * 5)
            for i in range(4):
                _count(f"user {user_id} item {item}[{i}]", got[i], counts[i], out)
        tiles = {m: t for m, t in row.tiles.items()}
        windows.prune(tiles, now_ms)
        _tiles_diff(f"user {user_id}", tiles, want["t"], out)
    users_with_rows = {pk[2:] for (pk, _) in store.tables.get(USERS, {})}
    for extra in users_with_rows - set(ref["users"]):
        row = entities.UserRow.from_obj(store.get(USERS, keys.user_key(extra)).row)
        _count(f"user {extra} (only anonymous or duplicate events) total", sum(row.totals), 0, out)
    item_ids = set(ref["items"]) | set(ref["stock"])
    for item_id in item_ids:
        rows = [entities.ItemRow.from_obj(s.row) for s in store.query(ITEMS, f"i#{item_id}")]
        view = entities.merge_item_rows(rows, now_ms) if rows else None
        want = ref["items"].get(item_id)
        if want is not None:
            for i in range(4):
                _count(f"item {item_id} total[{i}]", view.totals[i] if view else 0, want["n"][i], out)
            for i in range(4):
                credits = [c for (_, it, m, _), c in ref["credits"].items() if it == item_id and m == i]
                _credited_tiles_diff(f"item {item_id}", view.tiles if view else {}, credits, i, now_ms, out)
                countries = {c for cands in credits for _, c in cands if c} | set(view.countries if view else {})
                for country in countries:
                    _credited_tiles_diff(f"item {item_id} country {country}",
                                         (view.countries if view else {}).get(country, {}), credits, i, now_ms, out,
                                         country)
        if item_id in ref["stock"]:
            level = ref["stock"][item_id][1]
            got = view.stock if view else None
            if got != level:
                out.lost += 1
                out.diffs.append(f"item {item_id} stock: got {got}, want {level}")
            if (item_id in soldout.items) != (level == 0):
                out.lost += 1
                out.diffs.append(f"sold-out list {'has' if item_id in soldout.items else 'lacks'} {item_id}"
                                 f" (stock {level})")
    for (experiment, variant), want in ref["variants"].items():
        rows = [entities.VariantRow.from_obj(s.row) for s in store.query(ITEMS, keys.variant_pk(experiment, variant))]
        counts = [sum(r.counts[i] for r in rows) for i in range(4)]
        for i in range(4):
            _count(f"variant {experiment}/{variant}[{i}] (shoppers)", counts[i], len(want[i]), out)
        revenue = round(sum(r.revenue for r in rows), 6)
        if revenue != round(want[4], 6):
            _count(f"variant {experiment}/{variant} revenue", revenue, round(want[4], 6), out)
    quarantined = {int(q["id"]) for q in quarantine.entries if str(q["id"]).isdigit()}
    for r in records:
        try:
            e = events_mod.parse_event(events_mod.loads(r.data), r.arrival_ms, anonymous_ok=True)
            poison = e.item_id == BOOM and e.type in MEASURE_INDEX
        except events_mod.EventError:
            poison = True
        if poison:
            out.poison += 1
            if r.seq not in quarantined:
                out.lost += 1
                out.diffs.append(f"poison record {r.seq} ({r.data[:40]!r}) not in the quarantine")
        elif r.seq in quarantined:
            out.diffs.append(f"valid record {r.seq} quarantined ({r.data[:60]!r})")
            out.lost += 1


# --- the event source mapping ---------------------------------------------------------


@contextlib.contextmanager
def apply_bug():
    """Applying an event of item ``BOOM`` raises, wherever it is applied: in its item's row,
    and in its identity's credits (an event the identity's credit was already used for never
    reaches the item's row; every BOOM event has an identity and is no bot's)."""
    from personalize.ingest import aggregation

    real, real_grant = entities.apply_item_event, aggregation._grant

    def buggy(row, event, event_key, *rest):
        if event.item_id == BOOM and event.type != "stock":
            raise KeyError("injected bug")
        return real(row, event, event_key, *rest)

    def buggy_grant(credits, r, new):
        if r.event.item_id == BOOM and r.event.type in MEASURE_INDEX:
            raise KeyError("injected bug in the credits")
        return real_grant(credits, r, new)

    entities.apply_item_event, aggregation._grant = buggy, buggy_grant
    try:
        yield
    finally:
        entities.apply_item_event, aggregation._grant = real, real_grant


_HANDLER = None


def handler():
    global _HANDLER
    if _HANDLER is None:
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        # Quiet Powertools for the handler loaded here only: the environment is put back, or every
        # Powertools logger made later in this process (a test worker's next files) would be
        # CRITICAL too, and the edge's error lines silent (the ops bench counts them).
        quiet = {"POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_LOG_LEVEL": "CRITICAL",
                 "POWERTOOLS_METRICS_NAMESPACE": "faults"}
        saved = {name: os.environ.get(name) for name in quiet}
        for name, value in quiet.items():
            os.environ.setdefault(name, value)
        try:
            from infra.local import handlers

            _HANDLER = handlers.load("aggregate", fresh=False)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return _HANDLER


def run_schedule(seed: int, shards: int | None = None) -> Outcome:
    rng = random.Random(seed)
    out = Outcome(seed)
    records, _ = generate(rng)
    out.records = len(records)
    shards = shards or rng.randint(1, 3)
    for r in records:
        r.shard = shard_of(r.partition_key, shards)
    level = rng.choice([0.0, 0.05, 0.15, 0.3])
    faults = Faults(throttle=level * rng.random(), timeout_after_write=level * rng.random(),
                    crash=level * rng.random() / 4, read=level * rng.random() / 2,
                    quarantine=level * rng.random(), soldout=level * rng.random(),
                    invocation_timeout=level * rng.random() / 2, redeliver=level * rng.random())
    clock = {"now": T_BASE / 1000}
    store = FaultyStore(rng, faults, clock=lambda: clock["now"])  # TTLs judged on the ingestor's clock
    quarantine = FaultyQuarantine(rng, faults.quarantine)
    soldout = FaultySoldOut(rng, faults.soldout)
    aggregate = handler()
    aggregate.processor._ingestor = Ingestor(store, quarantine, clock=lambda: clock["now"], soldout=soldout,
                                             stream=RecordedStream(records))
    from infra.local.lambda_events import context

    ctx = context("aggregate")
    pending = {s: [r for r in records if r.shard == s] for s in sorted({r.shard for r in records})}
    limit = {s: 0 for s in pending}
    tries = {s: 0 for s in pending}
    # Half the schedules run with a trigger that gives up after a few attempts (its range
    # then goes to the on-failure queue, and is re-driven at the end as replay-failures does).
    give_up_after = rng.choice([0, rng.randint(1, 4)])
    given_up: list[list[Record]] = []
    attempts = 0
    with apply_bug(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        while any(pending.values()):
            attempts += 1
            if attempts > MAX_ATTEMPTS:
                out.stuck = True
                out.diffs.append(f"stuck after {MAX_ATTEMPTS} invocations: {sum(map(len, pending.values()))} "
                                 "records never got through")
                break
            shard = rng.choice([s for s in pending if pending[s]])
            size = limit[shard] or rng.randint(1, 25)
            batch = pending[shard][:size]
            clock["now"] = max(clock["now"], (batch[-1].arrival_ms + rng.randint(0, 30_000)) / 1000)
            out.invocations += 1
            try:
                response = aggregate.lambda_handler(kinesis_event(batch), ctx)
                failures = [int(f["itemIdentifier"]) for f in response.get("batchItemFailures", [])]
                raised = rng.random() < faults.invocation_timeout  # finished, but too late for Lambda
            except Exception:  # noqa: BLE001 - Crash, or whatever the handler raised
                failures, raised = [], True
            if raised or failures:
                if failures:
                    done = [r for r in batch if r.seq < min(failures)]
                    del pending[shard][:len(done)]
                    batch = batch[len(done):]
                tries[shard] += 1
                if give_up_after and tries[shard] > give_up_after:  # retries exhausted: skip the range
                    given_up.append(batch)
                    del pending[shard][:len(batch)]
                    out.given_up += len(batch)
                    tries[shard], limit[shard] = 0, 0
                    continue
                limit[shard] = max(1, len(batch) // 2) if raised else 0  # bisect a failed invocation
                continue
            del pending[shard][:len(batch)]
            limit[shard], tries[shard] = 0, 0
            if rng.random() < faults.redeliver:  # at-least-once: the same batch once more
                out.invocations += 1
                try:
                    aggregate.lambda_handler(kinesis_event(batch), ctx)
                except Exception:  # noqa: BLE001, S110 - a redelivery's outcome does not move the checkpoint
                    pass
        for batch in given_up:  # make replay-failures: each range until it is applied
            pending_replay = batch
            while pending_replay:
                attempts += 1
                if attempts > MAX_ATTEMPTS * 2:
                    out.stuck = True
                    out.diffs.append("replay never got through")
                    break
                out.invocations += 1
                event = kinesis_event(pending_replay)
                for record in event["Records"]:
                    record["eventName"] = REPLAY_EVENT_NAME
                try:
                    response = aggregate.lambda_handler(event, ctx)
                except Exception:  # noqa: BLE001 - again, whole
                    continue
                failures = [int(f["itemIdentifier"]) for f in response.get("batchItemFailures", [])]
                pending_replay = [r for r in pending_replay if failures and r.seq >= min(failures)]
    now_ms = int(clock["now"] * 1000)
    store.faults = Faults(0, 0, 0, 0, 0, 0, 0, 0)
    compare(store, soldout, quarantine, records, now_ms, out)
    valid = [json.loads(r.data)["event_id"] for r in records if _valid(r)]
    out.resends = len(valid) - len(set(valid))
    return out


def _valid(r: Record) -> bool:
    try:
        events_mod.parse_event(events_mod.loads(r.data), r.arrival_ms, anonymous_ok=True)
        return True
    except events_mod.EventError:
        return False


def run_many(seeds, fail_fast: bool = False) -> dict:
    totals = {"fault_schedules": 0, "fault_events": 0, "fault_records": 0, "fault_invocations": 0,
              "fault_resends": 0, "fault_poison": 0, "fault_given_up": 0, "fault_lost": 0, "fault_doubled": 0,
              "fault_stuck": 0}
    failing: list[Outcome] = []
    for seed in seeds:
        out = run_schedule(seed)
        totals["fault_schedules"] += 1
        totals["fault_events"] += out.events
        totals["fault_records"] += out.records
        totals["fault_invocations"] += out.invocations
        totals["fault_resends"] += out.resends
        totals["fault_poison"] += out.poison
        totals["fault_given_up"] += out.given_up
        totals["fault_lost"] += out.lost
        totals["fault_doubled"] += out.doubled
        totals["fault_stuck"] += int(out.stuck)
        if not out.ok:
            failing.append(out)
            if fail_fast:
                break
    totals["failing_seeds"] = [o.seed for o in failing[:20]]
    totals["_failing"] = failing
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append", help="replay this seed (repeatable)")
    parser.add_argument("--schedules", type=int, default=0, help="or run this many seeds from --start")
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    seeds = args.seed or range(args.start, args.start + (args.schedules or 100))
    for seed in seeds:
        out = run_schedule(seed)
        status = "ok" if out.ok else "FAILED"
        print(f"seed {seed}: {status}: {out.records} records, {out.events} events, {out.resends} resends, "
              f"{out.poison} poison, {out.given_up} given up, {out.invocations} invocations, lost {out.lost}, "
              f"doubled {out.doubled}")
        for line in out.diffs[:40]:
            print("   ", line)


if __name__ == "__main__":
    main()
