"""The fast stock-out path: the set of items whose stock is 0 right now, in a few small
items of the features table.

``aggregate`` adds an item when its stock reaches 0 and removes it on restock (set ADD and
DELETE: idempotent, so replays are harmless). Serving re-reads it about once a second, from
the nearest replica, off the request path, and drops those items from every answer without
waiting for the next minute's snapshot.

The set is split over ``SHARDS`` items by a hash of the item id (``soldout`` /
``items#<n>``), read together with one ``BatchGetItem``: about 20,000 sold-out ids fit in
each part, so 16 hold ~320,000. A part that is full refuses the update
(``SoldOutFullError``); ``aggregate`` then relies on the snapshot (the stock level is in the
item rows) instead of stalling its shard on it.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod

from botocore.exceptions import BotoCoreError, ClientError

from personalize.adapters import aws

SHARDS = 16
READ_ATTEMPTS = 3
SOLDOUT_PK = "soldout"


def shard_of(item_id: str) -> int:
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=2).digest()[0] % SHARDS


def shard_key(n: int) -> dict:
    return {"pk": {"S": SOLDOUT_PK}, "sk": {"S": f"items#{n}"}}


ITEM_LIMIT_BYTES = 400 * 1024


class SoldOutError(Exception):
    """The set could not be read or updated completely (throttled, unreachable): retry."""


class SoldOutFullError(SoldOutError):
    """A part of the sold-out set is at DynamoDB's item size limit."""


def part_size(n: int, items: set[str]) -> int:
    """A part's item size as DynamoDB counts it: attribute names plus values."""
    return (len("pk") + len(SOLDOUT_PK) + len("sk") + len(f"items#{n}") + len("items")
            + sum(len(i.encode("utf-8", "surrogatepass")) for i in items))


class SoldOut(ABC):
    @abstractmethod
    def update(self, sold_out: set[str], restocked: set[str]) -> None: ...

    @abstractmethod
    def read(self) -> set[str]: ...


def _split(items: set[str]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for item in items:
        out.setdefault(shard_of(item), set()).add(item)
    return out


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
            self._client = aws.client("dynamodb", self.region)
        return self._client

    def update(self, sold_out: set[str], restocked: set[str]) -> None:
        # Two updates per part: DynamoDB refuses ADD and DELETE on one attribute in one expression.
        # Restocks first: they free room in a part.
        full = None
        for verb, items in (("DELETE", restocked), ("ADD", sold_out)):
            for n, part in sorted(_split(items).items()):
                try:
                    self.client.update_item(TableName=self.table_name, Key=shard_key(n),
                                            UpdateExpression=f"{verb} #i :s", ExpressionAttributeNames={"#i": "items"},
                                            ExpressionAttributeValues={":s": {"SS": sorted(part)}})
                except ClientError as exc:
                    if aws.error_code(exc) != "ValidationException":
                        raise SoldOutError(f"sold-out part {n}: {exc}") from exc
                    full = SoldOutFullError(f"sold-out part {n}: {exc}")
                except BotoCoreError as exc:
                    raise SoldOutError(f"sold-out part {n}: {exc}") from exc
        if full is not None:
            raise full

    def read(self) -> set[str]:
        """One BatchGetItem for every part (unprocessed keys are read again). Never a part
        of the set: a caller that got one would serve the missing parts' items."""
        request = {self.table_name: {"Keys": [shard_key(n) for n in range(SHARDS)]}}
        out: set[str] = set()
        try:
            for _ in range(READ_ATTEMPTS):
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    out.update(item.get("items", {}).get("SS", []))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    return out
        except (ClientError, BotoCoreError) as exc:
            raise SoldOutError(f"sold-out set unreadable: {exc}") from exc
        unread = len(request[self.table_name]["Keys"])
        raise SoldOutError(f"{unread} of {SHARDS} sold-out parts still unprocessed after {READ_ATTEMPTS} attempts")


class MemorySoldOut(SoldOut):
    """The same contract in memory, as strict as DynamoDB (tests/functional/
    test_adapter_contracts.py runs both): a part refuses an update that would take it past
    the item size limit (the whole update of that part, as one UpdateItem), other parts
    still change; ``throttle(n)`` refuses the next n requests. ``capacity_per_part`` (ids)
    makes a part fill up sooner, for tests."""

    def __init__(self, capacity_per_part: int | None = None):
        self.items: set[str] = set()
        self.reads = 0
        self.updated_at = time.monotonic()
        self.capacity_per_part = capacity_per_part
        self.throttled_requests = 0

    def throttle(self, requests: int) -> None:
        self.throttled_requests += requests

    def _request(self, what: str) -> None:
        if self.throttled_requests:
            self.throttled_requests -= 1
            raise SoldOutError(f"{what}: throttled")

    def update(self, sold_out, restocked):
        full = None
        for verb, items in (("DELETE", restocked), ("ADD", sold_out)):
            for n, part in sorted(_split(items).items()):
                self._request(f"sold-out part {n}: {verb}")
                if verb == "DELETE":
                    self.items -= part
                    continue
                now = {i for i in self.items if shard_of(i) == n} | part
                if part_size(n, now) > ITEM_LIMIT_BYTES or (
                        self.capacity_per_part is not None and len(now) > self.capacity_per_part):
                    full = SoldOutFullError(f"sold-out part {n}: item size limit")
                    continue
                self.items |= part
        if full is not None:
            raise full

    def read(self):
        for _ in range(READ_ATTEMPTS):  # DynamoSoldOut reads unprocessed parts again
            if not self.throttled_requests:
                break
            self.throttled_requests -= 1
        else:
            raise SoldOutError(f"sold-out parts still unprocessed after {READ_ATTEMPTS} attempts")
        self.reads += 1
        return set(self.items)
