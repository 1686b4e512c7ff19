"""POST /events logic with the in-memory stream: what is written, how, and what is refused."""

import json

from personalize.adapters.stream import MemoryEventStream
from personalize.ingest.collect import collect

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


def test_an_unreadable_origin_token_is_a_retryable_503_not_a_403():
    from personalize.identity import KeyRing
    from personalize.ingest import collect as collect_module

    def down():
        raise ConnectionError("secrets manager unreachable")

    collector = collect_module.Collector(MemoryEventStream(), KeyRing.static("k"), KeyRing(down, background=False))
    status, body, _ = collector.handle(collect_module.Request(collect_module.PUBLIC, "{}", origin_token="x"), NOW)
    assert status == 503 and "retry" in body["message"]
    status, _, _ = collector.handle(collect_module.Request(collect_module.SERVER, json.dumps(
        {"event_id": "s", "type": "stock", "item_id": "i", "ts": NOW, "stock": 0})), NOW)
    assert status == 202  # the backend's route needs no origin token


def _written(stream):
    return [json.loads(data) for _, data in stream.records]


def test_only_signed_in_shoppers_and_the_backends_purchases_move_experiment_counters():
    """A rec_id is signed by serving, yet replayable: anonymous events and browser purchases
    (a claim with any price) never attribute; the backend's purchases and a signed-in
    shopper's clicks do."""
    from personalize.identity import issue_rec_id
    from personalize.ingest import collect as c

    key = "k"
    anon_rec = issue_rec_id(key, "exp", "champion", None, NOW / 1000)
    alice_rec = issue_rec_id(key, "exp", "challenger", "alice", NOW / 1000)
    stream = MemoryEventStream()
    base = {"ts": NOW, "item_id": "i"}
    collect([{**base, "event_id": "1", "type": "purchase", "rec_id": anon_rec, "price": 1e6, "quantity": 1000}],
            stream, NOW, route=c.PUBLIC, shopper=None, keys=[key])
    collect([{**base, "event_id": "2", "type": "purchase", "rec_id": alice_rec},
             {**base, "event_id": "3", "type": "click", "rec_id": alice_rec}],
            stream, NOW, route=c.PUBLIC, shopper="alice", keys=[key])
    collect([{**base, "event_id": "4", "type": "purchase", "user_id": "alice", "rec_id": alice_rec}],
            stream, NOW, route=c.SERVER, keys=[key])
    assert [e.get("variant") for e in _written(stream)] == [None, None, "challenger", "challenger"]


def test_a_served_list_is_one_impression_however_often_it_is_sent():
    from personalize.identity import issue_rec_id
    from personalize.ingest import collect as c

    rec = issue_rec_id("k", "exp", "challenger", "alice", NOW / 1000)
    other = issue_rec_id("k", "exp", "challenger", "alice", NOW / 1000)
    stream = MemoryEventStream()
    impressions = [{"event_id": f"client-{n}", "type": "impression", "items": ["a"], "ts": NOW, "rec_id": rec}
                   for n in range(3)] + [{"event_id": "x", "type": "impression", "items": ["a"], "ts": NOW,
                                          "rec_id": other}]
    collect(impressions, stream, NOW, route=c.PUBLIC, shopper="alice", keys=["k"])
    ids = [e["event_id"] for e in _written(stream)]
    assert len(set(ids[:3])) == 1 and ids[3] != ids[0]   # aggregate's event-id dedupe keeps one


def test_an_impression_reaches_the_stream_with_the_place_of_each_item():
    from personalize.identity import issue_rec_id
    from personalize.ingest import collect as c

    rec = issue_rec_id("k", "exp", "challenger", "alice", NOW / 1000)
    stream = MemoryEventStream()
    result = collect([{"event_id": "i", "type": "impression", "items": ["a", "b"], "positions": [1, 4], "ts": NOW,
                       "rec_id": rec, "decision": "not yet in the contract"},
                      {"event_id": "j", "type": "impression", "items": ["a", "b"], "positions": [1], "ts": NOW}],
                     stream, NOW, route=c.PUBLIC, shopper="alice", keys=["k"])
    [written] = _written(stream)
    assert written["items"] == ["a", "b"] and written["positions"] == [1, 4] and written["variant"] == "challenger"
    assert result.rejected == [{"index": 1, "error": "positions must be a list of distinct integers from 1 to 1000, "
                                                     "one for each of items"}]


