"""AWS's limits in front of moto: the local stack and the tests meet the throughput limits
and item-size rules that moto does not enforce, from the same model as the adapters' fakes
(``personalize.adapters.limits``).

Every Kinesis and DynamoDB request passes through ``AwsLimitsFront`` before moto sees it:

* Kinesis PutRecords: records over their shard's 1,000 records/s or 1 MiB/s are taken out
  of the request and put back into moto's answer as failed entries
  (``ProvisionedThroughputExceededException``) with ``FailedRecordCount``: the call itself
  succeeds, as AWS's does. PutRecord over the limit raises; GetRecords over 5 calls/s or
  2 MB/s per shard raises.
* DynamoDB: per partition key value, 1,000 write units/s and 3,000 read units/s in AWS's
  unit arithmetic (a PutItem, UpdateItem or DeleteItem billed at the larger of the item
  before and after it; a Query at the sum of what it returns); a throttled request raises
  ``ProvisionedThroughputExceededException`` with its ``ThrottlingReasons``; BatchGetItem
  and BatchWriteItem hand the throttled keys back as unprocessed. An UpdateItem that would
  leave an item over 400 KB is refused (moto applies it).

Two ways in: ``wsgi(app)`` wraps the moto server's WSGI app (``moto_process``: one model for
every process of the local stack), and ``install(client)`` hooks one botocore client of an
in-process moto (``mock_aws``: the tests). ``AWS_LIMITS=off`` turns it off.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from personalize.adapters import limits
from personalize.adapters.limits import Clock, DynamoLimits, KinesisLimits, RealClock

ACCOUNT = "123456789012"
REGION = "us-east-1"


@dataclass
class Outcome:
    """What the front decided about one request: an error to answer at once, or the
    (possibly reduced) request for moto and what to do with moto's answer."""

    error: tuple[int, dict] | None = None
    body: dict | None = None  # the request to forward, when changed
    after: Callable[[dict], dict] | None = None


def _error(code: str, message: str, reasons: list | None = None, status: int = 400) -> tuple[int, dict]:
    body = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}
    if reasons:
        body["ThrottlingReasons"] = reasons
    return status, body


def _as_error(exc) -> tuple[int, dict]:
    error = exc.response["Error"]
    return _error(error["Code"], error["Message"], exc.response.get("ThrottlingReasons"))


