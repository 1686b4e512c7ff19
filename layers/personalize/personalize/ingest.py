"""Kinesis batch in, feature rows out: decoding, quarantine, aggregation, conditional writes.

``IngestProcessor`` is a Powertools ``BatchProcessor`` whose record handler only decodes and
buffers; when the batch ends it aggregates the whole batch at once (one write per touched
row, never one per event).

What happens to a record, whatever goes wrong:

* it cannot be decoded or breaks the contract (any exception, not only the contract's):
  quarantined with the reason and its raw bytes; the batch goes on;
* it cannot be applied (an exception in aggregation) or a row it changes cannot be stored
  (packing fails, the size guard gives up, DynamoDB refuses the item as invalid):
  quarantined, and the batch is aggregated again without it, so it is applied nowhere and
  costs its neighbours nothing;
* a row it changes could not be written for a reason that may pass (throttling, a timeout,
  a conflicting writer, a service error): reported as a batch item failure, so Lambda
  retries from it; rows that did get written skip it on the retry (``aggregation``);
* the quarantine itself fails: reported as a batch item failure (retried, never dropped).
"""

from __future__ import annotations

import base64
import gc
import sys
import time
from binascii import a2b_base64 as b64decode  # base64.b64decode without its wrapper
from collections.abc import Callable
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from . import fastjson, keys, state
from .adapters.quarantine import Quarantine, QuarantineError
from .adapters.rowstore import RowRejectedError, RowStore, RowStoreError
from .adapters.soldout import SoldOut, SoldOutFullError
from .adapters.stream import StreamReader
from .aggregation import ITEMS, USERS, Change, StreamRecord, aggregate_batch, rows_needed
from .events import EventError, parse_event
from .state import DAY_MS, DEDUPE_HORIZON_MS, HOUR_MS

# A row expires after this long without an event (DynamoDB TTL). Grocery shoppers come
# back after weeks, so a shopper's history is kept for over a year. A dedupe row only has
# to outlive the 24 h retry horizon of its newest id.
# Rows that decide whether an event counts (they hold the event ids): written first.
DECIDERS = ("user", "dedupe")
# Records re-driven by ``infra.replay`` (make replay-failures) carry this eventName.
REPLAY_EVENT_NAME = "personalize:replay"

ROW_TTL_MS = {"user": 400 * DAY_MS, "item": 400 * DAY_MS, "variant": 400 * DAY_MS,
              "dedupe": DEDUPE_HORIZON_MS + HOUR_MS}


@dataclass
class IngestResult:
    failed_seqs: set[int] = field(default_factory=set)
    events: int = 0
    quarantined: int = 0
    poison: int = 0  # valid records that could not be applied or stored (quarantined)
    late: int = 0
    anonymous: int = 0
    duplicates: int = 0
    already_applied: int = 0
    writes: int = 0
    write_failures: int = 0
    rows_rejected: int = 0
    sold_out: int = 0
    soldout_full: int = 0
    passes: int = 0


def quarantine_entry(sequence_number: str, reason: str, raw: bytes, shard: str, arrival_ms: int,
                     stream_arn: str | None = None) -> dict:
    return {"id": sequence_number, "reason": reason, "raw": base64.b64encode(raw).decode(), "shard": shard,
            "stream_arn": stream_arn, "sequence_number": sequence_number, "arrival_ms": arrival_ms}


