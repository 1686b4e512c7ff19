"""POST /events refuses a foreign Origin (AllowedOrigins), before reading the body."""

from __future__ import annotations

import json

import pytest

from personalize.identity import KeyRing
from personalize.ingest.collect import PUBLIC, SERVER, Collector, Request
from personalize.ingest.origins import OriginError, OriginPolicy


def _collector(origins):
    from personalize.adapters.stream import MemoryEventStream

    return Collector(MemoryEventStream(), KeyRing.static("k"), None, origins=origins)


BODY = json.dumps({"event_id": "e1", "type": "click", "item_id": "i1", "ts": 1_000})


@pytest.mark.parametrize("origin, status", [
    ("https://www.shop.example", 202), ("HTTPS://WWW.SHOP.EXAMPLE", 202), (None, 202),
    ("https://www.shop.example:8443", 403), ("https://evil.example", 403), ("null", 403), ("", 403)])
def test_only_listed_origins_post_events(origin, status):
    collector = _collector(OriginPolicy(["https://www.shop.example"]))
    answer = collector.handle(Request(PUBLIC, BODY, origin=origin), now_ms=2_000)
    assert answer[0] == status


def test_the_backend_route_has_no_origin_check_and_cors_names_only_listed_origins():
    collector = _collector(OriginPolicy([]))
    assert collector.handle(Request(SERVER, BODY, origin="https://evil.example"), now_ms=2_000)[0] == 202
    policy = OriginPolicy(["https://www.shop.example"])
    assert policy.cors_headers("https://www.shop.example")["access-control-allow-credentials"] == "true"
    assert policy.cors_headers("https://evil.example") == {}
    with pytest.raises(OriginError):
        OriginPolicy(["www.shop.example/"])
