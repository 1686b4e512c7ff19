"""Replay the Instacart event stream, in time order, through the same aggregation, snapshot
and ranking-feature code that production runs, and take each order's candidates and
features as they were just before the order was placed (point-in-time correct: the batch
that holds the order's own events is applied only after its example is taken)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from personalize import keys, ranking, snapshots, state
from personalize.aggregation import ITEMS, USERS, Stored, StreamRecord, aggregate_batch, rows_needed
from personalize.events import parse_event
from personalize.ingest import expires_at

from .instacart import Order, order_events

SHARD = "replay"
SNAPSHOT_EVERY_ORDERS = 100  # the item snapshot is rebuilt after this many orders of traffic


@dataclass
class Example:
    order: Order
    candidates: np.ndarray      # item indexes in the snapshot
    X: np.ndarray               # float32 [candidates, len(ranking.FEATURES)]
    y: np.ndarray               # bool [candidates]: bought in this order
    n_true: int                 # distinct products in the order (recall's denominator)
    snapshot_items: list[str] = field(repr=False, default_factory=list)


class Replayer:
    """An in-memory feature store fed through ``aggregation.aggregate_batch``."""

    def __init__(self):
        self.rows: dict[str, dict[tuple[str, str], Stored]] = {USERS: {}, ITEMS: {}}
        self.expires: dict[tuple[str, str], int] = {}  # TTL, as DynamoDB would apply it
        self.seq = 0
        self.snapshot: snapshots.ItemSnapshot | None = None
        self.snapshot_builds = 0

    def apply(self, events: list[dict], now_ms: int) -> None:
        records = []
        for event in events:
            self.seq += 1
            records.append(StreamRecord.of(str(self.seq), parse_event(event)))
        needed = rows_needed(records, SHARD)
        loaded = {}
        for table in (USERS, ITEMS):
            for key in needed[table]:
                stored = self.rows[table].get(key)
                if stored is not None:
                    expired = self.expires[key] * 1000 < now_ms
                    loaded[key] = Stored(None, None, stored.version) if expired else stored
        changes, _ = aggregate_batch(records, SHARD, loaded, now_ms)
        for c in changes:
            self.rows[c.table][c.key] = Stored(c.row, c.aux, c.version + 1)
            self.expires[c.key] = expires_at(c, now_ms)

    def user_row(self, user_id: str) -> state.UserRow | None:
        stored = self.rows[USERS].get(keys.user_key(user_id))
        return state.UserRow.from_obj(stored.row) if stored else None

    def build_snapshot(self, now_ms: int) -> snapshots.ItemSnapshot:
        views = {}
        for (pk, _), stored in self.rows[ITEMS].items():
            if pk.startswith("i#"):
                views[keys.item_id_of(pk)] = state.merge_item_rows([state.ItemRow.from_obj(stored.row)], now_ms)
        self.snapshot = snapshots.build(views, now_ms, f"replay-{now_ms}")
        self.snapshot_builds += 1
        return self.snapshot


def replay(orders: list[Order], negatives_kept: float | None, test_orders: set[str], seed: int = 0,
           progress: bool = True):
    """Yield an ``Example`` for every order that has history (a user's order 2 onwards).

    For orders not in ``test_orders``, keep only the positives and a ``negatives_kept``
    share of the negatives (seeded), to keep training data in memory.
    """
    rng = np.random.default_rng(seed)
    replayer = Replayer()
    timeline = []
    for o in orders:
        for e in order_events(o):
            timeline.append((e["ts"], e["event_id"], e, o))
    timeline.sort(key=lambda t: (t[0], t[1]))
    first_event = {o.order_id: min(e["ts"] for e in order_events(o)) for o in orders}
    pending: list[dict] = []
    started = time.monotonic()
    seen_orders = since_build = 0
    emitted = set()
    for ts, _, event, order in timeline:
        if order.order_id not in emitted and ts == first_event[order.order_id]:
            emitted.add(order.order_id)
            if pending:
                replayer.apply(pending, pending[-1]["ts"])
                pending = []
            seen_orders += 1
            since_build += 1
            if order.number >= 2:
                now = ts - 1
                if replayer.snapshot is None or since_build >= SNAPSHOT_EVERY_ORDERS:
                    replayer.build_snapshot(now)
                    since_build = 0
                example = _example(replayer, order, now)
                if example is not None:
                    if order.order_id not in test_orders and negatives_kept is not None:
                        keep = example.y | (rng.random(len(example.y)) < negatives_kept)
                        example.candidates, example.X, example.y = (example.candidates[keep], example.X[keep],
                                                                    example.y[keep])
                    yield example
            if progress and seen_orders % 1000 == 0:
                print(f"  replay: {seen_orders}/{len(orders)} orders, {replayer.snapshot_builds} snapshots, "
                      f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
        pending.append(event)
    if pending:
        replayer.apply(pending, pending[-1]["ts"])


def _example(replayer: Replayer, order: Order, now_ms: int) -> Example | None:
    snap = replayer.snapshot
    row = replayer.user_row(order.user_id)
    cands = ranking.candidates(snap, row)
    if len(cands) == 0:
        return None
    X = ranking.feature_matrix(snap, row, cands, now_ms)
    truth = {snap.index[p] for p in order.products if p in snap.index}
    y = np.isin(cands, np.fromiter(truth, dtype=np.int32, count=len(truth)))
    return Example(order, cands, X, y, len(set(order.products)), snap.items)
