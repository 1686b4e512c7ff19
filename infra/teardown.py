"""Tear a stack down cleanly: ``make delete ENV=dev CONFIRM=<stack>`` and, hours later,
``make delete-edge-leftovers ENV=dev``.

``sam delete`` alone fails on this stack: CloudFront removes a Lambda@Edge function's
replicas only hours after the distribution is gone and refuses to delete the function
meanwhile; a versioned bucket must be emptied (every version and delete marker) before it
can be deleted, and its policy denies deleting models to anyone but the publisher; a secret
replicated to other regions must lose its replicas before the primary can go. So ``delete``,
in this order:

1. refuses unless ``--confirm`` names the stack;
2. stops every writer: reserved concurrency 0 on each regional function (the stream
   trigger, the schedules and the API stop invoking them), so nothing refills the bucket
   or the tables while they are being removed;
3. takes an on-demand backup of each table (kept on purpose, listed at the end);
4. removes the replicas of each replicated secret (before the primary);
5. deletes the artifacts bucket's policy, then every object version and delete marker;
6. deletes the stack (the edge function is retained: ``DeletionPolicy: Retain``) and waits.

What is kept, on purpose or because AWS keeps it, is printed with the command that removes
it: the table backups, the retained edge function and its log groups in every edge execution
region (``delete-edge-leftovers``: it retries until CloudFront has removed the replicas),
the secrets' recovery window, the alarm topic's KMS key's deletion window.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infra import environments

EX_TEMPFAIL = 75  # "try again later" (sysexits.h): the edge's replicas are still there
REGIONAL_FUNCTION = "AWS::Lambda::Function"


@dataclass
class StackInfo:
    name: str
    region: str
    status: str
    outputs: dict[str, str] = field(default_factory=dict)
    resources: list[tuple[str, str, str]] = field(default_factory=list)  # (logical id, type, physical id)

    def of_type(self, kind: str) -> list[tuple[str, str]]:
        return [(logical, physical) for logical, t, physical in self.resources if t == kind and physical]

    @property
    def edge_function(self) -> str:
        return self.outputs.get("EdgeFunctionName") or f"{self.name}-edge"


@dataclass
class Report:
    steps: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def step(self, line: str) -> None:
        self.steps.append(line)
        print(f"- {line}", flush=True)


def describe(cloudformation, stack: str) -> StackInfo | None:
    """The stack's outputs and resources (None when it does not exist)."""
    try:
        [found] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except cloudformation.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    info = StackInfo(found["StackName"], cloudformation.meta.region_name, found["StackStatus"],
                     {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])})
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        for resource in page["StackResourceSummaries"]:
            info.resources.append((resource["LogicalResourceId"], resource["ResourceType"],
                                   resource.get("PhysicalResourceId", "")))
    return info


