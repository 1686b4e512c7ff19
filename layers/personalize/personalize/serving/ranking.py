"""Candidates and their features for one request, and the ONNX ranker that scores them.

Everything per candidate is numpy over arrays (a gather from the snapshot's item matrix,
sparse adds for co-visits); the only Python loops run over the shopper's own items (at most
64, to look up their indexes) and recent items (at most 20). One batched onnxruntime call
scores all candidates. Training's replay calls these same functions.

``FEATURES`` is the catalogue of features this code computes, in a fixed order. A model's
manifest names the ones it uses (a subset, in its own order); a name this code does not
know is refused at load time (``models.load_ranker``).
"""

from __future__ import annotations

import math
from itertools import chain, repeat

import numpy as np

from personalize.ingest import entities, windows
from personalize.ingest.entities import DAY_MS, UserRow
from personalize.ingest.events import MEASURES
from personalize.serving.features import click_rate
from personalize.serving.snapshots import ITEM_COLUMNS, ItemSnapshot

MIN_CANDIDATES = 300
NO_HISTORY_DAYS = 365.0
NO_PURCHASE_ORDERS = 100.0
MAX_CYCLE_RATIO = 100.0
MIN_INTERVAL_DAYS = 0.5

# The feature catalogue, and what each means (the manifest's `features` pick from it).
FEATURE_DOCS = {
    "ui_purchases_log": "log1p(times the shopper bought the item)",
    "ui_carts_log": "log1p(times the shopper added the item to a cart)",
    "ui_clicks_log": "log1p(times the shopper clicked the item)",
    "ui_views_log": "log1p(times the shopper viewed the item)",
    "ui_days_since_log": "log1p(days since the shopper last touched the item; 365 if never)",
    "ui_seen": "1 if the item is among the shopper's items, else 0",
    "ui_purchase_share": "the item's share of the shopper's purchases",
    "ui_in_recent": "1 if the item is among the shopper's 20 most recent interactions",
    "covisit_log": "log1p(sum of co-visit weights from the shopper's recent items to the item)",
    "context_covisit_log": "log1p(co-visit weight from the request's context_item to the item)",
    "user_purchases_log": "log1p(the shopper's all-time purchases)",
    "user_days_since_log": "log1p(days since the shopper's last event; 365 if none)",
    "user_click_rate_10m": "the shopper's clicks per view over the last 10 minutes",
    "user_views_10m_log": "log1p(the shopper's views over the last 10 minutes)",
    "ui_decayed": "the item's decayed purchase frequency: sum of PURCHASE_DECAY ** orders_ago over the "
                  "shopper's orders that held it",
    "ui_basket_rate": "share of the shopper's orders that held the item",
    "ui_orders_since_log": "log1p(the shopper's orders since the item was last bought; 100 if never)",
    "ui_days_since_purchase_log": "log1p(days since the shopper last bought the item; 365 if never)",
    "ui_cycle_log": "log1p(days since the item was last bought / the shopper's own interval between buying it "
                    "(their mean interval between orders if bought once); -1 if never bought",
    "ui_in_session": "1 if the shopper touched the item in the current session (the last hour)",
    "session_covisit_log": "log1p(sum of co-visit weights from the items of the current session to the item)",
    "copurchase_log": "log1p(sum over the shopper's items of decayed purchase weight x co-visit weight to the item)",
    "user_orders_log": "log1p(the shopper's orders)",
    "user_basket_log": "log1p(the shopper's mean distinct items per order)",
    "user_order_cycle_log": "log1p(days since the shopper's last order / their mean interval between orders); "
                            "-1 with fewer than 2 orders",
    "session_items_log": "log1p(distinct items the shopper touched in the current session)",
    "ui_rate_since_first": "orders that held the item / the shopper's orders since they first bought it",
    "user_reorder_share": "share of the items in the shopper's orders that they had bought in an earlier order",
    **{name: f"snapshot column {name}" for name in ITEM_COLUMNS},
    "popular_rank_log": "log1p(the item's rank in the global popular pool; 401 if absent)",
}
FEATURES = tuple(FEATURE_DOCS)
INDEX = {name: i for i, name in enumerate(FEATURES)}
_ITEM_START = INDEX[ITEM_COLUMNS[0]]
_ITEM_END = _ITEM_START + len(ITEM_COLUMNS)
_UI = [INDEX[n] for n in ("ui_purchases_log", "ui_carts_log", "ui_clicks_log", "ui_views_log")]