class AwsLimitsFront:
    def __init__(self, clock: Clock | None = None, account: str = ACCOUNT, region: str = REGION):
        self.clock = clock or RealClock()
        self.account, self.region = account, region
        self.dynamo = DynamoLimits(self.clock, account=account, region=region)
        self.kinesis: dict[str, KinesisLimits] = {}
        self._lock = threading.RLock()

    def use_clock(self, clock: Clock) -> None:
        """Start over on another clock (a test's ``ManualClock``): fresh buckets."""
        with self._lock:
            self.clock = clock
            self.dynamo = DynamoLimits(clock, account=self.account, region=self.region)
            self.kinesis = {}

    # --- moto's state -------------------------------------------------------------------------
    def _stream(self, name: str) -> KinesisLimits | None:
        with self._lock:
            model = self.kinesis.get(name)
            if model is None:
                from moto.kinesis.models import kinesis_backends

                stream = kinesis_backends[self.account][self.region].streams.get(name)
                if stream is None:
                    return None
                shards = sorted((s for s in stream.shards.values() if s.is_open), key=lambda s: s.starting_hash)
                model = self.kinesis[name] = KinesisLimits([(s.starting_hash, s.ending_hash) for s in shards],
                                                           self.clock, name, self.account)
                model.shard_ids = [s.shard_id for s in shards]
            return model

    def _table(self, name: str):
        from moto.dynamodb.models import dynamodb_backends

        name = name.rsplit("/", 1)[-1]
        return dynamodb_backends[self.account][self.region].tables.get(name)

    def _item(self, table, key: dict):
        """moto's item for a low-level key, or None."""
        from moto.dynamodb.models.dynamo_type import DynamoType

        if table is None:
            return None
        try:
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            return table.get_item(hash_value, range_value)
        except Exception:  # noqa: BLE001 - a malformed key: moto answers it
            return None

    def _item_size(self, table, key: dict) -> int:
        item = self._item(table, key)
        return limits.item_size(item.to_json()["Attributes"]) if item is not None else 0

    @staticmethod
    def _pk(table, key_or_item: dict) -> str | None:
        if table is None or table.hash_key_attr not in key_or_item:
            return None
        (_, value), = key_or_item[table.hash_key_attr].items()
        return str(value)

    # --- the decision -------------------------------------------------------------------------
    def request(self, target: str, body: dict) -> Outcome:
        service, _, operation = target.partition(".")
        try:
            if service.startswith("Kinesis"):
                return getattr(self, f"_kinesis_{operation}", _pass)(body)
            if service.startswith("DynamoDB"):
                return getattr(self, f"_dynamo_{operation}", _pass)(body)
        except limits.ClientError as exc:
            return Outcome(error=_as_error(exc))
        return Outcome()

    # Kinesis
    def _kinesis_PutRecords(self, body: dict) -> Outcome:  # noqa: N802 - the API's names
        model = self._stream(body.get("StreamName") or str(body.get("StreamARN", "")).rsplit("/", 1)[-1])
        records = body.get("Records") or []
        if model is None or not records:
            return Outcome()
        answers = model.put_records([(r.get("PartitionKey", ""), len(_blob(r.get("Data", "")))) for r in records],
                                    [r.get("ExplicitHashKey") for r in records])
        if not any(answers):
            return Outcome()
        accepted = [r for r, a in zip(records, answers) if a is None]

        def after(response: dict | None) -> dict | None:
            if response is None:
                return None
            results = iter(response.get("Records", []))
            merged = [next(results) if a is None else dict(a) for a in answers]
            return {**response, "Records": merged,
                    "FailedRecordCount": sum(1 for r in merged if "ErrorCode" in r)}

        if not accepted:  # nothing reaches moto: AWS's answer, every record failed
            return Outcome(error=(200, after({"Records": [], "EncryptionType": "NONE"})))
        return Outcome(body={**body, "Records": accepted}, after=after)

    def _kinesis_PutRecord(self, body: dict) -> Outcome:  # noqa: N802
        model = self._stream(body.get("StreamName") or str(body.get("StreamARN", "")).rsplit("/", 1)[-1])
        if model is None:
            return Outcome()
        answer, = model.put_records([(body.get("PartitionKey", ""), len(_blob(body.get("Data", ""))))],
                                    [body.get("ExplicitHashKey")])
        if answer is not None:
            return Outcome(error=_error(answer["ErrorCode"], answer["ErrorMessage"]))
        return Outcome()

    def _kinesis_GetRecords(self, body: dict) -> Outcome:  # noqa: N802
        try:
            name, shard, _ = base64.b64decode(body.get("ShardIterator", "")).decode().split(":", 2)
        except (ValueError, UnicodeDecodeError):
            return Outcome()
        model = self._stream(name)
        if model is None or shard not in model.shard_ids:
            return Outcome()
        index = model.shard_ids.index(shard)
        model.get_records(index)  # raises when over 5 calls/s or 2 MB/s

        def after(response: dict | None) -> dict | None:
            if response is None:
                return None
            model.returned(index, sum(len(_blob(r.get("Data", ""))) + len(r.get("PartitionKey", ""))
                                      for r in response.get("Records", [])))
            return response

        return Outcome(after=after)

    # DynamoDB
    def _write(self, table_name: str, key: dict, new_size: int, operation: str) -> None:
        table = self._table(table_name)
        pk = self._pk(table, key)
        if pk is None:
            return
        self.dynamo.check_size(new_size, operation)
        old = self._item_size(table, key)
        self.dynamo.write(table.name, pk, limits.write_units(max(old, new_size)), operation)

    def _dynamo_PutItem(self, body: dict) -> Outcome:  # noqa: N802
        item = body.get("Item") or {}
        self._write(body.get("TableName", ""), item, limits.item_size(item), "PutItem")
        return Outcome()

    def _dynamo_DeleteItem(self, body: dict) -> Outcome:  # noqa: N802
        self._write(body.get("TableName", ""), body.get("Key") or {}, 0, "DeleteItem")
        return Outcome()

    def _dynamo_UpdateItem(self, body: dict) -> Outcome:  # noqa: N802
        """Billed at the larger of the item before and after; an item the update would take
        past 400 KB stays as it was (moto would store it)."""
        table = self._table(body.get("TableName", ""))
        key = body.get("Key") or {}
        pk = self._pk(table, key)
        if pk is None:
            return Outcome()
        before = self._item(table, key)
        before_json = copy.deepcopy(before.to_json()["Attributes"]) if before is not None else None
        before_size = limits.item_size(before_json) if before_json else 0
        self.dynamo.write(table.name, pk, limits.write_units(before_size), "UpdateItem")
        self._lock.acquire()  # released by after(): the update and its size check, together

        def after(response: dict | None) -> dict | None:
            try:
                if response is None:  # moto refused it (a condition, a validation): nothing changed
                    return None
                now = self._item(table, key)
                size = limits.item_size(now.to_json()["Attributes"]) if now is not None else 0
                if size > limits.ITEM_LIMIT_BYTES:
                    if before_json is None:
                        table.delete_item(*_key_values(table, key))
                    else:
                        table.put_item(before_json)
                    raise _Refused(_error("ValidationException", "Item size to update has exceeded the maximum "
                                                                 "allowed size"))
                if size > before_size:  # the rest of the bill: the item after the update
                    self.dynamo.write_usage.add((table.name, pk), int(self.clock.now()),
                                                limits.write_units(size) - limits.write_units(before_size))
                return response
            finally:
                self._lock.release()

        return Outcome(after=after)

    def _dynamo_GetItem(self, body: dict) -> Outcome:  # noqa: N802
        table = self._table(body.get("TableName", ""))
        pk = self._pk(table, body.get("Key") or {})
        if pk is None:
            return Outcome()
        size = self._item_size(table, body["Key"])
        self.dynamo.read(table.name, pk, limits.read_units(size, bool(body.get("ConsistentRead"))), "GetItem")
        return Outcome()

    def _dynamo_BatchGetItem(self, body: dict) -> Outcome:  # noqa: N802
        request = body.get("RequestItems") or {}
        forward: dict = {}
        unprocessed: dict = {}
        for table_name, spec in request.items():
            table = self._table(table_name)
            consistent = bool(spec.get("ConsistentRead"))
            for key in spec.get("Keys", []):
                pk = self._pk(table, key)
                units = limits.read_units(self._item_size(table, key), consistent)
                try:
                    if pk is not None:
                        self.dynamo.read(table.name, pk, units, "BatchGetItem")
                    forward.setdefault(table_name, {**spec, "Keys": []})["Keys"].append(key)
                except limits.ClientError as exc:
                    unprocessed.setdefault(table_name, {**spec, "Keys": []})["Keys"].append(key)
                    last = exc
        if not unprocessed:
            return Outcome()
        if not forward:  # none could be read: the request itself is throttled
            return Outcome(error=_as_error(last))

        def after(response: dict | None) -> dict | None:
            if response is None:
                return None
            merged = dict(response.get("UnprocessedKeys") or {})
            for table_name, spec in unprocessed.items():
                merged.setdefault(table_name, {**spec, "Keys": []})["Keys"].extend(spec["Keys"])
            return {**response, "UnprocessedKeys": merged}

        return Outcome(body={**body, "RequestItems": forward}, after=after)

    def _dynamo_BatchWriteItem(self, body: dict) -> Outcome:  # noqa: N802
        request = body.get("RequestItems") or {}
        forward: dict = {}
        unprocessed: dict = {}
        for table_name, writes in request.items():
            for write in writes:
                put, delete = write.get("PutRequest"), write.get("DeleteRequest")
                key_or_item = (put or {}).get("Item") or (delete or {}).get("Key") or {}
                try:
                    self._write(table_name, key_or_item, limits.item_size(key_or_item) if put else 0,
                                "BatchWriteItem")
                    forward.setdefault(table_name, []).append(write)
                except limits.ClientError as exc:
                    if exc.response["Error"]["Code"] != limits.THROTTLED:
                        raise
                    unprocessed.setdefault(table_name, []).append(write)
                    last = exc
        if not unprocessed:
            return Outcome()
        if not forward:
            return Outcome(error=_as_error(last))
        return Outcome(body={**body, "RequestItems": forward},
                       after=lambda response: None if response is None else {**response, "UnprocessedItems": {
                           **(response.get("UnprocessedItems") or {}), **unprocessed}})

    def _dynamo_Query(self, body: dict) -> Outcome:  # noqa: N802
        if body.get("IndexName"):
            return Outcome()
        table = self._table(body.get("TableName", ""))
        pk = _query_partition(table, body)
        if pk is None:
            return Outcome()
        consistent = bool(body.get("ConsistentRead"))
        self.dynamo.read(table.name, pk, 0, "Query")  # refused only when the partition is already spent

        def after(response: dict | None) -> dict | None:
            if response is None:
                return None
            size = sum(limits.item_size(item) for item in response.get("Items", []))
            units = limits.read_units(size, consistent)
            self.dynamo.read_usage.add((table.name, pk), int(self.clock.now()), units)
            with self.dynamo._lock:  # what the page cost, taken from the partition (in debt if need be)
                self.dynamo._partition(table.name, pk).reads.take(units, allow_debt=True)
            return response

        return Outcome(after=after)


