"""The serving read gives up quickly: one attempt, a few tens of ms, then a named error."""

import pytest
from botocore.exceptions import ReadTimeoutError

from personalize.adapters.userstore import DynamoUserStore, UserReadError
from personalize.ingest import entities


def test_the_user_read_has_a_tight_timeout_and_no_retries():
    store = DynamoUserStore("features", entities.UserRow.from_obj, region="us-east-1", timeout_s=0.05)
    config = store.client.meta.config
    assert config.read_timeout == 0.05 and config.connect_timeout == 0.05
    assert config.retries["total_max_attempts"] == 1


def test_a_slow_read_becomes_a_user_read_error(monkeypatch):
    store = DynamoUserStore("features", entities.UserRow.from_obj, region="us-east-1")

    def slow(**kwargs):
        raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    monkeypatch.setattr(store.client, "get_item", slow)
    with pytest.raises(UserReadError):
        store.get("u1")
