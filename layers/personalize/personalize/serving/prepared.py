"""Serving's per-request path: a shopper's candidates and their features over a snapshot
prepared once, off the request path.

``ranking.candidates`` and ``ranking.feature_matrix`` define the candidates and the features
(training's replay calls them). This module computes the same arrays, bit for bit (a property
test holds it to them), with the work that depends only on items done once per loaded snapshot
and the work that depends only on the country done once per served snapshot:

- ``Prepared`` (a loaded snapshot, built on the refresh thread before any request sees it):
  for each model's columns a ``Layout`` (every item's row of the model's features with the item
  columns and the defaults of the others filled in, C-ordered for onnxruntime, so a request's
  matrix starts as a copy of rows); each item's co-visited neighbours in one padded row (a
  request's neighbours are one gather); and a per-thread scratch array that maps an item index
  to its candidate position (-1: not a candidate), which replaces sorting the candidates to
  find the shopper's items and the co-visited neighbours among them.
- ``Served`` (that snapshot with the sold-out items taken out): each country's pool (country
  trending, country popular, trending, popular: available, de-duplicated) and its layout rows,
  contiguous, computed on the first request for that country.

Per request: one pass over the shopper's items (their indexes, stats and cart); the shopper's
own sources (context item, own items, neighbours of recent items), de-duplicated by one
reduction over the position map, then the country's pool without them and without the cart;
their rows copied straight into the matrix; the shopper's constants in one broadcast; the
co-visit columns in one sparse add; the shopper's own items in one scatter. Columns the
model does not read are not written (nor summed, for the co-visits).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from personalize.ingest import entities
from personalize.ingest.entities import DAY_MS, UserRow
from personalize.serving import ranking
from personalize.serving.ranking import FEATURES, INDEX, MIN_CANDIDATES
from personalize.serving.snapshots import ITEM_COLUMNS, ItemSnapshot

_NOT = -1    # the scratch map's "not a candidate"
_CART = -2   # ... and "in the shopper's cart" (never a candidate)
_NONE = np.zeros(0, dtype=np.int32)
_NONE.flags.writeable = False
_ITEM = np.array([INDEX[name] for name in ITEM_COLUMNS])
_USER = np.array([INDEX[name] for name in FEATURES if name.startswith("user_")])
_IN_RECENT = INDEX["ui_in_recent"]
_SESSION_ITEMS = INDEX["session_items_log"]
_CONTEXT, _RECENT, _SESSION, _COPURCHASE = range(4)
MAX_PADDED_NEIGHBOURS = 64  # wider (a snapshot built otherwise): the compressed-sparse walk instead


class Layout:
    """One model's columns (``Ranker.columns``: catalogue indexes, in the model's order) over a
    prepared snapshot: every item's row of them with the item columns and the defaults of the
    others filled in (``block``, C-ordered, ready for onnxruntime), and where each group of
    per-request columns lands (``*_src``: positions in the group; ``*_dst``: model columns);
    a column the model does not read is not written."""

    def __init__(self, snap: ItemSnapshot, columns: np.ndarray):
        columns = np.asarray(columns, dtype=np.intp)
        self.columns = columns
        self.key = tuple(columns.tolist())
        where = {int(c): i for i, c in enumerate(columns)}

        def pick(group) -> tuple[np.ndarray, np.ndarray]:
            src = [i for i, c in enumerate(group) if int(c) in where]
            return np.array(src, dtype=np.intp), np.array([where[int(group[i])] for i in src], dtype=np.intp)

        block = np.empty((len(snap.items), len(columns)), dtype=np.float32)
        block[:] = ranking._DEFAULTS[columns]
        item_src, item_dst = pick(_ITEM)
        block[:, item_dst] = snap.matrix[:, item_src]
        if ranking._POPULAR_RANK in where:
            block[:, where[ranking._POPULAR_RANK]] = snap.popular_rank
        self.block = block
        src, self.user_dst = pick(_USER)
        self.user_src = _USER[src]  # catalogue indexes of the shopper's constants
        self.covisit_src, self.covisit_dst = pick(ranking._COVISIT_COLUMNS)
        self.covisit_of = np.full(len(ranking._COVISIT_COLUMNS), -1, dtype=np.intp)  # co-visit row -> model column
        self.covisit_of[self.covisit_src] = self.covisit_dst
        # The 10-minute window sums (a loop over the shopper's minute tiles) only for a model that reads them.
        self.windows = bool({INDEX["user_click_rate_10m"], INDEX["user_views_10m_log"]} & set(where))
        self.ui_src, self.ui_dst = pick(ranking._UI_BLOCK)
        keep = self.ui_src < len(ranking._UI_BLOCK) - 1  # without orders, ui_basket_rate (the last) keeps its default
        self.ui_src_no_orders, self.ui_dst_no_orders = self.ui_src[keep], self.ui_dst[keep]
        self.bought_src, self.bought_dst = pick(ranking._BOUGHT_BLOCK)
        self.in_recent = where.get(_IN_RECENT)
        self.session_items = where.get(_SESSION_ITEMS)


class Prepared:
    """What depends only on a loaded snapshot's items (see the module's docstring): each
    model's ``Layout``, and the per-thread candidate-position map."""

    def __init__(self, snap: ItemSnapshot, layouts: tuple[tuple[int, ...], ...] = ()):
        self.snapshot = snap
        degree = np.diff(snap.nb_offsets)
        width = int(degree.max()) if len(degree) else 0
        self.nb_pad = self.nb_wpad = None
        if 0 < width <= MAX_PADDED_NEIGHBOURS:  # each item's neighbours in one row (-1 after the last)
            filled = np.arange(width) < degree[:, None]  # row-major: the compressed order
            self.nb_pad = np.full((len(degree), width), -1, dtype=np.int32)
            self.nb_pad[filled] = snap.nb_items[snap.nb_offsets[0]:snap.nb_offsets[-1]]
            self.nb_wpad = np.zeros((len(degree), width), dtype=np.float32)
            self.nb_wpad[filled] = snap.nb_weights[snap.nb_offsets[0]:snap.nb_offsets[-1]]
        self._layouts: dict[tuple[int, ...], Layout] = {}
        self._used: set[tuple[int, ...]] = set()
        self._local = threading.local()
        for columns in layouts:
            self._layouts[tuple(columns)] = Layout(snap, np.array(columns, dtype=np.intp))

    def layout(self, columns: np.ndarray) -> Layout:
        """The layout for a model's columns: built on first use, then kept (``layouts`` of the
        previous snapshot are built as a new one is prepared, off the request path)."""
        key = tuple(columns.tolist())
        found = self._layouts.get(key)
        if found is None:  # two threads at once: both build, one is kept and both use it
            found = self._layouts.setdefault(key, Layout(self.snapshot, columns))
        if key not in self._used:
            self._used.add(key)
        return found

    def neighbours(self, js: np.ndarray, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``ranking._neighbour_pairs(snap, js, scale)`` (scale None: 1), from the padded rows."""
        if self.nb_pad is None:
            return ranking._neighbour_pairs(self.snapshot, js, np.ones(len(js)) if scale is None else scale)
        rows = self.nb_pad[js]
        valid = rows >= 0
        weights = self.nb_wpad[js]
        if scale is not None:
            return rows[valid], (weights * scale[:, None])[valid].astype(np.float32)
        return rows[valid], weights[valid]

    def layouts(self) -> tuple[tuple[int, ...], ...]:
        """The layouts requests used on this snapshot: the next one prepares them (a model no
        longer served, a killed challenger's, is not carried on)."""
        return tuple(self._used)

    def scratch(self) -> np.ndarray:
        """This thread's item -> candidate position map, all -1 between requests."""
        positions = getattr(self._local, "positions", None)
        if positions is None:
            positions = self._local.positions = np.full(len(self.snapshot.items), _NOT, dtype=np.int32)
        return positions


class Served:
    """A prepared snapshot as served now (``snap``: the prepared one with sold-out items
    taken out, the same items in the same order), with each country's pool."""

    def __init__(self, snap: ItemSnapshot, prepared: Prepared):
        if snap.items is not prepared.snapshot.items:
            raise ValueError("a served snapshot is the prepared one with fewer items available")
        self.snapshot = snap
        self.prepared = prepared
        self._pools: dict[str | None, np.ndarray] = {}
        self._pool_rows: dict[tuple[str | None, tuple[int, ...]], np.ndarray] = {}

    def _country(self, country: str | None) -> str | None:
        snap = self.snapshot
        if not country or (country not in snap.country_trending and country not in snap.country_popular):
            return None  # as ranking.candidates: no country, or one the snapshot has no pools for
        return country

    def pool_rows(self, country: str | None, layout: Layout) -> np.ndarray:
        """``layout.block`` rows of ``pool(country)``, contiguous: most of a request's
        feature matrix, copied in one run instead of gathered item by item."""
        key = (self._country(country), layout.key)
        rows = self._pool_rows.get(key)
        if rows is None:
            rows = self._pool_rows[key] = layout.block[self.pool(country)]
        return rows

    def pool(self, country: str | None) -> np.ndarray:
        """The request-independent candidates for ``country``, best sources first: as
        ``ranking.candidates`` takes them after the shopper's own. Cached per country the
        snapshot has pools for (a client-sent country it does not know shares the global one)."""
        snap = self.snapshot
        country = self._country(country)
        pool = self._pools.get(country)
        if pool is None:
            parts = [p for p in (snap.country_trending.get(country), snap.country_popular.get(country),
                                 snap.trending, snap.popular) if p is not None]
            joined = np.concatenate(parts).astype(np.int32, copy=False)
            pool = self._pools[country] = ranking._first_occurrences(joined[snap.available[joined]])
        return pool

    def inputs(self, columns: np.ndarray, row: UserRow | None, country: str | None = None,
               context_item: str | None = None, *, now_ms: int, min_count: int = MIN_CANDIDATES
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(cands, X)``: ``ranking.candidates(...)`` and ``ranking.feature_matrix(...)[:, columns]``
        for this request (``columns``: a model's, ``Ranker.columns``; X C-ordered, float32)."""
        snap = self.snapshot
        layout = self.prepared.layout(columns)
        positions = self.prepared.scratch()
        index = snap.index
        own = _OwnItems(row, index, now_ms) if row is not None else None
        cart = own.cart if own is not None else _NONE
        context = index.get(context_item) if context_item is not None else None
        recent = _recent_indexes(index, row) if row is not None else None
        recent_nb = self.prepared.neighbours(recent) if recent is not None and len(recent) else None
        cands = head = _NONE
        try:
            if len(cart):
                positions[cart] = _CART
            parts = []
            if context is not None:
                parts.append(snap.neighbours(context)[0])
            if row is not None:
                ordered = [index[i] for i in ranking.user_item_order(row) if i in index]
                if ordered:
                    parts.append(np.array(ordered, dtype=np.int32))
                if recent_nb is not None:
                    parts.append(recent_nb[0])
            if parts:
                head = np.concatenate(parts) if len(parts) > 1 else parts[0]
                keep = snap.available[head]
                if len(cart):
                    keep &= positions[head] != _CART
                head = _first_occurrences_placed(head[keep], positions)
            pool = self.pool(country)
            rest = positions[pool] == _NOT
            cands = pool[rest]
            positions[cands] = np.arange(len(head), len(head) + len(cands), dtype=np.int32)
            cands = np.concatenate([head, cands]).astype(np.int32, copy=False)
            if len(cands) < min_count and len(snap.items) > len(cands):  # a thin catalogue: as ranking tops up
                positions[cands] = _NOT
                cands = ranking.candidates(snap, row, country, context_item, now_ms=now_ms, min_count=min_count)
                positions[cands] = np.arange(len(cands), dtype=np.int32)
                X = layout.block[cands]
            else:
                X = np.empty((len(cands), len(layout.columns)), dtype=np.float32)
                # Straight into X, no temporary (np.take's default "raise" mode, and np.compress,
                # which takes in that mode, copy the rows first); the positions are in range, so
                # "clip" never clips.
                np.take(layout.block, head, axis=0, out=X[:len(head)], mode="clip")
                np.take(self.pool_rows(country, layout), np.flatnonzero(rest), axis=0, out=X[len(head):], mode="clip")
            return cands, self._features(X, layout, positions, row, own, cands, now_ms, context, recent, recent_nb)
        finally:  # whatever failed where: the next request finds the map clean
            positions[head] = _NOT
            positions[cands] = _NOT
            positions[cart] = _NOT

    def _features(self, X: np.ndarray, layout: Layout, positions: np.ndarray, row: UserRow | None,
                  own: _OwnItems | None, cands: np.ndarray, now_ms: int, context: int | None,
                  recent: np.ndarray | None, recent_nb) -> np.ndarray:
        """The request's columns into ``X`` (``layout.block`` rows of ``cands``)."""
        snap = self.snapshot
        k = len(cands)
        if k == 0:
            return X
        covisits = _Covisits()
        if context is not None:
            covisits.add(_CONTEXT, *snap.neighbours(context))
        if row is None:
            covisits.into(X, layout, positions, k)
            return X
        constants = ranking._DEFAULTS.copy()
        user_interval = ranking._user_columns(constants, row if layout.windows else _WithoutTiles(row), now_ms)
        X[:, layout.user_dst] = constants[layout.user_src]
        if recent_nb is not None:
            covisits.add(_RECENT, *recent_nb)
        if recent is not None and len(recent) and layout.in_recent is not None:
            at = positions[recent]
            X[at[at >= 0], layout.in_recent] = 1.0
        if not len(own.js):  # no item of the shopper's in the snapshot: no column of theirs to write
            covisits.into(X, layout, positions, k)
            return X

        # The shopper's own items, as arrays: one row of stats per item (as ranking.feature_matrix).
        n_orders = row.orders[0]
        purchases = row.totals[3]
        js, stats = own.js, own.stats
        orders_ago = n_orders - stats[:, entities.I_LAST_ORDER]
        decayed = stats[:, entities.I_DECAYED] * (entities.PURCHASE_DECAY ** orders_ago / entities.DECAYED_SCALE)
        in_session = stats[:, entities.I_LAST_TS] >= now_ms - entities.SESSION_MS
        session_items = int(np.count_nonzero(in_session))
        if layout.session_items is not None:
            X[:, layout.session_items] = math.log1p(session_items)
        if session_items:
            covisits.add(_SESSION, *self.prepared.neighbours(js[in_session]))
        bought = decayed > 0
        if np.count_nonzero(bought):
            covisits.add(_COPURCHASE, *self.prepared.neighbours(js[bought], decayed[bought]))
        covisits.into(X, layout, positions, k)

        at = positions[js]
        hit = at >= 0
        p = at[hit]
        s = stats[hit]
        ui = np.empty((len(p), len(ranking._UI_BLOCK)))
        ui[:, 0] = np.log1p(s[:, 3])  # column by column, as ranking.feature_matrix: numpy's log1p takes
        ui[:, 1] = np.log1p(s[:, 2])  # another loop (1 ulp apart) for a 2-D call over 1 or 2 rows
        ui[:, 2] = np.log1p(s[:, 1])
        ui[:, 3] = np.log1p(s[:, 0])
        ui[:, 4] = np.log1p(np.maximum(0.0, (now_ms - s[:, entities.I_LAST_TS]) / DAY_MS))
        ui[:, 5] = 1.0
        ui[:, 6] = s[:, 3] / purchases if purchases else 0.0
        ui[:, 7] = in_session[hit]
        ui[:, 8] = decayed[hit]
        if n_orders:
            ui[:, 9] = s[:, entities.I_ORDERS] / n_orders
            X[p[:, None], layout.ui_dst] = ui[:, layout.ui_src]
        else:
            X[p[:, None], layout.ui_dst_no_orders] = ui[:, layout.ui_src_no_orders]
        has = s[:, entities.I_ORDERS] > 0
        pb, sb = p[has], s[has]
        if len(pb):
            first = np.where(sb[:, entities.I_FIRST_ORDER] > 0, sb[:, entities.I_FIRST_ORDER], 1)
            block = np.empty((len(pb), len(ranking._BOUGHT_BLOCK)))
            block[:, 0] = sb[:, entities.I_ORDERS] / np.maximum(n_orders - first + 1, 1)
            block[:, 1] = np.log1p(n_orders - sb[:, entities.I_LAST_ORDER])
            days = np.maximum(0.0, (now_ms / 1000 - sb[:, entities.I_LAST_BUY_S]) / 86_400)
            block[:, 2] = np.log1p(days)
            own = sb[:, entities.I_BUY_SPAN_H] / 24 / np.maximum(sb[:, entities.I_ORDERS] - 1, 1)
            interval = np.where(sb[:, entities.I_ORDERS] >= 2, own,
                                user_interval if user_interval is not None else np.nan)
            ratio = days / np.maximum(interval, ranking.MIN_INTERVAL_DAYS)
            block[:, 3] = np.where(np.isnan(ratio), -1.0, np.log1p(np.minimum(ratio, ranking.MAX_CYCLE_RATIO)))
            X[pb[:, None], layout.bought_dst] = block[:, layout.bought_src]
        return X


def _recent_indexes(index: dict[str, int], row: UserRow) -> np.ndarray:
    """Snapshot indexes of the shopper's recent items, newest first, once each."""
    found = [j for j in map(index.get, dict.fromkeys(i for i, _, _ in reversed(row.recent))) if j is not None]
    return np.array(found, dtype=np.int64)


def _first_occurrences_placed(head: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``ranking._first_occurrences(head)``, each value's position in it written into
    ``positions`` (whose entries for ``head`` are all ``_NOT``): one reduction over the map
    (the largest of ``n - i`` over a value's occurrences ``i`` is its first) instead of sorts."""
    n = len(head)
    if n == 0:
        return head
    first = np.arange(n, 0, -1, dtype=np.int32)
    np.maximum.at(positions, head, first)  # a value's entry: n - (its first occurrence); _NOT is -1
    head = head[positions[head] == first]
    positions[head] = np.arange(len(head), dtype=np.int32)
    return head


class _OwnItems:
    """The shopper's items that the snapshot has, in one pass over the row (as
    ``ranking.cart_indexes`` and ``ranking.feature_matrix`` read them): their snapshot indexes
    (``js``, int64, in the row's order), their stats (``stats``, float64, one row each) and
    those in the cart at ``now_ms`` (``cart``, int32, in the row's order)."""

    __slots__ = ("js", "stats", "cart")

    def __init__(self, row: UserRow, index: dict[str, int], now_ms: int):
        js: list[int] = []
        flat: list = []
        cart: list[int] = []
        width = None
        ragged = False
        in_cart = entities.in_cart
        for item, stats in row.items.items():
            if width is None:
                width = len(stats)
            elif len(stats) != width:  # over every item, the snapshot's or not, as training checks
                ragged = True
            j = index.get(item)
            if j is None:
                continue
            js.append(j)
            flat += stats
            if in_cart(stats, now_ms):
                cart.append(j)
        self.js = np.array(js, dtype=np.int64)
        self.cart = np.array(cart, dtype=np.int32)
        if ragged:  # items' stats of different lengths: fails as training's read of the row fails
            self.stats = np.array(list(row.items.values()), dtype=np.float64)
        else:
            self.stats = np.array(flat, dtype=np.float64).reshape(len(js), width or 0)


class _Covisits(ranking._Covisits):
    """``ranking``'s co-visit sums (float32, in the order given), found through the
    candidate-position map instead of a sorted search; the columns the model does not read
    are neither summed nor written."""

    def into(self, X: np.ndarray, layout: Layout, positions: np.ndarray, k: int) -> None:  # type: ignore[override]
        read = layout.covisit_of
        parts = [n for n, column in enumerate(self.columns) if read[column] >= 0]
        if not parts:
            return
        # Each column's sums in a row of k + 2: slots 0 and 1 take the non-candidates (positions
        # _CART and _NOT), slot p + 2 the candidate at position p; one sparse add fills them all.
        stride = k + 2
        if len(parts) == 1:
            items, w = self.items[parts[0]], self.weights[parts[0]]
            at = positions[items] + (self.columns[parts[0]] * stride + 2)
        else:
            items = np.concatenate([self.items[n] for n in parts])
            w = np.concatenate([self.weights[n] for n in parts])
            at = positions[items] + np.repeat(np.array([self.columns[n] * stride + 2 for n in parts]),
                                              [len(self.items[n]) for n in parts])
        sums = np.zeros((len(ranking._COVISIT_COLUMNS), stride), dtype=np.float32)
        np.add.at(sums.reshape(-1), at, w.astype(np.float32, copy=False))
        X[:, layout.covisit_dst] = np.log1p(sums[layout.covisit_src, 2:]).T


class _WithoutTiles:
    """A shopper's row as ``ranking._user_columns`` reads it, without the minute tiles: for a
    model that reads no window column (their values would be computed, then not read)."""

    __slots__ = ("totals", "last_ts", "orders")
    tiles: dict = {}

    def __init__(self, row: UserRow):
        self.totals, self.last_ts, self.orders = row.totals, row.last_ts, row.orders