class _Refused(Exception):  # noqa: N818 - an answer, not a failure of the front
    def __init__(self, error: tuple[int, dict]):
        super().__init__(error[1].get("message"))
        self.error = error


def _pass(body: dict) -> Outcome:
    return Outcome()


def _blob(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    try:
        return base64.b64decode(value)
    except (ValueError, TypeError):
        return str(value).encode()


def _key_values(table, key: dict):
    from moto.dynamodb.models.dynamo_type import DynamoType

    return (DynamoType(key[table.hash_key_attr]),
            DynamoType(key[table.range_key_attr]) if table.range_key_attr else None)


_CONDITION = re.compile(r"(#?[\w.]+)\s*=\s*(:\w+)")


def _query_partition(table, body: dict) -> str | None:
    if table is None:
        return None
    names = body.get("ExpressionAttributeNames") or {}
    values = body.get("ExpressionAttributeValues") or {}
    for name, placeholder in _CONDITION.findall(body.get("KeyConditionExpression", "")):
        if names.get(name, name) == table.hash_key_attr and placeholder in values:
            (_, value), = values[placeholder].items()
            return str(value)
    return None


# --- the two ways in -----------------------------------------------------------------------------

def wsgi(app, front: AwsLimitsFront):
    """The moto server's WSGI app, behind the front."""

    def limited(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not (target.startswith("Kinesis") or target.startswith("DynamoDB")):
            return app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        outcome = front.request(target, body) if isinstance(body, dict) else Outcome()
        if outcome.error is not None:
            return _respond(start_response, *outcome.error)
        if outcome.body is not None:
            raw = json.dumps(outcome.body).encode()
        environ["wsgi.input"] = io.BytesIO(raw)
        environ["CONTENT_LENGTH"] = str(len(raw))
        if outcome.after is None:
            return app(environ, start_response)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = b"".join(app(environ, capture))
        status = int(captured["status"].split()[0])
        try:
            answer = outcome.after(json.loads(chunks) if status == 200 else None)
        except _Refused as refused:
            return _respond(start_response, *refused.error)
        if answer is None:
            start_response(captured["status"], captured["headers"])
            return [chunks]
        return _respond(start_response, 200, answer, [(k, v) for k, v in captured["headers"]
                                                      if k.lower() not in ("content-length", "x-amz-crc32")])

    return limited


def _respond(start_response, status: int, body: dict, headers: list | None = None):
    data = json.dumps(body).encode()
    headers = list(headers or [("Content-Type", "application/x-amz-json-1.0")])
    headers += [("Content-Length", str(len(data))), ("x-amz-crc32", str(zlib.crc32(data) & 0xFFFFFFFF))]
    start_response(f"{status} {'OK' if status == 200 else 'Bad Request'}", headers)
    return [data]


class _Http:
    def __init__(self, status_code: int):
        self.status_code, self.headers, self.content = status_code, {}, b""


def install(client, front: AwsLimitsFront) -> None:
    """Put the front before an in-process moto, on one botocore client."""
    service = client.meta.service_model.service_name
    if service not in ("kinesis", "dynamodb"):
        return
    prefix = client.meta.service_model.metadata.get("targetPrefix", "")

    def before(model, params, context, **_):
        body = json.loads(params.get("body") or b"{}")
        outcome = front.request(f"{prefix}.{model.name}", body)
        if outcome.error is not None:
            status, answer = outcome.error
            if status == 200:
                return _Http(200), {**answer, "ResponseMetadata": {"HTTPStatusCode": 200}}
            error = {"Code": answer["__type"].rsplit("#", 1)[-1], "Message": answer.get("message", "")}
            parsed = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}
            if answer.get("ThrottlingReasons"):
                parsed["ThrottlingReasons"] = answer["ThrottlingReasons"]
            return _Http(status), parsed
        if outcome.body is not None:
            params["body"] = json.dumps(outcome.body).encode()
            params["headers"]["Content-Length"] = str(len(params["body"]))
        context["aws_limits_after"] = outcome.after
        return None

    def after(http_response, parsed, model, context, **_):
        then = context.pop("aws_limits_after", None)
        if then is None:
            return
        try:
            answer = then(parsed if http_response.status_code == 200 else None)
        except _Refused as refused:
            status, body = refused.error
            parsed.clear()
            parsed.update({"Error": {"Code": body["__type"].rsplit("#", 1)[-1], "Message": body["message"]},
                           "ResponseMetadata": {"HTTPStatusCode": status}})
            http_response.status_code = status
            return
        if answer is not None:
            parsed.update(answer)

    client.meta.events.register_first(f"before-call.{service}.*", before)
    client.meta.events.register(f"after-call.{service}.*", after)

