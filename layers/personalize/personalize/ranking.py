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

import numpy as np

from . import state, windows
from .events import MEASURES
from .features import click_rate
from .snapshots import ITEM_COLUMNS, ItemSnapshot
from .state import DAY_MS, UserRow

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
    return sorted(items, key=lambda i: (-row.decayed(items[i]), -items[i][2], -items[i][1], -items[i][4], i))


def cart_indexes(snap: ItemSnapshot, row: UserRow | None, now_ms: int) -> np.ndarray:
    """Snapshot indexes of the items in the shopper's cart at ``now_ms`` (``state.in_cart``)."""
    if row is None:
        return np.zeros(0, dtype=np.int32)
    index = snap.index
    return np.fromiter((index[i] for i, s in row.items.items() if i in index and state.in_cart(s, now_ms)),
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
    pool = pool[allowed[pool]]
    _, first = np.unique(pool, return_index=True)
    chosen = pool[np.sort(first)]
    if len(chosen) < min_count and len(snap.items) > len(chosen):
        # A thin catalogue: top up with the most popular of the rest.
        rest = np.setdiff1d(np.flatnonzero(allowed), chosen, assume_unique=False)
        order = np.argsort(-snap.matrix[rest, ITEM_COLUMNS.index("item_popularity_log")], kind="stable")
        chosen = np.concatenate([chosen, rest[order][: min_count - len(chosen)].astype(np.int32)])
    return chosen.astype(np.int32)


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


def feature_matrix(snap: ItemSnapshot, row: UserRow | None, cands: np.ndarray, now_ms: int,
                   context_item: str | None = None) -> np.ndarray:
    """float32 [len(cands), len(FEATURES)], columns in ``FEATURES`` order."""
    k = len(cands)
    X = np.zeros((k, len(FEATURES)), dtype=np.float32)
    if k == 0:
        return X
    X[:, _ITEM_START:_ITEM_END] = snap.matrix[cands]
    X[:, INDEX["popular_rank_log"]] = snap.popular_rank[cands]
    X[:, INDEX["ui_days_since_log"]] = math.log1p(NO_HISTORY_DAYS)
    X[:, INDEX["user_days_since_log"]] = math.log1p(NO_HISTORY_DAYS)
    X[:, INDEX["ui_days_since_purchase_log"]] = math.log1p(NO_HISTORY_DAYS)
    X[:, INDEX["ui_orders_since_log"]] = math.log1p(NO_PURCHASE_ORDERS)
    X[:, INDEX["ui_cycle_log"]] = -1.0
    X[:, INDEX["user_order_cycle_log"]] = -1.0
    order = np.argsort(cands, kind="stable")
    cands_sorted = cands[order]
    index = snap.index
    if context_item is not None and context_item in index:
        ctx = np.zeros(k, dtype=np.float32)
        _add_covisits(ctx, cands_sorted, order, *snap.neighbours(index[context_item]))
        X[:, INDEX["context_covisit_log"]] = np.log1p(ctx)
    if row is None:
        return X
    purchases = row.totals[3]
    X[:, INDEX["user_purchases_log"]] = math.log1p(purchases)
    if row.last_ts:
        X[:, INDEX["user_days_since_log"]] = _days_log(now_ms, row.last_ts)
    sums = windows.window_sums(row.tiles, now_ms)["10m"]
    X[:, INDEX["user_click_rate_10m"]] = click_rate(sums[1], sums[0])
    X[:, INDEX["user_views_10m_log"]] = math.log1p(sums[0])
    n_orders, basket_items, first_order, last_order = row.orders[:4]
    X[:, INDEX["user_orders_log"]] = math.log1p(n_orders)
    X[:, INDEX["user_reorder_share"]] = row.orders[state.O_REORDER_ITEMS] / basket_items if basket_items else 0.0
    X[:, INDEX["user_basket_log"]] = math.log1p(basket_items / n_orders) if n_orders else 0.0
    user_interval = (last_order - first_order) / DAY_MS / (n_orders - 1) if n_orders >= 2 else None
    if user_interval is not None:
        ratio = max(0.0, (now_ms - last_order) / DAY_MS) / max(user_interval, MIN_INTERVAL_DAYS)
        X[:, INDEX["user_order_cycle_log"]] = math.log1p(min(ratio, MAX_CYCLE_RATIO))

    cov = np.zeros(k, dtype=np.float32)
    nbs, ws = [], []
    for item in dict.fromkeys(i for i, _, _ in reversed(row.recent)):  # newest first, once each
        j = index.get(item)
        if j is None:
            continue
        nb, w = snap.neighbours(j)
        nbs.append(nb)
        ws.append(w)
    if nbs:  # one sparse add for all recent items' neighbours
        _add_covisits(cov, cands_sorted, order, np.concatenate(nbs), np.concatenate(ws))
    X[:, INDEX["covisit_log"]] = np.log1p(cov)
    recent_js = np.fromiter((index.get(i, -1) for i, _, _ in row.recent), dtype=np.int64, count=len(row.recent))
    X[:, INDEX["ui_in_recent"]] = np.isin(cands, recent_js[recent_js >= 0])
    if not row.items:
        return X

    # The shopper's own items, as arrays: one row of stats per item.
    js = np.fromiter((index.get(i, -1) for i in row.items), dtype=np.int64, count=len(row.items))
    stats = np.array(list(row.items.values()), dtype=np.float64)
    known = js >= 0
    js, stats = js[known], stats[known]
    orders_ago = n_orders - stats[:, state.I_LAST_ORDER]
    decayed = stats[:, state.I_DECAYED] * (state.PURCHASE_DECAY ** orders_ago / state.DECAYED_SCALE)
    in_session = stats[:, state.I_LAST_TS] >= now_ms - state.SESSION_MS
    X[:, INDEX["session_items_log"]] = math.log1p(int(in_session.sum()))
    session_cov = np.zeros(k, dtype=np.float32)
    if in_session.any():
        _add_covisits(session_cov, cands_sorted, order,
                      *_neighbour_pairs(snap, js[in_session], np.ones(int(in_session.sum()))))
    X[:, INDEX["session_covisit_log"]] = np.log1p(session_cov)
    bought = decayed > 0
    copurchase = np.zeros(k, dtype=np.float32)
    if bought.any():
        _add_covisits(copurchase, cands_sorted, order, *_neighbour_pairs(snap, js[bought], decayed[bought]))
    X[:, INDEX["copurchase_log"]] = np.log1p(copurchase)

    loc = np.minimum(np.searchsorted(cands_sorted, js), k - 1)
    hit = cands_sorted[loc] == js
    p = order[loc[hit]]  # candidate positions of the shopper's items
    s = stats[hit]
    X[p, _UI[0]] = np.log1p(s[:, 3])
    X[p, _UI[1]] = np.log1p(s[:, 2])
    X[p, _UI[2]] = np.log1p(s[:, 1])
    X[p, _UI[3]] = np.log1p(s[:, 0])
    X[p, INDEX["ui_days_since_log"]] = np.log1p(np.maximum(0.0, (now_ms - s[:, state.I_LAST_TS]) / DAY_MS))
    X[p, INDEX["ui_seen"]] = 1.0
    X[p, INDEX["ui_purchase_share"]] = s[:, 3] / purchases if purchases else 0.0
    X[p, INDEX["ui_in_session"]] = in_session[hit]
    X[p, INDEX["ui_decayed"]] = decayed[hit]
    has = s[:, state.I_ORDERS] > 0
    if n_orders:
        X[p, INDEX["ui_basket_rate"]] = s[:, state.I_ORDERS] / n_orders
    pb, sb = p[has], s[has]
    if len(pb):
        first = np.where(sb[:, state.I_FIRST_ORDER] > 0, sb[:, state.I_FIRST_ORDER], 1)  # rows from before it existed
        X[pb, INDEX["ui_rate_since_first"]] = sb[:, state.I_ORDERS] / np.maximum(n_orders - first + 1, 1)
        X[pb, INDEX["ui_orders_since_log"]] = np.log1p(n_orders - sb[:, state.I_LAST_ORDER])
        days = np.maximum(0.0, (now_ms / 1000 - sb[:, state.I_LAST_BUY_S]) / 86_400)
        X[pb, INDEX["ui_days_since_purchase_log"]] = np.log1p(days)
        own = sb[:, state.I_BUY_SPAN_H] / 24 / np.maximum(sb[:, state.I_ORDERS] - 1, 1)
        interval = np.where(sb[:, state.I_ORDERS] >= 2, own, user_interval if user_interval is not None else np.nan)
        ratio = days / np.maximum(interval, MIN_INTERVAL_DAYS)
        X[pb, INDEX["ui_cycle_log"]] = np.where(np.isnan(ratio), -1.0, np.log1p(np.minimum(ratio, MAX_CYCLE_RATIO)))
    return X


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first (ties: earlier candidate first)."""
    if len(scores) <= k:
        return np.lexsort((np.arange(len(scores)), -scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


assert len(MEASURES) == 4  # the ui_* columns above follow the measure order
