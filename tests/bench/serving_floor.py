"""The serving floor, and the warm edge handler in memory, for ``make bench`` (serving) and
``make profile-serving``.

The floor is the least work Python can do on this machine for the same request: unpack the
shopper's msgpack row, gather the same candidates x features matrix with one numpy take, one
run of the same shipped int8 champion with the same session options, top k. It is measured
interleaved with the handler (one handler request, then the floor's), so a busy neighbour on
a shared machine slows both alike and their ratio holds.
"""

from __future__ import annotations

import gc
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack
import numpy as np

from infra.local.template import ROOT
from personalize import identity, settings, telemetry
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.rowstore import pack
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.userstore import UserStore, decode_user
from personalize.ingest import entities
from personalize.ingest.entities import UserRow
from personalize.rollout import flags
from personalize.serving import ranking, wiring
from personalize.serving.models import MANIFEST_FILE, MODEL_FILE, Manifest, inference_session
from personalize.serving.prepared import Served
from personalize.serving.recommendations import Recommender

MODELS_DIR = ROOT / "models"


class PackedUserStore(UserStore):
    """Shoppers' rows as the table holds them (msgpack bytes), decoded as ``DynamoUserStore``
    decodes a GetItem answer: the serving read without the network."""

    def __init__(self, packed: dict[str, bytes], clock=time.time):
        self.packed = packed
        self.clock = clock
        self.reads = 0

    def get(self, user_id: str) -> UserRow | None:
        self.reads += 1
        data = self.packed.get(user_id)
        return None if data is None else decode_user({"row": {"B": data}}, self.clock(), entities.UserRow.from_obj)

    @classmethod
    def of(cls, rows: dict[str, UserRow]) -> PackedUserStore:
        return cls({user: pack(row.to_obj()) for user, row in rows.items()})


class Floor:
    """The least work for one shopper's request (see the module's docstring). Built from what
    the handler served them (its candidates and features), so both answer the same request;
    ``check`` says whether the floor's top k is the handler's."""

    def __init__(self, recommender: Recommender, packed: dict[str, bytes], user_ids: list[str],
                 country: str | None, k: int, now_ms: int):
        champion = recommender.choose_variant(user_ids[0]).ranker
        folder = MODELS_DIR / champion.key
        manifest = Manifest.from_dict(json.loads((folder / MANIFEST_FILE).read_text()))
        self.session = inference_session((folder / MODEL_FILE).read_bytes())  # its own, same options
        assert manifest.features == champion.manifest.features
        self.input = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = "probabilities" if "probabilities" in outputs else outputs[-1]
        self.k = k
        self.packed = packed
        snap = recommender.current_snapshot()
        blocks, self.positions, self.item_ids, start = [], {}, snap.items, 0
        self.cands: dict[str, np.ndarray] = {}
        for user in user_ids:
            row = recommender.users.get(user)
            cands = ranking.candidates(snap, row, country, now_ms=now_ms)
            X = ranking.feature_matrix(snap, row, cands, now_ms)[:, champion.columns]
            blocks.append(X)
            self.positions[user] = np.arange(start, start + len(X))
            self.cands[user] = cands
            start += len(X)
        self.table = np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)

    def __call__(self, user_id: str) -> np.ndarray:
        msgpack.unpackb(self.packed[user_id], raw=False, strict_map_key=False)
        X = self.table[self.positions[user_id]]
        out = self.session.run([self.output], {self.input: X})[0]
        scores = out[:, -1] if out.ndim == 2 else out.ravel()
        return ranking.top_k(scores, self.k)

    def top_items(self, user_id: str) -> list[str]:
        """The floor's answer: the item ids of its top k, best first."""
        return [self.item_ids[c] for c in self.cands[user_id][self(user_id)]]


class MemoisedInputs:
    """The handler with every stage as it is but candidates and features: each shopper's are
    computed on their first request and then read from a dict (``Served.inputs`` patched until
    ``undo``). What the rest of a request costs beside the floor, and so what the 2.0x budget
    leaves for candidates and features. ``reads``: requests answered from the dict."""

    def __init__(self, recommender):
        self.memo: dict = {}
        self.reads = 0
        self._users = users = recommender.users
        self._compute = compute = Served.inputs
        read, current = users.get, [None]

        def get(user_id):  # remembers whose row the next inputs() call is for (one thread here)
            current[0] = user_id
            return read(user_id)

        def inputs(served, columns, row, country=None, context_item=None, **kwargs):
            key = (current[0] if row is not None else None, columns.tobytes(), country, context_item)
            found = self.memo.get(key)
            if found is None:
                found = self.memo[key] = compute(served, columns, row, country, context_item, **kwargs)
            else:
                self.reads += 1
            return found

        users.get = get
        Served.inputs = inputs

    def undo(self) -> None:
        Served.inputs = self._compute
        del self._users.get


