"""One contract, two implementations: each adapter's in-memory fake and its AWS
implementation (under moto, IAM enforced) pass the same cases, so a fake is never kinder
than the service (after Feast's universal online-store tests)."""

import json

import pytest
from botocore.exceptions import ClientError

from personalize import settings
from personalize.adapters import aws
from personalize.adapters.artifacts import MemoryArtifacts, S3Artifacts
from personalize.adapters.limits import DynamoLimits, KinesisLimits, ManualClock
from personalize.adapters.quarantine import MemoryQuarantine, QuarantineError, SqsQuarantine
from personalize.adapters.rowstore import (
    BATCH_GET_LIMIT,
    ConflictError,
    DynamoRowStore,
    MemoryRowStore,
    RowRejectedError,
    ThrottledError,
)
from personalize.adapters.soldout import DynamoSoldOut, MemorySoldOut, SoldOutError
from personalize.adapters.stream import KinesisEventStream, KinesisStreamReader, MemoryEventStream
from personalize.adapters.userstore import DynamoUserStore, MemoryUserStore, UserReadError
from personalize.ingest import entities
from personalize.ingest.aggregation import ITEMS, USERS, Change


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
    return DynamoUserStore(stack.names[settings.FEATURES_TABLE.logical_id], entities.UserRow.from_obj, timeout_s=1.0)


def test_a_user_without_a_row_reads_none(users):
    assert users.get("nobody") is None


def test_an_unreadable_store_raises_user_read_error(users, monkeypatch):
    if isinstance(users, MemoryUserStore):
        users.fail = True
    else:  # the table is gone, as in a region without a replica
        aws.client("dynamodb").delete_table(TableName=users.table_name)
    with pytest.raises(UserReadError):
        users.get("anyone")


# --- the feature store's rows ---------------------------------------------------------------

NOW_S = 1_800_000_000
LIVE = NOW_S + 86_400  # expires tomorrow


class DynamoFaults:
    """What DynamoDB does under load, injected before the request leaves the client:
    throttling errors for writes, unprocessed keys for batch reads (botocore's own retries
    are skipped, so each injected answer costs one of the adapter's attempts)."""

    def __init__(self, client):
        self.client = client
        self.pending: dict[str, int] = {}
        client.meta.events.register("before-call.dynamodb.*", self._answer)

    def throttle(self, requests: int, operation: str = "PutItem") -> None:
        self.pending[operation] = self.pending.get(operation, 0) + requests

    def _answer(self, model, params, **_):
        if not self.pending.get(model.name):
            return None
        self.pending[model.name] -= 1
        if model.name in ("BatchGetItem",):  # throttled reads come back as unprocessed keys
            return _Http(200), {"Responses": {}, "UnprocessedKeys": json.loads(params["body"])["RequestItems"],
                                "ResponseMetadata": {"HTTPStatusCode": 200}}
        return _Http(400), {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"},
                            "ResponseMetadata": {"HTTPStatusCode": 400}}


class _Http:
    def __init__(self, status_code: int):
        self.status_code, self.headers, self.content = status_code, {}, b""


@pytest.fixture(params=["fake", "moto"])
def rows(request):
    """(store, clock, throttle): the clock drives TTL; throttle(n, operation) refuses n requests."""
    clock = {"now": NOW_S}
    if request.param == "fake":
        store = MemoryRowStore(clock=lambda: clock["now"])
        return store, clock, lambda n, operation="PutItem": store.throttle(n)
    stack = request.getfixturevalue("stack")
    client = aws.client("dynamodb")
    store = DynamoRowStore({USERS: stack.names[settings.FEATURES_TABLE.logical_id],
                            ITEMS: stack.names[settings.ITEMS_TABLE.logical_id]}, client=client,
                           clock=lambda: clock["now"])
    faults = DynamoFaults(client)
    return store, clock, faults.throttle


def change(key=("u#alice", "row"), version=0, row=None, aux=None, table=USERS) -> Change:
    return Change(table, key, "user", row if row is not None else {"n": 1}, aux if aux is not None else [],
                  version, [], 0)


def test_a_row_is_created_once_then_changes_only_from_the_version_read(rows):
    store, _, _ = rows
    assert store.get_many(USERS, [("u#alice", "row")]) == {}
    store.put(USERS, change(row={"n": 1}), LIVE)
    with pytest.raises(ConflictError):  # a second writer that also saw no row
        store.put(USERS, change(row={"n": 99}), LIVE)
    stored = store.get_many(USERS, [("u#alice", "row")])[("u#alice", "row")]
    assert (stored.row, stored.version) == ({"n": 1}, 1)
    store.put(USERS, change(version=1, row={"n": 2}), LIVE)
    with pytest.raises(ConflictError):  # a writer that read version 1 lost the race
        store.put(USERS, change(version=1, row={"n": 50}), LIVE)
    assert store.get(USERS, ("u#alice", "row")).row == {"n": 2}


