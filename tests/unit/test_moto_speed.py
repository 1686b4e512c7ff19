"""The tests' and the local stack's faster moto Query answers exactly what moto's own does."""

import uuid

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from infra.local import moto_speed

moto_speed.install()

ROWS = st.lists(st.tuples(st.sampled_from(["u#a", "u#b", "i#x", "v#1"]), st.text("abc~#0", min_size=1, max_size=4),
                          st.integers(0, 3)), max_size=40)
QUERIES = st.tuples(st.sampled_from(["u#a", "u#b", "i#x", "nobody"]),
                    st.sampled_from([None, ("begins_with", "a"), ("between", "a", "b~"), (">", "b")]),
                    st.booleans(), st.sampled_from([None, 1, 3]))


def _query(client, table, partition, condition, forward, limit):
    args = {"TableName": table, "ScanIndexForward": forward, "ExpressionAttributeValues": {":p": {"S": partition}}}
    expression = "pk = :p"
    if condition is not None:
        if condition[0] == "begins_with":
            expression += " AND begins_with(sk, :a)"
        elif condition[0] == "between":
            expression += " AND sk BETWEEN :a AND :b"
            args["ExpressionAttributeValues"][":b"] = {"S": condition[2]}
        else:
            expression += " AND sk > :a"
        args["ExpressionAttributeValues"][":a"] = {"S": condition[1]}
    args["KeyConditionExpression"] = expression
    if limit:
        args["Limit"] = limit
    pages = []
    while True:
        answer = client.query(**args)
        pages.append((answer["Items"], answer.get("LastEvaluatedKey")))
        if "LastEvaluatedKey" not in answer:
            return pages
        args["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


@pytest.fixture(scope="module")
def client():
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, queries=st.lists(QUERIES, min_size=1, max_size=4))
def test_a_partitions_query_answers_as_moto_does(client, rows, queries):
    name = f"t-{uuid.uuid4().hex}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "S"}])
    try:
        for pk, sk, n in rows:
            client.put_item(TableName=name, Item={"pk": {"S": pk}, "sk": {"S": sk}, "n": {"N": str(n)}})
        for query in queries:
            fast = _query(client, name, *query)
            with moto_speed.moto_as_is():
                assert _query(client, name, *query) == fast
    finally:
        client.delete_table(TableName=name)


def test_the_server_finds_the_same_backend_for_every_host_twice():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    hosts = [None, "moto_api", "dynamodb", "dynamodb.us-east-1.amazonaws.com", "kinesis.eu-west-1.amazonaws.com",
             "s3.amazonaws.com", "bucket.s3.us-east-1.amazonaws.com", "appconfigdata.us-east-1.amazonaws.com",
             "sqs.us-east-1.amazonaws.com", "iam.amazonaws.com", "sts.amazonaws.com", "localhost:5000", "nothing"]
    original = DomainDispatcherApplication.get_backend_for_host.__wrapped__
    expected = [original(app, host) for host in hosts]
    assert [app.get_backend_for_host(h) for h in hosts] == expected == [app.get_backend_for_host(h) for h in hosts]
    assert expected[3] == "dynamodb" and expected[4] == "kinesis" and expected[5] == "s3"


VALUES = st.recursive(
    st.one_of(st.builds(lambda s: {"S": s}, st.text(max_size=5)),
              st.builds(lambda n: {"N": str(n)}, st.integers(-10**6, 10**6)),
              st.builds(lambda b: {"B": b}, st.binary(min_size=1, max_size=6)),
              st.builds(lambda b: {"BOOL": b}, st.booleans()), st.just({"NULL": True}),
              st.builds(lambda s: {"SS": sorted(s)}, st.sets(st.text(min_size=1, max_size=3), min_size=1, max_size=3)),
              st.builds(lambda s: {"NS": sorted(map(str, s))}, st.sets(st.integers(0, 99), min_size=1, max_size=3))),
    lambda inner: st.one_of(st.builds(lambda xs: {"L": xs}, st.lists(inner, max_size=3)),
                            st.builds(lambda m: {"M": m}, st.dictionaries(st.text("abcS", min_size=1, max_size=3),
                                                                          inner, max_size=3))),
    max_leaves=8)


