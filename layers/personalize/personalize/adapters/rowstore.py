"""The feature store's rows: DynamoDB, and an in-memory fake with the same behaviour.

Each row is ``{pk, sk, row: msgpack, aux: msgpack, v: version, expires_at}``. Writes are
conditional on the version read, so two writers can never lose each other's counts.
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from personalize.adapters import aws
from personalize.adapters import limits as limits_mod
from personalize.adapters.limits import DynamoLimits
from personalize.codec import pack, unpack

Key = tuple[str, str]
BATCH_GET_LIMIT = 100
ITEM_LIMIT_BYTES = 400 * 1024
WRITE_THREADS = 16


@dataclass(slots=True)
class Stored:
    """A row as read from the store: msgpack-decoded row and aux, and its version."""

    row: dict | None = None
    aux: list | None = None
    version: int = 0


USERS = "users"
ITEMS = "items"


@dataclass(slots=True)
class Change:
    """A row to write back: conditional on ``version`` (0: must not exist yet)."""

    table: str
    key: tuple[str, str]
    kind: str
    row: dict
    aux: list
    version: int
    seqs: list[int]
    last_ts: int
    row_bytes: bytes = b""  # packed, measured by the size guard
    aux_bytes: bytes = b""


class RowStoreError(Exception):
    """A row could not be written for a reason that may pass; its records must be retried."""


class RowRejectedError(RowStoreError):
    """The row can never be written as it is (DynamoDB says it is invalid or too large, or
    it cannot be encoded): retrying would stall the shard, so its records are quarantined."""


# DynamoDB errors that no retry can fix: the request itself is wrong for this item.
REJECTED_CODES = frozenset({"ValidationException", "ItemCollectionSizeLimitExceededException",
                            "SerializationException"})


class ConflictError(RowStoreError):
    """Another writer changed the row since it was read."""


class ThrottledError(RowStoreError):
    """DynamoDB kept throttling after the retries."""


class DeadlineError(ThrottledError):
    """No attempt started: it could not end before the caller's deadline (``deadline``), so
    the caller reports the records as failed (retried) instead of timing out mid-batch."""


class RowStore(ABC):
    @abstractmethod
    def get_many(self, table: str, keys: Iterable[Key], consistent: bool = True) -> dict[Key, Stored]:
        """The rows of ``keys`` that exist; ``consistent=False``: eventually consistent reads
        (half the read units; a write of the last second may not show)."""

    @abstractmethod
    def put(self, table: str, change: Change, expires_at: int) -> None: ...

    @abstractmethod
    def query(self, table: str, pk: str) -> list[Stored]: ...

    @abstractmethod
    def scan_prefix(self, table: str, prefix: str) -> Iterable[tuple[Key, Stored]]: ...

    @abstractmethod
    def query_keys(self, table: str, pk: str) -> list[tuple[Key, Stored]]:
        """Every row of a partition with its key, in sort-key order."""

    def put_once(self, table: str, key: Key, kind: str, row: dict, expires_at: int) -> bool:
        """Create a row that is written once and never changed (a batch's journal): False
        when it exists already (an earlier attempt of the same write landed)."""
        try:
            self.put(table, Change(table, key, kind, row, [], 0, [], 0), expires_at)
        except ConflictError:
            return False
        return True

    def put_many(self, pairs: list[tuple[str, Change, int]]) -> list[tuple[Change, Exception]]:
        """Write every change; return the ones that failed, with why."""
        failures = []
        for table, change, expires_at in pairs:
            try:
                self.put(table, change, expires_at)
            except RowStoreError as exc:
                failures.append((change, exc))
        return failures




class DynamoRowStore(RowStore):
    """Rows in DynamoDB tables, through the low-level client (no resource layer)."""

    def __init__(self, tables: dict[str, str], client=None, max_attempts: int = 6, clock=time.time,
                 read_timeout_s: float = 5.0, request_attempts: int = 4, connect_timeout_s: float = 2.0,
                 monotonic=time.monotonic, sleep=time.sleep):
        self.tables = tables  # logical name -> table name
        self.clock = clock  # for TTL: rows whose expires_at has passed read as empty
        self._client = client
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.request_attempts = request_attempts  # botocore's, per request (throttling has its own budget)
        self.max_attempts = max_attempts
        self._pool: ThreadPoolExecutor | None = None
        # ``monotonic()`` past which no attempt starts that could end after it (None: no
        # deadline); ``aggregate`` sets it inside its own timeout (``Ingestor.run``).
        self.deadline: float | None = None
        self.monotonic, self.sleep = monotonic, sleep

    @property
    def request_budget_s(self) -> float:
        """The longest one request can take: botocore's attempts, each connecting and reading."""
        return self.request_attempts * (self.connect_timeout_s + self.read_timeout_s)

    def _before_attempt(self, backoff_s: float = 0.0) -> None:
        if self.deadline is not None and self.monotonic() + backoff_s + self.request_budget_s > self.deadline:
            raise DeadlineError(f"not attempted: {self.request_budget_s:.0f} s more would pass the deadline")

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("dynamodb", connect_timeout=self.connect_timeout_s,
                                      read_timeout=self.read_timeout_s, attempts=self.request_attempts)
        return self._client

    def get_many(self, table: str, keys: Iterable[Key], consistent: bool = True) -> dict[Key, Stored]:
        try:
            return self._get_many(table, keys, consistent)
        except (ClientError, BotoCoreError) as exc:
            raise RowStoreError(f"{table}: read failed: {exc}") from exc

    def _get_many(self, table: str, keys: Iterable[Key], consistent: bool = True) -> dict[Key, Stored]:
        name = self.tables[table]
        keys = list(keys)
        out: dict[Key, Stored] = {}
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request = {name: {
                "Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys[start:start + BATCH_GET_LIMIT]],
                "ConsistentRead": consistent,
            }}
            for attempt in range(self.max_attempts):
                response = self._call(self.client.batch_get_item, RequestItems=request)
                for item in response.get("Responses", {}).get(name, []):
                    out[(item["pk"]["S"], item["sk"]["S"])] = _decode_low(item, self.clock())
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._backoff(attempt)
            else:
                raise ThrottledError(f"{name}: keys still unprocessed after {self.max_attempts} attempts")
        return out

    def get(self, table: str, key: Key, projection: str = "#r") -> Stored | None:
        response = self._call(self.client.get_item, TableName=self.tables[table],
                              Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}},
                              ProjectionExpression=projection + ", expires_at",
                              ExpressionAttributeNames={"#r": "row"})
        item = response.get("Item")
        found = _decode_low(item, self.clock()) if item else None
        return found if found is not None and found.row is not None else None

    def put(self, table: str, change: Change, expires_at: int) -> None:
        row_bytes, aux_bytes = _packed(change)
        item = {
            "pk": {"S": change.key[0]}, "sk": {"S": change.key[1]},
            "row": {"B": row_bytes}, "aux": {"B": aux_bytes},
            "v": {"N": str(change.version + 1)}, "expires_at": {"N": str(expires_at)},
        }
        if change.version == 0:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {"ConditionExpression": "v = :v",
                         "ExpressionAttributeValues": {":v": {"N": str(change.version)}}}
        try:
            self._call(self.client.put_item, TableName=self.tables[table], Item=item, **condition)
        except ClientError as exc:
            code = aws.error_code(exc)
            if code == "ConditionalCheckFailedException":
                raise ConflictError(f"{change.key} changed since it was read") from exc
            if code in REJECTED_CODES:
                raise RowRejectedError(f"{code}: {exc}") from exc
            raise RowStoreError(f"{code}: {exc}") from exc  # service errors, throttling: retry
        except BotoCoreError as exc:  # timeouts, connection errors: the write may or may not have landed
            raise RowStoreError(f"{type(exc).__name__}: {exc}") from exc

    def put_many(self, pairs):
        if len(pairs) <= 1:
            return super().put_many(pairs)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="rowstore")

        def write(pair):
            table, change, expires_at = pair
            try:
                self.put(table, change, expires_at)
            except RowStoreError as exc:
                return change, exc
            return None

        return [failure for failure in self._pool.map(write, pairs) if failure is not None]

    def query(self, table: str, pk: str) -> list[Stored]:
        paginator = self.client.get_paginator("query")
        out = []
        for page in paginator.paginate(TableName=self.tables[table], KeyConditionExpression="pk = :pk",
                                       ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True):
            out.extend(_decode_low(item, self.clock()) for item in page.get("Items", []))
        return out

    def query_keys(self, table: str, pk: str) -> list[tuple[Key, Stored]]:
        paginator = self.client.get_paginator("query")
        out = []
        for page in paginator.paginate(TableName=self.tables[table], KeyConditionExpression="pk = :pk",
                                       ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True):
            out.extend(((item["pk"]["S"], item["sk"]["S"]), _decode_low(item, self.clock()))
                       for item in page.get("Items", []))
        return out

    def scan_prefix(self, table: str, prefix: str):
        paginator = self.client.get_paginator("scan")
        for page in paginator.paginate(TableName=self.tables[table], FilterExpression="begins_with(pk, :p)",
                                       ExpressionAttributeValues={":p": {"S": prefix}}):
            for item in page.get("Items", []):
                yield (item["pk"]["S"], item["sk"]["S"]), _decode_low(item, self.clock())

    def _call(self, method, **kwargs):
        """botocore already retries throttling; this adds a longer, jittered tail, never past
        the deadline (``DeadlineError``)."""
        self._before_attempt()
        for attempt in range(self.max_attempts):
            try:
                return method(**kwargs)
            except ClientError as exc:
                if aws.error_code(exc) not in aws.THROTTLE_CODES:
                    raise
                if attempt == self.max_attempts - 1:
                    raise ThrottledError(f"throttled after {self.max_attempts} attempts: {exc}") from exc
                self._backoff(attempt)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> None:
        delay = _backoff_s(attempt)
        self._before_attempt(delay)
        self.sleep(delay)


