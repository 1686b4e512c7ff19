"""Lambda event payloads built the way AWS builds them, for in-process invocations."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass
class FakeContext:
    """The parts of the Lambda context Powertools reads."""

    function_name: str = "local"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:local"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def context(name: str) -> FakeContext:
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    return FakeContext(function_name=name, invoked_function_arn=arn, aws_request_id=str(uuid.uuid4()))


def kinesis_event(records: list[dict], shard_id: str, stream_arn: str) -> dict:
    """The Kinesis trigger's event for records as GetRecords returns them."""
    out = []
    for r in records:
        arrival = r.get("ApproximateArrivalTimestamp")
        out.append({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r["PartitionKey"],
                "sequenceNumber": r["SequenceNumber"],
                "data": base64.b64encode(r["Data"]).decode(),
                "approximateArrivalTimestamp": arrival.timestamp() if arrival is not None else 0.0,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{r['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/local",
            "awsRegion": "us-east-1",
            "eventSourceARN": stream_arn,
        })
    return {"Records": out}


def http_api_event(method: str, path: str, body: bytes | str | None = None, headers: dict | None = None,
                   query: dict | None = None, path_parameters: dict | None = None) -> dict:
    """An API Gateway HTTP API (payload 2.0) event."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    raw = body.encode() if isinstance(body, str) else body
    is_text = True
    if raw is not None:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            is_text = False
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}),
        "headers": headers,
        "queryStringParameters": query or None,
        "pathParameters": path_parameters,
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": headers.get("user-agent", "")},
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "timeEpoch": 0,
        },
        "body": None if raw is None else (text if is_text else base64.b64encode(raw).decode()),
        "isBase64Encoded": raw is not None and not is_text,
    }


def response_json(response: dict) -> dict:
    body = response.get("body") or "{}"
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body)
    return json.loads(body)
