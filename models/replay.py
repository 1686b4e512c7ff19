"""Replay the Instacart event stream, in time order, through the same aggregation, snapshot
and ranking-feature code that production runs, and take examples point-in-time correct
(the events after an example's moment are applied only after it is taken):

* ``order``: just before the order's first add-to-cart, rank for the whole basket;
* ``session``: in the middle of the order, after the first half of its items went into the
  cart as events through the aggregation (the request carrying the last one as
  ``context_item``, as a product page would), rank for the rest of the basket;
* ``blind`` (validation and test orders only): the same moment and truth as ``session``,
  but from the shopper's row as it was before the order, without the context item: what
  a ranker that ignores the session would see (it does not know what is in the cart, so
  it may rank those items: they are not what is still to be bought);
* ``blind_cart`` (validation and test orders only): ``blind`` with the cart's items taken
  out of its candidates by the evaluator: what the session adds beyond knowing the cart.

The truth is always what is still to be bought: the order's products after the cut that
are not already in the cart. ``ranking.candidates`` removes the items in the shopper's cart
(from the row: added this session, not bought since), online and here alike."""

from __future__ import annotations

import copy
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from personalize import keys
from personalize.ingest import entities
from personalize.ingest.aggregation import ITEMS, USERS, Stored, StreamRecord, aggregate_batch, expires_at, rows_needed
from personalize.ingest.events import parse_event
from personalize.serving import ranking, snapshots

from .instacart import Order, order_events

SHARD = "replay"
SNAPSHOT_EVERY_ORDERS = 100  # the item snapshot is rebuilt after this many orders of traffic
SNAPSHOT_AT = "__snapshot_at__"  # a timeline marker: build the snapshot serving built then
KEEP_VERSIONS = 8  # serving's snapshots kept for the decisions that name them


@dataclass
class Example:
    order: Order
    kind: str                   # "order", "session", "blind" or "blind_cart"
    split: str                  # "train", "validation" or "test"
    candidates: np.ndarray      # item indexes in the snapshot
    X: np.ndarray               # float32 [candidates, len(ranking.FEATURES)]
    y: np.ndarray               # bool [candidates]: bought in this order (after this moment)
    n_true: int                 # distinct products to find (recall's denominator)
    snapshot_items: list[str] = field(repr=False, default_factory=list)
    cut: int = 0                # products already in the cart (session, blind)
    now_ms: int = 0             # the decision's moment (replay clock)


@dataclass
class Logged:
    """A decision serving logged (a signed-in impression with its ``decision``), with what the
    replay computes for that shopper just before it: the candidates (item ids) and their
    features. Serving's own candidate set is named only by a hash of indexes into its
    snapshot, which the replay's snapshot does not reproduce: these are the replay's."""

    impression: dict
    candidates: list[str]
    X: np.ndarray               # float32 [candidates, len(ranking.FEATURES)]
    now_ms: int
    same_snapshot: bool = False  # the features come from the snapshot serving named, rebuilt at its time


def is_logged_decision(event: dict) -> bool:
    """A signed-in shopper's impression carrying the decision serving signed (not a fallback's)."""
    decision = event.get("decision")
    return (event.get("type") == "impression" and bool(event.get("user_id")) and isinstance(decision, dict)
            and isinstance(decision.get("items"), list) and isinstance(decision.get("propensities"), list)
            and len(decision["items"]) == len(decision["propensities"]) and decision.get("model") != "trending")