class Ingestor:
    """The batch pipeline, free of Lambda: also driven directly by tests and the bench."""

    def __init__(self, store: RowStore, quarantine: Quarantine, clock: Callable[[], float] = time.time,
                 soldout: SoldOut | None = None, stream: StreamReader | None = None):
        self.store = store
        self.quarantine = quarantine
        self.clock = clock
        self.soldout = soldout
        self.stream = stream  # to tell a skipped range from the next record (``state.Progress``)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def decode(self, data: bytes, sequence_number: str, arrival_ms: int, source: str = "") -> StreamRecord:
        """Bounds (ts window included) are judged against the record's arrival, not against
        when a backlog happens to be processed."""
        return StreamRecord.of(sequence_number, parse_event(fastjson.loads(data), arrival_ms, anonymous_ok=True),
                               source, arrival_ms, data)

    def run(self, shard: str, records: list[StreamRecord], rejected: list[dict], now_ms: int,
            stream_arn: str | None = None, replay: bool = False) -> IngestResult:
        """``replay``: the records re-drive a range the trigger gave up on (``infra.replay``)."""
        result = IngestResult(events=len(records))
        source = keys.source_key(stream_arn, shard)
        seqs = [r.seq for r in records] + [int(e["id"]) for e in rejected if str(e["id"]).isdigit()]
        if not seqs:
            return result
        holes: list[tuple[int, int]] = []
        claim = None
        replayed = (min(seqs), max(seqs)) if replay else None
        if not replay:
            try:
                claim, holes = self._begin(source, shard, stream_arn, min(seqs), max(seqs), now_ms)
            except Exception:  # noqa: BLE001 - nothing written yet: retry the whole batch
                result.failed_seqs.update(seqs)
                return result
        self._run(shard, source, records, rejected, now_ms, stream_arn, holes, replayed, result)
        if claim is not None:
            progress, key, version = claim
            before = progress.done
            progress.finish(min(result.failed_seqs) if result.failed_seqs else None)
            if progress.done == before:
                return result
            try:
                self.store.put(ITEMS, _progress_change(key, progress, version), expires_at_progress(now_ms))
            except Exception:  # noqa: BLE001, S110 - only costs a spurious hole, which replays ignore
                pass
        return result

    def _begin(self, source: str, shard: str, stream_arn: str | None, first: int, last: int, now_ms: int):
        """Read the source's progress; record this attempt (written before any row)."""
        key = keys.progress_key(source)
        stored = self.store.get_many(ITEMS, [key]).get(key)
        progress = state.Progress.from_obj(stored.row if stored else None)
        version = stored.version if stored else 0
        before = (progress.attempt, progress.end, progress.done, [list(h) for h in progress.holes])
        successor = None
        if self.stream is not None and stream_arn:
            def successor(seq: int) -> int | None:
                return self.stream.successor(stream_arn, shard, seq)
        if not progress.begin(first, last, now_ms, successor):
            return None, progress.ranges()
        if (progress.attempt, progress.end, progress.done, progress.holes) != before:
            self.store.put(ITEMS, _progress_change(key, progress, version), expires_at_progress(now_ms))
            version += 1
        return (progress, key, version), progress.ranges()

    def _aggregate(self, shard, source, records, now_ms, stream_arn, holes, replayed, result, excluded):
        """Load and aggregate, dropping (and quarantining) records that cannot be applied
        until none is left; None if the rows cannot be read (nothing written yet)."""
        while True:
            result.passes += 1
            live = [r for r in records if r.seq not in excluded] if excluded else records
            needed = rows_needed(live, shard, source)
            try:
                loaded = {}
                for table in (USERS, ITEMS):
                    loaded.update(self.store.get_many(table, needed[table]))
            except Exception:  # noqa: BLE001 - retry the whole batch
                return None
            if replayed is not None and live:  # what this pass re-drives (a cut may leave the rest)
                replayed = (min(r.seq for r in live), max(r.seq for r in live))
            changes, stats = aggregate_batch(live, shard, loaded, now_ms, source, holes, replayed)
            if not stats.poison:
                return live, changes, stats
            excluded.update(stats.poison)
            self._quarantine([quarantine_entry(str(r.seq), stats.poison[r.seq], r.raw, shard, r.arrival_ms, stream_arn)
                              for r in live if r.seq in stats.poison], result)
            result.poison += len(stats.poison)

    def _run(self, shard, source, records, rejected, now_ms, stream_arn, holes, replayed, result) -> None:
        """Two write phases. First the rows that decide whether an event counts (shoppers'
        rows, which hold their event ids, and the dedupe rows of events without a shopper);
        then items and variants, aggregated only from records whose deciding row is stored.
        So if the trigger gives up on a record, no item counted it unless its event id is
        remembered: a client's later resend cannot count it a second time."""
        self._quarantine(rejected, result)
        excluded: dict[int, str] = {}
        aggregated = self._aggregate(shard, source, records, now_ms, stream_arn, holes, replayed, result, excluded)
        if aggregated is None:
            result.failed_seqs.update(r.seq for r in records if r.seq not in excluded)
            result.write_failures = len(result.failed_seqs)
            return
        live, changes, stats = aggregated
        result.late, result.duplicates, result.already_applied = stats.late, stats.duplicates, stats.already_applied
        result.anonymous = stats.anonymous
        deciders = [c for c in changes if c.kind in DECIDERS]
        not_decided = self._write(deciders, live, shard, stream_arn, now_ms, result)
        rest = [c for c in changes if c.kind not in DECIDERS]
        if not_decided and rest:
            # Lambda retries from the lowest of them: aggregate items and variants again from
            # the records before it only, so no row's watermark moves past a record it lacks
            # (the stored deciding rows show their records as applied: nothing counts twice).
            cut = min(not_decided)
            excluded.update((r.seq, "") for r in records if r.seq >= cut)
            again = self._aggregate(shard, source, records, now_ms, stream_arn, holes, replayed, result, excluded)
            if again is None:
                result.failed_seqs.update(r.seq for r in live)
                return
            rest = [c for c in again[1] if c.kind not in DECIDERS]
        self._write(rest, live, shard, stream_arn, now_ms, result)
        if self.soldout is not None and stats.stock_levels:
            self._update_soldout(live, stats.stock_levels, result)

    def _write(self, changes: list[Change], live, shard, stream_arn, now_ms, result) -> set[int]:
        """Write rows; retryable failures become batch item failures, rejected rows send
        their records to the quarantine. Returns the records of the rows not written."""
        if not changes:
            return set()
        failures = self.store.put_many([(c.table, c, expires_at(c, now_ms)) for c in changes])
        result.writes += len(changes) - len(failures)
        by_seq = {r.seq: r for r in live}
        rejected_rows: list[dict] = []
        not_written: set[int] = set()
        for change, exc in failures:
            not_written.update(change.seqs)
            if isinstance(exc, RowRejectedError):  # will never succeed: quarantine its records
                result.rows_rejected += 1
                reason = f"row {change.key[0]}|{change.key[1]} rejected: {exc}"[:500]
                rejected_rows.extend(quarantine_entry(str(s), reason, by_seq[s].raw, shard, by_seq[s].arrival_ms,
                                                      stream_arn) for s in change.seqs if s in by_seq)
            else:
                result.write_failures += 1
                result.failed_seqs.update(change.seqs)
        if rejected_rows:
            self._quarantine(rejected_rows, result)
        return not_written

    def _quarantine(self, entries: list[dict], result: IngestResult) -> None:
        if not entries:
            return
        try:
            self.quarantine.send(entries)
            result.quarantined += len(entries)
        except QuarantineError as exc:
            failed = {str(i) for i in exc.failed_ids}
            result.failed_seqs.update(int(i) for i in failed)
            result.quarantined += len(entries) - len(failed)
        except Exception:  # noqa: BLE001 - the queue is unreachable: retry them all
            result.failed_seqs.update(int(e["id"]) for e in entries if str(e["id"]).isdigit())

    def _update_soldout(self, records, levels: dict[str, int], result: IngestResult) -> None:
        """Mirror stock 0 / restock into the sold-out list (idempotent set updates)."""
        sold = {item for item, level in levels.items() if level == 0}
        result.sold_out = len(sold)
        try:
            self.soldout.update(sold, set(levels) - sold)
        except SoldOutFullError:
            # The fast path is full: the stock level is in the item rows, and the next
            # snapshot (within a minute) drops the item. Never stall the shard for it.
            result.soldout_full = len(sold)
        except Exception:  # noqa: BLE001 - retried by Lambda through the stock records
            result.failed_seqs.update(r.seq for r in records if r.event.type == "stock")


