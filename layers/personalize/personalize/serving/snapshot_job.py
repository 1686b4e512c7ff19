"""``functions/snapshot``: build the item snapshot and publish it, every minute.

It reads only what it publishes, never a scan (the items table also holds a day of
anonymous dedupe rows):

1. the journal of the batches written since its last run (``ingest.journal``): which items
   changed, and the catalogue's listing changes;
2. the catalogue (``catalogue_store``: packed parts, ~17 MB at a million items), folds the
   changes in, writes the parts that changed, and publishes the membership (the published
   items' 64-bit keys) that collect and aggregate check public events against;
3. the item rows of the items it tracks (last snapshot's) and of the items that changed,
   published ones only; builds the snapshot bounded by the candidate pools
   (``snapshots.bound``: ``MAX_ITEMS_SERVED``, whatever the catalogue's size);
4. writes the snapshot in every format readers may still need (``snapshots.FORMAT`` and
   ``LEGACY_FORMATS``) under fixed keys, then moves the pointer, which names the exact
   object versions (no lifecycle rule expires a current version: serving's cold instances
   always find what the pointer names), then its own state (what it tracks, how far it read).

A deadline inside the function's timeout (``DEADLINE_RESERVE_S`` before it) stops a run
that would overrun before it publishes anything: the last good snapshot stays (serving
keeps it), the next run starts from where this one's state says, and the age of the
published snapshot goes to CloudWatch every run (``SnapshotAgeSeconds``: its alarm fires
when no run has published for ``AGE_BUDGET_S``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from personalize import keys, settings
from personalize.adapters.artifacts import POINTER_KEY, Artifacts, S3Artifacts
from personalize.adapters.rowstore import ITEMS, DynamoRowStore, RowStore
from personalize.ingest import entities, journal
from personalize.serving import snapshots
from personalize.serving.catalogue_store import Catalogue

CURRENT_PREFIX = "snapshots/current/"
MEMBERSHIP_KEY = "snapshots/current/catalogue.bin"
STATE_KEY = "snapshots/current/job-state.msgpack"
# A Query or BatchGetItem page may take seconds on a busy table: each request is bounded so a
# hung one fails the run (logged, counted, the last snapshot kept) instead of a timeout.
READ_TIMEOUT_S = 10.0
READ_ATTEMPTS = 2
TIMEOUT_S = 60.0  # the function's (template.yaml), when no Lambda context says otherwise
DEADLINE_RESERVE_S = 15.0  # stop reading this long before the timeout: room to publish
AGE_BUDGET_S = 300  # the alarm's threshold: five missed minutes
JOURNAL_OVERLAP_MS = 120_000  # the journal is read again from this long before the last run
# A first run (no state: a new stack, or a lost state object) reads this much journal. Rows
# written before it (an upgrade from the scan-based job) are tracked once their item changes.
FIRST_RUN_LOOKBACK_MS = 3_600_000
CATALOGUE_TTL_S = 10 * 365 * 86_400  # catalogue parts never expire in practice


def snapshot_key(fmt: int) -> str:
    return f"{CURRENT_PREFIX}v{fmt}.msgpack"


class DeadlineError(RuntimeError):
    """The run would not publish before the function's timeout: nothing was published."""


@dataclass
class JobState:
    """What the job tracks between runs (``STATE_KEY``): the snapshot's items and the shards
    their rows live on, how far the journal was read, and when it last published."""

    journal_ms: int = 0
    built_ms: int = 0
    tracked: dict[str, list[str]] = field(default_factory=dict)  # item -> shards
    published: int = 0
    read: list[str] = field(default_factory=list)  # journal rows already folded in, within the overlap

    def to_bytes(self) -> bytes:
        return msgpack.packb({"journal_ms": self.journal_ms, "built_ms": self.built_ms, "tracked": self.tracked,
                              "published": self.published, "read": self.read})

    @classmethod
    def from_bytes(cls, data: bytes) -> JobState:
        doc = msgpack.unpackb(data, raw=False)
        return cls(doc["journal_ms"], doc["built_ms"], doc["tracked"], doc.get("published", 0), doc.get("read", []))


