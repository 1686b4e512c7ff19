"""The fast decoder (msgspec) gives exactly what the contract's strict decoder gives: the same
value, or the same error, for any input, hostile or not."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personalize.ingest import _fastjson, events
from tests.unit.test_hostile_input import HUGE, hostile_text, json_values


def outcome(decode, raw: bytes) -> tuple[str, str]:
    """("value", a repr that tells -0.0 from 0.0 and NaN from anything) or ("error", message)."""
    try:
        return "value", repr(decode(raw))
    except events.EventError as exc:
        return "error", str(exc)


def dumps(value, ensure_ascii: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    return text.replace(json.dumps(HUGE), "9" * 5000).encode("utf-8", "surrogatepass")


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.builds(dumps, json_values, st.booleans()),
    st.builds(dumps, st.dictionaries(hostile_text, json_values, max_size=8), st.booleans()),
    st.binary(max_size=80),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
))
def test_the_fast_decoder_agrees_with_the_strict_one(raw):
    assert outcome(_fastjson.loads, raw) == outcome(events.loads, raw)


@pytest.mark.parametrize("raw", [
    b'{"a":"\\ud800"}', b'{"a":NaN}', b'{"a":-Infinity}', b'{"a":1E400}', b'\xef\xbb\xbf{"a":1}',
    b'{"a":"\xed\xa0\x80"}', b'{"a":' + b"9" * 4001 + b"}", b'{"a":' + b"9" * 5000 + b"}",
    b'{"a":18446744073709551616}', b'{"a":1,"a":2}', b'{"a":-0.0}', b'{"a":[[1]]}', b'{"a":{"b":1}}',
    b"[" * 3000 + b"]" * 3000, b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}", b'{"\\ud800":1}',
    '{"a":"é"}'.encode("utf-16"), b'{"a":1}\x00', b'"text"', b"[1,2]",
], ids=lambda raw: repr(raw[:24]))
def test_corners_where_msgspec_differs_take_the_strict_path(raw):
    assert outcome(_fastjson.loads, raw) == outcome(events.loads, raw)


def test_a_plain_event_is_decoded_by_msgspec():
    raw = json.dumps({"event_id": "e1", "type": "view", "ts": 1_790_000_000_000, "price": 1.5,
                      "items": ["a", "b"], "ok": True, "none": None}).encode()
    calls = []
    real = events.loads
    events.loads = lambda data: calls.append(data) or real(data)
    try:
        assert _fastjson.loads(raw) == json.loads(raw)
    finally:
        events.loads = real
    assert calls == []  # no fallback for the common case
