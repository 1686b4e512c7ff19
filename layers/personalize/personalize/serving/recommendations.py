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
A fallback the variant's model caused (``<variant>_unavailable``: it did not load, served by
the bundled champion; ``<variant>_failed``: scoring raised, served trending, or a
challenger's features failed where its champion's did not, ranked by the champion) is what the
flags rollback alarm counts per variant (``model_fault``), against the champion's rate: a new
account's ``no_user_row``, an outage's ``user_read_failed`` or a row no model's features can
read (``features_failed``) is no challenger's failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from personalize import identity, keys, telemetry
from personalize.adapters.artifacts import Artifacts
from personalize.adapters.soldout import SoldOut
from personalize.adapters.userstore import UnreadableRow, UserReadError, UserStore
from personalize.serving import ranking
from personalize.serving.availability import Availability
from personalize.serving.degraded import OUTSIDE
from personalize.serving.models import Ranker
from personalize.serving.prepared import Prepared, Served
from personalize.serving.snapshots import FORMAT, ItemSnapshot

log = logging.getLogger(__name__)

SOLDOUT_REFRESH_ON_REQUEST_S = 3.0  # older than this, a request re-reads the sold-out list itself
SOLDOUT_BUDGET_S = 5.0              # never serve a sold-out list older than this (DESIGN 4)
REQUEST_READ_EVERY_S = 1.0          # ... and re-read it on requests at most this often (Refreshing.fresh)
MAX_K = 50
DEFAULT_K = 10
SNAPSHOT_REFRESH_S = 10.0   # pointer checks; a new snapshot is served <= 10 s after it is published
SOLDOUT_REFRESH_S = 1.0     # a stock-out reaches serving <= ~1 s after aggregate writes it
WARM_LOADS = 4  # threads for cold start's loads at once: snapshot, sold-out log, signing keys, flags
CACHE_CONTROL = "private, no-store"


def print_scored(record: dict) -> None:
    """A sampled scored-candidates record as one JSON line on stdout: CloudWatch Logs keeps
    it whatever the function's log level (a logger's INFO would be dropped at WARNING)."""
    print(json.dumps({"type": "scored_candidates", **record}, separators=(",", ":")), flush=True)


def encode_vectors(X: np.ndarray) -> dict:
    """The feature vectors the model scored, exactly: float32, little-endian, column by
    column (a feature's values sit together and compress ~11x), zlib level 1, base64. A
    sampled record is ~6 KB of log instead of ~60 KB (logs are billed per byte: DESIGN's
    100 bytes of edge log per request), for ~0.15 ms per sampled request.
    ``decode_vectors`` reads it back (and the earlier uncompressed ``vectors_f32``)."""
    served = np.ascontiguousarray(np.asarray(X, dtype="<f4").T)
    return {"vectors_zf32": base64.b64encode(zlib.compress(served.tobytes(), 1)).decode("ascii"),
            "vectors_shape": list(X.shape)}


def decode_vectors(record: dict) -> np.ndarray:
    rows, columns = record["vectors_shape"]
    if "vectors_zf32" in record:
        data = zlib.decompress(base64.b64decode(record["vectors_zf32"]))
        return np.frombuffer(data, dtype="<f4").reshape(columns, rows).T
    return np.frombuffer(base64.b64decode(record["vectors_f32"]), dtype="<f4").reshape(rows, columns)


def encode_ids(ids: list[str]) -> str:
    """Item ids (never a control character) joined by newlines, zlib level 1, base64."""
    return base64.b64encode(zlib.compress("\n".join(ids).encode(), 1)).decode("ascii")


def decode_candidates(record: dict) -> list[str]:
    """The candidates of a sampled record, in the order of its vectors."""
    if "candidates_z" in record:
        text = zlib.decompress(base64.b64decode(record["candidates_z"])).decode()
        return text.split("\n") if text else []
    return list(record["candidates"])


class BadRequest(ValueError):
    pass


def model_fault(body: dict) -> bool:
    """The answer fell back because of its variant's model (``<variant>_unavailable`` or
    ``<variant>_failed``), not because of the shopper (anonymous, a new account) or the data
    (a user read, the snapshot): what the flags rollback alarm counts per variant."""
    reason = body.get("fallback_reason") or ""
    variant = body.get("variant") or ""
    # Exactly the variant's own reasons: ``user_read_failed`` (a replica outage) is no model's.
    return body.get("fallback") is True and bool(variant) and reason in (f"{variant}_unavailable",
                                                                          f"{variant}_failed")


