"""The artifacts bucket: item snapshots behind a ``latest`` pointer, and model versions.

Writers put the snapshot (and the catalogue membership) under fixed keys of the versioned
bucket, then move the small pointer, which names the exact object versions: a reader never
sees half a snapshot, and no lifecycle rule can expire what the pointer names (the rule on
``snapshots/`` expires only noncurrent versions; the current ones are what serving reads).
Readers poll the pointer with a conditional GET (ETag) and fetch what it names only when it
changed.
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
    def get(self, key: str, version_id: str | None = None) -> bytes: ...

    @abstractmethod
    def put_object(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str | None:
        """Write an object; its version id (None when the bucket keeps no versions)."""

    @abstractmethod
    def put_pointer(self, doc: dict) -> None:
        """Move the pointer (last: readers follow it to what was written before)."""

    def has_pointer(self) -> bool:
        try:
            self.get(POINTER_KEY)
        except Exception:  # noqa: BLE001 - missing (or unreadable: the caller's next read says so)
            return False
        return True


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

    def get(self, key: str, version_id: str | None = None) -> bytes:
        kwargs = {"VersionId": version_id} if version_id else {}
        return self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)["Body"].read()

    def put_object(self, key, data, content_type="application/octet-stream"):
        return self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type).get("VersionId")

    def put_pointer(self, doc):
        self.client.put_object(Bucket=self.bucket, Key=POINTER_KEY, Body=json.dumps(doc).encode(),
                               ContentType="application/json", CacheControl="no-cache")

    def has_pointer(self) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=POINTER_KEY)
        except ClientError as exc:
            if aws.error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


class MemoryArtifacts(Artifacts):
    """A versioned bucket in a dict: ``objects`` holds each key's current bytes,
    ``versions`` every version (id -> bytes)."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.versions: dict[str, dict[str, bytes]] = {}
        self.gets = 0
        self.fail = False  # every request fails (an S3 outage)

    def put_object(self, key, data, content_type="application/octet-stream"):
        if self.fail:
            raise RuntimeError("injected: S3 unreachable")
        versions = self.versions.setdefault(key, {})
        version_id = f"v{len(versions) + 1}"
        versions[version_id] = data
        self.objects[key] = data
        return version_id

    def put_pointer(self, doc):
        self.put_object(POINTER_KEY, json.dumps(doc).encode())

    def put_snapshot(self, version, data, meta):
        key = f"{SNAPSHOT_PREFIX}{version}.msgpack"
        self.put_object(key, data)
        self.put_pointer({"version": version, "key": key, "bytes": len(data), **meta})
        return key

    def pointer_if_changed(self, etag):
        if self.fail:
            raise RuntimeError("injected: S3 unreachable")
        raw = self.objects.get(POINTER_KEY)
        if raw is None:
            return None
        tag = str(hash(raw))
        if tag == etag:
            return None
        doc = json.loads(raw)
        return Pointer(doc["version"], doc["key"], tag, doc)

    def get(self, key, version_id=None):
        if self.fail:
            raise RuntimeError("injected: S3 unreachable")
        self.gets += 1
        if version_id:
            return self.versions[key][version_id]
        return self.objects[key]

    def has_pointer(self) -> bool:
        if self.fail:
            raise RuntimeError("injected: S3 unreachable")
        return POINTER_KEY in self.objects