def test_a_batch_read_past_one_request_returns_every_row(rows):
    store, _, _ = rows
    keys_ = [(f"i#{n}", "s#0") for n in range(BATCH_GET_LIMIT + 30)]
    for key in keys_:
        store.put(ITEMS, change(key=key, row={"k": key[0]}, table=ITEMS), LIVE)
    found = store.get_many(ITEMS, keys_ + [("i#missing", "s#0")])
    assert sorted(found) == sorted(keys_) and found[keys_[-1]].row == {"k": keys_[-1][0]}
    assert {s.row["k"] for s in store.query(ITEMS, "i#7")} == {"i#7"}
    assert len([k for k, _ in store.scan_prefix(ITEMS, "i#1")]) == len([k for k in keys_ if k[0].startswith("i#1")])


def test_an_expired_row_reads_empty_and_keeps_its_version(rows):
    store, clock, _ = rows
    store.put(USERS, change(row={"n": 1}), NOW_S + 60)
    clock["now"] = NOW_S + 61  # TTL passed; DynamoDB deletes it some time later
    stored = store.get_many(USERS, [("u#alice", "row")])[("u#alice", "row")]
    assert (stored.row, stored.version) == (None, 1)
    assert store.get(USERS, ("u#alice", "row")) is None
    store.put(USERS, change(version=1, row={"n": 7}), LIVE)  # the next write starts it again
    assert store.get(USERS, ("u#alice", "row")).row == {"n": 7}


@pytest.mark.parametrize("row_bytes", [
    pytest.param(300 * 1024, id="300KB-stored"),
    pytest.param(420 * 1024, id="420KB-refused"),
])
def test_the_item_size_limit_refuses_a_row_for_good(rows, row_bytes):
    store, _, _ = rows
    big = change(row={"blob": b"x" * row_bytes})
    if row_bytes < 400 * 1024:
        store.put(USERS, big, LIVE)
        assert len(store.get(USERS, big.key).row["blob"]) == row_bytes
    else:
        with pytest.raises(RowRejectedError):  # never retried: it would stall the shard
            store.put(USERS, big, LIVE)
        assert store.get_many(USERS, [big.key]) == {}


def test_a_value_msgpack_cannot_encode_is_refused_for_good(rows):
    store, _, _ = rows
    with pytest.raises(RowRejectedError):
        store.put(USERS, change(row={"n": 2**64}), LIVE)


def test_throttling_is_retried_within_the_budget_then_reported(rows):
    store, _, throttle = rows
    throttle(store.max_attempts - 1)
    store.put(USERS, change(row={"n": 1}), LIVE)  # lands on the last attempt
    assert store.get(USERS, ("u#alice", "row")).row == {"n": 1}
    throttle(store.max_attempts)
    with pytest.raises(ThrottledError):  # a RowStoreError: its records are retried, not lost
        store.put(USERS, change(version=1, row={"n": 2}), LIVE)
    assert store.get(USERS, ("u#alice", "row")).row == {"n": 1}, "nothing half-written"
    throttle(store.max_attempts, "BatchGetItem")
    with pytest.raises(ThrottledError):
        store.get_many(USERS, [("u#alice", "row")])


# --- the sold-out (availability) log -------------------------------------------------------


@pytest.fixture(params=["fake", "moto"])
def soldout(request):
    """(log, throttle): throttle(n, operation) refuses the next n requests."""
    if request.param == "fake":
        fake = MemorySoldOut(limits_model=None)
        return fake, lambda n, operation=None: fake.throttle(n)
    stack = request.getfixturevalue("stack")
    client = aws.client("dynamodb", read_timeout=2.0, attempts=1)
    faults = DynamoFaults(client)
    return DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id], client=client), faults.throttle


T_MS = NOW_S * 1000


def test_the_newest_transition_per_item_wins_whatever_the_order_read(soldout):
    log, _ = soldout
    log.append([["a", "s", T_MS], ["b", "s", T_MS]], "w#1-2", T_MS)
    log.append([["a", "r", T_MS + 10], ["c", "d", T_MS + 5]], "w#3-4", T_MS + 1000)
    log.append([["b", "r", T_MS - 10]], "w#5-5", T_MS + 2000)  # older than b's sale: changes nothing
    log.append([["a", "s", T_MS + 10]], "w#3-4", T_MS + 1000)  # the same write again (a retry)
    assert log.read(T_MS - 1, T_MS + 3000) == {"b", "c"}