class Replayer:
    """An in-memory feature store fed through ``aggregation.aggregate_batch``."""

    def __init__(self):
        self.rows: dict[str, dict[tuple[str, str], Stored]] = {USERS: {}, ITEMS: {}}
        self.expires: dict[tuple[str, str], int] = {}  # TTL, as DynamoDB would apply it
        self.seq = 0
        self.snapshot: snapshots.ItemSnapshot | None = None
        self.snapshot_builds = 0
        self.changed_items: set[tuple[str, str]] = set()  # item rows written since ``take_changed_items``

    def apply(self, events: list[dict], now_ms: int, items: bool = True) -> None:
        """Aggregate ``events`` as one batch. ``items=False``: only the shoppers' rows change
        (the item rows' changes are dropped): a held-out order updates its shopper's history
        but no item feature, so no other shopper's example can see it."""
        records = []
        for event in events:
            self.seq += 1
            # anonymous_ok: the archive's anonymous shoppers (an ``actor``, no ``user_id``)
            # arrival_ms: when the stream received it (the archive keeps it): aggregate's windows and
            # credits count by it, never by the client's ts
            arrival = event.get("arrival_ms")
            records.append(StreamRecord.of(str(self.seq), parse_event(event, anonymous_ok=True),
                                           arrival_ms=arrival if type(arrival) is int else None))
        needed = rows_needed(records, SHARD)
        loaded = {}
        for table in (USERS, ITEMS) if items else (USERS,):
            for key in needed[table]:
                stored = self.rows[table].get(key)
                if stored is not None:
                    expired = self.expires[key] * 1000 < now_ms
                    loaded[key] = Stored(None, None, stored.version) if expired else stored
        changes, _ = aggregate_batch(records, SHARD, loaded, now_ms)
        for c in changes:
            if not items and c.table != USERS:
                continue
            self.rows[c.table][c.key] = Stored(c.row, c.aux, c.version + 1)
            self.expires[c.key] = expires_at(c, now_ms)
            if c.table == ITEMS:
                self.changed_items.add(c.key)

    def take_changed_items(self) -> dict[tuple[str, str], object]:
        """The item rows written since the last call (their stored objects)."""
        out = {key: self.rows[ITEMS][key].row for key in sorted(self.changed_items)}
        self.changed_items = set()
        return out

    def user_row(self, user_id: str) -> entities.UserRow | None:
        stored = self.rows[USERS].get(keys.user_key(user_id))
        return entities.UserRow.from_obj(stored.row) if stored else None

    def build_snapshot(self, now_ms: int) -> snapshots.ItemSnapshot:
        self.snapshot = build_snapshot({key: stored.row for key, stored in self.rows[ITEMS].items()}, now_ms)
        self.snapshot_builds += 1
        return self.snapshot


def build_snapshot(item_rows: dict[tuple[str, str], object], now_ms: int) -> snapshots.ItemSnapshot:
    """The item snapshot serving would load, from the item rows' stored objects."""
    views = {}
    for (pk, _), row in item_rows.items():
        if pk.startswith("i#"):
            views[keys.item_id_of(pk)] = entities.merge_item_rows([entities.ItemRow.from_obj(row)], now_ms)
    return snapshots.build(views, now_ms, f"replay-{now_ms}")


def at(event: dict) -> int:
    """When the replay applies an event. A browser's ``ts`` is its word (up to 7 days old):
    its events are applied when the stream received them, where the archive kept that
    (``arrival_ms``), so a backdated event reaches no decision taken before it arrived. The
    shop's backend's (``route: server``: signed, e.g. a backfill of past orders) are applied
    at their ``ts``, as are events without an arrival time (Instacart's)."""
    arrival = event.get("arrival_ms")
    return arrival if type(arrival) is int and event.get("route") != "server" else event["ts"]


def split_of(orders: list[Order]) -> dict[str, str]:
    """Each shopper's last order tests, the penultimate validates, the rest train.
    (``models.dataset`` adds the shoppers held out entirely: their earlier orders are
    ``history``, which gives no example.)"""
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
           sessions: bool = True, replayer: Replayer | None = None, parallel: bool = False,
           splits: dict[str, str] | None = None, feeds_items: set[str] | None = None,
           snapshot_every: int = SNAPSHOT_EVERY_ORDERS, preamble: list[dict] | None = None,
           events_of: Callable[[Order], list[dict]] = order_events,
           extra: list[tuple[dict, bool]] | None = None,
           logged: Callable[[dict], bool] | None = None):
    """Yield the ``Example``s of every order that has history (a user's order 2 onwards).

    ``splits``: each order's split (default ``split_of``); a ``history`` order gives no
    example. ``feeds_items``: the orders whose events update the item rows (and so the
    snapshots: item features, co-visits, pools); the others update only their shopper's row
    (default: every order). ``snapshot_every``: the snapshot is rebuilt after this many
    orders of traffic. ``preamble``: events applied (to every row) before the first order,
    e.g. the shop's catalogue as ``stock`` events. ``events_of``: an order's events, its
    products' add-to-carts first, in ``products`` order, then its purchases (default:
    Instacart's, ``instacart.order_events``; the archive's are the shopper's own).
    ``extra``: events that belong to no order (views, clicks, impressions, abandoned carts,
    anonymous shoppers', the shop's stock and catalogue), each with whether it may update
    the item rows, applied at their time; they trigger no decision. ``logged``: an extra
    signed-in impression that carries serving's ``decision`` (and that this predicate
    accepts) also yields a ``Logged``: the
    candidates and features the replay computes for that shopper just before it (what an
    off-policy estimate scores a candidate model on).

    For training orders keep only the positives and a ``negatives_kept`` share of the
    negatives (seeded), to keep training data in memory. ``parallel``: a second process
    builds the snapshots and the examples (candidates, features) while this one runs the
    aggregation; the two halves exchange the item rows written since the last snapshot and
    the shopper's row at each example, so the examples are the same, in the same order.
    """
    maker = _ExampleMaker(negatives_kept, seed)
    commands = _commands(orders, sessions, replayer if replayer is not None else Replayer(), progress,
                         splits or split_of(orders), feeds_items, snapshot_every, preamble, events_of, extra,
                         logged)
    if not parallel:
        for command in commands:
            yield from maker.run(command)
        return
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    worker = ctx.Process(target=_make_examples, args=(theirs, maker), daemon=True)
    worker.start()
    theirs.close()
    try:
        for command in commands:
            ours.send(command)
        ours.send(None)
        while (batch := ours.recv()) is not None:
            yield from batch
    finally:
        ours.close()
        worker.join(timeout=60)
    if worker.exitcode != 0:
        raise RuntimeError(f"the replay's example process failed (exit code {worker.exitcode})")


