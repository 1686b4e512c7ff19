"""``functions/snapshot``: build the item snapshot from the items table and publish it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from personalize import keys, settings
from personalize.adapters.artifacts import Artifacts, S3Artifacts
from personalize.adapters.rowstore import ITEMS, DynamoRowStore, RowStore
from personalize.ingest import entities
from personalize.serving import snapshots

# A Scan page (1 MB) may take seconds on a busy table; two attempts of 12 s each stay under
# the function's 60 s timeout with room for the build, so a hung page fails with an error
# (logged, counted) instead of a "Task timed out".
SCAN_READ_TIMEOUT_S = 12.0
SCAN_ATTEMPTS = 2


@dataclass
class SnapshotReport:
    version: str
    items: int
    available: int
    bytes: int
    build_ms: float
    key: str


def build_from_store(store: RowStore, now_ms: int) -> snapshots.ItemSnapshot:
    rows: dict[str, list[entities.ItemRow]] = {}
    for (pk, _), stored in store.scan_prefix(ITEMS, "i#"):
        if stored.row is not None:
            rows.setdefault(keys.item_id_of(pk), []).append(entities.ItemRow.from_obj(stored.row))
    views = {item: entities.merge_item_rows(item_rows, now_ms) for item, item_rows in rows.items()}
    return snapshots.build(views, now_ms, version=f"{now_ms}")


def publish(store: RowStore, artifacts: Artifacts, clock=time.time) -> SnapshotReport:
    started = time.perf_counter()
    now_ms = int(clock() * 1000)
    snap = build_from_store(store, now_ms)
    data = snap.encode()
    build_ms = (time.perf_counter() - started) * 1000
    key = artifacts.put_snapshot(snap.version, data, {"built_at_ms": now_ms, "items": len(snap.items),
                                                       "build_ms": round(build_ms, 1)})
    return SnapshotReport(snap.version, len(snap.items), int(snap.available.sum()), len(data), build_ms, key)


@dataclass
class Publisher:
    """The deployed function's wiring: the items table and the artifacts bucket."""

    store: RowStore
    artifacts: Artifacts

    def publish(self) -> SnapshotReport:
        return publish(self.store, self.artifacts)


def build_publisher() -> Publisher:
    """From the function's validated environment."""
    config = settings.load(settings.ITEMS_TABLE, settings.ARTIFACTS_BUCKET)
    return Publisher(DynamoRowStore({ITEMS: config[settings.ITEMS_TABLE]}, read_timeout_s=SCAN_READ_TIMEOUT_S,
                                    request_attempts=SCAN_ATTEMPTS),
                     S3Artifacts(config[settings.ARTIFACTS_BUCKET]))
