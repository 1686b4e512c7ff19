"""Kinesis batch in, feature rows out: decoding, quarantine, aggregation, conditional writes.

``IngestProcessor`` is a Powertools ``BatchProcessor`` whose record handler only decodes and
buffers; when the batch ends it aggregates the whole batch at once (one write per touched
row, never one per event) and reports as batch item failures exactly the records whose
rows could not be written, so Lambda retries them (and the rows that did get written
skip them on the retry: see ``aggregation``).
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from .adapters.quarantine import Quarantine, QuarantineError
from .adapters.rowstore import RowStore, RowStoreError
from .adapters.soldout import SoldOut
from .aggregation import ITEMS, USERS, Change, StreamRecord, aggregate_batch, rows_needed
from .events import EventError, loads, parse_event
from .state import DAY_MS

# A row expires after this long without an event (DynamoDB TTL). Grocery shoppers come
# back after weeks, so a shopper's history is kept for over a year.
ROW_TTL_MS = {"user": 400 * DAY_MS, "item": 400 * DAY_MS, "variant": 400 * DAY_MS}


@dataclass
class IngestResult:
    failed_seqs: set[int] = field(default_factory=set)
    events: int = 0
    quarantined: int = 0
    late: int = 0
    duplicates: int = 0
    already_applied: int = 0
    writes: int = 0
    write_failures: int = 0
    sold_out: int = 0


class Ingestor:
    """The batch pipeline, free of Lambda: also driven directly by tests and the bench."""

    def __init__(self, store: RowStore, quarantine: Quarantine, clock: Callable[[], float] = time.time,
                 soldout: SoldOut | None = None):
        self.store = store
        self.quarantine = quarantine
        self.clock = clock
        self.soldout = soldout

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def decode(self, data: bytes, sequence_number: str, now_ms: int) -> StreamRecord:
        return StreamRecord.of(sequence_number, parse_event(loads(data), now_ms, anonymous_ok=True))

    def run(self, shard: str, records: list[StreamRecord], rejected: list[dict], now_ms: int) -> IngestResult:
        result = IngestResult(events=len(records))
        if rejected:
            try:
                self.quarantine.send(rejected)
                result.quarantined = len(rejected)
            except QuarantineError as exc:
                result.failed_seqs.update(int(i) for i in exc.failed_ids)
                result.quarantined = len(rejected) - len(exc.failed_ids)
        if not records:
            return result
        needed = rows_needed(records, shard)
        loaded = {}
        try:
            for table in (USERS, ITEMS):
                loaded.update(self.store.get_many(table, needed[table]))
        except RowStoreError:
            result.failed_seqs.update(r.seq for r in records)
            result.write_failures = len(records)
            return result
        changes, stats = aggregate_batch(records, shard, loaded, now_ms)
        result.late, result.duplicates, result.already_applied = stats.late, stats.duplicates, stats.already_applied
        failures = self.store.put_many([(c.table, c, expires_at(c, now_ms)) for c in changes])
        result.writes = len(changes) - len(failures)
        result.write_failures = len(failures)
        for change, _ in failures:
            result.failed_seqs.update(change.seqs)
        if self.soldout is not None and stats.stock_levels:
            self._update_soldout(records, stats.stock_levels, result)
        return result

    def _update_soldout(self, records, levels: dict[str, int], result: IngestResult) -> None:
        """Mirror stock 0 / restock into the sold-out list (idempotent set updates)."""
        sold = {item for item, level in levels.items() if level == 0}
        result.sold_out = len(sold)
        try:
            self.soldout.update(sold, set(levels) - sold)
        except Exception:  # retried by Lambda through the stock records
            result.failed_seqs.update(r.seq for r in records if r.event.type == "stock")


def expires_at(change: Change, now_ms: int) -> int:
    """The row's TTL attribute (epoch seconds)."""
    return (max(change.last_ts, now_ms) + ROW_TTL_MS[change.kind]) // 1000