class Teardown:
    def __init__(self, client: Callable[..., object], report: Report | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client  # client(service, region=None)
        self.report = report or Report()
        self.sleep = sleep

    # 2. nothing writes while we remove
    def stop_writers(self, info: StackInfo) -> None:
        lam = self.client("lambda")
        edge = info.edge_function
        for logical, name in info.of_type(REGIONAL_FUNCTION):
            if name == edge:
                continue  # Lambda@Edge takes no reserved concurrency; the distribution goes first
            lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
            self.report.step(f"{logical}: concurrency 0 (nothing invokes it any more)")

    # 3. backups kept on purpose
    def back_up_tables(self, info: StackInfo) -> None:
        dynamodb = self.client("dynamodb")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        for kind in ("AWS::DynamoDB::Table", "AWS::DynamoDB::GlobalTable"):
            for logical, table in info.of_type(kind):
                backup = dynamodb.create_backup(TableName=table, BackupName=f"{table}-final-{stamp}"[:255])
                arn = backup["BackupDetails"]["BackupArn"]
                self.report.step(f"{logical}: backup {arn}")
                self.report.kept.append(f"table backup of {table} (restore: docs/operations.md; remove: "
                                        f"aws dynamodb delete-backup --region {info.region} --backup-arn {arn})")

    # 4. replicas before the primary
    def remove_secret_replicas(self, info: StackInfo) -> None:
        secrets = self.client("secretsmanager")
        for logical, arn in info.of_type("AWS::SecretsManager::Secret"):
            described = secrets.describe_secret(SecretId=arn)
            regions = [r["Region"] for r in described.get("ReplicationStatus", [])]
            if regions:
                secrets.remove_regions_from_replication(SecretId=arn, RemoveReplicaRegions=regions)
                self.report.step(f"{logical}: replicas removed from {', '.join(regions)}")

    # 5. versioned buckets emptied
    def empty_buckets(self, info: StackInfo) -> None:
        s3 = self.client("s3")
        for logical, bucket in info.of_type("AWS::S3::Bucket"):
            try:
                s3.delete_bucket_policy(Bucket=bucket)  # it denies deleting models/ to all but the publisher
            except s3.exceptions.ClientError as exc:
                if "NoSuchBucket" in str(exc):
                    continue
                raise
            removed = 0
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                keys = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                        for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
                for start in range(0, len(keys), 1000):
                    chunk = keys[start:start + 1000]
                    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
                    if answer.get("Errors"):
                        raise RuntimeError(f"{bucket}: could not delete {answer['Errors'][:3]}")
                    removed += len(chunk)
            self.report.step(f"{logical}: policy and {removed} object versions and delete markers removed")

    # 6. the stack itself
    def delete_stack(self, info: StackInfo, wait: bool = True) -> None:
        cloudformation = self.client("cloudformation")
        cloudformation.delete_stack(StackName=info.name)
        self.report.step(f"stack {info.name}: delete started")
        if wait:
            cloudformation.get_waiter("stack_delete_complete").wait(
                StackName=info.name, WaiterConfig={"Delay": 30, "MaxAttempts": 120})
            self.report.step(f"stack {info.name}: deleted (the distribution's removal takes most of it)")

    def kept_on_purpose(self, info: StackInfo, env: str) -> None:
        self.report.kept += [
            f"the edge function {info.edge_function} and its log groups /aws/lambda/us-east-1.{info.edge_function} in "
            f"every edge execution region: `make delete-edge-leftovers ENV={env}` once CloudFront has removed its "
            f"replicas (a few hours; it says when to try again)",
            "the secrets, in Secrets Manager's recovery window (a stack of the same name cannot be created "
            f"meanwhile): `make delete-edge-leftovers ENV={env} PURGE_SECRETS=1` deletes them for good",
            "the alarm topic's KMS key, in its deletion window (30 days; nothing to do)",
            "CloudWatch metrics (they expire on their own)",
        ]

    def run(self, info: StackInfo, env: str, backups: bool = True, wait: bool = True) -> Report:
        self.stop_writers(info)
        if backups:
            self.back_up_tables(info)
        self.remove_secret_replicas(info)
        self.empty_buckets(info)
        self.delete_stack(info, wait)
        self.kept_on_purpose(info, env)
        return self.report


# ---------------------------------------------------------------- hours later

def delete_edge_leftovers(client: Callable[..., object], stack: str, purge_secrets: bool = False,
                          execution_regions: tuple[str, ...] | None = None) -> tuple[int, list[str]]:
    """(exit code, lines): 0 done, EX_TEMPFAIL while CloudFront still holds the replicas."""
    from personalize import regions
    from personalize.adapters.logs import LogGroups, edge_log_group

    lines = []
    cloudformation = client("cloudformation")
    try:
        [found] = cloudformation.describe_stacks(StackName=stack)["Stacks"]
        if found["StackStatus"] != "DELETE_COMPLETE":
            return 2, [f"refused: stack {stack} still exists ({found['StackStatus']}); its distribution uses "
                       f"the edge function: `make delete` first"]
    except cloudformation.exceptions.ClientError as exc:
        if "does not exist" not in str(exc):
            raise
    function = f"{stack}-edge"
    lam = client("lambda")
    code = 0
    try:
        lam.delete_function(FunctionName=function)
        lines.append(f"edge function {function}: deleted (every version)")
    except lam.exceptions.ResourceNotFoundException:
        lines.append(f"edge function {function}: already gone")
    except lam.exceptions.InvalidParameterValueException as exc:
        if "replicated" not in str(exc):
            raise
        code = EX_TEMPFAIL
        lines.append(f"edge function {function}: CloudFront still holds its replicas (it removes them within a few "
                     f"hours of the distribution's deletion); run this again later")
    if code == 0:  # while replicas run they may still write: the groups go with the function
        log_groups = LogGroups(lambda region: client("logs", region))
        group = edge_log_group(function)
        gone = [r for r in (execution_regions or regions.EDGE_EXECUTION_REGIONS) if log_groups.delete(group, r)]
        lines.append(f"log group {group}: deleted in {len(gone)} regions ({', '.join(gone) or 'none was left'})")
    if purge_secrets:
        secrets = client("secretsmanager")
        for suffix in ("cookie-signing-key", "origin-verify-token"):
            name = f"{stack}/{suffix}"
            try:
                secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
                lines.append(f"secret {name}: deleted for good")
            except secrets.exceptions.ResourceNotFoundException:
                lines.append(f"secret {name}: already gone")
    return code, lines


def _client_factory(region: str):
    from personalize.adapters import aws

    return lambda service, r=None: aws.client(service, r or region)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    delete = sub.add_parser("delete")
    delete.add_argument("--env", required=True, choices=environments.names())
    delete.add_argument("--confirm", default="", help="the stack's name, typed out")
    delete.add_argument("--no-backup", action="store_true", help="no final backup of the tables")
    delete.add_argument("--no-wait", action="store_true")
    leftovers = sub.add_parser("leftovers")
    leftovers.add_argument("--env", required=True, choices=environments.names())
    leftovers.add_argument("--purge-secrets", action="store_true")
    args = parser.parse_args(argv)
    env = environments.load(args.env)
    client = _client_factory(env.region)
    if args.command == "leftovers":
        code, lines = delete_edge_leftovers(client, env.stack, args.purge_secrets)
        print("\n".join(lines))
        return code
    info = describe(client("cloudformation"), env.stack)
    if info is None:
        print(f"stack {env.stack} does not exist in {env.region}; leftovers: make delete-edge-leftovers ENV={args.env}")
        return 0
    if args.confirm != env.stack:
        print(f"refused: this deletes {env.stack} in {env.region} ({len(info.resources)} resources: the tables, the "
              f"stream, the bucket...). Run again with CONFIRM={env.stack}", file=sys.stderr)
        return 2
    report = Teardown(client).run(info, args.env, backups=not args.no_backup, wait=not args.no_wait)
    print("\nKept:")
    for line in report.kept:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