def test_a_reader_asks_only_for_what_was_written_after_a_time(soldout):
    log, _ = soldout
    log.append([["old", "s", T_MS]], "w#1-1", T_MS)
    log.append([["new", "s", T_MS + 61_000]], "w#2-2", T_MS + 61_000)  # the next minute's partition
    assert [entries for _, entries in log.read_since(T_MS + 1, T_MS + 62_000)] == [[["new", "s", T_MS + 61_000]]]
    assert len(log.read_since(T_MS - 1, T_MS + 62_000)) == 2


def test_a_throttled_log_fails_loudly(soldout):
    log, throttle = soldout
    throttle(1, "PutItem")
    with pytest.raises(SoldOutError):  # aggregate retries the batch (no item row written)
        log.append([["a", "s", T_MS]], "w#1-1", T_MS)
    log.append([["a", "s", T_MS]], "w#1-1", T_MS)
    throttle(1, "Query")
    with pytest.raises(SoldOutError):  # serving keeps what it has, and its age says how stale
        log.read_since(T_MS - 1, T_MS + 1)
    assert log.read(T_MS - 1, T_MS + 1) == {"a"}


# --- the events stream, as aggregate and `make replay-failures` read it ------------------------


def test_the_stream_reader_finds_successors_and_reads_ranges(stack):
    name, arn = stack.names[settings.EVENTS_STREAM.logical_id], stack.arns[settings.EVENTS_STREAM.logical_id]
    kinesis = aws.client("kinesis")
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    seqs = [kinesis.put_record(StreamName=name, Data=f"r{n}".encode(), PartitionKey="k",
                               ExplicitHashKey="0")["SequenceNumber"] for n in range(5)]
    reader = KinesisStreamReader(client=kinesis)
    assert reader.successor(arn, shard, None) == int(seqs[0])
    assert reader.successor(arn, shard, int(seqs[1])) == int(seqs[2])
    assert reader.successor(arn, shard, int(seqs[4])) is None, "nothing after the tip"
    records = reader.read_range(name, shard, seqs[1], seqs[3])
    assert [r["Data"] for r in records] == [b"r1", b"r2", b"r3"]
    assert reader.read_range(name, shard, str(int(seqs[0]) - 1), seqs[3]) is None, "start not in the stream"


# --- the quarantine -------------------------------------------------------------------------


@pytest.fixture(params=["fake", "moto"])
def quarantine(request):
    """(queue, fail_requests): fail_requests(n) makes the next n SendMessageBatch calls fail."""
    if request.param == "fake":
        fake = MemoryQuarantine()
        return fake, fake.fail_requests
    stack = request.getfixturevalue("stack")
    client = aws.client("sqs")
    pending = {"n": 0}

    def unreachable(**_):
        if pending["n"]:
            pending["n"] -= 1
            return _Http(500), {"Error": {"Code": "ServiceUnavailable", "Message": "injected"},
                                "ResponseMetadata": {"HTTPStatusCode": 500}}
        return None

    client.meta.events.register("before-call.sqs.SendMessageBatch", unreachable)
    return (SqsQuarantine(stack.names[settings.QUARANTINE_QUEUE.logical_id], client=client),
            lambda n: pending.__setitem__("n", pending["n"] + n))


def entry(n: int, raw: str = "e30=") -> dict:
    return {"id": str(n), "reason": f"bad field {n}", "raw": raw, "source": "shardId-0"}


def test_quarantined_records_read_back_with_their_reasons_a_huge_one_cut_and_flagged(quarantine):
    queue, _ = quarantine
    huge = "A" * (1024 * 1024)  # a 1 MiB Kinesis record, base64: over SQS's 256 KiB message limit
    assert queue.depth() == 0
    queue.send([entry(n) for n in range(12)] + [entry(99, huge)])
    assert queue.depth() == 13  # what the console shows as quarantined
    got = {e["id"]: e for e in queue.receive_all()}
    assert queue.depth() == 0
    assert sorted(got) == sorted([str(n) for n in range(12)] + ["99"])
    assert got["3"]["reason"] == "bad field 3" and got["3"]["raw"] == "e30="
    assert got["99"]["raw_truncated"] and got["99"]["raw_chars"] == len(huge)
    assert huge.startswith(got["99"]["raw"]) and len(got["99"]["raw"]) % 4 == 0