def _make_examples(conn, maker: _ExampleMaker) -> None:
    """The second process: run the commands, then send the examples back in batches."""
    examples: list[Example] = []
    while (command := conn.recv()) is not None:
        examples.extend(maker.run(command))
    for i in range(0, len(examples), 500):
        conn.send(examples[i:i + 500])
    conn.send(None)
    conn.close()


def _commands(orders: list[Order], sessions: bool, replayer: Replayer, progress: bool, splits: dict[str, str],
              feeds_items: set[str] | None, snapshot_every: int, preamble: list[dict] | None = None,
              events_of: Callable[[Order], list[dict]] = order_events,
              extra: list[tuple[dict, bool]] | None = None, logged: Callable[[dict], bool] | None = None):
    """The aggregation half: apply the events in time order through ``replayer`` and yield,
    at each example's moment, ``("snapshot", now, item rows written since the last)`` when
    the snapshot is due, then ``(kind, order, now, split, the shopper's row object)``; with
    ``logged``, ``("logged", impression, now, the shopper's row object)`` too."""
    timeline = []
    triggers: dict[str, tuple[str, Order]] = {}
    for o in orders:
        events = events_of(o)
        feeds = feeds_items is None or o.order_id in feeds_items
        for e in events:
            timeline.append((at(e), e["event_id"], e, o, feeds))
        triggers[events[0]["event_id"]] = ("order", o)
        cut = session_cut(o)
        if sessions and cut and o.number >= 2:
            triggers[events[cut]["event_id"]] = ("session", o)
    logged_at: set[int] = set()  # id() of the impressions that yield a Logged
    versions: set[int] = set()  # the snapshots serving named (a version is its build time, ms)
    for e, feeds in extra or ():
        timeline.append((at(e), e["event_id"], e, None, feeds))
        if logged is not None and is_logged_decision(e) and logged(e):
            logged_at.add(id(e))
            version = str(e["decision"].get("snapshot") or "")
            if version.isdigit() and len(version) <= 15:
                versions.add(int(version))
    for v in versions:  # the replay builds each of them at its time, as serving's job did
        timeline.append((v, "", {SNAPSHOT_AT: v}, None, True))
    timeline.sort(key=lambda t: (t[0], t[1]))
    pending: list[tuple[dict, bool]] = []
    started = time.monotonic()

    def flush(events: list[tuple[dict, bool]]) -> None:
        # The events between two example moments split into those that feed the item rows and
        # those that update only their shopper's row (a held-out order's).
        if all(feeds for _, feeds in events):
            replayer.apply([e for e, _ in events], at(events[-1][0]))
            return
        item_feeding = [e for e, feeds in events if feeds]
        own_only = [e for e, feeds in events if not feeds]
        if item_feeding:
            replayer.apply(item_feeding, at(item_feeding[-1]))
        if own_only:
            replayer.apply(own_only, at(own_only[-1]), items=False)

    if preamble:
        replayer.apply(preamble, preamble[-1]["ts"])
    seen_orders = since_build = builds = 0
    for ts, event_id, event, order, feeds in timeline:
        if order is None and SNAPSHOT_AT in event:
            if pending:
                flush(pending)
                pending = []
            yield ("snapshot", ts, replayer.take_changed_items(), str(ts))
            builds += 1
            since_build = 0
            continue
        if order is None and id(event) in logged_at:
            if pending:
                flush(pending)
                pending = []
            if builds == 0 or since_build >= snapshot_every:
                yield ("snapshot", ts - 1, replayer.take_changed_items())
                builds += 1
                since_build = 0
            stored = replayer.rows[USERS].get(keys.user_key(event["user_id"]))
            yield ("logged", event, ts - 1, None if stored is None else stored.row,
                   str(event["decision"].get("snapshot") or ""))
        trigger = triggers.get(event_id) if order is not None else None
        if trigger is not None:
            if pending:
                flush(pending)
                pending = []
            kind, _ = trigger
            now = ts - 1
            if kind == "order":
                seen_orders += 1
                since_build += 1
                if progress and seen_orders % 2000 == 0:
                    print(f"  replay: {seen_orders}/{len(orders)} orders, {builds} snapshots, "
                          f"{time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            split = splits[order.order_id]
            if order.number >= 2 and split != "history":
                if builds == 0 or since_build >= snapshot_every:
                    yield ("snapshot", now, replayer.take_changed_items())
                    builds += 1
                    since_build = 0
                stored = replayer.rows[USERS].get(keys.user_key(order.user_id))
                yield (kind, order, now, split, None if stored is None else stored.row)
        pending.append((event, feeds))
    if pending:
        flush(pending)


class _ExampleMaker:
    """The example half: the item rows and snapshot, the rows before validation and test
    orders (for ``blind``), the seeded sampling of training negatives."""

    def __init__(self, negatives_kept: float | None, seed: int):
        self.negatives_kept = negatives_kept
        self.rng = np.random.default_rng(seed)
        self.item_rows: dict[tuple[str, str], object] = {}
        self.snapshot: snapshots.ItemSnapshot | None = None
        self.before: dict[str, entities.UserRow | None] = {}
        self.versions: dict[str, snapshots.ItemSnapshot] = {}  # serving's snapshots, rebuilt (newest last)

    def run(self, command: tuple) -> list[Example]:
        if command[0] == "snapshot":
            _, now, changed, *version = command
            self.item_rows.update(changed)
            self.snapshot = build_snapshot(self.item_rows, now)
            if version:  # one serving named: kept for the decisions that name it
                self.versions[version[0]] = self.snapshot
                while len(self.versions) > KEEP_VERSIONS:
                    self.versions.pop(next(iter(self.versions)))
            return []
        if command[0] == "logged":
            _, event, now, row_obj, version = command
            row = None if row_obj is None else entities.UserRow.from_obj(row_obj)
            snap = self.versions.get(version, self.snapshot)  # the one serving named, when rebuilt
            cands = ranking.candidates(snap, row, event.get("country"), now_ms=now)
            X = ranking.feature_matrix(snap, row, cands, now, None)
            return [Logged(event, [snap.items[c] for c in cands.tolist()], X, now, version in self.versions)]
        kind, order, now, split, row_obj = command
        row = None if row_obj is None else entities.UserRow.from_obj(row_obj)
        snap = self.snapshot
        if kind == "order":
            if split != "train":
                self.before[order.order_id] = None if row is None else entities.UserRow.from_obj(copy.deepcopy(row_obj))
            examples = [_example(snap, row, order, now, "order", split)]
        else:
            cut = session_cut(order)
            examples = [_example(snap, row, order, now, "session", split, cut, order.products[cut - 1])]
            if split != "train":
                prior = self.before.pop(order.order_id)
                examples.append(_example(snap, prior, order, now, "blind", split, cut))
                examples.append(_example(snap, prior, order, now, "blind_cart", split, cut))
        out = []
        for example in examples:
            if example is None:
                continue
            if split == "train" and self.negatives_kept is not None:
                keep = example.y | (self.rng.random(len(example.y)) < self.negatives_kept)
                example.candidates, example.X, example.y = example.candidates[keep], example.X[keep], example.y[keep]
            out.append(example)
        return out


def _example(snap: snapshots.ItemSnapshot, row: entities.UserRow | None, order: Order, now_ms: int, kind: str,
             split: str, cut: int = 0, context_item: str | None = None) -> Example | None:
    cands = ranking.candidates(snap, row, context_item=context_item, now_ms=now_ms)
    in_cart = order.products[:cut]
    if kind == "blind_cart":
        cart = np.fromiter((snap.index[p] for p in in_cart if p in snap.index), dtype=np.int32)
        cands = cands[~np.isin(cands, cart)]
    if len(cands) == 0:
        return None
    X = ranking.feature_matrix(snap, row, cands, now_ms, context_item)
    wanted = set(order.products[cut:]) - set(in_cart)
    truth = np.fromiter((snap.index[p] for p in wanted if p in snap.index), dtype=np.int32)
    y = np.isin(cands, truth)
    return Example(order, kind, split, cands, X, y, len(wanted), snap.items, cut, now_ms)
