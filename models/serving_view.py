"""Serving's view of the archive: the candidates and features each logged decision was
ranked on, as near as the archive lets a replay reproduce them (``ArchiveBuilder.logged``,
which ``models.ope_archive`` scores a candidate on).

A dataset's replay (``models.replay``) is built for training: it turns purchases into orders
(with the add-to-carts an order needs), applies the shop's backend's events at their ``ts``
(a backfilled order happened then) and keeps held-out shoppers out of the item rows. Serving
saw none of that. Here:

* every archived event is applied when the stream received it (``arrival_ms``), the shop's
  backend's included, each with its own ``ts`` (features read it), and every shopper's
  events feed the item rows, as aggregate's did;
* a decision's shopper row is theirs as of the start of the second its ``rec_id`` was issued
  (the rec_id carries its expiry, issue + ``identity.REC_ID_TTL_S``, in seconds), minus
  ``INGEST_LAG_MS``: it holds only what arrived before (a click posted 50 ms before the next
  request had not reached the feature store when serving read the row), never the
  impression's own list's clicks and carts, which come before the impression when the kit
  batches it; its features are computed at the end of that second;
* the snapshot is the one the decision names (its version is its build time, at most the
  request's), rebuilt from the item rows as they were then and bounded as serving's
  (``snapshots.MAX_ITEMS_SERVED``), the features computed at the end
  of that second whenever the impression arrived; one it cannot rebuild is the newest the
  replay has at that moment, and ``same_snapshot`` says so (as it does for a version built
  before the archive's first event: the replay did not see the traffic it was built on).

What stays apart from serving: ingest's real lag varies (a constant stands for it); the
snapshot job read DynamoDB, which lagged ingest too; aggregate orders one shopper's events of
the same ``ts`` by their event id, which the archive hashes, so such ties are applied in
another order here (co-visits follow that order: 90 views stamped with one millisecond left
the replay at 0.74 agreement, the same views a millisecond apart at 0.94); and the request's
country and context item are not logged (the impression's country is used, no context item).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from personalize import identity, keys
from personalize.ingest import entities
from personalize.ingest.aggregation import USERS
from personalize.serving import ranking, snapshots

from .replay import KEEP_VERSIONS, Logged, Replayer

# Beyond the rec_id's second (the row is read as of the start of the second the request came
# in, so 0-1 s of ingest lag): the local stack's ingest keeps up within it; set it to what
# the deployment's IngestLag metric says.
INGEST_LAG_MS = 0
BATCH = 1000  # aggregate's batch size and batching window (the template's BatchSize, MaximumBatchingWindowInSeconds)
BATCH_WINDOW_MS = 1000


def arrival(event: dict) -> int:
    """When the stream received the event (the archive keeps it), else its ``ts``."""
    value = event.get("arrival_ms")
    return value if type(value) is int else event["ts"]


def decided_at(impression: dict) -> int:
    """The decision's moment: the second its rec_id was issued, or its impression's arrival
    when the rec_id does not say."""
    parts = str(impression.get("rec_id") or "").split(identity.REC_SEPARATOR)
    try:
        expires_ms = int(parts[2], 16) * 1000
    except (IndexError, ValueError):
        return arrival(impression)
    issued_ms = expires_ms - identity.REC_ID_TTL_S * 1000
    # an impression arrives after its list was served and before its rec_id expired (collect
    # refuses it after): a time outside that is not this rec_id's issue time
    return issued_ms if 0 < issued_ms <= arrival(impression) <= expires_ms else arrival(impression)


@dataclass
class Scored(Logged):
    """A ``Logged`` whose features were scored by the rankers asked for as it was replayed
    (``scores``: ranker key -> one score per candidate) and then dropped (``X`` has no
    columns): a test window of a million decisions holds a few floats per candidate and
    ranker instead of every feature."""

    scores: dict[str, np.ndarray] = field(default_factory=dict)


def _batches(events: list[dict]) -> list[list[dict]]:
    """``events`` (in arrival order) as aggregate's batches: what the stream received within
    its batching window, at most ``BATCH`` each (a batch orders each shopper's events by
    ``ts``, batches follow each other by arrival)."""
    out: list[list[dict]] = []
    for e in events:
        if out and arrival(e) - arrival(out[-1][0]) < BATCH_WINDOW_MS and len(out[-1]) < BATCH:
            out[-1].append(e)
        else:
            out.append([e])
    return out


def _snapshot(item_rows: dict[tuple[str, str], object], now_ms: int) -> snapshots.ItemSnapshot:
    """The snapshot job's, bounded as serving's is (``snapshots.MAX_ITEMS_SERVED``)."""
    views = {keys.item_id_of(pk): entities.merge_item_rows([entities.ItemRow.from_obj(row)], now_ms)
             for (pk, _), row in item_rows.items() if pk.startswith("i#")}
    return snapshots.build(views, now_ms, f"replay-{now_ms}", max_items=snapshots.MAX_ITEMS_SERVED)


def logged_decisions(events: list[dict], accept: Callable[[dict], bool], preamble: list[dict] | None = None,
                     lag_ms: int = INGEST_LAG_MS, rankers: list | None = None) -> list[Logged]:
    """Each event that ``accept``s (a logged decision) with serving's view of it (above).
    ``events``: the archive's, cleaned (deduplicated, erased shoppers out); ``preamble``: the
    catalogue, applied first. ``rankers``: score each decision with these as it is replayed
    and keep only their scores (``Scored``), not its features."""
    # At one moment: snapshots first, then rows taken, then features computed, then events.
    _SNAPSHOT, _ROW, _FEATURES, _EVENT = range(4)
    timeline: list[tuple[int, int, int, dict | int]] = []
    versions: set[int] = set()
    for n, e in enumerate(events):
        timeline.append((arrival(e), _EVENT, n, e))
        if accept(e):
            second = decided_at(e)
            timeline.append((second - lag_ms, _ROW, n, e))
            # features at the end of the decision's second, on the snapshot it names (built by
            # then): never later, whenever the impression came (the kit may hold it for days)
            timeline.append((second + 999 if second != arrival(e) else second, _FEATURES, n, e))
            version = str(e["decision"].get("snapshot") or "")
            if version.isdigit() and len(version) <= 15:
                versions.add(int(version))
    timeline.extend((v, _SNAPSHOT, 0, v) for v in versions)
    timeline.sort(key=lambda t: t[:3])
    first = min((arrival(e) for e in events), default=0)
    replayer = Replayer()
    if preamble:
        replayer.apply(preamble, preamble[-1]["ts"])
    item_rows: dict[tuple[str, str], object] = {}
    built: dict[str, snapshots.ItemSnapshot] = {}
    newest: snapshots.ItemSnapshot | None = None
    rows: dict[int, object] = {}  # a decision's row object, taken at its moment
    pending: list[dict] = []
    out: list[Logged] = []
    for moment, kind, n, payload in timeline:
        if kind == _EVENT:
            pending.append(payload)
            continue
        for batch in _batches(pending):
            replayer.apply(batch, arrival(batch[-1]))
        pending = []
        if kind == _ROW:
            stored = replayer.rows[USERS].get(keys.user_key(payload["user_id"]))
            rows[n] = None if stored is None else copy.deepcopy(stored.row)
            continue
        if kind == _SNAPSHOT or newest is None:
            item_rows.update(replayer.take_changed_items())
            newest = _snapshot(item_rows, moment)
            if kind == _SNAPSHOT:
                built[str(moment)] = newest
                while len(built) > KEEP_VERSIONS:
                    built.pop(next(iter(built)))
                continue
        version = str(payload["decision"].get("snapshot") or "")
        snap = built.get(version, newest)
        row_obj = rows.pop(n)
        row = None if row_obj is None else entities.UserRow.from_obj(row_obj)
        now = decided_at(payload)
        cands = ranking.candidates(snap, row, payload.get("country"), now_ms=now)
        X = ranking.feature_matrix(snap, row, cands, now, None)
        # a version built before the archive began was rebuilt without the traffic it was built on
        same = version in built and int(version) >= first
        items = [snap.items[c] for c in cands.tolist()]
        if rankers is None:
            out.append(Logged(payload, items, X, now, same))
        else:
            out.append(Scored(payload, items, X[:, :0], now, same, {r.key: r.score(X) for r in rankers}))
    return out
