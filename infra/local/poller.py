"""Reads the Kinesis stream and invokes ``aggregate`` the way Lambda's event source
mapping does: batches per shard in order, ``batchItemFailures`` honoured by retrying from
the lowest failed sequence number, bisection of a batch whose invocation raised, bounded
retries, then the failed range to the on-failure queue and on with the shard.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from personalize.adapters import aws

from . import lambda_events

log = logging.getLogger(__name__)


@dataclass
class ShardCursor:
    shard_id: str
    iterator: str | None
    pending: list[dict] = field(default_factory=list)  # records fetched, not yet done
    attempts: int = 0
    limit: int = 0  # bisection: how many pending records the next invocation gets
    done: bool = False
    next_read_at: float = 0.0  # GetRecords paced under the shard's 5 reads/s (shared with aggregate's reader)
    caught_up: bool = False  # its last GetRecords found nothing new
    read_at: float = 0.0  # when that was


@dataclass
class PollerStats:
    invocations: int = 0
    records: int = 0
    retries: int = 0
    sent_to_failure_queue: int = 0
    last_batch_s: float = 0.0
    # Ingest lag of the last batch handled: its oldest record's arrival on the stream to the
    # end of the invocation that aggregated it (what Lambda's IteratorAge approximates).
    last_lag_ms: float | None = None


class KinesisPoller:
    def __init__(self, stream_name: str, stream_arn: str, handler: Callable[[dict, object], dict],
                 failure_queue_url: str | None = None, batch_size: int = 1000, max_retries: int = 10,
                 identity: aws.Credentials | None = None, name: str = "aggregate",
                 read_interval_s: float | None = None, on_give_up: Callable[[list[dict]], None] | None = None):
        self.stream_name = stream_name
        self.name = name  # the consumer: its invocations' context, its log lines
        if read_interval_s is not None:
            self.READ_INTERVAL_S = read_interval_s
        self.on_give_up = on_give_up  # instead of the on-failure queue (Firehose: its error prefix)
        # Lambda's event source mapping reads the stream and writes the on-failure queue
        # with the function's execution role: locally, the same credentials.
        self.identity = identity
        self.stream_arn = stream_arn
        self.handler = handler
        self.failure_queue_url = failure_queue_url
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.stats = PollerStats()
        self.cursors: dict[str, ShardCursor] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()

    @property
    def kinesis(self):
        return aws.client("kinesis")

    def _discover(self) -> None:
        shards = self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]
        for shard in shards:
            if shard["ShardId"] not in self.cursors:
                iterator = self.kinesis.get_shard_iterator(
                    StreamName=self.stream_name, ShardId=shard["ShardId"],
                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                self.cursors[shard["ShardId"]] = ShardCursor(shard["ShardId"], iterator)

    def poll_once(self) -> int:
        """One round over the shards; returns how many records were handed to the function."""
        with self.lock, aws.as_identity(self.identity):
            if not self.cursors:
                self._discover()
            handed = 0
            self._deferred = False
            for cursor in self.cursors.values():
                handed += self._poll_shard(cursor)
            return handed

    def drain(self, timeout_s: float = 30.0) -> None:
        """Poll until a round finds nothing new (tests, the demo's checkpoints)."""
        began = time.monotonic()
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if self.poll_once() == 0 and all(c.caught_up and c.read_at >= began and not c.pending
                                             for c in self.cursors.values()):
                return
            if self._deferred:
                time.sleep(0.02)
        raise TimeoutError("stream not drained in time")

    _deferred = False
    # AWS allows 5 GetRecords a second per shard, shared by its consumers: aggregate's event
    # source mapping takes 4 here, the archive's Firehose 1 (infra/local/firehose.py).
    READ_INTERVAL_S = 0.25

    def _poll_shard(self, cursor: ShardCursor) -> int:
        if not cursor.pending and cursor.iterator:
            now = time.monotonic()
            if now < cursor.next_read_at:  # this shard's read budget: later
                self._deferred = True
                return 0
            try:
                response = self.kinesis.get_records(ShardIterator=cursor.iterator, Limit=self.batch_size)
            except ClientError as exc:
                if aws.error_code(exc) != "ProvisionedThroughputExceededException":
                    raise
                cursor.next_read_at = now + 2 * self.READ_INTERVAL_S  # as the event source mapping backs off
                self._deferred = True
                return 0
            cursor.next_read_at = now + self.READ_INTERVAL_S
            cursor.caught_up, cursor.read_at = not response["Records"], now
            cursor.iterator = response.get("NextShardIterator")
            cursor.pending = response["Records"]
            cursor.attempts, cursor.limit = 0, len(cursor.pending)
        if not cursor.pending:
            return 0
        batch = cursor.pending[: cursor.limit or len(cursor.pending)]
        event = lambda_events.kinesis_event(batch, cursor.shard_id, self.stream_arn)
        started = time.perf_counter()
        self.stats.invocations += 1
        try:
            response = self.handler(event, lambda_events.context(self.name)) or {}
            failures = [f["itemIdentifier"] for f in response.get("batchItemFailures", [])]
            raised = False
        except Exception:  # the function failed as a whole: Lambda bisects and retries
            log.exception("%s raised on a batch of %d records", self.name, len(batch))
            failures, raised = [batch[0]["SequenceNumber"]], True
        self.stats.last_batch_s = time.perf_counter() - started
        arrived = batch[0].get("ApproximateArrivalTimestamp")
        if arrived is not None and hasattr(arrived, "timestamp"):
            self.stats.last_lag_ms = round(max(0.0, time.time() - arrived.timestamp()) * 1000, 1)
        if not failures:
            self._advance(cursor, len(batch))
            self.stats.records += len(batch)
            return len(batch)
        # Retry from the lowest failed sequence number (Lambda's checkpoint semantics).
        lowest = min(int(s) for s in failures)
        done = sum(1 for r in batch if int(r["SequenceNumber"]) < lowest)
        self.stats.records += done
        self._advance(cursor, done)
        cursor.attempts += 1
        self.stats.retries += 1
        if raised and cursor.limit > 1:
            cursor.limit = max(1, (len(batch) - done) // 2)
        if cursor.attempts > self.max_retries:
            self._give_up(cursor, cursor.pending[: max(1, len(batch) - done)])
        return done

    def _advance(self, cursor: ShardCursor, count: int) -> None:
        del cursor.pending[:count]
        if count:
            cursor.attempts = 0
        cursor.limit = len(cursor.pending)

    def _give_up(self, cursor: ShardCursor, records: list[dict]) -> None:
        """Like the on-failure destination: metadata of the failed range, then move on."""
        if self.on_give_up is not None:
            self.on_give_up(records)
        elif self.failure_queue_url:
            aws.client("sqs").send_message(QueueUrl=self.failure_queue_url, MessageBody=json.dumps({
                "KinesisBatchInfo": {
                    "shardId": cursor.shard_id, "streamArn": self.stream_arn, "batchSize": len(records),
                    "startSequenceNumber": records[0]["SequenceNumber"],
                    "endSequenceNumber": records[-1]["SequenceNumber"]},
                "requestContext": {"condition": "RetryAttemptsExhausted",
                                   "approximateInvokeCount": cursor.attempts}}))
        self.stats.sent_to_failure_queue += len(records)
        self._advance(cursor, len(records))

    # --- background operation (make serve) ---
    def start(self, idle_sleep_s: float = 0.2) -> None:
        def loop():
            while not self._stop.is_set():
                try:
                    if self.poll_once() == 0:
                        self._stop.wait(idle_sleep_s)
                except Exception:
                    log.exception("poller round failed")
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=loop, name=f"kinesis-poller-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
