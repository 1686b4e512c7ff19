"""``make replay-failures ENV=local|dev|prod``: re-drive what the events trigger gave up on.

When a batch keeps failing (DynamoDB down for longer than the retries, a bug outside the
per-record isolation), Lambda's event source mapping gives up on it after
``AggregateMaxRetries`` attempts, sends its range (shard, first and last sequence number)
to the on-failure queue and moves on. The stream keeps the records for 7 days. This reads
each recorded range back from the stream, invokes ``aggregate`` on it as a *replay* (the
records keep their sequence numbers; the rows that moved past the range remember which
part of it they never applied, see ``entities.Progress``), retries what fails, and deletes
the queue message only when the whole range is applied. Running it twice changes nothing.

``--env local`` acts on the running ``make serve`` (the handler runs in this process
against its embedded AWS); ``dev`` / ``prod`` find the stack's names in its CloudFormation
outputs and invoke the deployed function.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from infra.local import lambda_events
from infra.local.template import ROOT
from personalize.adapters import aws
from personalize.adapters.stream import KinesisStreamReader
from personalize.ingest.processor import REPLAY_EVENT_NAME

INVOKE_BYTES = 5 * 1024 * 1024  # under Lambda's 6 MB synchronous payload
INVOKE_RECORDS = 1000


@dataclass
class ReplayReport:
    ranges: int = 0
    replayed: int = 0  # ranges fully applied (message deleted)
    records: int = 0
    expired: int = 0  # ranges no longer (entirely) in the stream: kept in the queue
    failed: int = 0  # ranges that still failed after the retries: kept in the queue
    details: list[str] = field(default_factory=list)


def read_range(kinesis, stream_name: str, shard_id: str, start: str, end: str) -> list[dict] | None:
    """The records of [start, end]; None if the stream no longer holds the start of the range."""
    return KinesisStreamReader(client=kinesis).read_range(stream_name, shard_id, start, end)


def chunks(records: list[dict]):
    chunk, size = [], 0
    for record in records:
        n = len(record["Data"]) * 4 // 3 + 512
        if chunk and (len(chunk) == INVOKE_RECORDS or size + n > INVOKE_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += n
    if chunk:
        yield chunk


def replay_event(records: list[dict], shard_id: str, stream_arn: str) -> dict:
    event = lambda_events.kinesis_event(records, shard_id, stream_arn)
    for record in event["Records"]:
        record["eventName"] = REPLAY_EVENT_NAME
    return event


def replay_records(invoke: Callable[[dict], dict], records: list[dict], shard_id: str, stream_arn: str,
                   attempts: int = 10) -> bool:
    """Invoke ``aggregate`` on the records in order, retrying from the lowest failed one."""
    for chunk in chunks(records):
        pending = chunk
        for _ in range(attempts):
            try:
                response = invoke(replay_event(pending, shard_id, stream_arn)) or {}
                failures = [int(f["itemIdentifier"]) for f in response.get("batchItemFailures", [])]
            except Exception:  # noqa: BLE001 - the whole invocation failed: again
                continue
            if not failures:
                break
            lowest = min(failures)
            pending = [r for r in pending if int(r["SequenceNumber"]) >= lowest]
        else:
            return False
    return True


def replay_failures(sqs, queue_url: str, kinesis, stream_name: str, invoke: Callable[[dict], dict],
                    max_messages: int = 1000) -> ReplayReport:
    report = ReplayReport()
    seen = 0
    while seen < max_messages:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       VisibilityTimeout=300).get("Messages", [])
        if not messages:
            break
        for message in messages:
            seen += 1
            info = json.loads(message["Body"]).get("KinesisBatchInfo")
            if not info:
                report.details.append(f"not a Kinesis failure record: {message['Body'][:200]}")
                continue
            report.ranges += 1
            shard, start, end = info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"]
            records = read_range(kinesis, stream_name, shard, start, end)
            if records is None:
                report.expired += 1
                report.details.append(f"{shard} {start}..{end}: no longer in the stream")
                continue
            if replay_records(invoke, records, shard, info["streamArn"]):
                report.replayed += 1
                report.records += len(records)
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                report.details.append(f"{shard} {start}..{end}: {len(records)} records replayed")
            else:
                report.failed += 1
                report.details.append(f"{shard} {start}..{end}: still failing; kept in the queue")
    return report


def _local():
    state = json.loads((ROOT / "build" / "local-stack.json").read_text())
    os.environ.update(AWS_ENDPOINT_URL=state["aws_endpoint"], AWS_DEFAULT_REGION=state["region"])
    creds = state.get("aws_credentials") or {}
    os.environ.setdefault("AWS_ACCESS_KEY_ID", creds.get("access_key_id", "local"))
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", creds.get("secret_access_key", "local"))
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
    from infra.local import handlers
    from personalize import settings

    names = state["resources"]
    for resource in settings.FUNCTION_RESOURCES["AggregateFunction"]:
        os.environ[resource.env] = names[resource.logical_id]
    aws.reset()
    aggregate = handlers.load("aggregate")
    return (names[settings.STREAM_FAILURE_QUEUE.logical_id], names[settings.EVENTS_STREAM.logical_id],
            lambda event: aggregate.lambda_handler(event, lambda_events.context("aggregate")))


def _deployed(env: str):
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())[env]
    os.environ["AWS_DEFAULT_REGION"] = config["deploy"]["parameters"]["region"]
    stack = config["global"]["parameters"]["stack_name"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in aws.client("cloudformation")
               .describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
    function = outputs["AggregateFunctionName"]

    def invoke(event: dict) -> dict:
        response = aws.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event).encode())
        payload = json.loads(response["Payload"].read() or b"{}")
        if response.get("FunctionError"):
            raise RuntimeError(f"aggregate failed: {payload}")
        return payload

    return outputs["StreamFailureQueueUrl"], outputs["EventsStreamName"], invoke


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    args = parser.parse_args()
    queue_url, stream, invoke = _local() if args.env == "local" else _deployed(args.env)
    report = replay_failures(aws.client("sqs"), queue_url, aws.client("kinesis"), stream, invoke)
    for line in report.details:
        print(line)
    print(f"ranges {report.ranges}: replayed {report.replayed} ({report.records} records), "
          f"no longer in the stream {report.expired}, still failing {report.failed}")
    raise SystemExit(1 if report.failed or report.expired else 0)


if __name__ == "__main__":
    main()
