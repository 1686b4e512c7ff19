"""IAM enforced in the embedded AWS: every function runs as its own role, built from
template.yaml after the SAM transform, so a permission missing there fails here as it
would in AWS."""

import json

import pytest
from botocore.exceptions import ClientError

from infra.local import template
from personalize import settings
from personalize.adapters import aws
from personalize.adapters.soldout import DynamoSoldOut
from tests.conftest import Pipeline, moto_stack, now_ms


def stock_out(stack, item: str) -> None:
    """A stock event from the shop's backend, straight into the stream (as the administrator)."""
    event = {"event_id": f"stock-{item}", "type": "stock", "item_id": item, "ts": now_ms(), "stock": 0}
    aws.client("kinesis").put_record(StreamName=stack.names[settings.EVENTS_STREAM.logical_id],
                                     PartitionKey=item, Data=json.dumps(event).encode())


def sold_out(stack) -> set[str]:
    return DynamoSoldOut(stack.names[settings.FEATURES_TABLE.logical_id]).read(now_ms=now_ms() + 60_000)


def without_action(action: str, function: str, path):
    """A copy of template.yaml where ``function``'s policies no longer grant ``action``."""
    doc = template.load()
    found = 0
    for policy in doc["Resources"][function]["Properties"]["Policies"]:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if action in actions:
                statement["Action"] = [a for a in actions if a != action]
                found += 1
        if isinstance(policy, dict) and "Statement" in policy:
            policy["Statement"] = [s for s in policy["Statement"] if s["Action"]]
    assert found, f"{function} does not grant {action} in template.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML, with the long form of every intrinsic
    return path


def test_the_stock_out_path_works_under_the_aggregate_role(pipeline, stack):
    stock_out(stack, "sku-1")
    pipeline.drain()
    assert sold_out(stack) == {"sku-1"}
    assert pipeline.poller.stats.sent_to_failure_queue == 0


def test_without_put_item_the_stock_out_path_fails(monkeypatch, tmp_path):
    broken = without_action("dynamodb:PutItem", "AggregateFunction", tmp_path / "template.json")
    with moto_stack(monkeypatch, broken) as stack:
        pipeline = Pipeline(stack)
        stock_out(stack, "sku-1")
        pipeline.drain()
        assert sold_out(stack) == set()
        assert pipeline.poller.stats.retries >= 1  # AccessDenied: the batch failed and was retried
        assert pipeline.poller.stats.sent_to_failure_queue == 1


def test_a_function_may_do_only_what_its_role_allows(stack):
    items_table = stack.names[settings.ITEMS_TABLE.logical_id]
    with aws.as_identity(stack.identities.functions["recommend"]):
        dynamodb = aws.client("dynamodb")
    with pytest.raises(ClientError, match="not authorized to perform: dynamodb:Scan"):
        dynamodb.scan(TableName=items_table)
    with aws.as_identity(stack.identities.functions["snapshot"]):
        snapshot_dynamodb = aws.client("dynamodb")
    with pytest.raises(ClientError, match="not authorized to perform: dynamodb:Scan"):
        snapshot_dynamodb.scan(TableName=items_table)
    with aws.as_identity(stack.identities.functions["snapshot"]):
        s3 = aws.client("s3")
    bucket = stack.names[settings.ARTIFACTS_BUCKET.logical_id]
    s3.put_object(Bucket=bucket, Key="snapshots/x.msgpack", Body=b"x")  # its prefix
    with pytest.raises(ClientError, match="AccessDenied"):  # S3 checks the key: not its prefix
        s3.put_object(Bucket=bucket, Key="models/x/model.onnx", Body=b"x")
    assert aws.client("dynamodb").scan(TableName=items_table)["Count"] >= 0  # the administrator may


def test_every_function_has_a_role_built_from_the_template(stack):
    roles = stack.identities.policies
    assert set(roles) == {"collect", "aggregate", "features", "snapshot", "recommend", "guardrail", "edge",
                          "edgelogs", "archive", "firehose-archive"}  # the last: Firehose's role (emulated)
    aggregate = {a for s in roles["aggregate"] for a in
                 ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"dynamodb:PutItem", "kinesis:GetRecords", "sqs:SendMessage*"} <= aggregate
    assert "dynamodb:UpdateItem" not in aggregate, "the sold-out log is written with conditional puts only"
    snapshot = {a for s in roles["snapshot"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "dynamodb:Scan" not in snapshot, "the snapshot job reads only what it publishes"


def test_the_archive_reads_its_key_and_firehose_writes_the_archive_under_their_roles(stack):
    # Who else may not is the template's (test_template: moto checks actions, not resources).
    key, bucket = stack.names["ArchiveKeySecret"], stack.names["ArchiveBucket"]
    with aws.as_identity(stack.identities.functions["archive"]):
        aws.client("secretsmanager").get_secret_value(SecretId=key)
    with aws.as_identity(stack.identities.functions["firehose-archive"]):
        aws.client("s3").put_object(Bucket=bucket, Key="events/dt=2026-12-05/hour=08/x.gz", Body=b"")


def test_the_edge_may_send_its_counts_to_the_home_region(stack):
    with aws.as_identity(stack.identities.functions["edge"]):
        cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_data(Namespace="RealtimePersonalization", MetricData=[
        {"MetricName": "Requests", "Value": 3, "Dimensions": [
            {"Name": "service", "Value": "edge"}, {"Name": "variant", "Value": "challenger"},
            {"Name": "scope", "Value": "global"}]}])
    with aws.as_identity(stack.identities.functions["features"]):
        other = aws.client("cloudwatch")
    with pytest.raises(ClientError, match="not authorized"):
        other.put_metric_data(Namespace="RealtimePersonalization", MetricData=[{"MetricName": "x", "Value": 1}])


def test_the_edge_may_read_its_flags_from_a_policy_attached_to_its_role(stack):
    """The flags permission lives in EdgeFlagsPolicy (an AWS::IAM::Policy on EdgeRole; in the
    role it closed a dependency cycle): the local IAM attaches it as AWS does."""
    from infra.local.iam import POINTER_KEY

    edge = {a for s in stack.identities.policies["edge"]
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"} <= edge
    with aws.as_identity(stack.identities.functions["edge"]):
        s3 = aws.client("s3")
    s3.get_object(Bucket=stack.names["ArtifactsBucket"], Key=POINTER_KEY)  # the local flags' pointer
    with aws.as_identity(stack.identities.functions["aggregate"]):  # a function that reads no flags
        other = aws.client("s3")
    with pytest.raises(ClientError):
        other.get_object(Bucket=stack.names["ArtifactsBucket"], Key=POINTER_KEY)
