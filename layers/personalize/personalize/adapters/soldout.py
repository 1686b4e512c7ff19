"""The fast stock-out path: a log of availability transitions, in small items of the
features table (a global table: the edge reads its nearest replica).

``aggregate`` appends one item per batch that changed something, and only then: an item
sold out (stock reached 0), back in stock (from 0), delisted or listed again by the shop.
Items are spread over partition keys by writer and minute (``av#<minute>#<bucket>``), and
sorted by when they were written (``<write ms>#<writer>``), so a reader asks each partition
only for what was written since it last looked (a Query on the sort key): serving reads
what changed, never the whole set. The snapshot (every minute) carries every item's
availability as of its build; serving applies the log written since on top of it
(``serving.availability.Availability``).

Why not one set: a set under one partition key is rewritten on every stock event and each
UpdateItem is billed at the whole item (a 400 KB part: 400 write units), and every serving
instance reading all its parts each second makes the same partition hot for reads
(``make bench``: ``limits.soldout_*``).

An entry is ``[item_id, kind, event ts]``; the newest by event time wins per item and kind
(stock or listing). A writer's retry of the same batch writes the same item again
(idempotent: it exists already); a later attempt writes a new one, which changes nothing.
The first item written under a key stays: a writer names what it says (``aggregate``'s
names carry a digest of the entries, ``journal.availability_writer``), so an attempt that
says something else on the same millisecond is a new item, not a dropped one.
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait

from botocore.exceptions import BotoCoreError, ClientError

from personalize.adapters import aws, limits
from personalize.codec import pack, unpack

SOLD_OUT, IN_STOCK, DELISTED, LISTED = "s", "r", "d", "l"
KINDS = (SOLD_OUT, IN_STOCK, DELISTED, LISTED)
BUCKETS = 4
# A reader asks again for what was written up to this long before its last look: a write's
# timestamp is taken before it lands (and replicates), so a late one is never skipped.
OVERLAP_MS = 5_000
TTL_S = 86_400
MINUTE_MS = 60_000
# A read asks this many partitions at once: a cold start reads every minute since a minute
# before the snapshot's build (2 to 16 minutes x BUCKETS partitions), and one Query after the
# other is that many round trips to the replica on the first answer's path.
PARALLEL_QUERIES = 8
PK_PREFIX = "av#"


class SoldOutError(Exception):
    """The log could not be read or written (throttled, unreachable): retry."""


def bucket_of(writer: str) -> int:
    return hashlib.blake2b(writer.encode("utf-8", "surrogatepass"), digest_size=2).digest()[0] % BUCKETS


def partition(minute: int, bucket: int) -> str:
    return f"{PK_PREFIX}{minute}#{bucket}"


def sort_key(written_ms: int, writer: str) -> str:
    return f"{written_ms:013d}#{writer}"


def fold(entries: Iterable[list], state: dict[tuple[str, str], tuple[int, str]] | None = None
         ) -> dict[tuple[str, str], tuple[int, str]]:
    """(item, "stock" | "listing") -> (event ts, kind) of the newest entry."""
    state = {} if state is None else state
    for item, kind, ts in entries:
        topic = "stock" if kind in (SOLD_OUT, IN_STOCK) else "listing"
        current = state.get((item, topic))
        if current is None or (ts, kind) >= current:
            state[(item, topic)] = (ts, kind)
    return state


def unavailable(state: dict[tuple[str, str], tuple[int, str]]) -> set[str]:
    return {item for (item, _), (_, kind) in state.items() if kind in (SOLD_OUT, DELISTED)}


class SoldOut(ABC):
    """The availability log: ``append`` (aggregate), ``read_since`` (serving)."""

    @abstractmethod
    def append(self, entries: list[list], writer: str, now_ms: int) -> None:
        """Write one batch's transitions (raises SoldOutError: the batch is retried)."""

    @abstractmethod
    def read_since(self, since_ms: int, now_ms: int) -> list[tuple[str, list[list]]]:
        """(sort key, entries) of every item written from ``since_ms`` to ``now_ms``, in
        sort-key order per partition."""

    # Conveniences for tests, the demo and operators.
    def update(self, sold_out: set[str], restocked: set[str], now_ms: int | None = None, writer: str = "manual"):
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        entries = [[i, SOLD_OUT, now_ms] for i in sorted(sold_out)] + [[i, IN_STOCK, now_ms] for i in sorted(restocked)]
        if entries:
            self.append(entries, writer, now_ms)

    def read(self, since_ms: int | None = None, now_ms: int | None = None) -> set[str]:
        """The items the log says are unavailable, from what was written since ``since_ms``
        (default: the last 10 minutes)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        since_ms = now_ms - 10 * MINUTE_MS if since_ms is None else since_ms
        state: dict = {}
        for _, entries in self.read_since(since_ms, now_ms):
            fold(entries, state)
        return unavailable(state)


def _minutes(since_ms: int, now_ms: int) -> range:
    return range(since_ms // MINUTE_MS, max(since_ms, now_ms) // MINUTE_MS + 1)


class DynamoSoldOut(SoldOut):
    """``aggregate`` writes with the default (patient, retrying) client; serving passes its
    user store's quick client to read from the nearest replica."""

    def __init__(self, table_name: str, region: str | None = None, client=None):
        self.table_name = table_name
        self.region = region
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("dynamodb", self.region, read_timeout=2.0, attempts=2)
        return self._client

    def append(self, entries, writer, now_ms):
        if not entries:
            return
        minute = now_ms // MINUTE_MS
        item = {"pk": {"S": partition(minute, bucket_of(writer))}, "sk": {"S": sort_key(now_ms, writer)},
                "e": {"B": pack(entries)}, "expires_at": {"N": str(now_ms // 1000 + TTL_S)}}
        try:
            self.client.put_item(TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return  # this very write landed before (a retry): nothing to add
            raise SoldOutError(f"availability log: {exc}") from exc
        except BotoCoreError as exc:
            raise SoldOutError(f"availability log: {exc}") from exc

    def read_since(self, since_ms, now_ms):
        """Every partition of the range at once (``PARALLEL_QUERIES``), in the order one
        reader asking each in turn would get them; returns once every Query has ended (no
        thread is left reading when Lambda freezes the instance). Never called from the
        readers' own threads (it would wait on itself)."""
        client = self.client  # made once, on this thread
        partitions = [partition(minute, bucket) for minute in _minutes(since_ms, now_ms) for bucket in range(BUCKETS)]
        futures = [_queries().submit(self._read_partition, client, pk, since_ms) for pk in partitions]
        wait(futures)  # all of them, even when one failed
        out, failed = [], []
        for pk, future in zip(partitions, futures):
            try:
                out.extend(future.result())
            except (ClientError, BotoCoreError) as exc:
                failed.append((pk, exc))
        if failed:
            named = ", ".join(f"{pk} ({aws.error_code(exc) or type(exc).__name__})" for pk, exc in failed[:4])
            raise SoldOutError(f"availability log unreadable: {len(failed)} of {len(futures)} partitions "
                               f"failed: {named}{', ...' if len(failed) > 4 else ''}; first: {failed[0][1]}"
                               ) from failed[0][1]
        return out

    def _read_partition(self, client, pk: str, since_ms: int) -> list[tuple[str, list]]:
        out = []
        kwargs = {"TableName": self.table_name, "KeyConditionExpression": "pk = :p AND sk > :s",
                  "ExpressionAttributeValues": {":p": {"S": pk}, ":s": {"S": f"{since_ms:013d}"}}}
        while True:
            page = client.query(**kwargs)
            out.extend((item["sk"]["S"], unpack(item["e"]["B"])) for item in page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _queries() -> ThreadPoolExecutor:
    """The readers' threads, made on first use and shared by the process (idle between reads)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(PARALLEL_QUERIES, thread_name_prefix="availability-log")
        return _pool


_REAL_TIME = object()


class MemorySoldOut(SoldOut):
    """The same contract in memory, as strict as DynamoDB (tests/functional/
    test_adapter_contracts.py runs both): per-partition throughput in AWS's units
    (``limits``: a ``DynamoLimits``; writes billed per KB, reads as eventually consistent
    Queries), ``throttle(n)`` refuses the next n requests, ``fail`` every one."""

    table = "features"

    def __init__(self, limits_model=_REAL_TIME):
        self.partitions: dict[str, dict[str, bytes]] = {}
        self.limits = limits.DynamoLimits() if limits_model is _REAL_TIME else limits_model
        self.throttled_requests = 0
        self.fail = False
        self.reads = 0  # Query requests
        self.writes = 0

    def throttle(self, requests: int) -> None:
        self.throttled_requests += requests

    def _request(self, what: str) -> None:
        if self.fail:
            raise SoldOutError(f"{what}: unreachable")
        if self.throttled_requests:
            self.throttled_requests -= 1
            raise SoldOutError(f"{what}: throttled")

    def append(self, entries, writer, now_ms):
        if not entries:
            return
        self._request("PutItem")
        pk, sk = partition(now_ms // MINUTE_MS, bucket_of(writer)), sort_key(now_ms, writer)
        data = pack(entries)
        if self.limits is not None:
            try:
                self.limits.write(self.table, pk, limits.write_units(_size(pk, sk, data)), "PutItem")
            except ClientError as exc:
                raise SoldOutError(f"availability log: {exc}") from exc
        self.writes += 1
        self.partitions.setdefault(pk, {}).setdefault(sk, data)

    def read_since(self, since_ms, now_ms):
        out = []
        floor = f"{since_ms:013d}"
        for minute in _minutes(since_ms, now_ms):
            for bucket in range(BUCKETS):
                self._request("Query")
                pk = partition(minute, bucket)
                rows = sorted((sk, data) for sk, data in self.partitions.get(pk, {}).items() if sk > floor)
                if self.limits is not None:
                    size = sum(_size(pk, sk, data) for sk, data in rows)
                    try:
                        self.limits.read(self.table, pk, limits.read_units(size, consistent=False), "Query")
                    except ClientError as exc:
                        raise SoldOutError(f"availability log unreadable: {exc}") from exc
                self.reads += 1
                out.extend((sk, unpack(data)) for sk, data in rows)
        return out

    @property
    def items(self) -> set[str]:
        """Every item the whole log says is unavailable now (tests)."""
        state: dict = {}
        for rows in self.partitions.values():
            for _, data in sorted(rows.items()):
                fold(unpack(data), state)
        return unavailable(state)


def _size(pk: str, sk: str, data: bytes) -> int:
    return 2 + len(pk) + 2 + len(sk) + 1 + len(data) + 10 + 6
