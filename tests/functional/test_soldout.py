"""The sold-out set in DynamoDB (moto): split over parts, read with one request, and a full
part refuses without stalling anything."""

import pytest
from botocore.exceptions import ClientError

from personalize import settings
from personalize.adapters import aws
from personalize.adapters.soldout import SHARDS, DynamoSoldOut, SoldOutFullError, shard_of


def test_the_set_is_split_and_read_back_with_one_request(stack):
    soldout = DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id])
    items = {f"item-{n}" for n in range(500)}
    soldout.update(items, set())
    soldout.update(set(), {"item-7", "item-8"})
    calls = []
    soldout.client.meta.events.register("before-call.dynamodb.*", lambda model, **kw: calls.append(model.name))
    assert soldout.read() == items - {"item-7", "item-8"}
    assert calls == ["BatchGetItem"]
    parts = aws.client("dynamodb").query(TableName=soldout.table_name, KeyConditionExpression="pk = :p",
                                         ExpressionAttributeValues={":p": {"S": "soldout"}})["Items"]
    assert 1 < len(parts) <= SHARDS


def test_a_full_part_says_so_and_the_other_parts_still_update(stack, monkeypatch):
    soldout = DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id])
    real = soldout.client.update_item
    full_part = "items#3"

    def update_item(**kwargs):
        if kwargs["Key"]["sk"]["S"] == full_part and kwargs["UpdateExpression"].startswith("ADD"):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "Item size has exceeded"}},
                              "UpdateItem")
        return real(**kwargs)

    monkeypatch.setattr(soldout.client, "update_item", update_item)
    items = {f"item-{n}" for n in range(200)}
    with pytest.raises(SoldOutFullError):
        soldout.update(items, set())
    assert soldout.read() == {i for i in items if f"items#{shard_of(i)}" != full_part}
