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

from botocore.exceptions import ClientError

from . import aws

SHARDS = 16
SOLDOUT_PK = "soldout"


def shard_of(item_id: str) -> int:
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=2).digest()[0] % SHARDS


def shard_key(n: int) -> dict:
    return {"pk": {"S": SOLDOUT_PK}, "sk": {"S": f"items#{n}"}}


class SoldOutFullError(Exception):
    """A part of the sold-out set is at DynamoDB's item size limit."""


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
                        raise
                    full = SoldOutFullError(f"sold-out part {n}: {exc}")
        if full is not None:
            raise full

    def read(self) -> set[str]:
        """One BatchGetItem for every part (unprocessed keys are read again)."""
        request = {self.table_name: {"Keys": [shard_key(n) for n in range(SHARDS)]}}
        out: set[str] = set()
        for _ in range(3):
            response = self.client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self.table_name, []):
                out.update(item.get("items", {}).get("SS", []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        return out


class MemorySoldOut(SoldOut):
    def __init__(self, capacity_per_part: int | None = None):
        self.items: set[str] = set()
        self.reads = 0
        self.updated_at = time.monotonic()
        self.capacity_per_part = capacity_per_part

    def update(self, sold_out, restocked):
        self.items -= restocked
        full = []
        for item in sold_out:
            if self.capacity_per_part is not None and item not in self.items and sum(
                    1 for i in self.items if shard_of(i) == shard_of(item)) >= self.capacity_per_part:
                full.append(item)
                continue
            self.items.add(item)
        if full:
            raise SoldOutFullError(f"{len(full)} items did not fit")

    def read(self):
        self.reads += 1
        return set(self.items)