class IngestProcessor(BatchProcessor):
    """Powertools batch processing for the Kinesis trigger, aggregating per batch."""

    def __init__(self, ingestor: Callable[[], Ingestor], metrics: Metrics, logger: Logger):
        super().__init__(event_type=EventType.KinesisDataStreams)
        self._ingestor_factory = ingestor
        self._ingestor: Ingestor | None = None
        self.metrics = metrics
        self.log = logger
        self.last_result: IngestResult | None = None

    @property
    def ingestor(self) -> Ingestor:
        if self._ingestor is None:
            self._ingestor = self._ingestor_factory()
        return self._ingestor

    def _prepare(self):
        super()._prepare()
        self._valid: list[StreamRecord] = []
        self._rejected: list[dict] = []
        self._by_seq: dict[int, KinesisStreamRecord] = {}
        self._shard = ""
        self._now_ms = self.ingestor.now_ms()

    def collect(self, record: KinesisStreamRecord) -> None:
        """Record handler: decode and validate one record, or set it aside for quarantine."""
        payload = record.kinesis
        sequence_number = payload.sequence_number
        self._by_seq[int(sequence_number)] = record
        if not self._shard:  # one shard per batch
            self._shard = record.event_id.split(":", 1)[0]
        data = base64.b64decode(payload.data)
        try:
            self._valid.append(self.ingestor.decode(data, sequence_number, self._now_ms))
        except EventError as exc:
            self._rejected.append({
                "id": sequence_number, "reason": str(exc), "raw": base64.b64encode(data).decode(),
                "shard": self._shard, "sequence_number": sequence_number,
                "arrival_ms": int(payload.approximate_arrival_timestamp * 1000),
            })

    def _clean(self):
        if self.records and not self.fail_messages:
            result = self.ingestor.run(self._shard, self._valid, self._rejected, self._now_ms)
            self.last_result = result
            self._report(result)
            if result.failed_seqs:
                failed = [self._by_seq[s] for s in sorted(result.failed_seqs) if s in self._by_seq]
                # Move them from success to failure, so Powertools reports them to Lambda.
                failed_ids = {id(r) for r in failed}
                self.success_messages[:] = [m for m in self.success_messages if id(m) not in failed_ids]
                try:
                    raise RowStoreError(f"{len(failed)} records not durably applied; Lambda will retry them")
                except RowStoreError:
                    info = sys.exc_info()
                for record in failed:
                    self.fail_messages.append(record)
                    self.exceptions.append(info)
        super()._clean()

    def _report(self, result: IngestResult) -> None:
        m = self.metrics
        m.add_metric("EventsIn", MetricUnit.Count, result.events + len(self._rejected))
        m.add_metric("EventsQuarantined", MetricUnit.Count, result.quarantined)
        m.add_metric("EventsLate", MetricUnit.Count, result.late)
        m.add_metric("EventsDuplicate", MetricUnit.Count, result.duplicates)
        m.add_metric("RowWrites", MetricUnit.Count, result.writes)
        m.add_metric("RowWriteFailures", MetricUnit.Count, result.write_failures)
        self.log.info("batch aggregated", extra={
            "shard": self._shard, "records": len(self.records), "valid": result.events,
            "quarantined": result.quarantined, "late": result.late, "duplicates": result.duplicates,
            "already_applied": result.already_applied, "writes": result.writes,
            "failed_records": len(result.failed_seqs)})


def build_ingestor() -> Ingestor:
    """The production wiring, from the function's validated environment."""
    from . import settings
    from .adapters.quarantine import SqsQuarantine
    from .adapters.rowstore import DynamoRowStore
    from .adapters.soldout import DynamoSoldOut

    config = settings.load(settings.FEATURES_TABLE, settings.ITEMS_TABLE, settings.QUARANTINE_QUEUE)
    store = DynamoRowStore({USERS: config[settings.FEATURES_TABLE], ITEMS: config[settings.ITEMS_TABLE]})
    return Ingestor(store, SqsQuarantine(config[settings.QUARANTINE_QUEUE]),
                    soldout=DynamoSoldOut(config[settings.FEATURES_TABLE]))