def _packed(change: Change) -> tuple[bytes, bytes]:
    """The change's bytes (packed by the size guard), or packed here; a value msgpack cannot
    encode (an integer past 64 bits) makes the row unstorable, not the batch."""
    if change.row_bytes:
        return change.row_bytes, change.aux_bytes
    try:
        return pack(change.row), pack(change.aux)
    except (OverflowError, TypeError, ValueError) as exc:
        raise RowRejectedError(f"cannot encode the row: {exc}") from exc


def _decode_low(item: dict, now_s: float) -> Stored:
    """Decode a row; an expired one (TTL passed, not yet deleted) reads as empty but keeps
    its version, so the next conditional write still succeeds."""
    version = int(item["v"]["N"]) if "v" in item else 0
    expires = item.get("expires_at")
    if expires is not None and int(expires["N"]) < now_s:
        return Stored(None, None, version)
    row = item.get("row")
    aux = item.get("aux")
    return Stored(
        unpack(row["B"]) if row else None,
        unpack(aux["B"]) if aux else None,
        version,
    )


def _backoff_s(attempt: int, base: float = 0.02, cap: float = 1.0) -> float:
    return random.uniform(0, min(cap, base * 2 ** attempt))


def item_size(change: Change, row_bytes: bytes, aux_bytes: bytes, expires_at: int) -> int:
    """The item's size as DynamoDB counts it: attribute names plus values (a number counts
    about one byte per two digits, plus one)."""
    return stored_size(change.key, len(row_bytes), len(aux_bytes), change.version + 1, expires_at)