def _progress_change(key, progress, version: int) -> Change:
    return Change(ITEMS, key, "progress", progress.to_obj(), [], version, [], 0)


def expires_at_progress(now_ms: int) -> int:
    return (now_ms + state.WATERMARK_IDLE_MS) // 1000


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
        # which runs whatever happens once this returns).
        self._gc_was_enabled = gc.isenabled()
        gc.disable()

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
            if self._gc_was_enabled:
                gc.enable()
        super()._clean()

    def _aggregate_batch(self) -> None:
        if self.records:  # ``collect`` never fails a record: the batch is always aggregated
            result = self.ingestor.run(self._shard, self._valid, self._rejected, self._now_ms, self._stream_arn,
                                       replay=self._replay)
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

    def _report(self, result: IngestResult) -> None:
        m = self.metrics
        m.add_metric("EventsIn", MetricUnit.Count, result.events + len(self._rejected))
        m.add_metric("EventsQuarantined", MetricUnit.Count, result.quarantined)
        m.add_metric("EventsPoison", MetricUnit.Count, result.poison)
        m.add_metric("EventsLate", MetricUnit.Count, result.late)
        m.add_metric("EventsAnonymous", MetricUnit.Count, result.anonymous)
        m.add_metric("EventsDuplicate", MetricUnit.Count, result.duplicates)
        m.add_metric("RowWrites", MetricUnit.Count, result.writes)
        m.add_metric("RowWriteFailures", MetricUnit.Count, result.write_failures)
        m.add_metric("RowsRejected", MetricUnit.Count, result.rows_rejected)
        m.add_metric("SoldOutFull", MetricUnit.Count, result.soldout_full)
        self.log.info("batch aggregated", extra={
            "shard": self._shard, "records": len(self.records), "valid": result.events,
            "quarantined": result.quarantined, "poison": result.poison, "late": result.late,
            "anonymous": result.anonymous, "duplicates": result.duplicates, "rows_rejected": result.rows_rejected,
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
    from .adapters.stream import KinesisStreamReader

    return Ingestor(store, SqsQuarantine(config[settings.QUARANTINE_QUEUE]),
                    soldout=DynamoSoldOut(config[settings.FEATURES_TABLE]), stream=KinesisStreamReader())