_NO_EXPERIMENT = frozenset({OUTSIDE, "none"})


def record(sinks, answer: Answer, started: float, snapshot, minutes: telemetry.ShopperMinutes | None = None) -> None:
    """An answer's figures into ``sinks`` (``telemetry.Figures`` / ``HomeMetrics``): what the
    SLO, rollback and snapshot-age alarms read; ``started``: ``time.perf_counter()`` at the
    request's start; ``snapshot``: the item snapshot it was ranked from (None when cold);
    ``minutes``: the instance's memory of its shoppers this minute (the rollback monitor's
    per-shopper counts; None: no shopper counted)."""
    if answer.status != 200:
        for sink in sinks:
            (sink.add if isinstance(sink, telemetry.HomeMetrics) else sink.count)(
                "RequestsRefused", status=str(answer.status))
        return
    body = answer.body
    variant = body.get("variant", "none")
    telemetry.record_answer(
        sinks, variant, body.get("fallback_reason") if body.get("fallback") else None,
        (time.perf_counter() - started) * 1000,
        snapshot_age_s=(time.time() * 1000 - snapshot.built_at_ms) / 1000 if snapshot is not None else None,
        model_fault=model_fault(body),
        # The rollback monitor's shoppers: signed in and in an experiment (a consented visitor is in none).
        shopper=body.get("user_id") if variant not in _NO_EXPERIMENT else None, minutes=minutes)


