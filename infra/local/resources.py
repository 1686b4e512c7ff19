"""Create the template's data resources (tables, stream, queues, buckets) in whatever AWS
the boto3 clients point at: moto in-process (tests) or the moto server (local stack).

Properties are read from template.yaml itself, so the local tables have the deployed keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from personalize import settings
from personalize.adapters import aws

from . import template


@dataclass
class LocalResources:
    names: dict[str, str] = field(default_factory=dict)  # logical id -> physical name or URL
    arns: dict[str, str] = field(default_factory=dict)
    signing_key: str = ""
    origin_token: str = ""  # what the local front adds as CloudFront would (x-origin-verify)
    identities: object | None = None  # iam.Identities: the administrator's and each function's credentials
    limits: object | None = None  # aws_limits.AwsLimitsFront in front of an in-process moto (tests)

    def admin_env(self) -> dict[str, str]:
        """Environment for code acting as the administrator (the stack itself, operators, tests)."""
        admin = self.identities.admin
        return {"AWS_ACCESS_KEY_ID": admin.access_key_id, "AWS_SECRET_ACCESS_KEY": admin.secret_access_key}

    def env(self) -> dict[str, str]:
        """The environment variables functions read (settings.Resource.env)."""
        out = {}
        for resource in vars(settings).values():
            if isinstance(resource, settings.Resource) and resource.logical_id in self.names:
                out[resource.env] = self.names[resource.logical_id]
        out["CATALOGUE_REFRESH_S"] = "1"  # the local snapshot runs every few seconds: membership follows
        if "RolloutApplication" in self.names:
            out.update(FLAGS_SOURCE="local", APPCONFIG_APPLICATION=self.names["RolloutApplication"],
                       APPCONFIG_PROFILE=self.names["RolloutProfile"], MODELS_DIR=str(template.ROOT / "models"),
                       AGGREGATE_FUNCTION="aggregate")  # the console's CloudWatch queries name it
        return out

    def serving_config(self):
        """The edge's config file as the local stack bakes it (local flags source)."""
        from personalize.serving.wiring import ServingConfig

        return ServingConfig(
            home_region="us-east-1", features_table=self.names["FeaturesTable"],
            artifacts_bucket=self.names["ArtifactsBucket"], signing_secret=self.names["SigningKeySecret"],
            flags={"source": "local", "bucket": self.names["ArtifactsBucket"],
                   "application_id": self.names["RolloutApplication"], "profile_id": self.names["RolloutProfile"]},
            # Faster than deployed: the local schedules run every second or two. The flags are
            # not: the local AppConfig refuses polls faster than AWS's (15 s).
            default_champion=settings.DEFAULT_CHAMPION, snapshot_refresh_s=1.0)

    def fallback_items(self, n: int = 100) -> list[str]:
        """The popular items a bundle would carry, from the newest snapshot (as make build does)."""
        from personalize.adapters.artifacts import S3Artifacts
        from personalize.serving import degraded
        from personalize.serving.snapshots import ItemSnapshot

        artifacts = S3Artifacts(self.names["ArtifactsBucket"])
        pointer = artifacts.pointer_if_changed(None)
        return degraded.popular_list(ItemSnapshot.decode(artifacts.get(pointer.key)), n) if pointer else []

    def flag_admin(self):
        """The flags admin against the local AppConfig (``appconfig_fake``: deployments and the
        data API as AWS runs them; moto has neither)."""
        from personalize.adapters import appconfig

        return appconfig.local_admin(self.names["ArtifactsBucket"], self.names["RolloutApplication"],
                                     self.names["RolloutProfile"])

    def deploy_flags(self, document: dict) -> int:
        """An all-at-once AppConfig deployment of ``document`` (a kill's path: whatever is in
        progress is stopped first), locally."""
        from personalize.adapters.appconfig import ALL_AT_ONCE

        return int(self.flag_admin().deploy(document, ALL_AT_ONCE, "local deployment"))