def without_candidates_features(recommender, handler, events: list, floor: Floor, user_ids: list[str],
                                requests: int) -> tuple[dict, int]:
    """``summary`` of the handler interleaved with the floor, each shopper's candidates and
    features read from a dict (``MemoisedInputs``, filled by one request each first), and how
    many requests read them from it; everything put back after."""
    memo = MemoisedInputs(recommender)
    try:
        for event in events:
            handler(event)
        memo.reads = 0
        return summary(interleaved(handler, events, floor, user_ids, requests)), memo.reads
    finally:
        memo.undo()


def percentile(values, q) -> float:
    return float(np.percentile(np.array(values), q))


def interleaved(handler, events: list, floor: Floor, user_ids: list[str], requests: int, warmup: int = 200,
                seed: int = 7) -> dict[str, list[float]]:
    """Milliseconds per request, handler and floor, one after the other per shopper (which
    goes first alternates at random), on the wall clock and in this thread's CPU time. The
    first ``warmup`` pairs are dropped.

    Both clocks, because a shared machine preempts: with more runnable threads than cores,
    a request that runs longer is likelier to wait out another thread's time slice, so wall
    medians punish the longer of two requests beyond its work. CPU time counts only the work."""
    out: dict[str, list[float]] = {"handler": [], "floor": [], "handler_cpu": [], "floor_cpu": []}
    order = random.Random(seed)
    perf, cpu = time.perf_counter_ns, time.thread_time_ns

    def timed(fn, arg):
        c, t = cpu(), perf()
        fn(arg)
        return perf() - t, cpu() - c

    for i in range(requests + warmup):
        n = i % len(events)
        if order.random() < 0.5:
            h, f = timed(handler, events[n]), timed(floor, user_ids[n])
        else:
            f, h = timed(floor, user_ids[n]), timed(handler, events[n])
        if i >= warmup:
            out["handler"].append(h[0] / 1e6)
            out["handler_cpu"].append(h[1] / 1e6)
            out["floor"].append(f[0] / 1e6)
            out["floor_cpu"].append(f[1] / 1e6)
    return out


def summary(times: dict[str, list[float]]) -> dict:
    """p50/p99 of the handler (the bench's historical keys) and of the floor, their ratios,
    and the same in CPU time (``cpu_*``)."""
    import statistics

    out = {}
    for prefix, handler, floor in (("", "handler", "floor"), ("cpu_", "handler_cpu", "floor_cpu")):
        out[f"{prefix}p50_ms"] = statistics.median(times[handler])
        out[f"{prefix}p99_ms"] = percentile(times[handler], 99)
        out[f"{prefix}floor_p50_ms"] = statistics.median(times[floor])
        out[f"{prefix}floor_p99_ms"] = percentile(times[floor], 99)
        out[f"{prefix}ratio_p50"] = out[f"{prefix}p50_ms"] / out[f"{prefix}floor_p50_ms"]
        out[f"{prefix}ratio_p99"] = out[f"{prefix}p99_ms"] / out[f"{prefix}floor_p99_ms"]
    return out


# ---------------------------------------------------------------- the warm edge in memory


def in_memory_edge(snapshot_bytes: bytes, users: PackedUserStore, signing_key: str,
                   log_sample_rate: float = 0.01, freeze: bool = True):
    """The edge handler module with its real serving state (flags through Powertools, the
    bundled champion, the cookie key ring) over in-memory adapters: no network, no moto."""
    from infra.local import handlers

    module = handlers.load("edge")
    pool = ThreadPoolExecutor(3, thread_name_prefix="refresh")
    artifacts = MemoryArtifacts()
    artifacts.put_snapshot("bench", snapshot_bytes, {})
    champion = settings.DEFAULT_CHAMPION
    store = flags.CachedDocumentStore(lambda: flags.rollout_document(champion, None, 0.0, "bench-exp"),
                                      executor=pool)
    rollout = flags.Rollout(store, champion)
    models = wiring.ModelCache(MODELS_DIR, artifacts, rollout.pins)
    recommender = Recommender(users, artifacts, MemorySoldOut(), identity.KeyRing.static(signing_key),
                              wiring.chooser(rollout, models, models.get(champion)),
                              log_sample_rate=log_sample_rate, pool=pool)
    recommender.warm(store.refresh_now)
    if freeze:
        gc.freeze()  # as the edge's cold start does: what it built stays out of GC scans
    module._state["recommender"] = recommender
    module._state["home_metrics"] = telemetry.HomeMetrics(  # counted, never sent (no network here)
        settings.NAMESPACE, "edge", lambda: None, submit=lambda fn: None, flush_every_s=float("inf"))
    return module, recommender
