"""Candidates and their features for one request, and the ONNX ranker that scores them.

Everything per candidate is numpy over arrays (a gather from the snapshot's item matrix,
sparse adds for co-visits); the only Python loops run over the shopper's own items (at most
64) and recent items (at most 20). One batched onnxruntime call scores all candidates.

``FEATURES`` is the catalogue of features this code computes, in a fixed order. A model's
manifest names the ones it uses (a subset, in its own order); a name this code does not
know is refused at load time (``models.load_ranker``).
"""

from __future__ import annotations

import math

import numpy as np

from . import windows
from .events import MEASURES
from .features import click_rate
from .snapshots import ITEM_COLUMNS, ItemSnapshot
from .state import DAY_MS, UserRow

MIN_CANDIDATES = 300
NO_HISTORY_DAYS = 365.0

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
    """The shopper's items, strongest first (purchases, carts, clicks, then recency)."""
    return sorted(row.items, key=lambda i: (-row.items[i][3], -row.items[i][2], -row.items[i][1], -row.items[i][4], i))


def candidates(snap: ItemSnapshot, row: UserRow | None, country: str | None = None,
               context_item: str | None = None, min_count: int = MIN_CANDIDATES) -> np.ndarray:
    """Item indexes to score, best sources first, sold-out removed, de-duplicated."""
    index = snap.index
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
    pool = pool[snap.available[pool]]
    _, first = np.unique(pool, return_index=True)
    chosen = pool[np.sort(first)]
    if len(chosen) < min_count and len(snap.items) > len(chosen):
        # A thin catalogue: top up with the most popular of the rest.
        rest = np.setdiff1d(np.flatnonzero(snap.available), chosen, assume_unique=False)
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
    position = dict(zip(cands.tolist(), range(k)))
    for item, stats in row.items.items():
        j = index.get(item)
        p = position.get(j) if j is not None else None
        if p is None:
            continue
        X[p, _UI[0]] = math.log1p(stats[3])
        X[p, _UI[1]] = math.log1p(stats[2])
        X[p, _UI[2]] = math.log1p(stats[1])
        X[p, _UI[3]] = math.log1p(stats[0])
        X[p, INDEX["ui_days_since_log"]] = _days_log(now_ms, stats[4])
        X[p, INDEX["ui_seen"]] = 1.0
        X[p, INDEX["ui_purchase_share"]] = stats[3] / purchases if purchases else 0.0
    cov = np.zeros(k, dtype=np.float32)
    nbs, ws = [], []
    for item in dict.fromkeys(i for i, _, _ in reversed(row.recent)):  # newest first, once each
        j = index.get(item)
        if j is None:
            continue
        p = position.get(j)
        if p is not None:
            X[p, INDEX["ui_in_recent"]] = 1.0
        nb, w = snap.neighbours(j)
        nbs.append(nb)
        ws.append(w)
    if nbs:  # one sparse add for all recent items' neighbours
        _add_covisits(cov, cands_sorted, order, np.concatenate(nbs), np.concatenate(ws))
    X[:, INDEX["covisit_log"]] = np.log1p(cov)
    return X


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best scores, best first (ties: earlier candidate first)."""
    if len(scores) <= k:
        return np.lexsort((np.arange(len(scores)), -scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


assert len(MEASURES) == 4  # the ui_* columns above follow the measure order
