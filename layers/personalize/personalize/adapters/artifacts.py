"""The artifacts bucket: item snapshots behind a ``latest`` pointer, and model versions.

Writers put the snapshot under a new versioned key, then move the small pointer, so a
reader never sees half a snapshot. Readers poll the pointer with a conditional GET (ETag)
and fetch the snapshot only when it changed.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass

from botocore.exceptions import ClientError

from personalize.adapters import aws

SNAPSHOT_PREFIX = "snapshots/"
POINTER_KEY = "snapshots/latest.json"


@dataclass
class Pointer:
    version: str
    key: str
    etag: str
    doc: dict


class Artifacts(ABC):
    @abstractmethod
    def put_snapshot(self, version: str, data: bytes, meta: dict) -> str: ...

    @abstractmethod
    def pointer_if_changed(self, etag: str | None) -> Pointer | None:
        """The pointer when it differs from ``etag`` (None: unchanged or none yet)."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...


class S3Artifacts(Artifacts):
    def __init__(self, bucket: str, region: str | None = None, client=None):
        self.bucket = bucket
        self.region = region
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("s3", self.region, connect_timeout=1.0, read_timeout=3.0)
        return self._client

    def put_snapshot(self, version: str, data: bytes, meta: dict) -> str:
        key = f"{SNAPSHOT_PREFIX}{version}.msgpack"
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/x-msgpack")
        doc = {"version": version, "key": key, "bytes": len(data), **meta}
        self.client.put_object(Bucket=self.bucket, Key=POINTER_KEY, Body=json.dumps(doc).encode(),
                               ContentType="application/json", CacheControl="no-cache")
        return key

    def pointer_if_changed(self, etag: str | None) -> Pointer | None:
        kwargs = {"Bucket": self.bucket, "Key": POINTER_KEY}
        if etag:
            kwargs["IfNoneMatch"] = etag
        try:
            response = self.client.get_object(**kwargs)
        except ClientError as exc:
            code = aws.error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("304", "NotModified") or status == 304:
                return None
            if code in ("NoSuchKey", "404"):
                return None
            raise
        doc = json.loads(response["Body"].read())
        return Pointer(doc["version"], doc["key"], response["ETag"], doc)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


class MemoryArtifacts(Artifacts):
    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.gets = 0

    def put_snapshot(self, version, data, meta):
        key = f"{SNAPSHOT_PREFIX}{version}.msgpack"
        self.objects[key] = data
        self.objects[POINTER_KEY] = json.dumps({"version": version, "key": key, "bytes": len(data), **meta}).encode()
        return key

    def pointer_if_changed(self, etag):
        raw = self.objects.get(POINTER_KEY)
        if raw is None:
            return None
        tag = str(hash(raw))
        if tag == etag:
            return None
        doc = json.loads(raw)
        return Pointer(doc["version"], doc["key"], tag, doc)

    def get(self, key):
        self.gets += 1
        return self.objects[key]
