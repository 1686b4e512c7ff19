"""AWS's limits that moto does not enforce, as one small model on a controllable clock.

The figures are AWS's (``AWS-LIMITS.md`` lists the sources):

* Kinesis Data Streams, per shard: writes 1,000 records/s and 1 MiB/s (data plus partition
  key), reads 5 GetRecords/s and 2 MB/s. A record goes to the shard whose HashKeyRange holds
  the MD5 of its partition key (or its ExplicitHashKey). PutRecords never raises for
  throughput: each record over the limit fails on its own (``ErrorCode``
  ``ProvisionedThroughputExceededException``) and ``FailedRecordCount`` counts them;
  GetRecords over the limit raises.
* DynamoDB, per partition key value (adaptive capacity isolates a hot key on its own
  partition, still capped): 1,000 write units/s and 3,000 read units/s, in AWS's unit
  arithmetic: a write is ceil(size / 1 KB) units (an UpdateItem is billed at the larger of
  the item before and after it: the whole item, not the change), a read ceil(size / 4 KB)
  (half for an eventually consistent read; a Query or Scan adds up the items it returns
  before rounding), twice either in a transaction. An item is at most 400 KB. A throttled
  request fails as botocore reports it: ``ProvisionedThroughputExceededException`` with a
  ``ThrottlingReasons`` entry ``Table{Read,Write}KeyRangeThroughputExceeded``.
* Lambda: an invocation ends at its function's timeout (``Deadline``).

Each limit is a token bucket refilled at its rate and holding at most one second of it
(bursts beyond that throttle, as a hot partition does). Time comes from a ``Clock``:
``RealClock`` in the local stack and the fakes by default, ``ManualClock`` in tests and the
bench, where a retry's backoff (``clock.sleep``) is what lets a bucket refill.

One model, three users: the adapters' in-memory fakes (``MemoryRowStore``,
``MemoryEventStream``, ``MemorySoldOut``), the local stack (``infra/local/aws_limits.py``
puts it in front of moto) and ``make bench`` (which reads ``Usage`` for the per-partition
and per-shard figures).
"""

from __future__ import annotations

import base64
import hashlib
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

# --- Kinesis -------------------------------------------------------------------------------
SHARD_WRITE_RECORDS_PER_S = 1_000
SHARD_WRITE_BYTES_PER_S = 1024 * 1024
SHARD_READ_CALLS_PER_S = 5
SHARD_READ_BYTES_PER_S = 2 * 1024 * 1024
HASH_SPACE = 2**128
ON_DEMAND_INITIAL_SHARDS = 4  # an on-demand stream starts with 4 MB/s of write capacity

# --- DynamoDB ------------------------------------------------------------------------------
PARTITION_WRITE_UNITS_PER_S = 1_000
PARTITION_READ_UNITS_PER_S = 3_000
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
ITEM_LIMIT_BYTES = 400 * 1024
# What a new on-demand table serves at once (reads); the bench's read-time model uses it.
TABLE_INITIAL_READ_UNITS_PER_S = 12_000
TABLE_INITIAL_WRITE_UNITS_PER_S = 4_000

THROTTLED = "ProvisionedThroughputExceededException"


class Clock:
    """Seconds on a monotonic clock, and a way to wait on it."""

    def now(self) -> float:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError


