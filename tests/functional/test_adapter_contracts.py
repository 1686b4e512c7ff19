"""One contract, two implementations: each adapter's in-memory fake and its AWS
implementation (under moto, IAM enforced) pass the same cases, so a fake is never kinder
than the service (after Feast's universal online-store tests)."""

import pytest

from personalize import settings
from personalize.adapters import aws
from personalize.adapters.artifacts import MemoryArtifacts, S3Artifacts
from personalize.adapters.userstore import DynamoUserStore, MemoryUserStore, UserReadError


@pytest.fixture(params=["fake", "moto"])
def artifacts(request):
    if request.param == "fake":
        return MemoryArtifacts()
    stack = request.getfixturevalue("stack")
    return S3Artifacts(stack.names[settings.ARTIFACTS_BUCKET.logical_id])


def test_artifacts_pointer_moves_only_when_a_snapshot_is_published(artifacts):
    assert artifacts.pointer_if_changed(None) is None  # nothing published yet
    key = artifacts.put_snapshot("v1", b"one", {"items": 1})
    first = artifacts.pointer_if_changed(None)
    assert (first.version, first.key, first.doc["items"]) == ("v1", key, 1)
    assert artifacts.pointer_if_changed(first.etag) is None  # unchanged: no download
    assert artifacts.get(key) == b"one"
    artifacts.put_snapshot("v2", b"two", {})
    second = artifacts.pointer_if_changed(first.etag)
    assert second.version == "v2" and artifacts.get(second.key) == b"two"


def test_artifacts_missing_object_raises(artifacts):
    with pytest.raises(Exception):  # noqa: B017 - KeyError from the fake, ClientError from S3
        artifacts.get("snapshots/none.msgpack")


@pytest.fixture(params=["fake", "moto"])
def users(request):
    if request.param == "fake":
        return MemoryUserStore()
    stack = request.getfixturevalue("stack")
    return DynamoUserStore(stack.names[settings.FEATURES_TABLE.logical_id], timeout_s=1.0)


def test_a_user_without_a_row_reads_none(users):
    assert users.get("nobody") is None


def test_an_unreadable_store_raises_user_read_error(users, monkeypatch):
    if isinstance(users, MemoryUserStore):
        users.fail = True
    else:  # the table is gone, as in a region without a replica
        aws.client("dynamodb").delete_table(TableName=users.table_name)
    with pytest.raises(UserReadError):
        users.get("anyone")