def test_a_failed_batch_names_its_records_and_the_others_land(quarantine):
    queue, fail_requests = quarantine
    fail_requests(1)
    with pytest.raises(QuarantineError) as refused:
        queue.send([entry(n) for n in range(15)])  # two batches: 10 + 5
    assert sorted(refused.value.failed_ids, key=int) == [str(n) for n in range(10)]
    assert sorted((e["id"] for e in queue.receive_all()), key=int) == [str(n) for n in range(10, 15)]


# --- AWS's throughput limits (personalize.adapters.limits): the fakes, and moto behind the -----
# --- local stack's front (infra/local/aws_limits.py), fail the same requests the same way ------


@pytest.fixture(params=["fake", "moto"])
def limited_stream(request):
    """(stream without retries, manual clock, model or None): one PutRecords per chunk."""
    clock = ManualClock()
    if request.param == "fake":
        model = KinesisLimits(4, clock)
        return MemoryEventStream(model, attempts=1), clock
    stack = request.getfixturevalue("stack")
    stack.limits.use_clock(clock)
    return KinesisEventStream(stack.names[settings.EVENTS_STREAM.logical_id], attempts=1), clock


def test_a_hot_partition_key_fails_per_record_past_1000_a_second_and_gets_through_a_second_later(limited_stream):
    stream, clock = limited_stream
    result = stream.put([("viral-item", b'{"n": 1}')] * 1200)
    assert result.errors[:1000] == [None] * 1000
    assert result.errors[1000:] == ["ProvisionedThroughputExceededException"] * 200
    clock.advance(1)
    assert stream.put([("viral-item", b'{"n": 1}')] * 200).errors == [None] * 200
    spread = stream.put([(f"event-{n}", b'{"n": 1}') for n in range(1600)])  # keys that spread: all land
    assert spread.errors == [None] * 1600


def test_putrecords_never_raises_for_throughput_it_counts_the_failed_records(stack):
    stack.limits.use_clock(ManualClock())
    kinesis = aws.client("kinesis")
    name = stack.names[settings.EVENTS_STREAM.logical_id]
    answers = [kinesis.put_records(StreamName=name, Records=[{"PartitionKey": "hot", "Data": b"x"}] * 500)
               for _ in range(3)]
    assert [a["FailedRecordCount"] for a in answers] == [0, 0, 500]
    assert {r["ErrorCode"] for r in answers[2]["Records"]} == {"ProvisionedThroughputExceededException"}
    with pytest.raises(ClientError) as raised:  # PutRecord (one record) raises instead
        kinesis.put_record(StreamName=name, PartitionKey="hot", Data=b"x")
    assert aws.error_code(raised.value) == "ProvisionedThroughputExceededException"


def test_the_fake_puts_each_key_on_the_shard_moto_does(stack):
    """Where moto models a behaviour (MD5 of the key over the shards' hash ranges), the fake agrees."""
    kinesis = aws.client("kinesis")
    name = stack.names[settings.EVENTS_STREAM.logical_id]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
              for s in kinesis.list_shards(StreamName=name)["Shards"]]
    model = KinesisLimits(len(ranges), ManualClock())
    assert model.ranges == ranges, "the fake's shards are the on-demand stream's (4, even ranges)"
    keys_ = [f"key-{n}" for n in range(300)] + ["", "é", "x" * 256]
    keys_ = [k for k in keys_ if k]
    answer = kinesis.put_records(StreamName=name, Records=[{"PartitionKey": k, "Data": b"x"} for k in keys_])
    assert [r["ShardId"] for r in answer["Records"]] == [f"shardId-{model.shard_of(k):012d}" for k in keys_]


def test_getrecords_past_five_calls_a_second_on_a_shard_raises(stack):
    clock = ManualClock()
    stack.limits.use_clock(clock)
    kinesis = aws.client("kinesis")
    name = stack.names[settings.EVENTS_STREAM.logical_id]
    shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"]
    for _ in range(5):
        iterator = kinesis.get_records(ShardIterator=iterator)["NextShardIterator"]
    with pytest.raises(ClientError) as raised:
        kinesis.get_records(ShardIterator=iterator)
    assert aws.error_code(raised.value) == "ProvisionedThroughputExceededException"
    clock.advance(1)
    kinesis.get_records(ShardIterator=iterator)


