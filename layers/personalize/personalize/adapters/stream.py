"""The events stream: Kinesis PutRecords with bounded retries of the failed records."""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from botocore.exceptions import ClientError

from personalize.adapters import aws
from personalize.adapters.limits import KinesisLimits

PUT_RECORDS_LIMIT = 500
PUT_RECORDS_BYTES = 5 * 1024 * 1024


@dataclass(slots=True)
class PutResult:
    """Per input record, None when written, else the last error."""

    errors: list[str | None]


class EventStream(ABC):
    @abstractmethod
    def put(self, records: list[tuple[str, bytes]]) -> PutResult:
        """Write (partition key, data) records; retry failures; report what still failed."""


class _RetryingStream(EventStream):
    """PutRecords in chunks of at most 500 records and 5 MiB, each record that failed
    (throttled, or the whole request) retried with jittered backoff, ``attempts`` in all."""

    attempts: int
    base_delay: float

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    @abstractmethod
    def _put_records(self, chunk: list[tuple[str, bytes]]) -> list[str | None]:
        """One PutRecords call: per record, None or its ErrorCode; raises ClientError."""

    def put(self, records):
        errors: list[str | None] = ["not attempted"] * len(records)
        pending = list(range(len(records)))
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(random.uniform(0, self.base_delay * 2 ** attempt))
            still: list[int] = []
            for chunk in _chunks(pending, records):
                try:
                    codes = self._put_records([records[i] for i in chunk])
                except ClientError as exc:
                    if aws.error_code(exc) not in aws.THROTTLE_CODES:
                        raise
                    for i in chunk:
                        errors[i] = aws.error_code(exc)
                    still.extend(chunk)
                    continue
                for i, code in zip(chunk, codes):
                    errors[i] = code
                    if code is not None:
                        still.append(i)
            pending = still
            if not pending:
                break
        return PutResult(errors)


class KinesisEventStream(_RetryingStream):
    def __init__(self, stream_name: str, client=None, attempts: int = 4, base_delay: float = 0.05):
        self.stream_name = stream_name
        self._client = client
        self.attempts = attempts
        self.base_delay = base_delay

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("kinesis")
        return self._client

    def _put_records(self, chunk):
        response = self.client.put_records(StreamName=self.stream_name, Records=[
            {"PartitionKey": key, "Data": data} for key, data in chunk])
        return [result.get("ErrorCode") for result in response["Records"]]


def _chunks(indexes: list[int], records: list[tuple[str, bytes]]):
    chunk: list[int] = []
    size = 0
    for i in indexes:
        record_size = len(records[i][0].encode()) + len(records[i][1])
        if chunk and (len(chunk) == PUT_RECORDS_LIMIT or size + record_size > PUT_RECORDS_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(i)
        size += record_size
    if chunk:
        yield chunk


_REAL_TIME = object()


class MemoryEventStream(_RetryingStream):
    """Records in a list, with Kinesis's per-shard write limits (``limits``: a
    ``KinesisLimits``, 4 shards on the wall clock unless given one; None: no limits).
    A record over its shard's 1,000 records/s or 1 MiB/s fails on its own and is retried
    as KinesisEventStream retries it (its backoff slept on the model's clock). ``records``
    holds what was written; ``shards`` which shard each went to."""

    def __init__(self, limits=_REAL_TIME, attempts: int = 4, base_delay: float = 0.05):
        self.records: list[tuple[str, bytes]] = []
        self.shards: list[int] = []
        self.limits = KinesisLimits() if limits is _REAL_TIME else limits
        self.attempts = attempts
        self.base_delay = base_delay

    def _sleep(self, seconds: float) -> None:
        if self.limits is not None:
            self.limits.clock.sleep(seconds)

    def _put_records(self, chunk):
        if self.limits is None:
            self.records.extend(chunk)
            return [None] * len(chunk)
        answers = self.limits.put_records([(key, len(data)) for key, data in chunk])
        for (key, data), answer in zip(chunk, answers):
            if answer is None:
                self.records.append((key, data))
                self.shards.append(self.limits.shard_of(key))
        return [None if a is None else a["ErrorCode"] for a in answers]


class StreamReader(ABC):
    """What ``aggregate`` asks of the stream itself: which record follows a given one."""

    @abstractmethod
    def successor(self, stream_arn: str, shard: str, seq: int | None) -> int | None:
        """The sequence number of the record right after ``seq`` on the shard (``seq`` None:
        the oldest it holds); None when there is none."""


class KinesisStreamReader(StreamReader):
    """One GetShardIterator (AFTER_SEQUENCE_NUMBER) and one or two GetRecords of one record,
    per batch: within the shard's 5 reads per second beside the trigger's own polling."""

    def __init__(self, client=None, polls: int = 3):
        self._client = client
        self.polls = polls

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("kinesis")
        return self._client

    def successor(self, stream_arn, shard, seq):
        where = ({"ShardIteratorType": "TRIM_HORIZON"} if seq is None else
                 {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": str(seq)})
        name = stream_arn.split(":stream/", 1)[-1]  # the ARN's name: same stream, and moto resolves it
        for records in self._pages(name, shard, where, limit=1, polls=self.polls):
            return int(records[0]["SequenceNumber"])
        return None

    def read_range(self, stream_name: str, shard: str, start: str, end: str) -> list[dict] | None:
        """The records of [start, end] as GetRecords returns them (``make replay-failures``);
        None if the stream no longer holds the start of the range."""
        where = {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": start}
        out: list[dict] = []
        try:
            for records in self._pages(stream_name, shard, where, limit=1000):
                out.extend(r for r in records if int(r["SequenceNumber"]) <= int(end))
                if int(records[-1]["SequenceNumber"]) >= int(end):
                    break
        except ClientError:  # trimmed, or the stream is gone
            return None
        return out if out and out[0]["SequenceNumber"] == start else None

    def _get_records(self, iterator: str, limit: int, attempts: int = 4) -> dict:
        """GetRecords, waiting out the shard's 5 reads/s (shared with the trigger's own
        polling) rather than failing the batch over it."""
        for attempt in range(attempts):
            try:
                return self.client.get_records(ShardIterator=iterator, Limit=limit)
            except ClientError as exc:
                if aws.error_code(exc) != "ProvisionedThroughputExceededException" or attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.1, 0.2) * 2 ** attempt)
        raise AssertionError("unreachable")

    def _pages(self, stream_name: str, shard: str, where: dict, limit: int, polls: int | None = None):
        """Non-empty GetRecords pages from ``where`` until the shard's tip (or ``polls`` reads)."""
        iterator = self.client.get_shard_iterator(StreamName=stream_name, ShardId=shard, **where)["ShardIterator"]
        reads = 0
        while iterator and (polls is None or reads < polls):
            response = self._get_records(iterator, limit)
            reads += 1
            if response.get("Records"):
                yield response["Records"]
            elif not response.get("MillisBehindLatest"):
                return
            iterator = response.get("NextShardIterator")