def _days_log(now_ms: int, ts: int) -> float:
    return math.log1p(max(0.0, (now_ms - ts) / DAY_MS))


def user_item_order(row: UserRow) -> list[str]:
    """The shopper's items, strongest first (decayed purchases, carts, clicks, then recency)."""
    items = row.items
    n_orders = row.orders[entities.O_COUNT]
    decay, scale = entities.PURCHASE_DECAY, entities.DECAYED_SCALE

    def key(item: str) -> tuple:
        stats = items[item]
        weight = stats[entities.I_DECAYED]  # row.decayed(stats) inlined: the same arithmetic, same order
        decayed = (weight * decay ** (n_orders - stats[entities.I_LAST_ORDER]) if weight else 0.0) / scale
        return (-decayed, -stats[2], -stats[1], -stats[4], item)

    return sorted(items, key=key)


def cart_indexes(snap: ItemSnapshot, row: UserRow | None, now_ms: int) -> np.ndarray:
    """Snapshot indexes of the items in the shopper's cart at ``now_ms`` (``entities.in_cart``)."""
    if row is None:
        return np.zeros(0, dtype=np.int32)
    index = snap.index
    return np.fromiter((index[i] for i, s in row.items.items() if i in index and entities.in_cart(s, now_ms)),
                       dtype=np.int32)


def candidates(snap: ItemSnapshot, row: UserRow | None, country: str | None = None,
               context_item: str | None = None, *, now_ms: int, min_count: int = MIN_CANDIDATES) -> np.ndarray:
    """Item indexes to score, best sources first, de-duplicated; sold-out items and the items
    already in the shopper's cart (at ``now_ms``) removed: the page ranks the rest."""
    index = snap.index
    allowed = snap.available
    cart = cart_indexes(snap, row, now_ms)
    if len(cart):
        allowed = allowed.copy()
        allowed[cart] = False
    parts: list[np.ndarray] = []
    if context_item is not None and context_item in index:
        parts.append(snap.neighbours(index[context_item])[0])
    if row is not None:
        own = [index[i] for i in user_item_order(row) if i in index]
        if own:
            parts.append(np.array(own, dtype=np.int32))
        for item in dict.fromkeys(i for i, _, _ in reversed(row.recent)):  # newest first, once each
            j = index.get(item)
            if j is not None:
                parts.append(snap.neighbours(j)[0])
    if country:
        for pools in (snap.country_trending, snap.country_popular):
            pool = pools.get(country)
            if pool is not None:
                parts.append(pool)
    parts.append(snap.trending)
    parts.append(snap.popular)
    if not parts:
        return np.zeros(0, dtype=np.int32)
    pool = np.concatenate(parts)
    chosen = _first_occurrences(pool[allowed[pool]])
    if len(chosen) < min_count and len(snap.items) > len(chosen):
        # A thin catalogue: top up with the most popular of the rest.
        rest = np.setdiff1d(np.flatnonzero(allowed), chosen, assume_unique=False)
        order = np.argsort(-snap.matrix[rest, ITEM_COLUMNS.index("item_popularity_log")], kind="stable")
        chosen = np.concatenate([chosen, rest[order][: min_count - len(chosen)].astype(np.int32)])
    return chosen.astype(np.int32)