def _raw_answers(client, calls) -> list[bytes]:
    bodies: list[bytes] = []

    def keep(http_response, **kwargs):
        bodies.append(http_response.content)

    client.meta.events.register("after-call.*.*", keep)
    try:
        for call in calls:
            call()
    finally:
        client.meta.events.unregister("after-call.*.*", keep)
    return bodies


@settings(max_examples=40, deadline=None)
@given(items=st.lists(st.dictionaries(st.text("xyzS", min_size=1, max_size=4), VALUES, max_size=4), max_size=6))
def test_every_dynamodb_answer_is_serialized_byte_for_byte_as_moto_does(client, items):
    name = f"t-{uuid.uuid4().hex}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    try:
        for n, item in enumerate(items):
            client.put_item(TableName=name, Item={**item, "pk": {"S": f"k{n}"}})
        calls = [lambda: client.describe_table(TableName=name), lambda: client.scan(TableName=name),
                 lambda: client.query(TableName=name, KeyConditionExpression="pk = :p",
                                      ExpressionAttributeValues={":p": {"S": "k0"}}),
                 lambda: client.batch_get_item(RequestItems={name: {"Keys": [{"pk": {"S": f"k{n}"}}
                                                                             for n in range(len(items) + 1)]}}),
                 *[lambda n=n: client.get_item(TableName=name, Key={"pk": {"S": f"k{n}"}}) for n in range(len(items))],
                 lambda: client.update_item(TableName=name, Key={"pk": {"S": "k0"}}, UpdateExpression="SET c = :v",
                                            ExpressionAttributeValues={":v": {"M": {"S": {"N": "1"}}}},
                                            ReturnValues="ALL_NEW")]  # the same answer twice
        calls[-1]()  # and the table the same in both passes
        fast = _raw_answers(client, calls)
        with moto_speed.moto_as_is():
            assert _raw_answers(client, calls) == fast
    finally:
        client.delete_table(TableName=name)


def test_other_services_answers_are_serialized_as_moto_does():
    with mock_aws():
        kinesis = boto3.client("kinesis", region_name="us-east-1")
        kinesis.create_stream(StreamName="s", ShardCount=2)
        kinesis.put_records(StreamName="s", Records=[{"Data": b"x" * n, "PartitionKey": str(n)} for n in range(1, 9)])
        shard = kinesis.describe_stream(StreamName="s")["StreamDescription"]["Shards"][0]["ShardId"]
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="q")["QueueUrl"]
        sqs.send_message(QueueUrl=queue, MessageBody="m", MessageAttributes={"a": {"DataType": "String",
                                                                                    "StringValue": "v"}})
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="bucket-for-moto-speed")
        s3.put_object(Bucket="bucket-for-moto-speed", Key="k", Body=b"body")
        for service, calls in [
                (kinesis, [lambda: kinesis.describe_stream(StreamName="s"),
                           lambda: kinesis.describe_stream_summary(StreamName="s"),
                           lambda: kinesis.list_shards(StreamName="s"),
                           lambda: kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(
                               StreamName="s", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"])]),
                (sqs, [lambda: sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"]),
                       lambda: sqs.list_queues()]),
                (s3, [lambda: s3.list_objects_v2(Bucket="bucket-for-moto-speed"),
                      lambda: s3.head_object(Bucket="bucket-for-moto-speed", Key="k")])]:
            fast = _raw_answers(service, calls)
            with moto_speed.moto_as_is():
                slow = _raw_answers(service, calls)
            # get_records answers a fresh iterator's age; everything else is the same bytes
            assert [b for b in fast if b"NextShardIterator" not in b] == [b for b in slow
                                                                         if b"NextShardIterator" not in b]
            assert len(fast) == len(slow) >= len(calls)


def test_a_response_class_lists_the_same_methods_each_time():
    from moto.core import responses
    from moto.dynamodb.responses import DynamoHandler

    first = responses.method_names_from_class(DynamoHandler)
    assert first == responses.method_names_from_class.__wrapped__(DynamoHandler)
    first.append("mutated by a caller")
    assert "mutated by a caller" not in responses.method_names_from_class(DynamoHandler)
