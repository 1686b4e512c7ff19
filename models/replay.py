"""Replay the Instacart event stream, in time order, through the same aggregation, snapshot
and ranking-feature code that production runs, and take examples point-in-time correct
(the events after an example's moment are applied only after it is taken):

* ``order``: just before the order's first add-to-cart, rank for the whole basket;
* ``session``: in the middle of the order, after the first half of its items went into the
  cart as events through the aggregation (the request carrying the last one as
  ``context_item``, as a product page would), rank for the rest of the basket;
* ``blind`` (validation and test orders only): the same moment and truth as ``session``,
  but from the shopper's row as it was before the order, without the context item: what
  a ranker that ignores the session would see.

In ``session`` and ``blind`` evaluation examples the items already in the cart are not
candidates (the task is ranking the rest); training examples keep them (``train`` drops
them before fitting, so training matches the evaluation's task)."""

from __future__ import annotations

import copy
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
    kind: str                   # "order", "session" or "blind"
    split: str                  # "train", "validation" or "test"
    candidates: np.ndarray      # item indexes in the snapshot
    X: np.ndarray               # float32 [candidates, len(ranking.FEATURES)]
    y: np.ndarray               # bool [candidates]: bought in this order (after this moment)
    n_true: int                 # distinct products to find (recall's denominator)
    snapshot_items: list[str] = field(repr=False, default_factory=list)
    cut: int = 0                # products already in the cart (session, blind)


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


def split_of(orders: list[Order]) -> dict[str, str]:
    """Each shopper's last order tests, the penultimate validates, the rest train."""
    by_user: dict[str, list[Order]] = {}
    for o in orders:
        by_user.setdefault(o.user_id, []).append(o)
    out = {}
    for user_orders in by_user.values():
        user_orders.sort(key=lambda o: o.number)
        for k, o in enumerate(user_orders):
            out[o.order_id] = "test" if k == len(user_orders) - 1 else "validation" if k == len(user_orders) - 2 \
                else "train"
    return out


def session_cut(order: Order) -> int:
    """How many of the order's products are in the cart at its session example (0: none)."""
    n = len(order.products)
    return n // 2 if n >= 4 else 0


def replay(orders: list[Order], negatives_kept: float | None, seed: int = 0, progress: bool = True,
           sessions: bool = True, replayer: Replayer | None = None):
    """Yield the ``Example``s of every order that has history (a user's order 2 onwards).

    For training orders keep only the positives and a ``negatives_kept`` share of the
    negatives (seeded), to keep training data in memory.
    """
    rng = np.random.default_rng(seed)
    splits = split_of(orders)
    replayer = replayer if replayer is not None else Replayer()
    timeline = []
    triggers: dict[str, tuple[str, Order]] = {}
    for o in orders:
        events = order_events(o)
        for e in events:
            timeline.append((e["ts"], e["event_id"], e, o))
        triggers[events[0]["event_id"]] = ("order", o)
        cut = session_cut(o)
        if sessions and cut and o.number >= 2:
            triggers[events[cut]["event_id"]] = ("session", o)
    timeline.sort(key=lambda t: (t[0], t[1]))
    pending: list[dict] = []
    started = time.monotonic()
    seen_orders = since_build = 0
    before: dict[str, state.UserRow | None] = {}  # the row before the order (validation, test)
    for ts, event_id, event, order in timeline:
        trigger = triggers.get(event_id)
        if trigger is not None:
            if pending:
                replayer.apply(pending, pending[-1]["ts"])
                pending = []
            kind, _ = trigger
            split = splits[order.order_id]
            now = ts - 1
            if kind == "order":
                seen_orders += 1
                since_build += 1
                if progress and seen_orders % 2000 == 0:
                    print(f"  replay: {seen_orders}/{len(orders)} orders, {replayer.snapshot_builds} snapshots, "
                          f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            if order.number >= 2:
                if replayer.snapshot is None or since_build >= SNAPSHOT_EVERY_ORDERS:
                    replayer.build_snapshot(now)
                    since_build = 0
                row = replayer.user_row(order.user_id)
                if kind == "order":
                    if split != "train":
                        before[order.order_id] = None if row is None else state.UserRow.from_obj(copy.deepcopy(
                            row.to_obj()))
                    examples = [_example(replayer.snapshot, row, order, now, "order", split)]
                else:
                    cut = session_cut(order)
                    examples = [_example(replayer.snapshot, row, order, now, "session", split, cut,
                                         order.products[cut - 1])]
                    if split != "train":
                        examples.append(_example(replayer.snapshot, before.pop(order.order_id), order, now, "blind",
                                                 split, cut))
                for example in examples:
                    if example is None:
                        continue
                    if split == "train" and negatives_kept is not None:
                        keep = example.y | (rng.random(len(example.y)) < negatives_kept)
                        example.candidates, example.X, example.y = (example.candidates[keep], example.X[keep],
                                                                    example.y[keep])
                    yield example
        pending.append(event)
    if pending:
        replayer.apply(pending, pending[-1]["ts"])


def _example(snap: snapshots.ItemSnapshot, row: state.UserRow | None, order: Order, now_ms: int, kind: str,
             split: str, cut: int = 0, context_item: str | None = None) -> Example | None:
    cands = ranking.candidates(snap, row, context_item=context_item)
    in_cart = order.products[:cut]
    if cut and split != "train":
        cart = np.fromiter((snap.index[p] for p in in_cart if p in snap.index), dtype=np.int32)
        cands = cands[~np.isin(cands, cart)]
    if len(cands) == 0:
        return None
    X = ranking.feature_matrix(snap, row, cands, now_ms, context_item)
    wanted = set(order.products[cut:]) - set(in_cart)
    truth = np.fromiter((snap.index[p] for p in wanted if p in snap.index), dtype=np.int32)
    y = np.isin(cands, truth)
    return Example(order, kind, split, cands, X, y, len(wanted), snap.items, cut)
