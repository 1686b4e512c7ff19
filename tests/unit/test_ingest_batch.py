"""The batch processor's own mechanics: the garbage collector it pauses for a batch is
running again afterwards, whatever the batch did."""

from __future__ import annotations

import base64
import gc
import json

import pytest
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import process_partial_response

from infra.local.lambda_events import context
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import MemoryRowStore
from personalize.ingest.pipeline import Ingestor
from personalize.ingest.processor import IngestProcessor

NOW_MS = 1_790_000_000_000


class Crash(BaseException):
    """The invocation dies mid-batch (a timeout, an out-of-memory kill)."""


def kinesis(n: int) -> dict:
    return {"Records": [{
        "kinesis": {"sequenceNumber": str(10**20 + k), "approximateArrivalTimestamp": NOW_MS / 1000,
                    "data": base64.b64encode(json.dumps({"event_id": f"e{k}", "type": "view", "user_id": "u1",
                                                         "item_id": f"i{k}", "ts": NOW_MS}).encode()).decode()},
        "eventID": f"shardId-000000000000:{10**20 + k}", "eventSource": "aws:kinesis",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/events"} for k in range(n)]}


def run(store: MemoryRowStore) -> tuple[dict, IngestProcessor]:
    processor = IngestProcessor(lambda: Ingestor(store, MemoryQuarantine(), clock=lambda: NOW_MS / 1000),
                                Metrics(namespace="test"), Logger(service="test"))
    response = process_partial_response(event=kinesis(5), record_handler=processor.collect, processor=processor,
                                        context=context("aggregate"))
    return response, processor


def test_the_collector_runs_again_after_a_batch():
    assert gc.isenabled()
    response, processor = run(MemoryRowStore(clock=lambda: NOW_MS / 1000))
    assert response == {"batchItemFailures": []} and processor.last_result.writes > 0
    assert gc.isenabled()


def test_the_collector_runs_again_after_a_batch_that_crashed(monkeypatch):
    store = MemoryRowStore(clock=lambda: NOW_MS / 1000)

    def crash(*_):
        raise Crash

    monkeypatch.setattr(store, "put_many", crash)
    with pytest.raises(Crash):
        run(store)
    assert gc.isenabled()
