"""Hostile input, generated: every parser a client can reach, driven by Hypothesis with
arbitrary text, bytes, nesting, lone surrogates, huge and non-finite numbers, duplicate keys
and wrong types.

Properties (DESIGN 3.1/3.2): no exception escapes a handler; every answer is 2xx or 4xx;
the events accepted from a body are exactly the valid ones in it, whatever surrounds them.
Validity is decided here by construction (a strategy makes an event valid, or breaks one
rule of it), never by asking the code under test.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import process_partial_response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local import handlers
from infra.local.lambda_events import context, http_api_event
from infra.local.stack import cloudfront_event
from personalize import identity, keys
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.quarantine import MemoryQuarantine
from personalize.adapters.rowstore import MemoryRowStore
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.stream import MemoryEventStream
from personalize.adapters.userstore import MemoryUserStore
from personalize.ingest import actors, collect, entities, events
from personalize.ingest.pipeline import Ingestor
from personalize.ingest.processor import IngestProcessor
from personalize.serving.models import load_folder
from personalize.serving.recommendations import Recommender, Variant
from tests.unit.test_recommender import snapshot

HUGE = "<an integer of 5,000 digits>"  # Python cannot even repr one: dumps() writes it
KEY = "hypothesis-signing-key"
ORIGIN = "hypothesis-origin-token"
NOW_MS = int(time.time() * 1000)  # the handlers' clock, fixed; events are dated around it
# Bodies of several events cost ~20 ms each to generate: fewer of them, more of the cheap cases.
BODIES = settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANY = settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

clean_text = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40)
hostile_text = st.one_of(
    st.text(max_size=80),                                            # anything, controls included
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4),  # surrogates
    st.sampled_from(["", "\x00", "a\u0085b", "\ud800", "x" * 200, "é" * 129]),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                         hostile_text, st.integers(min_value=10**300, max_value=10**400),
                         st.just(HUGE))  # beyond Python's 4,300-digit limit
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)), max_leaves=6)
PUBLIC_TYPES = sorted(collect.PUBLIC_TYPES)


@st.composite
def valid_event(draw, route: str, shopper: str | None = None) -> dict:
    """An event that meets the contract for ``route`` (the public route: ``shopper`` is the
    cookie's user or None)."""
    kind = draw(st.sampled_from(PUBLIC_TYPES if route == collect.PUBLIC else list(events.EVENT_TYPES)))
    event = {"event_id": draw(clean_text), "type": kind,
             "ts": draw(st.integers(NOW_MS - events.MAX_AGE_MS, NOW_MS + events.MAX_FUTURE_SKEW_MS))}
    if route == collect.SERVER and kind not in events.ITEM_TYPES:
        event["user_id"] = draw(clean_text)
    elif route == collect.PUBLIC and shopper is not None and draw(st.booleans()):
        event["user_id"] = shopper
    if kind != "impression" or draw(st.booleans()):
        event["item_id"] = draw(clean_text)
    if kind == "impression":
        event["items"] = draw(st.lists(clean_text, min_size=1, max_size=5))
        if draw(st.booleans()):
            event["positions"] = draw(st.lists(st.integers(1, events.MAX_POSITION), min_size=len(event["items"]),
                                               max_size=len(event["items"]), unique=True))
    if kind == "stock":
        event["stock"] = draw(st.integers(0, events.MAX_STOCK))
    if kind == "catalogue":
        event["listed"] = draw(st.booleans())
    optional = {
        "price": st.one_of(st.integers(0, events.MAX_PRICE), st.floats(0, events.MAX_PRICE)),
        "quantity": st.integers(1, events.MAX_QUANTITY),
        "country": st.builds(lambda c, lower: c.lower() if lower else c, st.sampled_from(sorted(events.COUNTRIES)),
                             st.booleans()),
        "category": clean_text,
        "rec_id": clean_text,
        "variant": clean_text,   # never believed, never a reason to reject
        "unknown_field": json_values,
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        event[name] = draw(optional[name])
    return event


BREAKERS = {
    "event_id": st.one_of(st.none(), st.just(""), st.text(min_size=65, max_size=70), st.integers()),
    "type": st.one_of(st.none(), st.just("like"), st.lists(st.sampled_from(events.EVENT_TYPES), max_size=2),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    "ts": st.one_of(st.none(), st.text(max_size=5), st.booleans(), st.integers(max_value=events.MIN_TS_MS - 1),
                    st.integers(NOW_MS + events.MAX_FUTURE_SKEW_MS + 1, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True).filter(lambda f: f != f or abs(f) == float("inf"))),
    "item_id": st.one_of(st.text(min_size=129, max_size=140), st.integers(), st.just("\x00"), st.just("a\ud800")),
    "price": st.one_of(st.floats(max_value=-0.01), st.integers(events.MAX_PRICE + 1, 10**400), st.just(HUGE),
                       st.just(float("nan")), st.just(float("inf")), st.text(max_size=4), st.booleans()),
    "quantity": st.one_of(st.integers(max_value=0), st.integers(events.MAX_QUANTITY + 1, 2**70),
                          st.floats(1.1, 1.9), st.just("2")),
    "country": st.one_of(st.just("ZZ"), st.just("XK"), st.text(min_size=3, max_size=5), st.integers(),
                         st.just("é1")),
    "category": st.one_of(st.integers(), st.just(""), st.just("\x07bell"), st.lists(st.integers(), max_size=2)),
}


@st.composite
def invalid_event(draw, route: str, shopper: str | None = None) -> dict:
    """A valid event with exactly one rule broken."""
    event = draw(valid_event(route, shopper))
    rules = sorted(BREAKERS)
    if route == collect.PUBLIC:  # where the body's country is dropped (CloudFront's counts)
        rules = [r for r in rules if r != "country"] + ["stock_from_browser", "someone_else"]
    rule = draw(st.sampled_from(rules))
    if rule == "stock_from_browser":
        event.update(type="stock", stock=0, item_id="i")
    elif rule == "someone_else":
        event["user_id"] = draw(clean_text.filter(lambda u: u != shopper))
    elif rule == "item_id" and event["type"] == "impression":
        event["items"] = [draw(BREAKERS["item_id"])]
    else:
        value = draw(BREAKERS[rule])
        if value is None:
            event.pop(rule, None)
            if rule not in ("event_id", "type", "ts"):
                event[rule] = 10**500  # absent is fine for an optional field: break it another way
        else:
            event[rule] = value
    return event


def body_of(items: list) -> str:
    """JSON text the way a hostile client may write it: NaN/Infinity tokens, huge integers,
    lone surrogates as \\u escapes."""
    return dumps({"events": items})


def dumps(value) -> str:
    """json.dumps, with each ``HUGE`` written as an integer of 5,000 digits (as a client may)."""
    return json.dumps(value, allow_nan=True).replace(json.dumps(HUGE), "9" * 5000)


# ---------------------------------------------------------------- collect, both routes


@pytest.fixture(scope="module")
def collect_app():
    import os

    saved = dict(os.environ)
    os.environ.update(EVENTS_STREAM="unused", SIGNING_KEY_SECRET="unused", ORIGIN_VERIFY_SECRET="unused",
                      ARTIFACTS_BUCKET="unused", POWERTOOLS_METRICS_NAMESPACE="test", POWERTOOLS_TRACE_DISABLED="1")
    try:
        module = handlers.load("collect")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    # The rate limit has its own tests (test_collect_trust): thousands of generated bodies
    # from one shopper here are about parsing.
    module.collector = collect.Collector(MemoryEventStream(), identity.KeyRing.static(KEY),
                                         identity.KeyRing.static(ORIGIN), clock=lambda: NOW_MS / 1000,
                                         limiter=actors.RateLimiter(burst=10**9))
    return module


def invoke(app, path: str, body: str | bytes, headers: dict) -> tuple[int, dict]:
    app.collector.stream.records.clear()
    response = app.lambda_handler(http_api_event("POST", path, body, headers), context("collect"))
    status = response["statusCode"]
    assert 200 <= status < 500 and not 300 <= status < 400, response
    return status, json.loads(response["body"])


@BODIES
@given(st.lists(st.tuples(st.booleans(), st.data()), max_size=8), st.data())
def test_server_route_accepts_exactly_the_valid_events(collect_app, plan, data):
    batch, valid_indexes = [], []
    for index, (valid, draw) in enumerate(plan):
        strategy = (valid_event if valid else invalid_event)(collect.SERVER)
        if not valid and draw.draw(st.booleans()):
            strategy = json_values  # or no event at all
        batch.append(draw.draw(strategy))
        if valid:
            valid_indexes.append(index)
    status, answer = invoke(collect_app, "/server/events", body_of(batch), {})
    assert status == 202
    # A stock level superseded or coalesced (ingest.coalesce) is answered as such, never rejected.
    assert answer["accepted"] + answer.get("coalesced", 0) == len(valid_indexes)
    assert sorted(set(range(len(batch))) - {r["index"] for r in answer["rejected"]}) == valid_indexes
    written = [json.loads(data) for _, data in collect_app.collector.stream.records]
    assert all("variant" not in e for e in written)  # no rec_id here was signed by serving


@BODIES
@given(st.sampled_from([None, "alice", "Zoë 🛒"]), st.lists(st.booleans(), max_size=8), st.data())
def test_public_route_accepts_exactly_the_valid_events_as_the_cookies_shopper(collect_app, shopper, plan, data):
    batch = [data.draw((valid_event if valid else invalid_event)(collect.PUBLIC, shopper)) for valid in plan]
    headers = {settings_header(): ORIGIN, "content-type": "application/json",
               "cloudfront-viewer-address": "198.51.100.7:443"}
    if shopper is not None:
        headers["cookie"] = "rt_uid=" + identity.cookie_value(shopper, KEY)
    status, answer = invoke(collect_app, "/events", body_of(batch), headers)
    assert status == 202
    accepted = sorted(set(range(len(batch))) - {r["index"] for r in answer["rejected"]})
    assert accepted == [i for i, valid in enumerate(plan) if valid]
    for _, data_ in collect_app.collector.stream.records:
        written = json.loads(data_)
        assert written.get("user_id") == shopper and written["type"] != "stock"


@MANY
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    json_values.map(dumps),
    st.integers(1, 30_000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 30_000).map(lambda depth: '{"events": ' + '{"a":' * depth + "1" + "}" * depth + "}"),
    st.lists(st.tuples(st.sampled_from(["event_id", "type", "ts", "user_id", "item_id"]), json_scalars),
             max_size=8).map(lambda pairs: "{" + ",".join(f"{json.dumps(k)}: {dumps(v)}"
                                                           for k, v in pairs) + "}"),   # duplicate keys
), st.sampled_from(["/events", "/server/events"]), st.dictionaries(
    st.sampled_from(["cookie", "cloudfront-viewer-country", "x-origin-verify", "content-type", "origin",
                     "sec-fetch-site", "user-agent", "cloudfront-viewer-address"]), hostile_text))
def test_any_body_and_headers_get_a_2xx_or_4xx(collect_app, body, path, headers):
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")  # what arrives is bytes, surrogates and all
    invoke(collect_app, path, body, headers)


def settings_header() -> str:
    from personalize import settings as config

    return config.ORIGIN_VERIFY_HEADER


# ---------------------------------------------------------------- cookies and rec_ids


@settings(max_examples=5000, deadline=None)
@given(st.one_of(hostile_text, st.builds(lambda u, s: f"{u}.{s}", hostile_text, hostile_text),
                 st.builds(lambda u, s: f"{u}.{s}", clean_text, st.text(min_size=43, max_size=43))),
       st.lists(hostile_text, max_size=3))
def test_no_cookie_but_a_signed_one_names_a_shopper(value, header_noise):
    ring = identity.KeyRing.static(KEY, "previous-key")
    found = identity.cookie_from_headers([*header_noise, f"a=b; rt_uid={value}"])
    user = ring.verified_user(found)
    if user is not None:  # only a value signed by one of the keys names a shopper
        assert found in (identity.cookie_value(user, KEY), identity.cookie_value(user, "previous-key"))


@settings(max_examples=1000, deadline=None)
@given(clean_text)
def test_a_signed_cookie_verifies_with_the_current_or_previous_key(user):
    assert identity.verified_user(identity.cookie_value(user, "old"), ("new", "old")) == user
    assert identity.verified_user(identity.cookie_value(user, "other"), ("new", "old")) is None


@settings(max_examples=3000, deadline=None)
@given(hostile_text, st.one_of(st.none(), hostile_text), st.integers(-10**6, 10**12))
def test_only_serving_makes_a_rec_id_that_verifies(rec_id, user, now_s):
    assert identity.verify_rec_id(rec_id, user, KEY, now_s) is None


@settings(max_examples=1000, deadline=None)
@given(clean_text, clean_text, st.one_of(st.none(), clean_text), st.one_of(st.none(), clean_text))
def test_a_served_rec_id_attributes_to_its_variant_for_its_shopper_only(experiment, variant, user, other):
    now = 1_800_000_000
    rec_id = identity.issue_rec_id(KEY, experiment, variant, user, now)
    served = identity.verify_rec_id(rec_id, user, ("rotated-in", KEY), now + 3600)
    assert served is not None and served.variant == variant.replace("~", "-")
    assert keys.experiment_of(rec_id) == experiment.replace("~", "-")
    assert identity.verify_rec_id(rec_id, user, KEY, now + identity.REC_ID_TTL_S + 1) is None  # expired
    if other != user:
        assert identity.verify_rec_id(rec_id, other, KEY, now) is None


# ---------------------------------------------------------------- the query, at the edge


@pytest.fixture(scope="module")
def edge_app():
    ranker = load_folder(Path(__file__).resolve().parents[2] / "models" / "ranker-mlp" / "v1")
    artifacts = MemoryArtifacts()
    artifacts.put_snapshot("v1", snapshot("v1", 400), {})
    user = entities.UserRow()
    recommender = Recommender(MemoryUserStore({"alice": user}), artifacts, MemorySoldOut(), KEY,
                              lambda user_id: Variant("champion", ranker, "exp"), log_sample_rate=0)
    recommender.warm()
    module = handlers.load("edge")
    module._state["recommender"] = recommender
    return module


@MANY
@given(st.dictionaries(st.sampled_from(["k", "context_item", "x", ""]), hostile_text, max_size=3),
       st.one_of(st.none(), hostile_text), st.one_of(st.none(), hostile_text), st.sampled_from(["GET", "HEAD", "POST"]))
def test_any_query_cookie_or_country_gets_a_2xx_or_4xx_at_the_edge(edge_app, query, cookie, country, method):
    headers = {}
    if cookie is not None:
        headers["cookie"] = f"rt_uid={cookie}"
    if country is not None:
        headers["cloudfront-viewer-country"] = country
    try:
        event = cloudfront_event(method, "/recommendations", query, headers)
    except UnicodeEncodeError:  # urlencode cannot write a lone surrogate: no such request exists
        return
    answer = edge_app.lambda_handler(event, context("edge"))
    assert "status" in answer, "the edge passed the request on: it failed internally"
    assert answer["status"] in ("200", "400", "405")
    body = json.loads(answer["body"])
    if answer["status"] == "200":
        assert body["user_id"] is None and len(body["items"]) <= 50


# ---------------------------------------------------------------- the stream-record decoder


@BODIES
@given(st.lists(st.one_of(
    valid_event(collect.SERVER).map(lambda e: ("valid", dumps(e).encode())),
    invalid_event(collect.SERVER).map(lambda e: ("invalid", dumps(e).encode())),
    st.binary(max_size=64).map(lambda b: ("invalid", b)),
    st.integers(900, 5000).map(lambda d: ("invalid", ("[" * d + "]" * d).encode())),
), min_size=1, max_size=10))
def test_the_decoder_quarantines_exactly_the_bad_records_and_keeps_the_rest(records):
    quarantine, store = MemoryQuarantine(), MemoryRowStore(clock=lambda: NOW_MS / 1000)
    processor = IngestProcessor(lambda: Ingestor(store, quarantine, clock=lambda: NOW_MS / 1000),
                                Metrics(namespace="test"), Logger(service="test"))
    kinesis = {"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "k", "sequenceNumber": str(10**20 + n),
                    "data": base64.b64encode(data).decode(), "approximateArrivalTimestamp": NOW_MS / 1000},
        "eventSource": "aws:kinesis", "eventID": f"shardId-000000000000:{10**20 + n}",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/events", "awsRegion": "us-east-1",
    } for n, (_, data) in enumerate(records)]}
    response = process_partial_response(event=kinesis, record_handler=processor.collect, processor=processor,
                                        context=context("aggregate"))
    assert response == {"batchItemFailures": []}
    assert len(quarantine.entries) == sum(kind == "invalid" for kind, _ in records)
    assert all(entry["reason"] for entry in quarantine.entries)
    assert processor.last_result.events == sum(kind == "valid" for kind, _ in records)
