"""The fast stock-out path: one small item in the features table holding the set of items
whose stock is 0 right now.

``aggregate`` adds an item when its stock reaches 0 and removes it on restock (set ADD and
DELETE: idempotent, so replays are harmless). Serving re-reads it about once a second, from
the nearest replica, off the request path, and drops those items from every answer without
waiting for the next minute's snapshot.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from . import aws

SOLDOUT_KEY = {"pk": {"S": "soldout"}, "sk": {"S": "items"}}


class SoldOut(ABC):
    @abstractmethod
    def update(self, sold_out: set[str], restocked: set[str]) -> None: ...

    @abstractmethod
    def read(self) -> set[str]: ...


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
        # Two updates: DynamoDB refuses ADD and DELETE on one attribute in one expression.
        for verb, items in (("ADD", sold_out), ("DELETE", restocked)):
            if items:
                self.client.update_item(TableName=self.table_name, Key=SOLDOUT_KEY,
                                        UpdateExpression=f"{verb} #i :s", ExpressionAttributeNames={"#i": "items"},
                                        ExpressionAttributeValues={":s": {"SS": sorted(items)}})

    def read(self) -> set[str]:
        item = self.client.get_item(TableName=self.table_name, Key=SOLDOUT_KEY).get("Item") or {}
        return set(item.get("items", {}).get("SS", []))


class MemorySoldOut(SoldOut):
    def __init__(self):
        self.items: set[str] = set()
        self.reads = 0
        self.updated_at = time.monotonic()

    def update(self, sold_out, restocked):
        self.items |= sold_out
        self.items -= restocked

    def read(self):
        self.reads += 1
        return set(self.items)
