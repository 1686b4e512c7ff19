"""The serving read gives up quickly: one attempt, a few tens of ms, then a named error."""

import pytest
from botocore.exceptions import ReadTimeoutError

from personalize.adapters.rowstore import pack
from personalize.adapters.userstore import DynamoUserStore, UnreadableRow, UserReadError, decode_user
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


@pytest.mark.parametrize("item", [{"row": {"B": b"\xc1"}}, {"row": {"B": b"\x93\x01\x02\x03"}},
                                  {"row": {"B": b""}}, {"expires_at": {"N": "soon"}, "row": {"B": b"\x80"}}],
                         ids=["not-msgpack", "not-a-row", "empty", "bad-expiry"])
def test_an_item_that_is_not_a_row_is_named_unreadable_whatever_broke(item):
    """Whatever in the item breaks its decoding, the caller gets one named error (a read error:
    it serves without the row) with the cause chained, never the decoder's own exception."""
    with pytest.raises(UnreadableRow) as raised:
        decode_user(item, 1.0, entities.UserRow.from_obj)
    assert isinstance(raised.value, UserReadError) and raised.value.__cause__ is not None


def test_a_row_and_an_expired_row_decode_as_before():
    row = entities.UserRow()
    data = pack(row.to_obj())
    assert decode_user({"row": {"B": data}}, 1.0, entities.UserRow.from_obj).to_obj() == row.to_obj()
    assert decode_user({"expires_at": {"N": "0"}, "row": {"B": data}}, 1.0, entities.UserRow.from_obj) is None