def count_increases(totals: dict[str, int], seen: dict[str, int], counters) -> None:
    """Each running total's increase since ``seen`` (updated) into ``counters``: callables
    taking (metric name, count), e.g. ``Figures.count`` and ``HomeMetrics.add``. A handler's
    way to report an instance's running totals (``Recommender.degraded``, a flags store's
    refusals) once each."""
    for name, total in totals.items():
        new = total - seen.get(name, 0)
        if new > 0:
            for count in counters:
                count(name, new)
            seen[name] = total


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
    good value when a refresh fails.

    Lambda gives a function CPU only while it handles an invocation: a background refresh
    started by one request may only run during the next, minutes later. So the age that
    matters is the age of the last *successful* read (``age``), and ``fresh(max_age_s)``
    refreshes on the request's own thread when that is too old (bounded by the adapter's
    timeouts). ``generation`` counts the values loaded: what is derived from a value is
    keyed on it, never on ``id()``, which CPython reuses for a new object at a freed address.
    """

    def __init__(self, name: str, load: Callable[[object], object], interval_s: float, pool: ThreadPoolExecutor,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.load = load
        self.interval_s = interval_s
        self.pool = pool
        self.clock = clock
        self.value = None
        self.generation = 0
        self.succeeded_at = float("-inf")
        self.attempted_at = float("-inf")
        self.request_read_at = float("-inf")  # when ``fresh`` last read on a request's thread
        self.failures = 0
        self._busy = threading.Lock()

    def refresh_now(self) -> bool:
        started = self.clock()
        self.attempted_at = started
        try:
            value = self.load(self.value)
        except Exception:
            self.failures += 1
            log.warning("refresh of %s failed; keeping the last good value", self.name, exc_info=True)
            return False
        if value is not None and value is not self.value and not _unchanged(value, self.value):
            self.value = value
            self.generation += 1
        self.succeeded_at = max(self.succeeded_at, started)  # as fresh as when the read started
        return True

    def age(self) -> float:
        return self.clock() - self.succeeded_at

    def mark_stale(self) -> None:
        """The value held is not to be called fresh: the next ``fresh`` check reads again,
        even within ``REQUEST_READ_EVERY_S`` of a failed one."""
        self.succeeded_at = float("-inf")
        self.request_read_at = float("-inf")

    def get(self):
        if self.clock() - self.attempted_at >= self.interval_s and self._busy.acquire(blocking=False):
            def run():
                try:
                    self.refresh_now()
                finally:
                    self._busy.release()
            self.pool.submit(run)
        return self.value

    def fresh(self, max_age_s: float) -> bool:
        """True when the value is at most ``max_age_s`` old, refreshing it on this thread
        first if needed (one read, within the adapter's own timeouts). At most one such read
        every ``REQUEST_READ_EVERY_S``: when the last one failed, an outage would otherwise cost
        every request a failing read (and a replica already throttled, one more read per
        request). A background read's failure does not hold this one back: it may have been
        queued before Lambda froze the instance and failed on a connection gone stale."""
        self.get()
        if self.age() <= max_age_s:
            return True
        now = self.clock()
        if now - self.request_read_at < REQUEST_READ_EVERY_S:
            return False
        self.request_read_at = now
        self.refresh_now()
        return self.age() <= max_age_s


def _unchanged(value, current) -> bool:
    """A re-read equal to what is held (a sold-out set read again each second): the same
    generation, so nothing derived from it is rebuilt."""
    return isinstance(value, (set, frozenset)) and isinstance(current, (set, frozenset)) and value == current


class SnapshotSource:
    """Loads the snapshot when the pointer's ETag changed (conditional GET). ``on_pointer``
    hears the pointer's document before the snapshot it names is downloaded."""

    def __init__(self, artifacts: Artifacts, on_pointer: Callable[[dict], None] | None = None):
        self.artifacts = artifacts
        self.etag: str | None = None
        self.on_pointer = on_pointer

    def __call__(self, current: ItemSnapshot | None) -> ItemSnapshot | None:
        pointer = self.artifacts.pointer_if_changed(self.etag)
        if pointer is None:
            return current
        if self.on_pointer is not None:
            self.on_pointer(pointer.doc)
        key, version_id = pointer.key, None
        readable = [int(f) for f in (pointer.doc.get("formats") or {}) if str(f).isdigit() and int(f) <= FORMAT]
        if readable:  # the newest format this code reads, at the exact version the pointer names
            chosen = pointer.doc["formats"][str(max(readable))]
            key, version_id = chosen["key"], chosen.get("version_id")
        data = self.artifacts.get(key, version_id)
        self.etag = pointer.etag  # a bad snapshot is refused once, not downloaded again every refresh
        return ItemSnapshot.decode(data)  # validated: a bad one raises, the last good is kept


@dataclass
class Variant:
    """What a request is served with: the variant's name, its model and the experiment."""

    name: str
    ranker: Ranker
    experiment: str = keys.NO_EXPERIMENT
    fallback_reason: str | None = None  # e.g. the challenger's model is unavailable: served by the champion
    exploration: tuple[int, int] = (0, 0)  # (slots, pool): rollout.flags.EXPLORATION
    # A challenger's champion, if this instance has loaded it (None for every other variant):
    # when the challenger's features fail on a request where the champion's do not, the failure
    # is the challenger's (``<variant>_failed``, which the rollback alarm counts) and the champion ranks.
    champion: Ranker | None = None


_explorer = random.Random()  # exploration's draws (os.urandom-seeded per process)


def explored(scores: np.ndarray, k: int, slots: int, pool: int, rng: random.Random = _explorer
             ) -> tuple[np.ndarray, tuple[float, ...]]:
    """Positions of the list to show, best first, and each one's propensity: the top ``k -
    slots`` as ranked (propensity 1), then ``slots`` places drawn uniformly without replacement
    from the ``pool`` candidates ranked just below them (each at its place with propensity
    1/pool, the pool cut short when fewer candidates remain). No exploration: the top ``k``."""
    slots = min(slots, k - 1) if k > 1 else 0
    if slots <= 0 or len(scores) <= k - slots:
        best = ranking.top_k(scores, k)
        return best, (1.0,) * len(best)
    fixed = k - slots
    ranked = ranking.top_k(scores, fixed + pool)
    tail = ranked[fixed:]
    picks = rng.sample(range(len(tail)), min(slots, len(tail)))
    return np.concatenate([ranked[:fixed], tail[picks]]), (1.0,) * fixed + (1.0 / len(tail),) * len(picks)


def candidates_hash(cands: np.ndarray) -> str:
    """The candidate set's content hash: its item indexes in the snapshot (whose version the
    decision names too), 64 bits of BLAKE2b."""
    return hashlib.blake2b(np.ascontiguousarray(cands, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


class Recommender:
    def __init__(self, users: UserStore, artifacts: Artifacts, soldout: SoldOut,
                 signing_key: identity.KeyRing | str | None,
                 choose_variant: Callable[[str | None], Variant], log_sample_rate: float = 0.01,
                 snapshot_refresh_s: float = SNAPSHOT_REFRESH_S, soldout_refresh_s: float = SOLDOUT_REFRESH_S,
                 on_scored: Callable[[dict], None] | None = None, pool: ThreadPoolExecutor | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.users = users
        # The cookie and rec_id key: a KeyRing (rotation, re-read) or one fixed key (tests).
        self.keys = signing_key if isinstance(signing_key, identity.KeyRing) else identity.KeyRing.static(signing_key)
        self.choose_variant = choose_variant
        self.log_sample_rate = log_sample_rate
        self.on_scored = on_scored or print_scored
        self.pool = pool or ThreadPoolExecutor(WARM_LOADS, thread_name_prefix="refresh")
        # The first snapshot's build time as its pointer announces it: the sold-out log is read
        # from there while the snapshot itself downloads (cold start), not after it.
        self._announced_ms: int | None = None
        self._pointer_read = threading.Event()
        source = SnapshotSource(artifacts, on_pointer=self._announce)
        self._prepared: Prepared | None = None

        def load(current: ItemSnapshot | None) -> ItemSnapshot | None:
            snap = source(current)
            try:
                return self._prepare(snap)
            except Exception:
                source.etag = None  # a good snapshot that could not be prepared is fetched again next time
                raise

        self.snapshot = Refreshing("snapshot", load, snapshot_refresh_s, self.pool, clock)
        # What changed since the served snapshot (the availability log): read only what is new.
        self.availability = Availability(soldout, lambda: int(wall_clock() * 1000))
        self.soldout = Refreshing("soldout", lambda _: self.availability.load(self._snapshot_built_ms()),
                                  soldout_refresh_s, self.pool, clock)
        self._served: tuple[tuple, Served] | None = None
        self.stale_soldout_answers = 0  # answers that dropped low-stock items instead (counted, logged)
        # A failing row, feature computation or model: one traceback a minute per kind, not one
        # per request (each such answer is counted by its fallback reason).
        self.errors = telemetry.RepeatedErrors(log, clock=clock)

    def degraded(self) -> dict[str, int]:
        """Running totals of this instance's degraded sold-out filtering, as metric names:
        ``SoldOutReadFailures`` (a read of the availability log failed: the last list is served
        while it is within SOLDOUT_BUDGET_S) and ``StaleSoldOutAnswers`` (answers past that
        budget, which dropped the low-stock items too). A handler counts their increase
        (``count_increases``)."""
        return {"SoldOutReadFailures": self.soldout.failures, "StaleSoldOutAnswers": self.stale_soldout_answers}

    def _prepare(self, snap: ItemSnapshot | None) -> ItemSnapshot | None:
        """A newly loaded snapshot, prepared for requests (``Prepared``) on the refreshing
        thread, before any request can see it."""
        previous = self._prepared
        if snap is not None and (previous is None or previous.snapshot is not snap):
            self._prepared = Prepared(snap, previous.layouts() if previous is not None else ())
        return snap

    def _announce(self, pointer: dict) -> None:
        built = pointer.get("built_at_ms")
        if self.snapshot.value is None and type(built) is int and built > 0:
            self._announced_ms = built
        self._pointer_read.set()

    def _snapshot_built_ms(self) -> int | None:
        """The served snapshot's build time; before the first is served, the one its pointer
        announced (the snapshot on its way: a wrong announcement is corrected by ``warm``)."""
        snap = self.snapshot.value
        return self._announced_ms if snap is None else snap.built_at_ms

    def warm(self, *more: Callable[[], object], meanwhile: Callable[[], object] | None = None) -> None:
        """Load the snapshot, the sold-out list (and ``more``, e.g. the flags) now, side by
        side (cold start), so the first request waits for none of them. The sold-out log is
        read from the snapshot's build time, which the pointer announces: that read runs while
        the snapshot downloads, and is done again here if the snapshot that arrived is not the
        one announced. ``meanwhile`` runs on this thread while the loads wait on the network
        (cold start's CPU work: the champion's model); its exception is raised once the loads
        are done. Returns with no load still running (Lambda freezes the instance)."""

        def snapshot():
            try:
                self.snapshot.refresh_now()
            finally:
                self._pointer_read.set()  # read, unreadable or unchanged: the sold-out read goes on

        def soldout_once_announced():
            self._pointer_read.wait()  # submitted after snapshot(): never waits on a queued task
            self.soldout.refresh_now()

        futures = [self.pool.submit(f) for f in (snapshot, soldout_once_announced, self.keys.refresh_now, *more)]
        failed: Exception | None = None
        if meanwhile is not None:
            try:
                meanwhile()
            except Exception as exc:  # raised after the loads: no thread is left working on them
                failed = exc
        for future in futures:
            try:
                future.result()
            except Exception:  # an outage at cold start: serve degraded, retry in the background
                log.warning("cold-start load failed; serving without it until a refresh succeeds", exc_info=True)
        served = self.snapshot.value
        if served is not None and self.availability.base_ms != served.built_at_ms:
            # Read for another build time than the one served: read again; failing that, the
            # list read is not this snapshot's, and its age must not say it is fresh.
            if not self.soldout.refresh_now():
                self.soldout.mark_stale()
        if failed is not None:
            raise failed

    def current_snapshot(self) -> ItemSnapshot | None:
        """The snapshot as served now: without the sold-out items (``current_served``)."""
        served = self.current_served()
        return None if served is None else served.snapshot

    def current_served(self) -> Served | None:
        """The snapshot as served now, prepared: without the sold-out items. The sold-out list is never
        older than SOLDOUT_BUDGET_S: past SOLDOUT_REFRESH_ON_REQUEST_S (after an idle gap,
        when no background refresh could run) this request re-reads it (unless a request read
        it less than REQUEST_READ_EVERY_S ago); if that fails and the list is older than the
        budget, the items whose stock was low are dropped too."""
        self.snapshot.get()
        snap_generation = self.snapshot.generation  # before the value: a refresh sets the value first
        snap = self.snapshot.value
        if snap is None:
            return None
        fresh = self.soldout.fresh(SOLDOUT_REFRESH_ON_REQUEST_S) or self.soldout.age() <= SOLDOUT_BUDGET_S
        sold_generation = self.soldout.generation
        sold = self.soldout.value or set()
        if not fresh:
            self.stale_soldout_answers += 1
            self.errors.warning("stale_soldout", "sold-out list is %.1f s old and cannot be re-read: dropping "
                                "low-stock items", self.soldout.age())
        key = (snap_generation, sold_generation, fresh)
        cached = self._served
        if cached is not None and cached[0] == key:
            return cached[1]
        prepared = self._prepared
        if prepared is None or prepared.snapshot is not snap:
            # A refresh racing this request (it prepares the new snapshot before publishing it)
            # or a value set without a refresh (tests): prepared here, for this snapshot, and
            # never kept in place of the refresh's.
            made = Prepared(snap, prepared.layouts() if prepared is not None else ())
            if prepared is None:
                self._prepared = made
            prepared = made
        served = snap.without(sold)
        if not fresh:
            served = served.without_low_stock()
        out = Served(served, prepared)
        self._served = (key, out)
        return out

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
        served = self.current_served()
        if served is None:
            body.update(fallback=True, fallback_reason="no_snapshot")
            return Answer(200, body)
        snap = served.snapshot
        body["snapshot_version"] = snap.version
        row = None
        reason = None
        if user_id is None:
            reason = "anonymous"
        else:
            try:
                row = self.users.get(user_id)
            except UnreadableRow:  # read, but not a row this code can decode (corrupt, a newer format's)
                self.errors.exception("unreadable_row", "the shopper's row cannot be decoded; serving without it")
                reason = "features_failed"
            except UserReadError:
                reason = "user_read_failed"
            else:
                if row is None:
                    reason = "no_user_row"
        if reason is not None and query.context_item is None:
            return self._trending_answer(body, reason, snap, country, query.k)
        champion_ranks = False  # a challenger's features failed: its champion ranks instead
        try:
            cands, X = served.inputs(variant.ranker.columns, row, country, query.context_item, now_ms=now_ms)
        except Exception as exc:  # a row the feature code cannot read (corrupt, or a newer format's): never a 5xx
            instead = self._champion_instead(variant, served, row, country, query.context_item, now_ms)
            if instead is None:
                # Per exception type: a steady corrupt row's failures do not hide a new bug's.
                self.errors.exception(f"features_failed:{type(exc).__name__}",
                                      "features for this shopper failed; serving trending")
                return self._trending_answer(body, "features_failed", snap, country, query.k)
            self.errors.exception(f"features:{variant.ranker.key}:{type(exc).__name__}",
                                  "features for %s failed where the champion's did not; ranked by %s",
                                  variant.ranker.key, instead[0].ranker.key)
            variant, (cands, X) = instead
            reason = variant.fallback_reason  # the variant's fault comes first: model_fault counts it
            body["model"] = variant.ranker.key
            champion_ranks = True
        try:
            scores = variant.ranker.run(X)
        except Exception as exc:  # the variant's model failed on this input: its fault, counted, never a 5xx
            self.errors.exception(f"model:{variant.ranker.key}:{type(exc).__name__}",
                                  "scoring with %s failed; serving trending",
                                  variant.ranker.key)
            # Ranking for a challenger whose features failed, the champion failed too: no
            # model could rank, and the challenger's fault is not told apart from the champion's.
            return self._trending_answer(body, "features_failed" if champion_ranks else f"{variant.name}_failed",
                                         snap, country, query.k)
        best, propensities = explored(scores, query.k, *variant.exploration)
        items = snap.items
        body["items"] = [{"item_id": items[c], "score": round(v, 6)}  # Python ints and floats: no numpy scalars
                         for c, v in zip(cands[best].tolist(), scores[best].tolist())]
        reason = reason or variant.fallback_reason
        if reason is not None:
            body.update(fallback=True, fallback_reason=reason)
        if self.log_sample_rate and random.random() < self.log_sample_rate:
            # Never the user id in a log (often an e-mail address): its keyed pseudonym; the
            # outcome is joined by rec_id.
            self.on_scored({"rec_id": rec_id, "variant": variant.name, "model": variant.ranker.key,
                            "user": identity.pseudonym(user_id, self.keys.current), "snapshot_version": snap.version,
                            "features": variant.ranker.manifest.features,
                            "candidates_z": encode_ids([snap.items[c] for c in cands]),
                            **encode_vectors(X),
                            "returned": [i["item_id"] for i in body["items"]]})
        body["candidates"] = len(cands)
        return Answer(200, self._decided(body, variant.ranker.key, snap.version, candidates_hash(cands),
                                         propensities))

    @staticmethod
    def _champion_instead(variant: Variant, served: Served, row, country: str | None, context_item: str | None,
                          now_ms: int) -> tuple[Variant, tuple[np.ndarray, np.ndarray]] | None:
        """After ``variant``'s features failed: the same variant served by its champion, and the
        champion's inputs, when the champion reads other columns and its features do not fail
        on this request (the failure is then the variant's, e.g. a window column only it reads
        over a row the champion serves); None when they fail too (the row's fault), or the
        variant has no champion to compare with or this instance has not loaded it (it serves
        most requests: loaded on the first of them; never loaded here, on a failing request's
        path)."""
        champion = variant.champion
        if champion is None or np.array_equal(champion.columns, variant.ranker.columns):
            return None  # no champion here, or the same features: the champion's would fail the same way
        try:
            inputs = served.inputs(champion.columns, row, country, context_item, now_ms=now_ms)
        except Exception:
            return None
        served_by = Variant(variant.name, champion, variant.experiment, f"{variant.name}_failed", variant.exploration)
        return served_by, inputs

    def _decided(self, body: dict, model: str, snapshot: str | None, candidates: str,
                 propensities: tuple[float, ...] | None = None) -> dict:
        """``body`` with its signed decision (identity.Decision), for the kit to echo in the
        list's impressions: each item's propensity, 1 where the list is deterministic."""
        if body["items"]:
            token = identity.issue_decision(self.keys.current, body["rec_id"], identity.Decision(
                model, snapshot, tuple(i["item_id"] for i in body["items"]),
                propensities or (1.0,) * len(body["items"]), candidates))
            if token is not None:
                body["decision"] = token
        return body

    def _trending_answer(self, body: dict, reason: str, snap: ItemSnapshot, country: str | None, k: int) -> Answer:
        """``body`` as a fallback named ``reason``: the trending list, its decision signed."""
        body.update(fallback=True, fallback_reason=reason, items=self._trending(snap, country, k))
        return Answer(200, self._decided(body, "trending", snap.version, f"trending:{country or '-'}"))

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
