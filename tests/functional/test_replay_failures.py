"""make replay-failures: a range the trigger gave up on is re-driven from the stream, exactly
once, under moto with the local poller playing Lambda's event source mapping."""

import json

from botocore.exceptions import ClientError

from infra import replay
from infra.local.lambda_events import context
from personalize import keys, settings
from personalize.adapters import aws
from personalize.ingest import entities
from tests.conftest import now_ms


def put(stack, events):
    client = aws.client("kinesis")
    stream = stack.names[settings.EVENTS_STREAM.logical_id]
    for event in events:  # one partition key: one shard, in order
        client.put_record(StreamName=stream, PartitionKey="one-shard", Data=json.dumps(event).encode())


def views(prefix, n, user, item, ts):
    """The shop backend's events as collect writes them on the stream (route named)."""
    return [{"event_id": f"{prefix}{k}", "type": "view", "user_id": user, "item_id": item, "ts": ts, "route": "server"}
            for k in range(n)]


def totals(store, table, key):
    stored = store.get_many(table, [key]).get(key)
    cls = entities.UserRow if table == "users" else entities.ItemRow
    return cls.from_obj(stored.row).totals if stored else None


def test_a_range_given_up_on_is_replayed_exactly_once(pipeline, stack, monkeypatch):
    pipeline.poller.max_retries = 1
    store = pipeline.aggregate.processor.ingestor.store
    store.max_attempts = 1
    client = store.client
    real = client.put_item
    outage = {"on": True}

    def item_rows_throttled(**kwargs):
        if outage["on"] and kwargs["Item"]["pk"]["S"] == "i#i1":
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "PutItem")
        return real(**kwargs)

    monkeypatch.setattr(client, "put_item", item_rows_throttled)
    ts = now_ms()
    put(stack, views("a", 3, "u1", "i1", ts))
    pipeline.drain()
    assert pipeline.poller.stats.sent_to_failure_queue == 3, "the trigger gave up on the range"
    outage["on"] = False
    put(stack, views("b", 2, "u2", "i1", ts))
    pipeline.drain()
    [item_key] = [k for k in [("i#i1", f"s#{s}") for s in pipeline.poller.cursors] if totals(store, "items", k)]
    # Shared scores count shoppers (issue 19): u2's two views are one shopper's, u1's three too.
    assert totals(store, "items", item_key) == [1, 0, 0, 0], "the row moved past the range it lacks"
    assert totals(store, "users", keys.user_key("u1")) == [3, 0, 0, 0], "u1's row was written before the outage"

    def invoke(event):
        return pipeline.aggregate.lambda_handler(event, context("aggregate"))

    queue = stack.names[settings.STREAM_FAILURE_QUEUE.logical_id]
    stream = stack.names[settings.EVENTS_STREAM.logical_id]
    report = replay.replay_failures(aws.client("sqs"), queue, aws.client("kinesis"), stream, invoke)
    # The poller bisected the failing batch down to single records before giving up on each.
    assert report.ranges >= 1 and (report.replayed, report.records, report.failed) == (report.ranges, 3, 0), \
        report.details
    assert totals(store, "items", item_key) == [2, 0, 0, 0]
    assert totals(store, "users", keys.user_key("u1")) == [3, 0, 0, 0], "not counted twice"

    again = replay.replay_failures(aws.client("sqs"), queue, aws.client("kinesis"), stream, invoke)
    assert again.ranges == 0, "the message was deleted once applied"
    # Re-driving the same range by hand changes nothing either.
    shard = item_key[1][2:]
    records = replay.read_range(aws.client("kinesis"), stream, shard, *_range(store, stream, shard))
    assert replay.replay_records(invoke, records, shard, stack.arns[settings.EVENTS_STREAM.logical_id])
    assert totals(store, "items", item_key) == [2, 0, 0, 0]
    assert totals(store, "users", keys.user_key("u1")) == [3, 0, 0, 0]


def _range(store, stream, shard):
    client = aws.client("kinesis")
    it = client.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    records = client.get_records(ShardIterator=it, Limit=3)["Records"]
    return records[0]["SequenceNumber"], records[-1]["SequenceNumber"]