class RealClock(Clock):
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock(Clock):
    """Time moves only when told (``advance``) or when someone waits on it (``sleep``)."""

    def __init__(self, start: float = 0.0):
        self.t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += max(0.0, seconds)


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` (default: one second of them).
    ``take`` may drive the bucket below zero when ``allow_debt``: a read that returned more
    than the rate then blocks the next ones until refilled (Kinesis GetRecords)."""

    __slots__ = ("rate", "capacity", "tokens", "at", "clock")

    def __init__(self, rate: float, clock: Clock, capacity: float | None = None):
        self.rate = rate
        self.capacity = rate if capacity is None else capacity
        self.tokens = self.capacity
        self.clock = clock
        self.at = clock.now()

    def _refill(self) -> None:
        now = self.clock.now()
        if now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def available(self) -> float:
        self._refill()
        return self.tokens

    def take(self, amount: float, allow_debt: bool = False) -> bool:
        self._refill()
        if self.tokens >= amount or (allow_debt and self.tokens > 0):
            self.tokens -= amount
            return True
        return False


class Usage:
    """Units consumed per key per whole second of the clock: what the bench reports as the
    busiest partition's or shard's rate."""

    def __init__(self):
        self.by_second: dict[tuple[object, int], float] = defaultdict(float)

    def add(self, key: object, second: int, amount: float) -> None:
        self.by_second[(key, second)] += amount

    def peak(self, keys: Iterable[object] | None = None) -> float:
        wanted = None if keys is None else set(keys)
        return max((v for (k, _), v in self.by_second.items() if wanted is None or k in wanted), default=0.0)

    def peak_by_key(self) -> dict[object, float]:
        out: dict[object, float] = {}
        for (k, _), v in self.by_second.items():
            out[k] = max(out.get(k, 0.0), v)
        return out

    def total(self) -> float:
        return sum(self.by_second.values())

    def clear(self) -> None:
        self.by_second.clear()


# --- Kinesis ---------------------------------------------------------------------------------


def hash_key(partition_key: str, explicit_hash_key: str | None = None) -> int:
    """The 128-bit hash key Kinesis places a record by."""
    if explicit_hash_key is not None:
        return int(explicit_hash_key)
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")  # noqa: S324 - AWS's own choice


def even_hash_ranges(shards: int) -> list[tuple[int, int]]:
    """The HashKeyRanges of a new stream of ``shards`` shards (as CreateStream splits them)."""
    step = HASH_SPACE // shards
    return [(i * step, (i + 1) * step - 1 if i < shards - 1 else HASH_SPACE - 1) for i in range(shards)]


def shard_id(index: int) -> str:
    return f"shardId-{index:012d}"


@dataclass
class _Shard:
    records: TokenBucket
    bytes: TokenBucket
    reads: TokenBucket
    read_bytes: TokenBucket


class KinesisLimits:
    """One stream's shards and their throughput limits."""

    def __init__(self, shards: int | list[tuple[int, int]] = ON_DEMAND_INITIAL_SHARDS, clock: Clock | None = None,
                 stream_name: str = "events", account: str = "123456789012"):
        self.clock = clock or RealClock()
        self.ranges = even_hash_ranges(shards) if isinstance(shards, int) else list(shards)
        self.stream_name = stream_name
        self.account = account
        self._lock = threading.Lock()
        self._shards = [_Shard(TokenBucket(SHARD_WRITE_RECORDS_PER_S, self.clock),
                               TokenBucket(SHARD_WRITE_BYTES_PER_S, self.clock),
                               TokenBucket(SHARD_READ_CALLS_PER_S, self.clock),
                               TokenBucket(SHARD_READ_BYTES_PER_S, self.clock)) for _ in self.ranges]
        self.records_in = Usage()  # accepted records per shard per second
        self.bytes_in = Usage()
        self.offered = Usage()  # records offered (accepted or not) per shard per second
        self.throttled_records = 0

    @property
    def shard_count(self) -> int:
        return len(self.ranges)

    def shard_of(self, partition_key: str, explicit_hash_key: str | None = None) -> int:
        key = hash_key(partition_key, explicit_hash_key)
        for index, (start, end) in enumerate(self.ranges):
            if start <= key <= end:
                return index
        raise ValueError("hash key outside every shard's range")

    def put_records(self, records: list[tuple[str, int]], explicit: list[str | None] | None = None
                    ) -> list[dict | None]:
        """``records``: (partition key, data size in bytes). Per record, None when accepted,
        else the ``ErrorCode``/``ErrorMessage`` PutRecords answers for it."""
        out: list[dict | None] = []
        second = int(self.clock.now())
        with self._lock:
            for n, (key, size) in enumerate(records):
                index = self.shard_of(key, explicit[n] if explicit else None)
                shard = self._shards[index]
                weight = size + len(key.encode("utf-8"))
                self.offered.add(index, second, 1)
                if shard.records.available() >= 1 and shard.bytes.available() >= weight:
                    shard.records.take(1)
                    shard.bytes.take(weight)
                    self.records_in.add(index, second, 1)
                    self.bytes_in.add(index, second, weight)
                    out.append(None)
                else:
                    self.throttled_records += 1
                    out.append({"ErrorCode": THROTTLED, "ErrorMessage": (
                        f"Rate exceeded for shard {shard_id(index)} in stream {self.stream_name} "
                        f"under account {self.account}.")})
        return out

    def get_records(self, index: int) -> None:
        """A GetRecords call on a shard: raises like Kinesis over 5 calls/s or 2 MB/s."""
        with self._lock:
            shard = self._shards[index]
            if shard.read_bytes.available() <= 0 or not shard.reads.take(1):
                raise throttled_error("GetRecords", f"Rate exceeded for shard {shard_id(index)} in stream "
                                                    f"{self.stream_name} under account {self.account}.")

    def returned(self, index: int, nbytes: int) -> None:
        """What a GetRecords call returned: counts toward the shard's 2 MB/s (in debt if over)."""
        with self._lock:
            self._shards[index].read_bytes.take(nbytes, allow_debt=True)


# --- DynamoDB --------------------------------------------------------------------------------


def write_units(size: int, transactional: bool = False) -> int:
    units = max(1, math.ceil(size / WRITE_UNIT_BYTES))
    return units * 2 if transactional else units


def read_units(size: int, consistent: bool = True, transactional: bool = False) -> float:
    """Units of one item read (GetItem, each item of a BatchGetItem) or of one Query/Scan
    page (``size``: the sum of the items it returned)."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    if transactional:
        return units * 2
    return float(units) if consistent else units / 2


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").lstrip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def value_size(value: dict) -> int:
    """The size DynamoDB counts for one attribute value (low-level form)."""
    (kind, v), = value.items()
    if kind == "S":
        return len(v.encode("utf-8", "surrogatepass"))
    if kind == "N":
        return _number_size(v)
    if kind == "B":
        return len(v) if isinstance(v, (bytes, bytearray)) else len(base64.b64decode(v))  # base64 on the wire
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8", "surrogatepass")) for s in v)
    if kind == "NS":
        return sum(_number_size(s) for s in v)
    if kind == "BS":
        return sum(len(b) for b in v)
    if kind == "L":
        return 3 + sum(1 + value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(x) for k, x in v.items())
    return 0


def item_size(item: dict) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values."""
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def throttled_error(operation: str, message: str, reason: str | None = None, resource: str | None = None
                    ) -> ClientError:
    response = {"Error": {"Code": THROTTLED, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": 400}}
    if reason:
        response["ThrottlingReasons"] = [{"reason": reason, "resource": resource or ""}]
    return ClientError(response, operation)


def validation_error(operation: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": "ValidationException", "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)


@dataclass
class _Partition:
    writes: TokenBucket
    reads: TokenBucket


@dataclass
class DynamoLimits:
    """Per-partition-key throughput of the tables (one model for all of them)."""

    clock: Clock = field(default_factory=RealClock)
    write_units_per_s: float = PARTITION_WRITE_UNITS_PER_S
    read_units_per_s: float = PARTITION_READ_UNITS_PER_S
    account: str = "123456789012"
    region: str = "us-east-1"

    def __post_init__(self):
        self._partitions: dict[tuple[str, str], _Partition] = {}
        self._lock = threading.Lock()
        self.write_usage = Usage()  # (table, pk) -> write units per second
        self.read_usage = Usage()
        self.throttled = 0

    def _partition(self, table: str, pk: str) -> _Partition:
        part = self._partitions.get((table, pk))
        if part is None:
            part = self._partitions[(table, pk)] = _Partition(TokenBucket(self.write_units_per_s, self.clock),
                                                              TokenBucket(self.read_units_per_s, self.clock))
        return part

    def _arn(self, table: str) -> str:
        return f"arn:aws:dynamodb:{self.region}:{self.account}:table/{table}"

    def write(self, table: str, pk: str, units: float, operation: str = "PutItem") -> None:
        """Consume ``units`` write units of the partition, or raise as DynamoDB throttles."""
        with self._lock:
            if not self._partition(table, pk).writes.take(units):
                self.throttled += 1
                raise throttled_error(operation, "The level of configured provisioned throughput for the table "
                                                 "was exceeded. Consider increasing your provisioning level with "
                                                 "the UpdateTable API.",
                                      "TableWriteKeyRangeThroughputExceeded", self._arn(table))
            self.write_usage.add((table, pk), int(self.clock.now()), units)

    def read(self, table: str, pk: str, units: float, operation: str = "GetItem") -> None:
        with self._lock:
            if not self._partition(table, pk).reads.take(units):
                self.throttled += 1
                raise throttled_error(operation, "The level of configured provisioned throughput for the table "
                                                 "was exceeded. Consider increasing your provisioning level with "
                                                 "the UpdateTable API.",
                                      "TableReadKeyRangeThroughputExceeded", self._arn(table))
            self.read_usage.add((table, pk), int(self.clock.now()), units)

    def can_read(self, table: str, pk: str, units: float) -> bool:
        """Whether a read would pass now (BatchGetItem returns such keys as unprocessed)."""
        with self._lock:
            return self._partition(table, pk).reads.available() >= units

    def check_size(self, size: int, operation: str = "PutItem") -> None:
        if size > ITEM_LIMIT_BYTES:
            raise validation_error(operation, "Item size has exceeded the maximum allowed size")


# --- Lambda ----------------------------------------------------------------------------------


class Deadline:
    """An invocation's time: it ends ``timeout_s`` after it started, on the clock. What a
    Lambda context's ``get_remaining_time_in_millis`` answers."""

    def __init__(self, timeout_s: float, clock: Clock | None = None):
        self.clock = clock or RealClock()
        self.timeout_s = timeout_s
        self.started = self.clock.now()

    def remaining_s(self) -> float:
        return self.timeout_s - (self.clock.now() - self.started)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.remaining_s() * 1000))

    def expired(self) -> bool:
        return self.remaining_s() <= 0


class TimedOutError(Exception):
    """What Lambda reports when an invocation outlives its timeout ("Task timed out")."""