def create_all(prefix: str = "local") -> LocalResources:
    created = LocalResources()
    appconfig_setup, first_deployments = [], []  # AppConfig's, once its bucket exists; deploys last
    for logical_id, resource in template.resources().items():
        kind = resource["Type"]
        props = resource.get("Properties", {})
        name = f"{prefix}-{logical_id}"
        if kind in ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable"):
            _table(name, props)
            created.names[logical_id] = name
            created.arns[logical_id] = f"arn:aws:dynamodb:{_region()}:123456789012:table/{name}"
        elif kind == "AWS::Kinesis::Stream":
            client = aws.client("kinesis")
            mode = props.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
            if mode == "ON_DEMAND":
                client.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
            else:
                client.create_stream(StreamName=name, ShardCount=props.get("ShardCount", 1))
            _wait_stream(client, name)
            created.names[logical_id] = name
            created.arns[logical_id] = client.describe_stream_summary(StreamName=name)[
                "StreamDescriptionSummary"]["StreamARN"]
        elif kind == "AWS::SQS::Queue":
            url = aws.client("sqs").create_queue(QueueName=name)["QueueUrl"]
            created.names[logical_id] = url
            created.arns[logical_id] = f"arn:aws:sqs:{_region()}:123456789012:{name}"
        elif kind == "AWS::S3::Bucket":
            bucket = name.lower()
            aws.client("s3").create_bucket(Bucket=bucket)
            if props.get("VersioningConfiguration", {}).get("Status") == "Enabled":
                aws.client("s3").put_bucket_versioning(Bucket=bucket,
                                                       VersioningConfiguration={"Status": "Enabled"})
            created.names[logical_id] = bucket
        elif kind == "AWS::SecretsManager::Secret":
            import secrets

            value = secrets.token_urlsafe(32)
            if logical_id == settings.SIGNING_KEY_SECRET.logical_id:
                created.signing_key = value
            elif logical_id == settings.ORIGIN_VERIFY_SECRET.logical_id:
                created.origin_token = value
            arn = aws.client("secretsmanager").create_secret(Name=f"{prefix}/{logical_id}",
                                                             SecretString=value)["ARN"]
            created.names[logical_id] = arn
        elif kind == "AWS::AppConfig::Application":
            created.names[logical_id] = aws.client("appconfig").create_application(Name=name)["Id"]
        elif kind == "AWS::AppConfig::Environment":
            created.names[logical_id] = "local"  # appconfig.local_admin's environment
        elif kind == "AWS::AppConfig::ConfigurationProfile":
            created.names[logical_id] = aws.client("appconfig").create_configuration_profile(
                ApplicationId=created.names[props["ApplicationId"]["Ref"]], Name=props["Name"],
                LocationUri=props["LocationUri"], Type=props.get("Type", "AWS.Freeform"))["Id"]
            appconfig_setup.append(lambda p=props, lid=logical_id: _local_appconfig(created).create_profile(
                created.names[lid], p.get("Validators", [])))
        elif kind == "AWS::AppConfig::DeploymentStrategy":
            appconfig_setup.append(lambda p=props, lid=logical_id: _local_appconfig(created).create_strategy(
                lid, p["DeploymentDurationInMinutes"], p["FinalBakeTimeInMinutes"], p["GrowthFactor"],
                p.get("GrowthType", "LINEAR")))
        elif kind == "AWS::AppConfig::HostedConfigurationVersion":
            import json

            first_deployments.append(lambda p=props, lid=logical_id: created.names.__setitem__(
                lid, str(created.deploy_flags(json.loads(p["Content"])))))
    for step in appconfig_setup + first_deployments:
        step()
    # A new stack's journal starts now: the snapshot job's first run need not read an hour of
    # empty journal partitions (about a thousand Queries under moto: seconds per test).
    from personalize.serving import snapshot_job

    aws.client("s3").put_object(Bucket=created.names["ArtifactsBucket"], Key=snapshot_job.STATE_KEY,
                                Body=snapshot_job.new_stack_state(int(time.time() * 1000) - 60_000))
    return created


def _local_appconfig(created: LocalResources):
    from personalize.adapters import appconfig

    return appconfig.local_world(created.names["ArtifactsBucket"])


def create_with_roles(prefix: str = "local", template_path=template.TEMPLATE) -> LocalResources:
    """The resources, then the administrator and every function's role (iam.setup), with
    the policies of ``template_path``. Call before IAM is enforced; afterwards act as the
    administrator (``admin_env``)."""
    from . import iam

    created = create_all(prefix)
    created.identities = iam.setup(created.names, created.arns, template_path)
    return created


def _region() -> str:
    return aws.client("sts").meta.region_name


def _table(name: str, props: dict) -> None:
    client = aws.client("dynamodb")
    client.create_table(
        TableName=name,
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
    )
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        client.update_time_to_live(TableName=name, TimeToLiveSpecification={
            "AttributeName": ttl["AttributeName"], "Enabled": True})


def _wait_stream(client, name: str) -> None:
    for _ in range(100):
        status = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.05)
