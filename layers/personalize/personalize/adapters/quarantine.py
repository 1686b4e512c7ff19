"""Where rejected records go: an SQS queue, with the reason and the raw record."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from personalize.adapters import aws

SQS_BATCH = 10
# SQS limits: 256 KiB per message and per SendMessageBatch request (body and attributes).
SQS_BATCH_BYTES = 256 * 1024
MESSAGE_BYTES = SQS_BATCH_BYTES - 1024  # room for the request's own overhead


def fit(entry: dict) -> str:
    """The entry as a message body under the size limit: a raw record too large to carry
    (a Kinesis record may hold up to 1 MiB) is cut, flagged, and stays re-readable from the
    stream by its shard and sequence number."""
    body = json.dumps(entry)
    if len(body.encode()) <= MESSAGE_BYTES:
        return body
    raw = entry.get("raw") or ""
    keep = max(0, len(raw) - (len(body.encode()) - MESSAGE_BYTES) - 256)
    keep -= keep % 4  # whole base64 quanta
    return json.dumps({**entry, "raw": raw[:keep], "raw_truncated": True, "raw_chars": len(raw)})


def batches(entries: list[dict]):
    """Message bodies in SQS batches cut by count and by bytes."""
    chunk: list[tuple[dict, str]] = []
    size = 0
    for entry in entries:
        body = fit(entry)
        n = len(body.encode())
        if chunk and (len(chunk) == SQS_BATCH or size + n > SQS_BATCH_BYTES - 1024):
            yield chunk
            chunk, size = [], 0
        chunk.append((entry, body))
        size += n
    if chunk:
        yield chunk


class QuarantineError(Exception):
    """Some records could not be quarantined; they must be retried, not dropped."""

    def __init__(self, failed_ids: list[str]):
        super().__init__(f"{len(failed_ids)} records could not be quarantined")
        self.failed_ids = failed_ids


class Quarantine(ABC):
    @abstractmethod
    def send(self, entries: list[dict]) -> None:
        """Each entry: {id, reason, raw, source...}. Raises QuarantineError naming failures."""

    @abstractmethod
    def depth(self) -> int:
        """How many quarantined records wait for an operator."""


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
        for chunk in batches(entries):
            try:
                response = self.client.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "MessageBody": body} for i, (_, body) in enumerate(chunk)],
                )
            except Exception:  # noqa: BLE001 - this chunk must be retried; the others may have gone
                failed.extend(entry["id"] for entry, _ in chunk)
                continue
            failed.extend(chunk[int(f["Id"])][0]["id"] for f in response.get("Failed", []))
        if failed:
            raise QuarantineError(failed)

    def depth(self) -> int:
        """Records waiting in the queue, received or not (SQS's approximate counts)."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attributes.values())

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
    """Keeps what SQS would: the bodies, cut to batches the same way; ``fail_requests(n)``
    makes the next n batch requests fail as an unreachable queue would (their records are
    named in the QuarantineError, the other batches land)."""

    def __init__(self):
        self.entries: list[dict] = []
        self.requests = 0
        self.failing_requests = 0

    def fail_requests(self, n: int) -> None:
        self.failing_requests += n

    def send(self, entries: list[dict]) -> None:
        failed: list[str] = []
        for chunk in batches(entries):
            self.requests += 1
            if self.failing_requests:
                self.failing_requests -= 1
                failed.extend(entry["id"] for entry, _ in chunk)
                continue
            self.entries.extend(json.loads(body) for _, body in chunk)
        if failed:
            raise QuarantineError(failed)

    def depth(self) -> int:
        return len(self.entries)

    def receive_all(self, max_messages: int = 10_000) -> list[dict]:
        out, self.entries = self.entries[:max_messages], self.entries[max_messages:]
        return out
