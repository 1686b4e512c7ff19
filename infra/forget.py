"""``make forget USER=<shopper id> [ENV=local|dev|prod]``: erase a shopper (issue 22).

1. **Features**: the shopper's row in the features table (a global table: the deletion
   replicates to every replica the edges read).
2. **Archive**: every line of the shopper's pseudonym (``personalize.ingest.archive``, keyed
   by the archive's own secret) is removed from the objects under ``events/``, and every
   unreadable record under ``errors/`` whose raw bytes name the shopper; an object left empty
   is deleted. The bucket keeps no versions, so nothing of theirs remains to read.
3. **Ledger**: ``forgotten/<pseudonym>.json`` in the archive bucket. Events of the shopper still
   in flight (Firehose buffers up to 5 minutes; the stream keeps records for its retention)
   may land after the rewrite: every dataset built from the archive skips ledgered
   pseudonyms, and running this again removes them from the objects.

Retention otherwise: the archive expires objects after ``ArchiveRetentionDays``; the
Instacart datasets (``build/datasets/``) hold no shop's shopper. The cost: one read of every
archive object (a scan), one write per object that held the shopper.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import sys
import time
from dataclasses import dataclass

from infra.local.template import ROOT


@dataclass(frozen=True)
class Target:
    features_table: str
    archive_bucket: str
    archive_key_secret: str
    region: str | None = None


def target(env: str) -> Target:
    """Where ``env`` keeps its shoppers (points boto3 at the local stack for local)."""
    if env == "local":
        state = json.loads((ROOT / "build" / "local-stack.json").read_text())
        creds = state["aws_credentials"]
        os.environ.update(AWS_ENDPOINT_URL=state["aws_endpoint"], AWS_DEFAULT_REGION=state["region"],
                          AWS_ACCESS_KEY_ID=creds["access_key_id"], AWS_SECRET_ACCESS_KEY=creds["secret_access_key"])
        os.environ.pop("AWS_SESSION_TOKEN", None)
        names = state["resources"]
        return Target(names["FeaturesTable"], names["ArchiveBucket"], names["ArchiveKeySecret"], state["region"])
    from infra import ops

    outputs = ops.stack_outputs(env)
    return Target(outputs["FeaturesTableName"], outputs["ArchiveBucketName"], outputs["ArchiveKeySecretArn"],
                  outputs["_region"])


def forget(user_id: str, where: Target, now: float | None = None) -> dict:
    from personalize import keys
    from personalize.adapters import aws
    from personalize.adapters.secrets import SecretVersions
    from personalize.ingest import archive

    key, _ = SecretVersions(where.archive_key_secret, where.region, timeout_s=5.0).load()
    pseudonym = archive.pseudonym(user_id, key)
    s3 = aws.client("s3", where.region)
    # The ledger first: a run that fails midway still has every later dataset skip the shopper
    # (run it again to finish the erasure).
    s3.put_object(Bucket=where.archive_bucket, Key=f"forgotten/{pseudonym}.json",
                  Body=json.dumps({"pseudonym": pseudonym, "at": now or time.time()}).encode())
    pk, sk = keys.user_key(user_id)
    removed = aws.client("dynamodb", where.region).delete_item(
        TableName=where.features_table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ReturnValues="ALL_OLD")
    counts = {"features_row_deleted": bool(removed.get("Attributes")), "objects_read": 0, "objects_rewritten": 0,
              "objects_deleted": 0, "events_removed": 0, "unreadable_removed": 0}

    def archived_line(line: bytes) -> bool:  # one of the shopper's events (pseudonymised)
        if pseudonym.encode() not in line:
            return False
        try:
            event = json.loads(line)
        except ValueError:
            return False
        return isinstance(event, dict) and pseudonym in (event.get("user_id"), event.get("actor"))

    # A raw record names the shopper only as its user_id (or actor), exactly: never by a
    # substring (forgetting "bob" must not erase "bobby", nor "17" every timestamp).
    named = [re.compile(rb'"(?:user_id|actor)"\s*:\s*' + re.escape(json.dumps(user_id, ensure_ascii=escaped).encode())
                        + rb"\s*[,}]") for escaped in (True, False)]

    def unreadable_line(line: bytes) -> bool:  # a record Firehose could not transform, raw
        try:
            raw = base64.b64decode(json.loads(line).get("rawData") or "")
        except (ValueError, AttributeError):
            return False
        try:
            event = json.loads(raw)
            if isinstance(event, dict):
                return user_id in (event.get("user_id"), event.get("actor"))
        except (ValueError, UnicodeDecodeError):
            pass
        return any(pattern.search(raw) for pattern in named)

    for prefix, names_shopper, count in (("events/", archived_line, "events_removed"),
                                         ("errors/", unreadable_line, "unreadable_removed")):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=where.archive_bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                counts["objects_read"] += 1
                removed, emptied = _rewrite(s3, where.archive_bucket, item["Key"], names_shopper)
                if removed:
                    counts[count] += removed
                    counts["objects_deleted" if emptied else "objects_rewritten"] += 1
    return {"pseudonym": pseudonym, **counts}


def _rewrite(s3, bucket: str, key: str, names_shopper, attempts: int = 5) -> tuple[int, bool]:
    """The object without the shopper's lines: (lines removed, left empty and deleted). The
    write is conditional on the object being the one read (ETag): two erasures at once never
    write back what the other removed (the loser reads again)."""
    from botocore.exceptions import ClientError

    for _ in range(attempts):
        got = s3.get_object(Bucket=bucket, Key=key)
        lines = gzip.decompress(got["Body"].read()).splitlines(keepends=True)
        kept = [line for line in lines if not (line.strip() and names_shopper(line.strip()))]
        if len(kept) == len(lines):
            return 0, False
        emptied = not any(line.strip() for line in kept)
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b"".join(kept)), IfMatch=got["ETag"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                continue  # another erasure rewrote it meanwhile: read it again
            raise
        if emptied:
            s3.delete_object(Bucket=bucket, Key=key)  # emptied by this write: nothing to lose
        return len(lines) - len(kept), emptied
    raise RuntimeError(f"{key}: rewritten by others {attempts} times in a row; run make forget again")


def forgotten(bucket: str, region: str | None = None) -> set[str]:
    """The ledger: pseudonyms every dataset built from the archive must skip."""
    from personalize.adapters import aws

    out: set[str] = set()
    for page in aws.client("s3", region).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="forgotten/"):
        out |= {item["Key"][len("forgotten/"):-len(".json")] for item in page.get("Contents", [])}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    parser.add_argument("--user", required=True, help="the shopper's id, as the shop's rt_uid cookie names them")
    args = parser.parse_args(argv)
    if not args.user.strip():
        parser.error("--user is empty")
    print(json.dumps(forget(args.user, target(args.env))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
