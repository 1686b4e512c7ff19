"""The serving read: one shopper's row by one GetItem, with a tight timeout.

Serving never waits on DynamoDB for long: a slow or failing read answers ``None`` through
``UserReadError`` and the caller serves without the row (a named fallback), as it does when
the item is not a row this code can decode (``UnreadableRow``, a ``UserReadError``). The row's type is
the caller's (``from_obj``: the msgpack-decoded row to the row object, e.g.
``entities.UserRow.from_obj``): this adapter knows the storage, not the schema.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import msgpack
from botocore.config import Config

from personalize import keys
from personalize.adapters import aws
from personalize.adapters.soldout import PARALLEL_QUERIES

CONNECTIONS = PARALLEL_QUERIES + 2  # the sold-out log's readers, the request's GetItem, one spare


class UserReadError(Exception):
    """The read failed or timed out."""


class UnreadableRow(UserReadError):
    """The table answered with an item this code cannot decode (corrupt, or a newer format's)."""


class UserStore(ABC):
    @abstractmethod
    def get(self, user_id: str) -> Any | None:
        """The shopper's row; None when there is none (or it expired)."""


def decode_user(item: dict, now_s: float, from_obj: Callable[[dict], Any]) -> Any | None:
    """The row a GetItem answered (None: none, or expired); ``UnreadableRow`` when its bytes
    are not one."""
    try:
        expires = item.get("expires_at")
        if expires is not None and int(expires["N"]) < now_s:
            return None
        row = item.get("row")
        if row is None:
            return None
        return from_obj(msgpack.unpackb(row["B"], raw=False, strict_map_key=False))
    except Exception as exc:
        raise UnreadableRow(f"{type(exc).__name__}: {exc}") from exc


class DynamoUserStore(UserStore):
    def __init__(self, table_name: str, from_obj: Callable[[dict], Any], region: str | None = None,
                 timeout_s: float = 0.05, client=None, clock=time.time):
        self.table_name = table_name
        self.from_obj = from_obj
        self.clock = clock  # for TTL: an expired row reads as no row
        self.region = region
        self.timeout_s = timeout_s
        self._client = client

    @property
    def client(self):
        if self._client is None:
            # One quick attempt: a retry would blow the serving budget. The sold-out log reads
            # through this client too (wiring.build), up to PARALLEL_QUERIES at once: a
            # connection each, and room beside them for the request's own GetItem.
            self._client = aws.uncached_client("dynamodb", self.region, Config(
                connect_timeout=self.timeout_s, read_timeout=self.timeout_s,
                retries={"mode": "standard", "total_max_attempts": 1},
                max_pool_connections=CONNECTIONS))
        return self._client

    def get(self, user_id: str) -> Any | None:
        pk, sk = keys.user_key(user_id)
        try:
            response = self.client.get_item(TableName=self.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                            ProjectionExpression="#r, expires_at",
                                            ExpressionAttributeNames={"#r": "row"})
        except Exception as exc:  # any failure means: serve without the row
            raise UserReadError(str(exc)) from exc
        item = response.get("Item")
        return decode_user(item, self.clock(), self.from_obj) if item else None


class MemoryUserStore(UserStore):
    """Rows in a dict, optionally failing or slow, for tests and the serving bench."""

    def __init__(self, rows: dict[str, Any] | None = None, fail: bool = False):
        self.rows = rows or {}
        self.fail = fail
        self.reads = 0

    def get(self, user_id: str) -> Any | None:
        self.reads += 1
        if self.fail:
            raise UserReadError("unavailable")
        return self.rows.get(user_id)
