"""``GET /recommendations``: one request, shared by the edge and the regional handlers.

Per request: validate the query, identify the shopper from the signed cookie, read their
row (the only network read, with a tight timeout), take candidates from the in-memory item
snapshot, build their features, score them with one batched ONNX call, answer the top k.
In-memory state (snapshot, sold-out list, models, flags) is refreshed off the request path
when it is older than its refresh interval: a request never waits for a refresh.

Fallbacks, each named in the answer (``fallback: true``, ``fallback_reason``):
``anonymous``/``no_user_row`` -> trending in the shopper's country, then global trending and
popular; ``user_read_failed`` -> the same, without waiting longer than the read timeout;
``no_snapshot`` -> an empty list with 200 (the last good snapshot is kept when a refresh fails).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import identity, keys, ranking
from .adapters.artifacts import Artifacts
from .adapters.soldout import SoldOut
from .adapters.userstore import UserReadError, UserStore
from .models import Ranker
from .snapshots import ItemSnapshot

log = logging.getLogger(__name__)

MAX_K = 50
DEFAULT_K = 10
SNAPSHOT_REFRESH_S = 10.0   # pointer checks; a new snapshot is served <= 10 s after it is published
SOLDOUT_REFRESH_S = 1.0     # a stock-out reaches serving <= ~1 s after aggregate writes it
CACHE_CONTROL = "private, no-store"


class BadRequest(ValueError):
    pass


@dataclass
class Query:
    k: int
    context_item: str | None


def parse_query(params: dict[str, str | None]) -> Query:
    raw_k = params.get("k")
    if raw_k is None or raw_k == "":
        k = DEFAULT_K
    else:
        try:
            k = int(raw_k)
        except ValueError as exc:
            raise BadRequest(f"k must be an integer from 1 to {MAX_K}") from exc
        if not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be an integer from 1 to {MAX_K}")
    context = params.get("context_item")
    if context is not None and not 0 < len(context) <= 128:
        raise BadRequest("context_item must be an item id of 1-128 characters")
    return Query(k, context)


@dataclass
class Answer:
    status: int
    body: dict
    headers: dict[str, str] = field(default_factory=lambda: {"Cache-Control": CACHE_CONTROL,
                                                             "Content-Type": "application/json"})


class Refreshing:
    """A value refreshed in the background when older than ``interval_s``; keeps the last
    good value when a refresh fails."""

    def __init__(self, name: str, load: Callable[[object], object], interval_s: float, pool: ThreadPoolExecutor):
        self.name = name
        self.load = load
        self.interval_s = interval_s
        self.pool = pool
        self.value = None
        self.loaded_at = 0.0
        self.failures = 0
        self._busy = threading.Lock()

    def refresh_now(self) -> None:
        try:
            value = self.load(self.value)
            if value is not None:
                self.value = value
        except Exception:
            self.failures += 1
            log.warning("refresh of %s failed; keeping the last good value", self.name, exc_info=True)
        finally:
            self.loaded_at = time.monotonic()

    def get(self):
        if time.monotonic() - self.loaded_at >= self.interval_s and self._busy.acquire(blocking=False):
            def run():
                try:
                    self.refresh_now()
                finally:
                    self._busy.release()
            self.pool.submit(run)
        return self.value


class SnapshotSource:
    """Loads the snapshot when the pointer's ETag changed (conditional GET)."""

    def __init__(self, artifacts: Artifacts):
        self.artifacts = artifacts
        self.etag: str | None = None

    def __call__(self, current: ItemSnapshot | None) -> ItemSnapshot | None:
        pointer = self.artifacts.pointer_if_changed(self.etag)
        if pointer is None:
            return current
        snap = ItemSnapshot.decode(self.artifacts.get(pointer.key))
        self.etag = pointer.etag
        return snap


@dataclass
class Variant:
    """What a request is served with: the variant's name, its model and the experiment."""

    name: str
    ranker: Ranker
    experiment: str = keys.NO_EXPERIMENT