@pytest.fixture(params=["fake", "moto"])
def limited_rows(request):
    """(row store that does not retry, manual clock)."""
    clock = ManualClock()
    if request.param == "fake":
        return MemoryRowStore(clock=lambda: NOW_S, max_attempts=1, limits=DynamoLimits(clock)), clock
    stack = request.getfixturevalue("stack")
    stack.limits.use_clock(clock)
    client = aws.client("dynamodb", attempts=1)
    return DynamoRowStore({USERS: stack.names[settings.FEATURES_TABLE.logical_id],
                           ITEMS: stack.names[settings.ITEMS_TABLE.logical_id]}, client=client, max_attempts=1,
                          clock=lambda: NOW_S), clock


def test_a_partition_takes_1000_write_units_a_second_billed_per_kb_of_the_whole_item(limited_rows):
    store, clock = limited_rows
    row = {"blob": b"x" * 99_000}  # 97 KB with its names: 97 units per write
    for version in range(10):
        store.put(ITEMS, change(key=("i#viral", "s#0"), version=version, row=row, table=ITEMS), LIVE)
    with pytest.raises(ThrottledError):
        store.put(ITEMS, change(key=("i#viral", "s#0"), version=10, row=row, table=ITEMS), LIVE)
    store.put(ITEMS, change(key=("i#other", "s#0"), version=0, row=row, table=ITEMS), LIVE)  # another partition
    clock.advance(1)
    store.put(ITEMS, change(key=("i#viral", "s#0"), version=10, row={"small": 1}, table=ITEMS), LIVE)
    # The small write replacing a 97 KB item is billed at the larger of the two: 97 units.
    for version in range(11, 20):
        store.put(ITEMS, change(key=("i#viral", "s#0"), version=version, row={"small": 1}, table=ITEMS), LIVE)
    store.put(ITEMS, change(key=("i#viral", "s#0"), version=20, row={"small": 1}, table=ITEMS), LIVE)


def test_a_partition_takes_3000_read_units_a_second_then_batch_reads_come_back_unprocessed(limited_rows):
    store, clock = limited_rows
    store.put(ITEMS, change(key=("i#big", "s#0"), row={"blob": b"x" * 300_000}, table=ITEMS), LIVE)
    clock.advance(1)
    for _ in range(40):  # 74 units per strong read of a 293 KB item
        assert store.get_many(ITEMS, [("i#big", "s#0")])
    with pytest.raises(ThrottledError):
        store.get_many(ITEMS, [("i#big", "s#0")])
    clock.advance(1)
    assert store.get_many(ITEMS, [("i#big", "s#0")])


def test_an_update_is_billed_at_the_whole_item_and_refused_past_400kb(stack):
    """moto applies an UpdateItem whatever its size and bills nothing; the front does as AWS."""
    clock = ManualClock()
    stack.limits.use_clock(clock)
    dynamodb = aws.client("dynamodb", attempts=1)
    table = stack.names[settings.FEATURES_TABLE.logical_id]
    key = {"pk": {"S": "soldout"}, "sk": {"S": "items#0"}}
    dynamodb.put_item(TableName=table, Item={**key, "items": {"SS": [f"{n:0>100}" for n in range(3000)]}})
    clock.advance(1)
    for n in range(3):  # ~300 KB each: 3 x 294 units, whatever the one id they add
        dynamodb.update_item(TableName=table, Key=key, UpdateExpression="ADD #i :s",
                             ExpressionAttributeNames={"#i": "items"},
                             ExpressionAttributeValues={":s": {"SS": [f"new-{n}"]}})
    with pytest.raises(ClientError) as raised:
        dynamodb.update_item(TableName=table, Key=key, UpdateExpression="ADD #i :s",
                             ExpressionAttributeNames={"#i": "items"}, ExpressionAttributeValues={":s": {"SS": ["x"]}})
    assert raised.value.response["ThrottlingReasons"][0]["reason"] == "TableWriteKeyRangeThroughputExceeded"
    clock.advance(1)
    with pytest.raises(ClientError) as raised:  # 1,100 more 100-byte ids: past 400 KB
        dynamodb.update_item(TableName=table, Key=key, UpdateExpression="ADD #i :s",
                             ExpressionAttributeNames={"#i": "items"},
                             ExpressionAttributeValues={":s": {"SS": [f"{n:0>100}x" for n in range(1100)]}})
    assert aws.error_code(raised.value) == "ValidationException"
    stored = dynamodb.get_item(TableName=table, Key=key)["Item"]["items"]["SS"]
    assert len(stored) == 3003, "the refused update left the item as it was"