def test_an_impressions_echoed_decision_goes_on_the_stream_only_when_serving_signed_it_for_that_list():
    from personalize.identity import Decision, issue_decision, issue_rec_id
    from personalize.ingest import collect as c

    alice = issue_rec_id("k", "exp", "challenger", "alice", NOW / 1000)
    anon = issue_rec_id("k", "exp", "champion", None, NOW / 1000)
    served = Decision("ranker-mlp/v3", "s1", ("a", "b", "c"), (1.0, 1.0, 1.0), "ffff")
    decision, anon_decision = issue_decision("k", alice, served), issue_decision("k", anon, served)
    imp = {"type": "impression", "ts": NOW, "items": ["b", "c"], "positions": [2, 3]}
    stream = MemoryEventStream()
    result = collect([
        {**imp, "event_id": "1", "rec_id": alice, "decision": decision},                  # kept
        {**imp, "event_id": "2", "rec_id": alice, "decision": anon_decision},             # another list's
        {**imp, "event_id": "3", "rec_id": alice, "decision": decision, "positions": [1, 3]},  # b was not 1st
        {**imp, "event_id": "4", "rec_id": alice, "decision": {"model": "mine", "items": ["b", "c"]}},
        {"event_id": "5", "type": "click", "ts": NOW, "item_id": "b", "rec_id": alice, "decision": decision},
    ], stream, NOW, route=c.PUBLIC, shopper="alice", keys=["k"])
    written = {e["event_id"].split("~")[0]: e for e in _written(stream)}
    assert result.accepted == 5 and result.decisions == 1 and result.decisions_refused == 4  # the click's too
    from personalize.identity import decision_of
    from personalize.ingest import _fastjson

    [kept] = [e for e in _written(stream) if "decision" in e]
    assert kept["decision"] == decision and decision_of(kept["decision"]) == served  # the verified token
    [record] = [data for _, data in stream.records if b"decision" in data]
    strict, fallbacks = _fastjson.events.loads, []
    _fastjson.events.loads = lambda data: fallbacks.append(data) or strict(data)
    try:
        assert _fastjson.loads(record) == json.loads(record)
    finally:
        _fastjson.events.loads = strict
    assert fallbacks == []  # a flat record: aggregate's fast decoder reads it (a dict would not)
    assert "decision" not in written["5"]  # only an impression carries one
    stream = MemoryEventStream()
    result = collect([{**imp, "event_id": f"6-{n}", "rec_id": anon, "decision": anon_decision} for n in range(3)],
                     stream, NOW, route=c.PUBLIC, shopper=None, actor="ip:203.0.113.0", keys=["k"])
    assert result.decisions == 3 and _written(stream)[0]["decision"] == anon_decision  # anonymous too
    assert len({e["event_id"] for e in _written(stream)}) == 1  # replayed: one list, one event id
    result = collect([{**imp, "event_id": "7", "rec_id": alice, "decision": decision}], MemoryEventStream(), NOW,
                     route=c.PUBLIC, shopper="bob", keys=["k"])
    assert result.decisions == 0  # alice's list, posted by bob: not his to echo


def test_the_public_route_takes_the_country_from_cloudfront_never_the_body():
    from personalize.ingest import collect as c

    stream = MemoryEventStream()
    event = {"event_id": "a", "type": "view", "item_id": "i", "ts": NOW, "country": "JP"}
    collect([event], stream, NOW, viewer_country=None, route=c.PUBLIC)
    collect([{**event, "event_id": "b"}], stream, NOW, viewer_country="fr", route=c.PUBLIC)
    collect([{**event, "event_id": "c", "country": "ıt"}], stream, NOW, route=c.SERVER, keys=[])
    written = _written(stream)
    assert "country" not in written[0] and written[1]["country"] == "FR"
    assert len(written) == 2  # "ıt" is not an ISO code, whatever upper() makes of it