def _first_occurrences(pool: np.ndarray) -> np.ndarray:
    """``pool`` without repeats, each value where it first occurs (``np.unique``'s
    ``return_index``, sorted back, with less overhead)."""
    if len(pool) < 2:
        return pool
    order = np.argsort(pool, kind="stable")  # stable: the first of equal values comes first
    ordered = pool[order]
    new = np.empty(len(pool), dtype=bool)
    new[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    first = order[new]
    first.sort()
    return pool[first]


def _add_covisits(out: np.ndarray, cands_sorted: np.ndarray, sorter: np.ndarray, nb: np.ndarray, w: np.ndarray):
    if len(nb) == 0:
        return
    loc = np.searchsorted(cands_sorted, nb)
    loc_c = np.minimum(loc, len(cands_sorted) - 1)
    hit = cands_sorted[loc_c] == nb
    np.add.at(out, sorter[loc_c[hit]], w[hit])


def _neighbour_pairs(snap: ItemSnapshot, js: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All co-visit neighbours of items ``js`` (concatenated) and their weights x ``scale``."""
    starts, ends = snap.nb_offsets[js].astype(np.int64), snap.nb_offsets[js + 1].astype(np.int64)
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    owner = np.repeat(np.arange(len(js)), lengths)
    pos = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths) + starts[owner]
    return snap.nb_items[pos], (snap.nb_weights[pos] * scale[owner]).astype(np.float32)


# Columns every candidate starts from: 0, or the "never" value where 0 would mean "just now".
_DEFAULTS = np.zeros(len(FEATURES), dtype=np.float32)
_DEFAULTS[INDEX["ui_days_since_log"]] = math.log1p(NO_HISTORY_DAYS)
_DEFAULTS[INDEX["user_days_since_log"]] = math.log1p(NO_HISTORY_DAYS)
_DEFAULTS[INDEX["ui_days_since_purchase_log"]] = math.log1p(NO_HISTORY_DAYS)
_DEFAULTS[INDEX["ui_orders_since_log"]] = math.log1p(NO_PURCHASE_ORDERS)
_DEFAULTS[INDEX["ui_cycle_log"]] = -1.0
_DEFAULTS[INDEX["user_order_cycle_log"]] = -1.0
_POPULAR_RANK = INDEX["popular_rank_log"]


def _user_columns(out: np.ndarray, row: UserRow, now_ms: int) -> float | None:
    """The shopper's own columns (the same for every candidate) into ``out``; returns
    their mean interval between orders in days (None with fewer than 2 orders)."""
    out[INDEX["user_purchases_log"]] = math.log1p(row.totals[3])
    if row.last_ts:
        out[INDEX["user_days_since_log"]] = _days_log(now_ms, row.last_ts)
    sums = windows.window_sums(row.tiles, now_ms)["10m"]
    out[INDEX["user_click_rate_10m"]] = click_rate(sums[1], sums[0])
    out[INDEX["user_views_10m_log"]] = math.log1p(sums[0])
    n_orders, basket_items, first_order, last_order = row.orders[:4]
    out[INDEX["user_orders_log"]] = math.log1p(n_orders)
    out[INDEX["user_reorder_share"]] = row.orders[entities.O_REORDER_ITEMS] / basket_items if basket_items else 0.0
    out[INDEX["user_basket_log"]] = math.log1p(basket_items / n_orders) if n_orders else 0.0
    user_interval = (last_order - first_order) / DAY_MS / (n_orders - 1) if n_orders >= 2 else None
    if user_interval is not None:
        ratio = max(0.0, (now_ms - last_order) / DAY_MS) / max(user_interval, MIN_INTERVAL_DAYS)
        out[INDEX["user_order_cycle_log"]] = math.log1p(min(ratio, MAX_CYCLE_RATIO))
    return user_interval


def feature_matrix(snap: ItemSnapshot, row: UserRow | None, cands: np.ndarray, now_ms: int,
                   context_item: str | None = None) -> np.ndarray:
    """float32 [len(cands), len(FEATURES)], columns in ``FEATURES`` order.

    Built column by column (the array is column-major: each feature is one contiguous run
    over the candidates), from one row of defaults and the shopper's constants; the four
    co-visit columns are summed by one sparse add."""
    k = len(cands)
    if k == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    base = _DEFAULTS.copy()
    user_interval = _user_columns(base, row, now_ms) if row is not None else None
    XT = np.empty((len(FEATURES), k), dtype=np.float32)  # XT[feature] = that column
    XT[:] = base[:, None]
    XT[_ITEM_START:_ITEM_END] = snap.matrix[cands].T
    XT[_POPULAR_RANK] = snap.popular_rank[cands]
    order = np.argsort(cands, kind="stable")
    cands_sorted = cands[order]
    index = snap.index
    covisits = _Covisits()
    if context_item is not None and context_item in index:
        covisits.add(_CONTEXT, *snap.neighbours(index[context_item]))
    if row is None:
        covisits.into(XT, cands_sorted, order)
        return XT.T

    recent = []
    for item in dict.fromkeys(i for i, _, _ in reversed(row.recent)):  # newest first, once each
        j = index.get(item)
        if j is not None:
            recent.append(j)
            covisits.add(_RECENT, *snap.neighbours(j))
    if recent:  # candidates among the recent items (as np.isin: every occurrence)
        recent_sorted = np.sort(np.array(recent, dtype=cands.dtype))
        loc = np.minimum(np.searchsorted(recent_sorted, cands), len(recent_sorted) - 1)
        XT[INDEX["ui_in_recent"]] = recent_sorted[loc] == cands
    if not row.items:
        covisits.into(XT, cands_sorted, order)
        return XT.T

    # The shopper's own items, as arrays: one row of stats per item.
    n_orders = row.orders[0]
    purchases = row.totals[3]
    n_items = len(row.items)
    js = np.fromiter(map(index.get, row.items, repeat(-1, n_items)), dtype=np.int64, count=n_items)
    widths = set(map(len, row.items.values()))
    if len(widths) == 1:  # as UserRow.from_obj leaves them: one flat read, no nested-list discovery
        width = widths.pop()
        stats = np.fromiter(chain.from_iterable(row.items.values()), dtype=np.float64,
                            count=n_items * width).reshape(n_items, width)
    else:
        stats = np.array(list(row.items.values()), dtype=np.float64)
    known = js >= 0
    js, stats = js[known], stats[known]
    orders_ago = n_orders - stats[:, entities.I_LAST_ORDER]
    decayed = stats[:, entities.I_DECAYED] * (entities.PURCHASE_DECAY ** orders_ago / entities.DECAYED_SCALE)
    in_session = stats[:, entities.I_LAST_TS] >= now_ms - entities.SESSION_MS
    session_items = int(in_session.sum())
    XT[INDEX["session_items_log"]] = math.log1p(session_items)
    if session_items:
        covisits.add(_SESSION, *_neighbour_pairs(snap, js[in_session], np.ones(session_items)))
    bought = decayed > 0
    if bought.any():
        covisits.add(_COPURCHASE, *_neighbour_pairs(snap, js[bought], decayed[bought]))
    covisits.into(XT, cands_sorted, order)

    loc = np.minimum(np.searchsorted(cands_sorted, js), k - 1)
    hit = cands_sorted[loc] == js
    p = order[loc[hit]]  # candidate positions of the shopper's items
    s = stats[hit]
    ui = np.empty((len(_UI_BLOCK), len(p)))  # the shopper-item columns, written with one scatter
    ui[0] = np.log1p(s[:, 3])
    ui[1] = np.log1p(s[:, 2])
    ui[2] = np.log1p(s[:, 1])
    ui[3] = np.log1p(s[:, 0])
    ui[4] = np.log1p(np.maximum(0.0, (now_ms - s[:, entities.I_LAST_TS]) / DAY_MS))
    ui[5] = 1.0
    ui[6] = s[:, 3] / purchases if purchases else 0.0
    ui[7] = in_session[hit]
    ui[8] = decayed[hit]
    if n_orders:
        ui[9] = s[:, entities.I_ORDERS] / n_orders
        XT[_UI_BLOCK[:, None], p] = ui
    else:
        XT[_UI_BLOCK[:9, None], p] = ui[:9]
    has = s[:, entities.I_ORDERS] > 0
    pb, sb = p[has], s[has]
    if len(pb):
        # rows from before I_FIRST_ORDER existed count from the first order
        first = np.where(sb[:, entities.I_FIRST_ORDER] > 0, sb[:, entities.I_FIRST_ORDER], 1)
        bought_block = np.empty((len(_BOUGHT_BLOCK), len(pb)))
        bought_block[0] = sb[:, entities.I_ORDERS] / np.maximum(n_orders - first + 1, 1)
        bought_block[1] = np.log1p(n_orders - sb[:, entities.I_LAST_ORDER])
        days = np.maximum(0.0, (now_ms / 1000 - sb[:, entities.I_LAST_BUY_S]) / 86_400)
        bought_block[2] = np.log1p(days)
        own = sb[:, entities.I_BUY_SPAN_H] / 24 / np.maximum(sb[:, entities.I_ORDERS] - 1, 1)
        interval = np.where(sb[:, entities.I_ORDERS] >= 2, own, user_interval if user_interval is not None else np.nan)
        ratio = days / np.maximum(interval, MIN_INTERVAL_DAYS)
        bought_block[3] = np.where(np.isnan(ratio), -1.0, np.log1p(np.minimum(ratio, MAX_CYCLE_RATIO)))
        XT[_BOUGHT_BLOCK[:, None], pb] = bought_block
    return XT.T


# The shopper-item columns set for the shopper's own items (ui_basket_rate last: only with orders).
_UI_BLOCK = np.array([*_UI, INDEX["ui_days_since_log"], INDEX["ui_seen"], INDEX["ui_purchase_share"],
                      INDEX["ui_in_session"], INDEX["ui_decayed"], INDEX["ui_basket_rate"]])
# ... and for the items they bought in an order.
_BOUGHT_BLOCK = np.array([INDEX["ui_rate_since_first"], INDEX["ui_orders_since_log"],
                          INDEX["ui_days_since_purchase_log"], INDEX["ui_cycle_log"]])
# The co-visit columns, as rows of _Covisits' sums.
_COVISIT_COLUMNS = np.array([INDEX["context_covisit_log"], INDEX["covisit_log"], INDEX["session_covisit_log"],
                             INDEX["copurchase_log"]])
_CONTEXT, _RECENT, _SESSION, _COPURCHASE = range(4)


class _Covisits:
    """Co-visit weights to sum per candidate, for the four co-visit columns at once: each
    column's weights are added in the order they were given (float32, as one column alone)."""

    def __init__(self):
        self.items: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.columns: list[int] = []

    def add(self, column: int, items: np.ndarray, weights: np.ndarray) -> None:
        if len(items):
            self.items.append(items)
            self.weights.append(weights)
            self.columns.append(column)

    def into(self, XT: np.ndarray, cands_sorted: np.ndarray, order: np.ndarray) -> None:
        """log1p(sum of weights) per candidate into the co-visit rows of ``XT`` (none: 0, the default)."""
        if not self.items:
            return
        k = len(cands_sorted)
        nb = np.concatenate(self.items)
        w = np.concatenate(self.weights).astype(np.float32, copy=False)
        column = np.repeat(np.array(self.columns), [len(i) for i in self.items])
        loc = np.minimum(np.searchsorted(cands_sorted, nb), k - 1)
        hit = cands_sorted[loc] == nb
        sums = np.zeros(len(_COVISIT_COLUMNS) * k, dtype=np.float32)
        np.add.at(sums, column[hit] * k + order[loc[hit]], w[hit])
        XT[_COVISIT_COLUMNS] = np.log1p(sums.reshape(len(_COVISIT_COLUMNS), k))


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first (ties: earlier candidate first)."""
    if len(scores) <= k:
        return np.lexsort((np.arange(len(scores)), -scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


assert len(MEASURES) == 4  # the ui_* columns above follow the measure order
