"""The sold-out (availability) log in DynamoDB (moto, AWS's limits in front): written only on
transitions, spread over partition keys, and read by what changed since the last look."""

from personalize import settings
from personalize.adapters import aws
from personalize.adapters.soldout import BUCKETS, PK_PREFIX, DynamoSoldOut, bucket_of, fold, unavailable

NOW = 1_790_000_000_000


def test_transitions_spread_over_partition_keys_and_read_back_newest_first(stack):
    log = DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id])
    writers = [f"src:shardId-{n:012d}#1-9" for n in range(12)]
    for n, writer in enumerate(writers):
        log.append([[f"item-{n}", "s", NOW + n]], writer, NOW + n)
    log.append([["item-3", "r", NOW + 100]], writers[0], NOW + 100)  # back in stock, later
    partitions = {item["pk"]["S"] for item in aws.client("dynamodb").scan(
        TableName=log.table_name)["Items"] if item["pk"]["S"].startswith(PK_PREFIX)}
    assert len(partitions) == len({bucket_of(w) for w in writers}) > 1 and len(partitions) <= BUCKETS
    state = {}
    for _, entries in log.read_since(NOW - 1, NOW + 200):
        fold(entries, state)
    assert unavailable(state) == {f"item-{n}" for n in range(12)} - {"item-3"}


def test_a_reader_gets_only_what_was_written_after_its_last_look(stack):
    log = DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id])
    log.append([["old", "s", NOW]], "w#1-1", NOW)
    log.append([["new", "s", NOW + 5000]], "w#2-2", NOW + 5000)
    calls = []
    log.client.meta.events.register("after-call.dynamodb.Query",
                                    lambda parsed, **_: calls.append(len(parsed.get("Items", []))))
    rows = log.read_since(NOW + 1, NOW + 6000)
    assert [entries for _, entries in rows] == [[["new", "s", NOW + 5000]]]
    assert sum(calls) == 1 and len(calls) == BUCKETS, "one Query per bucket of the minute, one row returned"


def test_a_retried_write_of_the_same_batch_changes_nothing(stack):
    log = DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id])
    log.append([["a", "s", NOW]], "w#1-5", NOW)
    log.append([["a", "s", NOW]], "w#1-5", NOW)  # the batch's retry, same write time: already there
    assert len(log.read_since(NOW - 1, NOW + 1)) == 1
