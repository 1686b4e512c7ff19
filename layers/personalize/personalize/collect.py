"""``POST /events``: validate a body of events and write the valid ones to the stream."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .adapters.stream import EventStream
from .events import EventError, parse_event, partition_key

MAX_BODY_BYTES = 1_048_576  # 1 MiB: 500 events of about 2 KB each
MAX_EVENTS = 500


class BodyError(ValueError):
    """The request body as a whole is unusable; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class CollectResult:
    accepted: int
    rejected: list[dict]

    def to_body(self) -> dict:
        return {"accepted": self.accepted, "rejected": self.rejected}


def parse_body(body: str | bytes | None) -> list:
    """The events of a request body: one object, or ``{"events": [...]}``."""
    if body is None or body == "" or body == b"":
        raise BodyError(400, "body must be a JSON event or {\"events\": [...]}")
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyError(400, f"body is not valid JSON: {exc}") from exc
    if isinstance(obj, dict) and "events" in obj:
        events = obj["events"]
        if not isinstance(events, list):
            raise BodyError(400, "events must be a list")
        if len(events) > MAX_EVENTS:
            raise BodyError(413, f"at most {MAX_EVENTS} events per request")
        return events
    return [obj]


def collect(events: list, stream: EventStream, now_ms: int, viewer_country: str | None = None) -> CollectResult:
    """Validate each event, fill ``country`` from the viewer's, write the valid ones."""
    rejected: list[dict] = []
    records: list[tuple[str, bytes]] = []
    indexes: list[int] = []
    country = viewer_country.upper() if viewer_country and len(viewer_country) == 2 else None
    for index, obj in enumerate(events):
        try:
            if country and isinstance(obj, dict) and obj.get("country") is None:
                obj = {**obj, "country": country}
            event = parse_event(obj, now_ms)
        except EventError as exc:
            rejected.append({"index": index, "error": str(exc)})
            continue
        records.append((partition_key(event), json.dumps(event.to_dict(), separators=(",", ":")).encode()))
        indexes.append(index)
    accepted = 0
    if records:
        result = stream.put(records)
        for index, error in zip(indexes, result.errors):
            if error is None:
                accepted += 1
            else:
                rejected.append({"index": index, "error": f"not stored ({error}); retry later"})
        rejected.sort(key=lambda r: r["index"])
    return CollectResult(accepted, rejected)