def stored_size(key: Key, row_len: int, aux_len: int, version: int, expires_at: int) -> int:
    def number(n: int) -> int:
        return len(str(abs(n))) // 2 + 1

    return (len("pk") + len(key[0].encode("utf-8", "surrogatepass"))
            + len("sk") + len(key[1].encode("utf-8", "surrogatepass"))
            + len("row") + row_len + len("aux") + aux_len
            + len("v") + number(version) + len("expires_at") + number(expires_at))


_REAL_TIME = object()  # the default limits: AWS's, on the wall clock


class MemoryRowStore(RowStore):
    """The same contract in a dict: for unit tests and the in-process benchmark.

    As strict as DynamoDB where the callers can tell (the shared contract suite,
    tests/functional/test_adapter_contracts.py, runs it and DynamoRowStore under moto):
    conditional writes, the 400 KB item limit counted as DynamoDB counts it, TTL (an
    expired row reads as empty and keeps its version), per-partition throughput in AWS's
    unit arithmetic (``limits``: a ``DynamoLimits``, on the wall clock unless given one; a
    throttled request is retried with DynamoRowStore's backoff, slept on the model's clock,
    then reported as ``ThrottledError``; None: no throughput limits), and injected
    throttling (``throttle(n)``: the next n requests are refused)."""

    def __init__(self, clock=time.time, max_attempts: int = 6, limits=_REAL_TIME):
        self.tables: dict[str, dict[Key, tuple[bytes, bytes, int, int]]] = {}
        self._partitions: dict[str, dict[str, set[Key]]] = {}  # table -> pk -> keys: a Query reads one
        self._indexed: dict[str, int] = {}
        self.writes = 0
        self.clock = clock
        self.max_attempts = max_attempts
        self.throttled_requests = 0
        self.limits = DynamoLimits() if limits is _REAL_TIME else limits

    def throttle(self, requests: int) -> None:
        """Refuse the next ``requests`` requests as DynamoDB does when a partition is hot."""
        self.throttled_requests += requests

    def _request(self, what: str, table: str | None = None, pk: str | None = None, units: float = 0.0,
                 write: bool = True) -> None:
        """One request, retried as DynamoRowStore retries: injected throttles first, then the
        partition's throughput (its own error, as botocore raises it)."""
        for attempt in range(self.max_attempts):
            if self.throttled_requests:
                self.throttled_requests -= 1
            elif self.limits is None or pk is None:
                return
            else:
                try:
                    (self.limits.write if write else self.limits.read)(table, pk, units, what)
                    return
                except ClientError:
                    pass
            if self.limits is not None and attempt < self.max_attempts - 1:
                self.limits.clock.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
        raise ThrottledError(f"{table or ''}: {what}: throttled after {self.max_attempts} attempts")

    def _stored(self, r: tuple[bytes, bytes, int, int], now_s: float) -> Stored:
        if r[3] < now_s:  # TTL passed, not yet deleted: empty, version kept
            return Stored(None, None, r[2])
        return Stored(unpack(r[0]), unpack(r[1]), r[2])

    @staticmethod
    def _size(key: Key, r: tuple[bytes, bytes, int, int] | None) -> int:
        return 0 if r is None else stored_size(key, len(r[0]), len(r[1]), r[2], r[3])

    def get_many(self, table, keys, consistent=True):
        keys = list(dict.fromkeys(keys))
        rows, out = self.tables.get(table, {}), {}
        pending = keys
        for attempt in range(self.max_attempts):
            if self.throttled_requests:  # an injected throttle: the whole request comes back unprocessed
                self.throttled_requests -= 1
                unprocessed = pending
            else:
                unprocessed = []
                for k in pending:
                    r = rows.get(k)
                    if self.limits is not None:
                        units = limits_mod.read_units(self._size(k, r), consistent)
                        try:
                            self.limits.read(table, k[0], units, "BatchGetItem")
                        except ClientError:
                            unprocessed.append(k)
                            continue
                    if r is not None:
                        out[k] = r
            if not unprocessed:
                break
            pending = unprocessed
            if attempt < self.max_attempts - 1 and self.limits is not None:
                self.limits.clock.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
        else:
            raise ThrottledError(f"{table}: keys still unprocessed after {self.max_attempts} attempts")
        now = self.clock()
        return {k: self._stored(r, now) for k, r in out.items()}

    def get(self, table, key, projection=None):
        found = self.get_many(table, [key]).get(key)
        return found if found is not None and found.row is not None else None

    def put(self, table, change, expires_at):
        row_bytes, aux_bytes = _packed(change)
        size = item_size(change, row_bytes, aux_bytes, expires_at)
        if size > ITEM_LIMIT_BYTES:  # DynamoDB refuses it before the condition
            raise RowRejectedError(f"ValidationException: item size {size} has exceeded the maximum allowed size")
        rows = self.tables.setdefault(table, {})
        current = rows.get(change.key)
        # A PutItem is billed at the larger of the item it replaces and the new one, whether
        # its condition holds or not.
        self._request("PutItem", table, change.key[0], limits_mod.write_units(max(size, self._size(change.key,
                                                                                                    current))))
        current = rows.get(change.key)
        if (current[2] if current else 0) != change.version:
            raise ConflictError(f"{change.key} changed since it was read")
        self.writes += 1
        rows[change.key] = (row_bytes, aux_bytes, change.version + 1, expires_at)
        if change.version == 0 and table in self._partitions:
            self._partitions[table].setdefault(change.key[0], set()).add(change.key)
            self._indexed[table] = self._indexed.get(table, 0) + 1

    def _partition(self, table, pk):
        """The rows of one partition key (an index kept beside the rows: a Query reads one)."""
        rows = self.tables.get(table, {})
        index = self._partitions.get(table)
        if index is None or self._indexed.get(table) != len(rows):  # rows set from outside: index again
            index = self._partitions[table] = {}
            for k in rows:
                index.setdefault(k[0], set()).add(k)
            self._indexed[table] = len(rows)
        return [(k, rows[k]) for k in index.get(pk, ()) if k in rows]

    def query(self, table, pk):
        rows = self._partition(table, pk)
        self._request("Query", table, pk, limits_mod.read_units(sum(self._size(k, r) for k, r in rows)), write=False)
        now = self.clock()
        return [self._stored(r, now) for _, r in rows]

    def query_keys(self, table, pk) -> list[tuple[Key, Stored]]:
        """Like ``query``, with each row's key (the sort key matters to the caller)."""
        rows = sorted(self._partition(table, pk))
        self._request("Query", table, pk, limits_mod.read_units(sum(self._size(k, r) for k, r in rows)), write=False)
        now = self.clock()
        return [(k, self._stored(r, now)) for k, r in rows]

    def scan_prefix(self, table, prefix):
        """A Scan reads (and bills) every item of the table, whatever the filter keeps."""
        now = self.clock()
        for k, r in list(self.tables.get(table, {}).items()):
            if self.limits is not None:  # eventually consistent, summed over the page: ~size / 8 KB
                self.limits.read_usage.add((table, "<scan>"), int(self.limits.clock.now()), self._size(k, r) / 8192)
            if k[0].startswith(prefix):
                yield k, self._stored(r, now)
