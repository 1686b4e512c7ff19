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
