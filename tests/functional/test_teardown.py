"""``make delete`` and ``make delete-edge-leftovers``, up to the API calls: moto for what it
models, botocore's Stubber for what it does not (CloudFormation's delete and waiter, a
Lambda@Edge function whose replicas CloudFront still holds), and the order of operations."""

import io
import json
import zipfile

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra import teardown
from personalize import regions

STACK = "shop-dev"
REGION = "us-east-1"


class Recorder:
    """Clients per (service, region), each call recorded in order as "service:Operation"."""

    def __init__(self, overrides: dict | None = None):
        self.calls: list[str] = []
        self.clients: dict = {}
        self.overrides = overrides or {}

    def __call__(self, service: str, region: str | None = None):
        key = (service, region or REGION)
        if key not in self.clients:
            client = self.overrides.get(service) or boto3.client(service, region_name=region or REGION)
            client.meta.events.register_first("before-call.*.*", self._record(service))
            self.clients[key] = client
        return self.clients[key]

    def _record(self, service):
        def hook(model, **_):
            self.calls.append(f"{service}:{model.name}")
        return hook

    def index(self, call: str) -> int:
        return next(i for i, c in enumerate(self.calls) if c == call)


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("app.py", "def lambda_handler(e, c): return e\n")
    return buffer.getvalue()


def build_stack() -> teardown.StackInfo:
    """The stack's stateful resources, as moto holds them, and its resource list."""
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    lam = boto3.client("lambda", region_name=REGION)
    for name in ("shop-dev-collect", "shop-dev-snapshot", f"{STACK}-edge"):
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=role["Role"]["Arn"],
                            Handler="app.lambda_handler", Code={"ZipFile": _zip()})
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    for table in (f"{STACK}-features", "shop-dev-ItemsTable"):
        dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    secrets = boto3.client("secretsmanager", region_name=REGION)
    secret = secrets.create_secret(Name=f"{STACK}/cookie-signing-key", SecretString="k",
                                   AddReplicaRegions=[{"Region": "eu-west-1"}, {"Region": "ap-southeast-1"}])
    s3 = boto3.client("s3", region_name=REGION)
    bucket = f"{STACK}-artifacts-123456789012"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for n in range(3):
        s3.put_object(Bucket=bucket, Key="snapshots/latest.json", Body=f"v{n}".encode())
        s3.put_object(Bucket=bucket, Key=f"models/ranker/v{n}/model.onnx", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="snapshots/latest.json")  # a delete marker too
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "OnlyThePublisherWritesModels", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObjectVersion",
        "Resource": f"arn:aws:s3:::{bucket}/models/*"}]}))
    return teardown.StackInfo(STACK, REGION, "UPDATE_COMPLETE", {"EdgeFunctionName": f"{STACK}-edge"}, [
        ("CollectFunction", "AWS::Lambda::Function", "shop-dev-collect"),
        ("SnapshotFunction", "AWS::Lambda::Function", "shop-dev-snapshot"),
        ("EdgeFunction", "AWS::Lambda::Function", f"{STACK}-edge"),
        ("FeaturesTable", "AWS::DynamoDB::GlobalTable", f"{STACK}-features"),
        ("ItemsTable", "AWS::DynamoDB::Table", "shop-dev-ItemsTable"),
        ("SigningKeySecret", "AWS::SecretsManager::Secret", secret["ARN"]),
        ("ArtifactsBucket", "AWS::S3::Bucket", bucket),
    ])


def stubbed_cloudformation(deleted: bool = True):
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    stub = Stubber(cloudformation)
    stub.add_response("delete_stack", {}, {"StackName": STACK})
    if deleted:  # the waiter's poll: the stack is gone
        stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {STACK} does not exist")
    stub.activate()
    return cloudformation, stub


def test_delete_stops_writers_backs_up_removes_replicas_empties_the_bucket_then_deletes_the_stack():
    with mock_aws():
        info = build_stack()
        cloudformation, stub = stubbed_cloudformation()
        client = Recorder({"cloudformation": cloudformation})
        report = teardown.Teardown(client).run(info, "dev")
        stub.assert_no_pending_responses()
        calls = client.calls
        # nothing writes any more, then the data is kept, then replicas before the primary,
        # then the bucket (policy first), then the stack
        last_throttle = max(i for i, c in enumerate(calls) if c == "lambda:PutFunctionConcurrency")
        assert last_throttle < client.index("dynamodb:CreateBackup") < client.index(
            "secretsmanager:RemoveRegionsFromReplication") < client.index("s3:DeleteBucketPolicy") < client.index(
            "s3:DeleteObjects") < client.index("cloudformation:DeleteStack")
        lam = boto3.client("lambda", region_name=REGION)
        for name in ("shop-dev-collect", "shop-dev-snapshot"):
            assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 0
        assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=f"{STACK}-edge")
        secret = boto3.client("secretsmanager", region_name=REGION).describe_secret(
            SecretId=f"{STACK}/cookie-signing-key")
        assert not secret.get("ReplicationStatus")
        versions = boto3.client("s3").list_object_versions(Bucket=f"{STACK}-artifacts-123456789012")
        assert not versions.get("Versions") and not versions.get("DeleteMarkers")
        backups = boto3.client("dynamodb", region_name=REGION).list_backups()["BackupSummaries"]
        assert {b["TableName"] for b in backups} == {f"{STACK}-features", "shop-dev-ItemsTable"}
        kept = "\n".join(report.kept)
        assert "delete-backup" in kept and "make delete-edge-leftovers ENV=dev" in kept
        assert "PURGE_SECRETS=1" in kept


