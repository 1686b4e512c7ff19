"""The sold-out (availability) log in DynamoDB (moto, AWS's limits in front): written only on
transitions, spread over partition keys, and read by what changed since the last look."""

import threading

import pytest

from personalize import settings
from personalize.adapters import aws
from personalize.adapters.soldout import (
    BUCKETS,
    PARALLEL_QUERIES,
    PK_PREFIX,
    DynamoSoldOut,
    SoldOutError,
    _minutes,
    bucket_of,
    fold,
    partition,
    unavailable,
)
from personalize.adapters.userstore import DynamoUserStore

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


def test_a_long_gap_is_read_all_at_once_in_the_order_one_reader_would_get(stack):
    """A cold start after a stale snapshot reads minutes x BUCKETS partitions: they are asked
    on the log's reader threads, come back in (minute, bucket, sort key) order, and a read that
    fails fails whole, only once every Query has ended (Lambda freezes what is still running)."""
    log = DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id])
    for n in range(40):  # ~6 minutes of transitions from many writers, every bucket written
        log.append([[f"item-{n}", "s" if n % 3 else "r", NOW + n * 9_000]], f"w#{n}-{n}", NOW + n * 9_000)
    since, now = NOW - 1, NOW + 400_000
    threads, ended = set(), []
    log.client.meta.events.register("before-call.dynamodb.Query",
                                    lambda **_: threads.add(threading.current_thread().name))
    log.client.meta.events.register("after-call.dynamodb.Query", lambda **_: ended.append(1))
    rows = log.read_since(since, now)
    assert threads and all(name.startswith("availability-log") for name in threads), threads
    one_reader = [row for minute in _minutes(since, now) for bucket in range(BUCKETS)
                  for row in log._read_partition(log.client, partition(minute, bucket), since)]
    assert len(rows) == 40 and rows == one_reader

    asked = len(_minutes(since, now)) * BUCKETS
    ended.clear()
    log.client.meta.events.register("before-call.dynamodb.Query", _refuse_once())
    with pytest.raises(SoldOutError, match=rf"1 of {asked} partitions failed: av#\d+#\d "
                                           r"\(ProvisionedThroughputExceededException\)"):
        log.read_since(since, now)
    assert len(ended) == asked, "every other partition's Query ended before the error was raised"


def test_the_shared_serving_client_has_a_connection_for_each_reader_and_the_request(stack):
    """The edge's sold-out log reads through the user store's client (wiring.build): a pool
    smaller than its readers plus the request's GetItem drops connections, each new one a
    handshake within the 50 ms timeout (on-call review, 2026-12-06)."""
    users = DynamoUserStore(stack.names[settings.FEATURES_TABLE.logical_id], lambda obj: obj)
    assert users.client.meta.config.max_pool_connections >= PARALLEL_QUERIES + 1


def _refuse_once():
    """A before-call hook: the first Query it sees is throttled, the others go through."""
    lock, left = threading.Lock(), [1]

    def hook(**_):
        with lock:
            if not left[0]:
                return None
            left[0] -= 1
        error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"},
                 "ResponseMetadata": {"HTTPStatusCode": 400}}
        return type("Http", (), {"status_code": 400, "headers": {}, "content": b""})(), error
    return hook
