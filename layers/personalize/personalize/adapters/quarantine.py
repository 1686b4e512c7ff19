"""Where rejected records go: an SQS queue, with the reason and the raw record."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from . import aws

SQS_BATCH = 10


class QuarantineError(Exception):
    """Some records could not be quarantined; they must be retried, not dropped."""

    def __init__(self, failed_ids: list[str]):
        super().__init__(f"{len(failed_ids)} records could not be quarantined")
        self.failed_ids = failed_ids


class Quarantine(ABC):
    @abstractmethod
    def send(self, entries: list[dict]) -> None:
        """Each entry: {id, reason, raw, source...}. Raises QuarantineError naming failures."""


class SqsQuarantine(Quarantine):
    def __init__(self, queue_url: str, client=None):
        self.queue_url = queue_url
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = aws.client("sqs")
        return self._client

    def send(self, entries: list[dict]) -> None:
        failed: list[str] = []
        for start in range(0, len(entries), SQS_BATCH):
            chunk = entries[start:start + SQS_BATCH]
            response = self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "MessageBody": json.dumps(entry)} for i, entry in enumerate(chunk)],
            )
            failed.extend(chunk[int(f["Id"])]["id"] for f in response.get("Failed", []))
        if failed:
            raise QuarantineError(failed)

    def receive_all(self, max_messages: int = 10_000) -> list[dict]:
        """Drain the queue (operators and tests): the quarantined entries."""
        out: list[dict] = []
        while len(out) < max_messages:
            response = self.client.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                   WaitTimeSeconds=0)
            messages = response.get("Messages", [])
            if not messages:
                return out
            for message in messages:
                out.append(json.loads(message["Body"]))
            self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        return out


class MemoryQuarantine(Quarantine):
    def __init__(self):
        self.entries: list[dict] = []

    def send(self, entries: list[dict]) -> None:
        self.entries.extend(entries)