def test_the_stack_is_described_from_its_outputs_and_every_page_of_resources():
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    with Stubber(cloudformation) as stub:
        stub.add_response("describe_stacks", {"Stacks": [{
            "StackName": STACK, "StackStatus": "UPDATE_COMPLETE", "CreationTime": "2026-01-01T00:00:00Z",
            "Outputs": [{"OutputKey": "EdgeFunctionName", "OutputValue": f"{STACK}-edge"}]}]}, {"StackName": STACK})
        stub.add_response("list_stack_resources", {"NextToken": "t", "StackResourceSummaries": [{
            "LogicalResourceId": "ArtifactsBucket", "PhysicalResourceId": "b", "ResourceType": "AWS::S3::Bucket",
            "LastUpdatedTimestamp": "2026-01-01T00:00:00Z", "ResourceStatus": "CREATE_COMPLETE"}]},
            {"StackName": STACK})
        stub.add_response("list_stack_resources", {"StackResourceSummaries": [{
            "LogicalResourceId": "ItemsTable", "PhysicalResourceId": "t", "ResourceType": "AWS::DynamoDB::Table",
            "LastUpdatedTimestamp": "2026-01-01T00:00:00Z", "ResourceStatus": "CREATE_COMPLETE"}]},
            {"StackName": STACK, "NextToken": "t"})
        info = teardown.describe(cloudformation, STACK)
    assert info.of_type("AWS::S3::Bucket") == [("ArtifactsBucket", "b")]
    assert info.of_type("AWS::DynamoDB::Table") == [("ItemsTable", "t")]
    assert info.edge_function == f"{STACK}-edge"
    with Stubber(cloudformation) as stub:
        stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {STACK} does not exist")
        assert teardown.describe(cloudformation, STACK) is None


def _gone_stack():
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    stub = Stubber(cloudformation)
    stub.add_client_error("describe_stacks", "ValidationError", f"Stack with id {STACK} does not exist")
    stub.activate()
    return cloudformation


def test_edge_leftovers_wait_for_cloudfront_to_drop_the_replicas_then_go_with_their_log_groups():
    with mock_aws():
        from personalize.adapters.logs import LogGroups, edge_log_group

        for region in regions.EDGE_EXECUTION_REGIONS[:3]:
            LogGroups().keep(edge_log_group(f"{STACK}-edge"), region, 30)
        # While CloudFront holds replicas, Lambda refuses (moto does not model this: stubbed).
        lam = boto3.client("lambda", region_name=REGION)
        with Stubber(lam) as stub:
            stub.add_client_error("delete_function", "InvalidParameterValueException",
                                  f"Lambda was unable to delete arn:aws:lambda:us-east-1:123456789012:function:"
                                  f"{STACK}-edge:1 because it is a replicated function.")
            client = Recorder({"cloudformation": _gone_stack(), "lambda": lam})
            code, lines = teardown.delete_edge_leftovers(client, STACK)
        assert code == teardown.EX_TEMPFAIL and "run this again later" in lines[-1]
        assert not any(c.startswith("logs:") for c in client.calls)  # the groups stay while replicas may write
        # Hours later: the function goes, then its groups in every execution region.
        build_lambda = boto3.client("lambda", region_name=REGION)
        role = boto3.client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        build_lambda.create_function(FunctionName=f"{STACK}-edge", Runtime="python3.12", Role=role,
                                     Handler="app.lambda_handler", Code={"ZipFile": _zip()})
        client = Recorder({"cloudformation": _gone_stack()})
        code, lines = teardown.delete_edge_leftovers(client, STACK, purge_secrets=True)
        assert code == 0
        assert client.index("lambda:DeleteFunction") < client.index("logs:DeleteLogGroup")
        assert sum(c == "logs:DeleteLogGroup" for c in client.calls) == len(regions.EDGE_EXECUTION_REGIONS)
        for region in regions.EDGE_EXECUTION_REGIONS[:3]:
            assert not boto3.client("logs", region).describe_log_groups(
                logGroupNamePrefix=edge_log_group(f"{STACK}-edge"))["logGroups"]
        assert "deleted in 3 regions" in "\n".join(lines)


def test_edge_leftovers_refuse_while_the_stack_still_uses_the_function():
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    with Stubber(cloudformation) as stub:
        stub.add_response("describe_stacks", {"Stacks": [{"StackName": STACK, "StackStatus": "UPDATE_COMPLETE",
                                                          "CreationTime": "2026-01-01T00:00:00Z"}]},
                          {"StackName": STACK})
        client = Recorder({"cloudformation": cloudformation})
        code, lines = teardown.delete_edge_leftovers(client, STACK)
    assert code == 2 and "make delete" in lines[0]
    assert client.calls == ["cloudformation:DescribeStacks"]


def test_delete_refuses_without_the_stacks_name_typed_out(monkeypatch, capsys):
    monkeypatch.setattr(teardown, "describe", lambda cloudformation, stack: teardown.StackInfo(stack, REGION, "X"))
    monkeypatch.setattr(teardown.Teardown, "run", lambda *a, **k: pytest.fail("must not delete"))
    assert teardown.main(["delete", "--env", "dev"]) == 2
    assert "CONFIRM=rt-personalization-dev" in capsys.readouterr().err
    assert teardown.main(["delete", "--env", "dev", "--confirm", "rt-personalization-prod"]) == 2