@dataclass
class SnapshotReport:
    version: str
    items: int
    available: int
    bytes: int
    build_ms: float
    key: str
    published_items: int = 0  # the catalogue
    changed_items: int = 0  # items whose rows changed since the last run
    rows_read: int = 0
    journal_rows: int = 0
    bounded: int = 0  # candidates left out of the snapshot (bounded by the pools)
    age_s: float = 0.0
    stages_ms: dict = field(default_factory=dict)


class Deadline:
    """The run's time left: from the Lambda context when there is one, else ``TIMEOUT_S``."""

    def __init__(self, remaining_ms: Callable[[], int] | None = None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        started = clock()
        self.remaining_ms = remaining_ms or (lambda: int((TIMEOUT_S - (clock() - started)) * 1000))

    def check(self, stage: str) -> None:
        if self.remaining_ms() / 1000 < DEADLINE_RESERVE_S:
            raise DeadlineError(f"stopped before {stage}: {self.remaining_ms() / 1000:.1f} s left of the "
                                f"function's time; the last good snapshot stays published")


def new_stack_state(created_ms: int) -> bytes:
    """The state of a stack created at ``created_ms``: its journal starts then. Without it (a
    lost state object) a first run reads ``FIRST_RUN_LOOKBACK_MS`` of journal, partition by
    partition (the local stack writes it when it creates the bucket)."""
    return JobState(journal_ms=created_ms + JOURNAL_OVERLAP_MS).to_bytes()


def _load_state(artifacts: Artifacts) -> JobState | None:
    try:
        return JobState.from_bytes(artifacts.get(STATE_KEY))
    except Exception:  # noqa: BLE001 - none yet (the first run), or unreadable: start over
        return None


def read_journal(store: RowStore, since_ms: int, now_ms: int, already: set[str] = frozenset()
                 ) -> tuple[dict[str, set[str]], list[list], list[str]]:
    """(changed item -> shards, listing changes, the rows' sort keys) from the journal
    written from ``since_ms`` on, but for the rows in ``already``."""
    touched: dict[str, set[str]] = {}
    listings: list[list] = []
    rows: list[str] = []
    floor = f"{since_ms:013d}"
    for minute in range(since_ms // journal.MINUTE_MS, now_ms // journal.MINUTE_MS + 1):
        for pk in journal.journal_partitions(minute):
            for (_, sk), stored in store.query_keys(ITEMS, pk):
                if sk < floor or stored.row is None or sk in already:
                    continue
                rows.append(sk)
                shard = stored.row["shard"]
                for item in stored.row["t"]:
                    touched.setdefault(item, set()).add(shard)
                listings.extend(stored.row["c"])
    return touched, listings, rows


def read_views(store: RowStore, tracked: dict[str, set[str]], now_ms: int) -> tuple[dict[str, entities.ItemView], int]:
    """The items' rows (one per shard each lives on), merged."""
    wanted = [keys.item_key(item, shard) for item, shards in tracked.items() for shard in sorted(shards)]
    # Eventually consistent: half the read units; a row of the last second shows next minute.
    found = store.get_many(ITEMS, wanted, consistent=False) if wanted else {}
    rows: dict[str, list[entities.ItemRow]] = {}
    for (pk, _), stored in found.items():
        if stored.row is not None:
            rows.setdefault(keys.item_id_of(pk), []).append(entities.ItemRow.from_obj(stored.row))
    return {item: entities.merge_item_rows(item_rows, now_ms) for item, item_rows in rows.items()}, len(found)


def publish(store: RowStore, artifacts: Artifacts, clock=time.time, deadline: Deadline | None = None,
            max_items: int = snapshots.MAX_ITEMS_SERVED) -> SnapshotReport:
    deadline = deadline or Deadline()
    started = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str, since: float) -> float:
        now = time.perf_counter()
        stages[name] = round((now - since) * 1000, 1)
        return now

    now_ms = int(clock() * 1000)
    state = _load_state(artifacts) or JobState()
    mark = time.perf_counter()
    since = max(0, state.journal_ms - JOURNAL_OVERLAP_MS) if state.journal_ms else now_ms - FIRST_RUN_LOOKBACK_MS
    touched, listings, journal_rows = read_journal(store, since, now_ms, set(state.read))
    mark = stage("journal", mark)
    deadline.check("the catalogue")
    catalogue = Catalogue.read(store)
    changed_parts = catalogue.apply(listings)
    catalogue.write(store, changed_parts, now_ms // 1000 + CATALOGUE_TTL_S)
    membership = catalogue.membership(str(now_ms))
    mark = stage("catalogue", mark)
    deadline.check("the item rows")
    candidates: dict[str, set[str]] = {item: set(shards) for item, shards in state.tracked.items()}
    for item, shards in touched.items():
        candidates.setdefault(item, set()).update(shards)
    candidates = {item: shards for item, shards in candidates.items() if item in membership}
    views, rows_read = read_views(store, candidates, now_ms)
    mark = stage("rows", mark)
    deadline.check("the build")
    snap = snapshots.build(views, now_ms, version=f"{now_ms}", max_items=max_items)
    snap.published = len(membership)
    mark = stage("build", mark)
    deadline.check("publishing")
    formats: dict[str, dict] = {}
    data = b""
    for fmt in (snapshots.FORMAT, *snapshots.LEGACY_FORMATS):
        encoded = snap.encode(fmt)
        data = data or encoded
        formats[str(fmt)] = {"key": snapshot_key(fmt), "version_id": artifacts.put_object(
            snapshot_key(fmt), encoded, "application/x-msgpack"), "bytes": len(encoded)}
    members = membership.to_bytes()
    catalogue_doc = {"key": MEMBERSHIP_KEY, "version_id": artifacts.put_object(MEMBERSHIP_KEY, members),
                     "items": len(membership), "bytes": len(members)}
    build_ms = (time.perf_counter() - started) * 1000
    legacy = formats[str(min(int(f) for f in formats))]
    artifacts.put_pointer({
        "version": snap.version, "built_at_ms": now_ms, "items": len(snap.items), "build_ms": round(build_ms, 1),
        # Format-1 readers (edge replicas of an older release) follow key/bytes: the oldest
        # format written. Newer readers pick from formats the newest they read.
        "key": legacy["key"], "bytes": legacy["bytes"], "formats": formats, "catalogue": catalogue_doc})
    overlap = f"{now_ms - JOURNAL_OVERLAP_MS:013d}"
    artifacts.put_object(STATE_KEY, JobState(now_ms, now_ms, {
        item: sorted(candidates[item]) for item in snap.items if item in candidates}, len(membership),
        [sk for sk in (*state.read, *journal_rows) if sk >= overlap]).to_bytes())
    stage("publish", mark)
    return SnapshotReport(snap.version, len(snap.items), int(snap.available.sum()), len(data), build_ms,
                          formats[str(snapshots.FORMAT)]["key"], len(membership), len(touched), rows_read,
                          len(journal_rows), snap.bounded, 0.0, stages)


def published_age_s(artifacts: Artifacts, now_s: float) -> float | None:
    """How old the snapshot the pointer names is (None: none published yet)."""
    try:
        doc = json.loads(artifacts.get(POINTER_KEY))
    except Exception:  # noqa: BLE001 - none, or unreadable
        return None
    return max(0.0, now_s - doc.get("built_at_ms", 0) / 1000)


@dataclass
class Publisher:
    """The deployed function's wiring: the items table and the artifacts bucket."""

    store: RowStore
    artifacts: Artifacts
    clock: Callable[[], float] = time.time

    def publish(self, remaining_ms: Callable[[], int] | None = None) -> SnapshotReport:
        return publish(self.store, self.artifacts, self.clock, Deadline(remaining_ms))

    def age_s(self) -> float | None:
        return published_age_s(self.artifacts, self.clock())


def build_publisher() -> Publisher:
    """From the function's validated environment."""
    config = settings.load(settings.ITEMS_TABLE, settings.ARTIFACTS_BUCKET)
    return Publisher(DynamoRowStore({ITEMS: config[settings.ITEMS_TABLE]}, read_timeout_s=READ_TIMEOUT_S,
                                    request_attempts=READ_ATTEMPTS),
                     S3Artifacts(config[settings.ARTIFACTS_BUCKET]))
