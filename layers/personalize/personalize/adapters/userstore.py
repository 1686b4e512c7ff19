"""The serving read: one shopper's row by one GetItem, with a tight timeout.

Serving never waits on DynamoDB for long: a slow or failing read answers ``None`` through
``UserReadError`` and the caller serves without the row (a named fallback).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

import msgpack
from botocore.config import Config

from .. import keys
from ..state import UserRow
from . import aws


class UserReadError(Exception):
    """The read failed or timed out."""


class UserStore(ABC):
    @abstractmethod
    def get(self, user_id: str) -> UserRow | None:
        """The shopper's row; None when there is none (or it expired)."""


def decode_user(item: dict, now_s: float) -> UserRow | None:
    expires = item.get("expires_at")
    if expires is not None and int(expires["N"]) < now_s:
        return None
    row = item.get("row")
    if row is None:
        return None
    return UserRow.from_obj(msgpack.unpackb(row["B"], raw=False, strict_map_key=False))


class DynamoUserStore(UserStore):
    def __init__(self, table_name: str, region: str | None = None, timeout_s: float = 0.05, client=None,
                 clock=time.time):
        self.table_name = table_name
        self.clock = clock  # for TTL: an expired row reads as no row
        self.region = region
        self.timeout_s = timeout_s
        self._client = client

    @property
    def client(self):
        if self._client is None:
            # One quick attempt: a retry would blow the serving budget.
            self._client = aws.boto3_client("dynamodb", self.region, Config(
                connect_timeout=self.timeout_s, read_timeout=self.timeout_s,
                retries={"mode": "standard", "total_max_attempts": 1}))
        return self._client

    def get(self, user_id: str) -> UserRow | None:
        pk, sk = keys.user_key(user_id)
        try:
            response = self.client.get_item(TableName=self.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                            ProjectionExpression="#r, expires_at",
                                            ExpressionAttributeNames={"#r": "row"})
        except Exception as exc:  # any failure means: serve without the row
            raise UserReadError(str(exc)) from exc
        item = response.get("Item")
        return decode_user(item, self.clock()) if item else None


class MemoryUserStore(UserStore):
    """Rows in a dict, optionally failing or slow, for tests and the serving bench."""

    def __init__(self, rows: dict[str, UserRow] | None = None, fail: bool = False):
        self.rows = rows or {}
        self.fail = fail
        self.reads = 0

    def get(self, user_id: str) -> UserRow | None:
        self.reads += 1
        if self.fail:
            raise UserReadError("unavailable")
        return self.rows.get(user_id)
