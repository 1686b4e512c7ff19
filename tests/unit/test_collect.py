"""POST /events logic with the in-memory stream: what is written, how, and what is refused."""

import json

from personalize.adapters.stream import MemoryEventStream
from personalize.collect import collect

NOW = 1_790_000_000_000


def test_valid_events_are_written_by_shopper_or_item_and_the_rest_reported():
    stream = MemoryEventStream()
    events = [
        {"event_id": "a", "type": "view", "user_id": "u1", "item_id": "i1", "ts": NOW, "extra": 1},
        {"event_id": "b", "type": "stock", "item_id": "i9", "ts": NOW, "stock": 0},
        {"event_id": "c", "type": "view", "user_id": "u1", "ts": NOW},
        "not an object",
    ]
    result = collect(events, stream, NOW, viewer_country="de")
    assert result.accepted == 2
    assert [(r["index"], r["error"]) for r in result.rejected] == [
        (2, "item_id is required"), (3, "event must be a JSON object")]
    assert [key for key, _ in stream.records] == ["u1", "i9"]
    written = json.loads(stream.records[0][1])
    assert written["country"] == "DE" and "extra" not in written


def test_an_event_keeps_its_own_country_over_the_viewers():
    stream = MemoryEventStream()
    collect([{"event_id": "a", "type": "view", "user_id": "u", "item_id": "i", "ts": NOW, "country": "FR"}],
            stream, NOW, viewer_country="US")
    assert json.loads(stream.records[0][1])["country"] == "FR"
