"""The ``aggregate`` function's entry point: Powertools batch processing for the Kinesis
trigger, aggregating per batch (``pipeline.Ingestor``), and its production wiring."""

from __future__ import annotations

import sys
import time
from binascii import a2b_base64 as b64decode  # base64.b64decode without its wrapper
from collections.abc import Callable

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from personalize import collector, keys, settings
from personalize.adapters.artifacts import S3Artifacts
from personalize.adapters.quarantine import SqsQuarantine
from personalize.adapters.rowstore import ITEMS, USERS, DynamoRowStore, RowStoreError
from personalize.adapters.soldout import DynamoSoldOut
from personalize.adapters.stream import KinesisStreamReader
from personalize.ingest.aggregation import StreamRecord
from personalize.ingest.catalogue import MembershipCache, artifacts_loader
from personalize.ingest.catalogue import refresh_s as catalogue_refresh_s
from personalize.ingest.events import EventError
from personalize.ingest.pipeline import Ingestor, IngestResult
from personalize.ingest.writes import quarantine_entry

# Records re-driven by ``infra.replay`` (make replay-failures) carry this eventName.
REPLAY_EVENT_NAME = "personalize:replay"
# No store request starts later than this before the invocation's timeout: what is not
# written by then is reported as batch item failures (the quarantine and the answer need
# the rest). The row store's own budget per request (``request_budget_s``) comes on top.
DEADLINE_MARGIN_S = 5.0


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
        self._by_seq: dict[int, dict] = {}  # sequence number -> raw record
        self._shard = ""
        self._stream_arn: str | None = None
        self._source = ""
        self._replay = False
        self._now_ms = self.ingestor.now_ms()
        self._decode = self.ingestor.decode
        # A batch allocates a few containers per event (decoded events, rows, tiles), none of
        # them in reference cycles: refcounting frees them. The cyclic collector would scan
        # them (and everything older) again and again while they live, which measured at
        # about half of a batch's time. It pauses for the batch and resumes after (``_clean``,
        # which runs whatever happens once this returns; ``personalize.collector``).
        collector.pause()

    def process(self) -> list[tuple]:
        """Powertools wraps each record in a data class and calls the record handler through
        its error handling; ``collect`` needs only the raw record and never raises, so with it
        as the handler the batch is decoded in one loop (same outcome: every record succeeds
        here, and ``_clean`` reports the ones that could not be applied)."""
        if self.handler != self.collect:
            return super().process()
        collect = self._collect
        for raw in self.records:
            collect(raw)
        self.success_messages.extend(self.records)
        return [("success", None, raw) for raw in self.records]

    def collect(self, record: KinesisStreamRecord) -> None:
        """Record handler: decode and validate one record, or set it aside for quarantine.
        Whatever the record holds, nothing here raises."""
        self._collect(record.raw_event)

    def _collect(self, raw: dict) -> None:
        payload = raw.get("kinesis") or {}
        sequence_number = str(payload.get("sequenceNumber", ""))
        if sequence_number.isdigit():
            self._by_seq[int(sequence_number)] = raw
        if not self._shard:  # one shard per batch
            self._replay = raw.get("eventName") == REPLAY_EVENT_NAME
            self._shard = str(raw.get("eventID", "")).split(":", 1)[0]
            self._stream_arn = raw.get("eventSourceARN")
            self._source = keys.source_key(self._stream_arn, self._shard)
        now_ms = arrival_ms = self._now_ms
        data = b""
        try:
            # Never later than this function's clock (the same in production; a simulation's
            # clock, in tests and replays of history, may run behind the wall clock Kinesis stamps).
            arrival_ms = int(float(payload.get("approximateArrivalTimestamp") or 0) * 1000) or now_ms
            if arrival_ms > now_ms:
                arrival_ms = now_ms
            data = b64decode(payload.get("data") or "")
            self._valid.append(self._decode(data, sequence_number, arrival_ms, self._source))
        except Exception as exc:  # noqa: BLE001 - the contract's errors and anything else alike
            reason = str(exc) if isinstance(exc, EventError) else f"cannot decode: {type(exc).__name__}: {exc}"
            self._rejected.append(quarantine_entry(sequence_number, reason[:500], data, self._shard, arrival_ms,
                                                   self._stream_arn))

    def _clean(self):
        try:
            self._aggregate_batch()
        finally:
            collector.resume()
        super()._clean()

    def _aggregate_batch(self) -> None:
        if self.records:  # ``collect`` never fails a record: the batch is always aggregated
            result = self.ingestor.run(self._shard, self._valid, self._rejected, self._now_ms, self._stream_arn,
                                       replay=self._replay, deadline=self._deadline())
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
                for raw in failed:
                    self.fail_messages.append(KinesisStreamRecord(raw))
                    self.exceptions.append(info)

    def _deadline(self) -> float | None:
        """``time.monotonic()`` past which the store starts no request (None outside Lambda)."""
        context = getattr(self, "lambda_context", None)
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        return time.monotonic() + remaining() / 1000 - DEADLINE_MARGIN_S

    def _report(self, result: IngestResult) -> None:
        m = self.metrics
        m.add_metric("EventsIn", MetricUnit.Count, result.events + len(self._rejected))
        m.add_metric("EventsQuarantined", MetricUnit.Count, result.quarantined)
        m.add_metric("EventsPoison", MetricUnit.Count, result.poison)
        m.add_metric("EventsLate", MetricUnit.Count, result.late)
        m.add_metric("EventsAnonymous", MetricUnit.Count, result.anonymous)
        m.add_metric("EventsNotCredited", MetricUnit.Count, result.not_credited)
        m.add_metric("EventsDuplicate", MetricUnit.Count, result.duplicates)
        m.add_metric("RowWrites", MetricUnit.Count, result.writes)
        m.add_metric("RowWriteFailures", MetricUnit.Count, result.write_failures)
        m.add_metric("RowsRejected", MetricUnit.Count, result.rows_rejected)
        m.add_metric("EventsUnlisted", MetricUnit.Count, result.unlisted)
        m.add_metric("AvailabilityTransitions", MetricUnit.Count, result.unavailable_entries)
        if result.catalogue_unverified:
            m.add_metric("CatalogueUnverified", MetricUnit.Count, 1)
        self.log.info("batch aggregated", extra={
            "shard": self._shard, "records": len(self.records), "valid": result.events,
            "quarantined": result.quarantined, "poison": result.poison, "late": result.late,
            "anonymous": result.anonymous, "duplicates": result.duplicates, "rows_rejected": result.rows_rejected,
            "unlisted": result.unlisted,
            "already_applied": result.already_applied, "writes": result.writes,
            "failed_records": len(result.failed_seqs)})


def build_ingestor() -> Ingestor:
    """The production wiring, from the function's validated environment."""
    config = settings.load(settings.FEATURES_TABLE, settings.ITEMS_TABLE, settings.QUARANTINE_QUEUE,
                           settings.ARTIFACTS_BUCKET)
    # Short per-request budgets (2 attempts of 1 s connect + 5 s read): retries stay inside the
    # invocation's deadline (``DEADLINE_MARGIN_S``, ``Ingestor.run``).
    store = DynamoRowStore({USERS: config[settings.FEATURES_TABLE], ITEMS: config[settings.ITEMS_TABLE]},
                           request_attempts=2, connect_timeout_s=1.0)
    membership = MembershipCache(artifacts_loader(S3Artifacts(config[settings.ARTIFACTS_BUCKET])),
                                 refresh_s=catalogue_refresh_s())
    return Ingestor(store, SqsQuarantine(config[settings.QUARANTINE_QUEUE]),
                    soldout=DynamoSoldOut(config[settings.FEATURES_TABLE]), stream=KinesisStreamReader(),
                    catalogue=membership)
