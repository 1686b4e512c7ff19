"""The archive's Kinesis Data Firehose delivery stream, emulated for the local stack (moto has
none): read the events stream as its second consumer, hand each batch to the archive
function as Firehose's data transformation does, check its answer as Firehose does, and
write what it returns to the archive bucket as the template's delivery stream says
(``ArchiveDeliveryStream``: GZIP'd JSON lines under the prefix its partition keys fill,
``ProcessingFailed`` records under the error prefix).

Reading: a ``KinesisPoller`` with Firehose's pace, one GetRecords a second per shard (the
rest of the shard's five reads a second are aggregate's). Delivery is at least once, as
Firehose's: a batch whose transformation or write failed is handed again (the poller's
retries), and one the function keeps failing goes, raw, to the error prefix. Buffering is
per batch here (deployed: up to 64 MiB or 5 minutes per partition): the same records, in
more objects. Acts with the delivery role's credentials (the local IAM enforces its policy).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import itertools
import json
import re
import uuid

from personalize.adapters import aws

from . import lambda_events, template
from .poller import KinesisPoller

RESULTS = ("Ok", "Dropped", "ProcessingFailed")
_KEY = re.compile(r"!\{partitionKeyFromLambda:([A-Za-z0-9_]+)\}")


class DeliveryRefused(RuntimeError):
    """The transformation's answer broke Firehose's contract (the batch is retried)."""


class FirehoseArchive:
    READ_INTERVAL_S = 1.0  # Firehose reads each shard once a second

    def __init__(self, names: dict[str, str], arns: dict[str, str], transform, identity=None):
        config = template.resources()["ArchiveDeliveryStream"]["Properties"]
        destination = config["ExtendedS3DestinationConfiguration"]
        self.prefix = destination["Prefix"]
        self.error_prefix = destination["ErrorOutputPrefix"]
        assert destination["CompressionFormat"] == "GZIP" and destination["DynamicPartitioningConfiguration"]["Enabled"]
        self.bucket = names["ArchiveBucket"]
        self.transform = transform  # the archive function's handler: (event, context) -> answer
        self.identity = identity
        self.stream_name = names["EventsStream"]
        self.delivered = 0  # records written under the prefix
        self.failed = 0  # records written under the error prefix
        self.objects = 0
        self._sequence = itertools.count()
        self.poller = KinesisPoller(self.stream_name, arns["EventsStream"], self.deliver, max_retries=3,
                                    identity=identity, name="archive", read_interval_s=self.READ_INTERVAL_S,
                                    on_give_up=self._give_up)

    # --- one batch, as Firehose handles it ---
    def deliver(self, kinesis_event: dict, _context=None) -> dict:
        records = kinesis_event["Records"]
        event = {"invocationId": str(uuid.uuid4()), "deliveryStreamArn": f"arn:aws:firehose:us-east-1:"
                 f"123456789012:deliverystream/{self.stream_name}-archive", "sourceKinesisStreamArn":
                 kinesis_event["Records"][0]["eventSourceARN"], "region": "us-east-1", "records": [{
                     "recordId": r["kinesis"]["sequenceNumber"],
                     "approximateArrivalTimestamp": int(r["kinesis"]["approximateArrivalTimestamp"] * 1000),
                     "data": r["kinesis"]["data"],
                     "kinesisRecordMetadata": {"shardId": r["eventID"].split(":")[0],
                                               "partitionKey": r["kinesis"]["partitionKey"],
                                               "sequenceNumber": r["kinesis"]["sequenceNumber"],
                                               "approximateArrivalTimestamp": int(
                                                   r["kinesis"]["approximateArrivalTimestamp"] * 1000),
                                               "subsequenceNumber": 0}}
                     for r in records]}
        answer = self.transform(event, lambda_events.context("archive"))
        by_id = self._checked(event["records"], answer)
        partitions: dict[str, list[bytes]] = {}
        errors: list[bytes] = []
        for record in event["records"]:
            out = by_id[record["recordId"]]
            if out["result"] == "Ok":
                partitions.setdefault(self._prefix(out["metadata"]["partitionKeys"]), []).append(
                    base64.b64decode(out["data"]))
            elif out["result"] == "ProcessingFailed":
                errors.append(json.dumps({"rawData": record["data"], "errorCode": "Lambda.ProcessingFailed",
                                          "errorMessage": "the archive function refused the record",
                                          "attemptsMade": 1, "lambdaArn": "archive"}).encode() + b"\n")
        with aws.as_identity(self.identity):
            for prefix, lines in partitions.items():
                self._put(prefix, b"".join(lines))
                self.delivered += len(lines)
            if errors:
                self._put(self._error_prefix("processing-failed"), b"".join(errors))
                self.failed += len(errors)
        return {}

    def _give_up(self, records: list[dict]) -> None:
        """A batch the transformation kept failing: raw, under the error prefix (Firehose's
        processing-failed output), never dropped."""
        lines = [json.dumps({"rawData": base64.b64encode(r["Data"]).decode(), "errorCode": "Lambda.InvokeFailed",
                             "errorMessage": "the archive function failed on every attempt",
                             "sequenceNumber": r["SequenceNumber"]}).encode() + b"\n" for r in records]
        with aws.as_identity(self.identity):
            self._put(self._error_prefix("processing-failed"), b"".join(lines))
        self.failed += len(records)

    def _checked(self, sent: list[dict], answer: dict) -> dict[str, dict]:
        """Firehose's checks of a transformation's answer: every record back once, by id, with
        a valid result, its data base64, and partition keys for every Ok record."""
        got = (answer or {}).get("records")
        if not isinstance(got, list):
            raise DeliveryRefused("no records in the transformation's answer")
        by_id = {r.get("recordId"): r for r in got}
        if len(by_id) != len(got) or set(by_id) != {r["recordId"] for r in sent}:
            raise DeliveryRefused("the answer must name each record exactly once")
        for record in got:
            if record.get("result") not in RESULTS:
                raise DeliveryRefused(f"invalid result {record.get('result')!r}")
            if record["result"] == "Ok":
                keys = ((record.get("metadata") or {}).get("partitionKeys") or {})
                if set(_KEY.findall(self.prefix)) - set(keys):
                    raise DeliveryRefused("an Ok record without the prefix's partition keys")
                base64.b64decode(record.get("data") or "", validate=True)
        return by_id

    def _prefix(self, keys: dict[str, str]) -> str:
        return _KEY.sub(lambda m: keys[m.group(1)], self.prefix)

    def _error_prefix(self, kind: str) -> str:
        today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        return self.error_prefix.replace("!{firehose:error-output-type}", kind).replace(
            "!{timestamp:yyyy-MM-dd}", today)

    def _put(self, prefix: str, data: bytes) -> None:
        now = dt.datetime.now(dt.UTC)
        key = (f"{prefix}{self.stream_name}-archive-1-{now:%Y-%m-%d-%H-%M-%S}-"
               f"{next(self._sequence):06d}-{uuid.uuid4()}.gz")
        aws.client("s3").put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(data))
        self.objects += 1

    # --- operation ---
    def start(self) -> None:
        self.poller.start(idle_sleep_s=self.READ_INTERVAL_S)

    def stop(self) -> None:
        self.poller.stop()

    def drain(self, timeout_s: float = 30.0) -> None:
        self.poller.drain(timeout_s)


def read_archive(bucket: str, prefix: str = "events/") -> list[dict]:
    """Every archived event under ``prefix`` (tests, the learning loop's datasets)."""
    s3 = aws.client("s3")
    out: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            out += [json.loads(line) for line in body.splitlines() if line]
    return out