class Recommender:
    def __init__(self, users: UserStore, artifacts: Artifacts, soldout: SoldOut,
                 signing_key: identity.KeyRing | str | None,
                 choose_variant: Callable[[str | None], Variant], log_sample_rate: float = 0.01,
                 snapshot_refresh_s: float = SNAPSHOT_REFRESH_S, soldout_refresh_s: float = SOLDOUT_REFRESH_S,
                 on_scored: Callable[[dict], None] | None = None, pool: ThreadPoolExecutor | None = None):
        self.users = users
        # The cookie and rec_id key: a KeyRing (rotation, re-read) or one fixed key (tests).
        self.keys = signing_key if isinstance(signing_key, identity.KeyRing) else identity.KeyRing.static(signing_key)
        self.choose_variant = choose_variant
        self.log_sample_rate = log_sample_rate
        self.on_scored = on_scored or (lambda record: log.info("scored", extra=record))
        self.pool = pool or ThreadPoolExecutor(3, thread_name_prefix="refresh")
        self.snapshot = Refreshing("snapshot", SnapshotSource(artifacts), snapshot_refresh_s, self.pool)
        self.soldout = Refreshing("soldout", lambda _: soldout.read(), soldout_refresh_s, self.pool)
        self._served: tuple[int, int, ItemSnapshot] | None = None

    def warm(self, *more: Callable[[], object]) -> None:
        """Load the snapshot, the sold-out list (and ``more``, e.g. the flags) now, side by
        side (cold start), so the first request waits for none of them."""
        futures = [self.pool.submit(f) for f in (self.snapshot.refresh_now, self.soldout.refresh_now,
                                                 self.keys.refresh_now, *more)]
        for future in futures:
            future.result()

    def current_snapshot(self) -> ItemSnapshot | None:
        snap = self.snapshot.get()
        sold = self.soldout.get()
        if snap is None:
            return None
        if not sold:
            return snap
        cached = self._served
        if cached is not None and cached[0] == id(snap) and cached[1] == id(sold):
            return cached[2]
        served = snap.without(sold)
        self._served = (id(snap), id(sold), served)
        return served

    def recommend(self, params: dict, cookie: str | None, country: str | None, now_ms: int | None = None) -> Answer:
        try:
            query = parse_query(params)
        except BadRequest as exc:
            return Answer(400, {"message": str(exc)})
        now_ms = now_ms or int(time.time() * 1000)
        user_id = self.keys.verified_user(cookie)
        variant = self.choose_variant(user_id)
        # Signed: attribution believes this variant only for this shopper, until it expires.
        rec_id = identity.issue_rec_id(self.keys.current, variant.experiment, variant.name, user_id, now_ms / 1000)
        body = {"rec_id": rec_id, "user_id": user_id, "variant": variant.name, "model": variant.ranker.key,
                "items": [], "fallback": False, "snapshot_version": None}
        snap = self.current_snapshot()
        if snap is None:
            body.update(fallback=True, fallback_reason="no_snapshot")
            return Answer(200, body)
        body["snapshot_version"] = snap.version
        row = None
        reason = None
        if user_id is None:
            reason = "anonymous"
        else:
            try:
                row = self.users.get(user_id)
            except UserReadError:
                reason = "user_read_failed"
            else:
                if row is None:
                    reason = "no_user_row"
        if reason is not None and query.context_item is None:
            body.update(fallback=True, fallback_reason=reason, items=self._trending(snap, country, query.k))
            return Answer(200, body)
        cands = ranking.candidates(snap, row, country, query.context_item)
        X = ranking.feature_matrix(snap, row, cands, now_ms, query.context_item)
        scores = variant.ranker.score(X)
        best = ranking.top_k(scores, query.k)
        body["items"] = [{"item_id": snap.items[cands[p]], "score": round(float(scores[p]), 6)} for p in best]
        if reason is not None:
            body.update(fallback=True, fallback_reason=reason)
        if self.log_sample_rate and random.random() < self.log_sample_rate:
            self.on_scored({"rec_id": rec_id, "variant": variant.name, "model": variant.ranker.key,
                            "user_id": user_id, "snapshot_version": snap.version,
                            "features": variant.ranker.manifest.features,
                            "candidates": [snap.items[c] for c in cands],
                            "vectors": np.round(X[:, variant.ranker.columns], 5).tolist(),
                            "returned": [i["item_id"] for i in body["items"]]})
        body["candidates"] = len(cands)
        return Answer(200, body)

    @staticmethod
    def _trending(snap: ItemSnapshot, country: str | None, k: int) -> list[dict]:
        pools = [snap.country_trending.get(country), snap.country_popular.get(country)] if country else []
        pools += [snap.trending, snap.popular]
        seen: set[int] = set()
        out = []
        for pool in pools:
            if pool is None:
                continue
            for idx in pool[snap.available[pool]].tolist():
                if idx not in seen:
                    seen.add(idx)
                    out.append({"item_id": snap.items[idx], "score": round(float(k - len(out)) / k, 6)})
                    if len(out) == k:
                        return out
        return out
