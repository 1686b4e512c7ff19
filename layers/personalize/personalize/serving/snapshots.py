"""The item snapshot: everything serving needs about items, built once a minute from the
items table and kept in memory by the serving functions.

Numeric item features are one float32 matrix (a row per item, columns ``ITEM_COLUMNS``), so
ranking gathers a candidate matrix with one numpy take. Co-visitation neighbours are stored
compressed-sparse (offsets, indexes, weights), symmetrised. Pools are item indexes, best
first. Sold-out items are in no pool and are flagged unavailable.

Training builds snapshots with this same code while it replays history, so a feature means
the same in training and serving.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import msgpack
import numpy as np

from personalize import keys
from personalize.ingest import windows
from personalize.ingest.entities import ItemView
from personalize.serving.features import TRENDING_WEIGHTS, trending_velocity

# The document's format (``encode``/``decode``). A document says the oldest reader format
# that can read it (``compat``): a change that old readers can still read keeps ``compat``; a
# change they cannot bumps it, and the snapshot job then also writes the previous format
# (``LEGACY_FORMATS``) under the pointer's ``key``, which old edge replicas follow, while new
# ones follow ``formats`` to the newest they read. Format 2: ``compat``, ``published`` (the
# catalogue's size) and ``bounded`` (items left out to keep the snapshot within
# ``MAX_ITEMS_SERVED``) added; readable by format-1 code but for its strict format check.
FORMAT = 2
COMPAT = 1
LEGACY_FORMATS = (1,)
ITEM_COLUMNS = (
    "item_purchases_log",   # log1p(all-time purchases)
    "item_carts_log",       # log1p(all-time add-to-carts)
    "item_views_log",       # log1p(all-time views)
    "item_clicks_log",      # log1p(all-time clicks)
    "item_popularity_log",  # log1p(interaction weight decayed with a 7-day half-life)
    "item_trending_log",    # log1p(trending velocity: weighted events/min above the hour's mean)
    "item_weighted_1h_log", # log1p(weighted interactions in the last hour)
    "item_reorder_ratio",   # share of all-time purchases that were reorders (entities.is_reorder)
)
POPULAR_POOL = 400
TRENDING_POOL = 100
COUNTRY_POOL = 100
NEIGHBOURS = 20
# An item at or below this stock is dropped from answers when serving cannot confirm a
# fresh sold-out list (its safe answer: DESIGN's 5 s stock-out budget, see serving.py).
LOW_STOCK = 5
MAX_ITEMS = 5_000_000  # a decoded snapshot above this is refused as corrupt
# The snapshot is bounded by the candidate pools, not the catalogue (a million published items
# would make it ~90 MB): the pools (trending, per-country), their co-visited neighbours,
# then the most popular items up to this many (``build(max_items=...)``). A shopper's own items outside
# them are not candidates (serving scores only what the snapshot carries).
MAX_ITEMS_SERVED = 20_000


class SnapshotError(ValueError):
    """A snapshot that does not decode or breaks its bounds: refused, the last good kept."""


@dataclass
class ItemSnapshot:
    version: str
    built_at_ms: int
    items: list[str]
    matrix: np.ndarray                 # float32 [n_items, len(ITEM_COLUMNS)]
    available: np.ndarray              # bool [n_items]: False when sold out
    popular: np.ndarray                # int32 item indexes, best first
    trending: np.ndarray
    country_trending: dict[str, np.ndarray]
    country_popular: dict[str, np.ndarray]
    nb_offsets: np.ndarray             # int32 [n_items + 1]
    nb_items: np.ndarray               # int32
    nb_weights: np.ndarray             # float32
    index: dict[str, int] = field(default_factory=dict)
    popular_rank: np.ndarray | None = None  # float32 [n_items]: log1p(rank in popular), pool size+1 if absent
    low_stock: np.ndarray | None = None     # bool [n_items]: known stock <= LOW_STOCK at build time

    def __post_init__(self):
        if not self.index:
            self.index = {item: i for i, item in enumerate(self.items)}
        if self.popular_rank is None:
            rank = np.full(len(self.items), math.log1p(POPULAR_POOL + 1), dtype=np.float32)
            rank[self.popular] = np.log1p(np.arange(len(self.popular), dtype=np.float32))
            self.popular_rank = rank
        if self.low_stock is None:
            self.low_stock = np.zeros(len(self.items), dtype=bool)

    def neighbours(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.nb_offsets[idx], self.nb_offsets[idx + 1]
        return self.nb_items[start:end], self.nb_weights[start:end]

    def without(self, sold_out: set[str]) -> ItemSnapshot:
        """This snapshot with more items sold out (the fast stock-out path)."""
        return self._without_indexes([self.index[i] for i in sold_out if i in self.index])

    def without_low_stock(self) -> ItemSnapshot:
        """This snapshot without the items whose stock was low when it was built: the safe
        answer when the sold-out list cannot be confirmed fresh."""
        return self._without_indexes(np.flatnonzero(self.low_stock & self.available).tolist())

    def _without_indexes(self, gone: list[int]) -> ItemSnapshot:
        if not gone:
            return self
        available = self.available.copy()
        available[gone] = False
        keep = lambda pool: pool[available[pool]]  # noqa: E731
        return ItemSnapshot(self.version, self.built_at_ms, self.items, self.matrix, available,
                            keep(self.popular), keep(self.trending),
                            {c: keep(p) for c, p in self.country_trending.items()},
                            {c: keep(p) for c, p in self.country_popular.items()},
                            self.nb_offsets, self.nb_items, self.nb_weights, self.index, self.popular_rank,
                            self.low_stock)

    # --- msgpack ---
    published: int | None = None  # the catalogue's size when built (format 2)
    bounded: int = 0  # candidates left out by ``bound`` (format 2)

    def encode(self, fmt: int = FORMAT) -> bytes:
        extra = {"compat": COMPAT, "published": self.published, "bounded": self.bounded} if fmt >= 2 else {}
        return msgpack.packb({
            "format": fmt, **extra, "version": self.version, "built_at_ms": self.built_at_ms,
            "columns": list(ITEM_COLUMNS), "items": self.items,
            "matrix": self.matrix.astype(np.float32).tobytes(), "available": np.packbits(self.available).tobytes(),
            "popular": self.popular.astype(np.int32).tobytes(), "trending": self.trending.astype(np.int32).tobytes(),
            "country_trending": {c: p.astype(np.int32).tobytes() for c, p in self.country_trending.items()},
            "country_popular": {c: p.astype(np.int32).tobytes() for c, p in self.country_popular.items()},
            "nb_offsets": self.nb_offsets.astype(np.int32).tobytes(),
            "nb_items": self.nb_items.astype(np.int32).tobytes(),
            "nb_weights": self.nb_weights.astype(np.float32).tobytes(),
            "low_stock": np.packbits(self.low_stock).tobytes(),
        }, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> ItemSnapshot:
        """Decode and validate (format, shapes, every index in bounds, finite features):
        raises SnapshotError, never returns a snapshot that could crash or mislead serving."""
        try:
            doc = msgpack.unpackb(data, raw=False)
            fmt = doc.get("format") if isinstance(doc, dict) else None
            if type(fmt) is not int or not (fmt == FORMAT or doc.get("compat", fmt) <= FORMAT):
                raise SnapshotError(f"snapshot format {fmt if fmt is not None else '?'} is not one this code "
                                    f"reads (up to {FORMAT})")
            if tuple(doc["columns"]) != ITEM_COLUMNS:
                raise SnapshotError("snapshot columns differ from this code's")
            n = len(doc["items"])
            if not 0 <= n <= MAX_ITEMS or not all(isinstance(i, str) for i in doc["items"]):
                raise SnapshotError("snapshot items are not a list of ids within bounds")
            i32 = lambda b: np.frombuffer(b, dtype=np.int32)  # noqa: E731
            bits = lambda b: np.unpackbits(np.frombuffer(b, dtype=np.uint8))[:n].astype(bool)  # noqa: E731
            snap = cls(
                doc["version"], doc["built_at_ms"], doc["items"],
                np.frombuffer(doc["matrix"], dtype=np.float32).reshape(n, len(ITEM_COLUMNS)),
                bits(doc["available"]),
                i32(doc["popular"]), i32(doc["trending"]),
                {c: i32(p) for c, p in doc["country_trending"].items()},
                {c: i32(p) for c, p in doc["country_popular"].items()},
                i32(doc["nb_offsets"]), i32(doc["nb_items"]), np.frombuffer(doc["nb_weights"], dtype=np.float32),
                low_stock=bits(doc["low_stock"]) if "low_stock" in doc else None,
            )
            snap.published, snap.bounded = doc.get("published"), int(doc.get("bounded") or 0)
        except SnapshotError:
            raise
        except Exception as exc:  # truncated, not msgpack, missing fields, wrong sizes
            raise SnapshotError(f"snapshot does not decode: {exc}") from exc
        snap.validate()
        return snap

    def validate(self) -> None:
        n = len(self.items)
        if len(self.available) != n or len(self.low_stock) != n:
            raise SnapshotError("snapshot availability does not match its items")
        if not np.isfinite(self.matrix).all():
            raise SnapshotError("snapshot features are not all finite")
        pools = [self.popular, self.trending, self.nb_items, *self.country_trending.values(),
                 *self.country_popular.values()]
        if any(len(p) and (p.min() < 0 or p.max() >= n) for p in pools):
            raise SnapshotError("snapshot pools name items out of range")
        offsets = self.nb_offsets
        if len(offsets) != n + 1 or (n and (offsets[0] != 0 or offsets[-1] != len(self.nb_items)
                                            or (np.diff(offsets) < 0).any())):
            raise SnapshotError("snapshot neighbour offsets are inconsistent")
        if len(self.nb_weights) != len(self.nb_items):
            raise SnapshotError("snapshot neighbour weights do not match")


def _weighted(tile_sum: list[int]) -> float:
    return sum(w * c for w, c in zip(TRENDING_WEIGHTS, tile_sum))


def build(views: dict[str, ItemView], now_ms: int, version: str, max_items: int | None = None) -> ItemSnapshot:
    """The snapshot of ``views`` (items merged over their shard rows) as of ``now_ms``;
    synthetic test items (``keys.SYNTHETIC_PREFIX``) are never in it.

    ``max_items``: bounded by the candidate pools rather than the catalogue: the trending and
    per-country pools, the items co-visited with them, then the most popular (decayed) items
    up to ``max_items`` (``snapshot.bounded`` counts the views left out). Each item's
    features are computed once either way."""
    items = sorted(item for item in views if not keys.is_synthetic(item))
    n = len(items)
    matrix = np.zeros((n, len(ITEM_COLUMNS)), dtype=np.float32)
    available = np.ones(n, dtype=bool)
    low_stock = np.zeros(n, dtype=bool)
    trending = np.zeros(n, dtype=np.float64)
    popularity = np.zeros(n, dtype=np.float64)
    country_scores: list[list[tuple[str, float, float]] | None] = [None] * n  # (country, trend, 1h weight)
    log1p = math.log1p
    for i, item in enumerate(items):
        view = views[item]
        pop = windows.decay(view.popularity, view.popularity_ts, now_ms, 7 * 24 * 3_600_000)
        trend = hour = 0.0
        if view.tiles:  # most items have had no traffic in the last hour
            trend = trending_velocity(view.tiles, now_ms)
            hour = _weighted(windows.window_sums(view.tiles, now_ms)["1h"])
        v, c, a, p = view.totals
        matrix[i] = (log1p(p), log1p(a), log1p(v), log1p(c), log1p(pop), log1p(trend), log1p(hour),
                     view.reorders / p if p else 0.0)
        popularity[i] = pop
        trending[i] = trend
        if view.stock is not None and view.stock <= LOW_STOCK:
            low_stock[i] = True
        if view.stock == 0:
            available[i] = False
            continue
        scores = []
        for country, tiles in view.countries.items():
            sums = windows.window_sums(tiles, now_ms)
            scores.append((country, max(0.0, _weighted(sums["10m"]) / 10 - _weighted(sums["1h"]) / 60),
                           _weighted(sums["1h"])))
        country_scores[i] = scores
    bounded = 0
    if max_items is not None and n > max_items:
        keep = _bound(items, views, available, popularity, trending, country_scores, max_items)
        bounded = n - len(keep)
        items = [items[i] for i in keep]
        matrix, available, low_stock = matrix[keep], available[keep], low_stock[keep]
        trending, popularity = trending[keep], popularity[keep]
        country_scores = [country_scores[i] for i in keep]
        n = len(items)
    index = {item: i for i, item in enumerate(items)}
    country_trend: dict[str, list[tuple[float, int]]] = {}
    country_pop: dict[str, list[tuple[float, int]]] = {}
    src: list[int] = []
    dst: list[int] = []
    weights: list[float] = []
    for i, item in enumerate(items):
        scores = country_scores[i]
        if scores is None:  # sold out: in no pool, no co-visit
            continue
        for country, t, w in scores:
            if t > 0:
                country_trend.setdefault(country, []).append((t, i))
            if w > 0:
                country_pop.setdefault(country, []).append((w, i))
        for other, weight in views[item].neighbours.items():
            j = index.get(other)
            if j is not None and j != i:
                src.append(i)
                dst.append(j)
                weights.append(weight)

    def top(scores: np.ndarray, k: int) -> np.ndarray:
        candidates = np.flatnonzero(available & (scores > 0))
        order = candidates[np.lexsort((candidates, -scores[candidates]))]
        return order[:k].astype(np.int32)

    def top_pairs(pairs: list[tuple[float, int]], k: int) -> np.ndarray:
        best = heapq.nlargest(k, pairs, key=lambda p: (p[0], -p[1]))
        return np.array([i for _, i in best], dtype=np.int32)

    offsets, nb_items, nb_weights = _symmetric_top(n, src, dst, weights, NEIGHBOURS)
    snap = ItemSnapshot(
        version, now_ms, items, matrix, available, top(popularity, POPULAR_POOL), top(trending, TRENDING_POOL),
        {c: top_pairs(p, COUNTRY_POOL) for c, p in sorted(country_trend.items())},
        {c: top_pairs(p, COUNTRY_POOL) for c, p in sorted(country_pop.items())},
        offsets, nb_items, nb_weights, index, low_stock=low_stock)
    snap.bounded = bounded
    return snap


def _bound(items, views, available, popularity, trending, country_scores, max_items) -> list[int]:
    """The indexes a bounded snapshot keeps (sorted): the pools, their co-visited items,
    then the most popular up to ``max_items``."""
    keep: dict[int, None] = {}
    for i in heapq.nlargest(TRENDING_POOL, np.flatnonzero(available & (trending > 0)).tolist(),
                            key=lambda i: trending[i]):
        keep[i] = None
    pools: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for i, scores in enumerate(country_scores):
        for country, t, w in scores or ():
            if t > 0:
                pools.setdefault((country, 0), []).append((t, i))
            if w > 0:
                pools.setdefault((country, 1), []).append((w, i))
    for pool in pools.values():
        for _, i in heapq.nlargest(COUNTRY_POOL, pool):
            keep[i] = None
    by_popularity = np.argsort(-popularity, kind="stable")
    for i in by_popularity[:POPULAR_POOL].tolist():
        keep[i] = None
    position = {item: i for i, item in enumerate(items)}
    for i in list(keep):
        for other in views[items[i]].neighbours:
            j = position.get(other)
            if j is not None:
                keep[j] = None
    for i in by_popularity.tolist():
        if len(keep) >= max_items:
            break
        keep[i] = None
    return sorted(keep)


def _symmetric_top(n: int, src: list[int], dst: list[int], weights: list[float], k: int):
    """Co-visits are recorded on the later item; serve them both ways, summed, the k
    strongest per item, as compressed-sparse arrays."""
    if not src:
        return np.zeros(n + 1, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    a = np.array(src + dst, dtype=np.int64)
    b = np.array(dst + src, dtype=np.int64)
    w = np.array(weights + weights, dtype=np.float64)
    pair, inverse = np.unique(a * n + b, return_inverse=True)
    summed = np.bincount(inverse, weights=w)
    rows, cols = pair // n, pair % n
    order = np.lexsort((cols, -summed, rows))  # per row: strongest first, then by index
    rows, cols, summed = rows[order], cols[order], summed[order]
    starts = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    rows, cols, summed = rows[keep], cols[keep], summed[keep]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    return offsets, cols.astype(np.int32), summed.astype(np.float32)


def empty(version: str = "empty") -> ItemSnapshot:
    return build({}, 0, version)
