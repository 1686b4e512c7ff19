"""The storefront snippet alone, in Chromium: a synthetic origin (http://kit.test/, every
request answered by Playwright's router) loads kit/recs.js and drives it with a fake fetch
or routed answers. Timers run on Playwright's clock where a test needs the one-second dwell."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.browser.conftest import KIT

ORIGIN = "http://kit.test"
HARNESS = """<!doctype html><meta charset="utf-8"><title>kit</title>
<style>body{margin:0}.rt-recs li{height:300px;list-style:none}</style>
<div id="slot"></div><div id="far" style="margin-top:3000px"></div>
<script type="module">import {createRecs} from "/kit/recs.js";
window.createRecs = createRecs; window.ready = true;</script>"""


def test_the_snippet_is_at_most_5_kb_gzipped():
    size = len(gzip.compress(KIT.read_bytes(), compresslevel=9))
    assert size <= 5 * 1024, f"recs.js is {size} bytes gzipped"


@pytest.fixture
def kit_page(page):
    answers = {"recommendations": None, "events": []}

    def route(route):
        url = route.request.url
        if url.endswith("/kit/recs.js"):
            route.fulfill(body=KIT.read_text(), content_type="text/javascript")
        elif "/recommendations" in url:
            answer = answers["recommendations"]
            if answer == "abort":
                route.abort()
            elif answer is None:
                route.fulfill(status=503, body="{}", content_type="application/json")
            else:
                route.fulfill(body=json.dumps(answer), content_type="application/json")
        elif url.endswith("/events"):
            answers["events"].append({"body": json.loads(route.request.post_data), "headers": route.request.headers})
            route.fulfill(status=202, body=json.dumps({"accepted": 1, "rejected": []}),
                          content_type="application/json")
        else:
            route.fulfill(body=HARNESS, content_type="text/html")

    page.route(f"{ORIGIN}/**", route)
    page.answers = answers
    return page


def _open(page, clock=False):
    if clock:
        page.clock.install()
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("window.ready === true")


def test_an_item_id_is_rendered_as_text_never_html(kit_page, page_errors):
    hostile = '<img src=x onerror="window.pwned=1">'
    kit_page.answers["recommendations"] = {"rec_id": "e~champion~ffffffff~n~m", "variant": "champion",
                                           "items": [{"item_id": hostile, "score": 1.0}], "fallback": False}
    _open(kit_page)
    kit_page.evaluate("createRecs().slot(document.getElementById('slot'), {k: 3})")
    kit_page.wait_for_selector("#slot li[data-rec-id]")
    assert kit_page.inner_text("#slot li") == hostile
    assert kit_page.locator("#slot img").count() == 0
    assert kit_page.evaluate("window.pwned") is None
    assert kit_page.get_attribute("#slot li", "data-item-id") == hostile
    assert not page_errors


@pytest.mark.parametrize("answer", ["abort", None, {"items": "not a list"}], ids=["blocked", "503", "malformed"])
def test_a_failed_answer_renders_the_shops_own_list_quietly(kit_page, page_errors, answer):
    kit_page.answers["recommendations"] = answer
    _open(kit_page)
    result = kit_page.evaluate("createRecs().slot(document.getElementById('slot'), {k: 2, fallback: ['a', 'b', 'c']})")
    assert result["fallback"] is True and result["rec_id"] is None
    assert kit_page.eval_on_selector_all("#slot li", "els => els.map(e => [e.dataset.itemId, e.hasAttribute("
                                         "'data-fallback'), e.hasAttribute('data-rec-id')])") == [
        ["a", True, False], ["b", True, False]]
    assert not page_errors


def test_a_late_answer_falls_back_at_the_timeout(kit_page):
    _open(kit_page)
    # A fetch that never answers: the slot must not wait for it.
    rendered = kit_page.evaluate("""async () => {
        const recs = createRecs({timeoutMs: 50, fetch: (url, init) => new Promise((_, reject) =>
            init.signal.addEventListener('abort', () => reject(new DOMException('late', 'AbortError'))))});
        const started = performance.now();
        const r = await recs.slot(document.getElementById('slot'), {fallback: ['x']});
        return [r.fallback, performance.now() - started];
    }""")
    assert rendered[0] is True and rendered[1] < 2000


def _fake_fetch_recs(page, options="{}"):
    page.evaluate(f"""() => {{
        window.calls = [];
        window.recs = createRecs(Object.assign({{
            fetch: async (url, init) => {{ window.calls.push({{url, init: {{...init, signal: undefined}}}});
                return new Response(JSON.stringify({{accepted: 1, rejected: []}}), {{status: 202}}); }},
        }}, {options}));
    }}""")


def test_consent_decides_whether_the_cookie_goes(kit_page):
    _open(kit_page)
    _fake_fetch_recs(kit_page)
    kit_page.evaluate("recs.addToCart('i1'); recs.flush()")
    kit_page.wait_for_function("calls.length === 1")
    kit_page.evaluate("recs.setConsent(true); recs.addToCart('i2'); recs.flush()")
    kit_page.wait_for_function("calls.length === 2")
    calls = kit_page.evaluate("calls")
    assert [c["init"]["credentials"] for c in calls] == ["omit", "include"]
    for call in calls:
        body = json.loads(call["init"]["body"])
        assert call["init"]["headers"]["content-type"] == "application/json" and call["url"] == "/events"
        assert all("user_id" not in e for e in body["events"])  # the kit never names the shopper
    assert kit_page.context.cookies() == []  # the kit mints no identity cookie


def test_page_hide_sends_batches_within_the_keepalive_budget_and_keeps_the_rest(kit_page):
    _open(kit_page, clock=True)
    _fake_fetch_recs(kit_page, "{maxQueue: 5000}")
    kit_page.evaluate("for (let i = 0; i < 3000; i++) recs.addToCart('item-' + i, {quantity: 1})")
    kit_page.evaluate("dispatchEvent(new Event('pagehide'))")
    calls = kit_page.evaluate("calls")
    sizes = [len(c["init"]["body"].encode()) for c in calls]
    assert calls and all(c["init"]["keepalive"] for c in calls)
    assert sum(sizes) <= 65536 and max(sizes) <= 16384
    sent = {e["event_id"] for c in calls for e in json.loads(c["init"]["body"])["events"]}
    # Nothing is dropped: what did not fit stays queued (sessionStorage) for the next page, and
    # what left keeps its event_id, so a resend cannot count twice.
    stored = kit_page.evaluate("JSON.parse(sessionStorage.getItem('rt.q'))")
    assert len(stored) == 3000 and sent <= {e["event_id"] for e in stored}


def test_retries_resend_the_same_event_ids_and_the_queue_is_bounded(kit_page):
    _open(kit_page, clock=True)
    kit_page.evaluate("""() => {
        window.bodies = []; let n = 0;
        window.recs = createRecs({maxQueue: 3, fetch: async (url, init) => {
            window.bodies.push(JSON.parse(init.body));
            n += 1;
            if (n === 1) return new Response('{}', {status: 503});
            if (n === 2) return new Response(JSON.stringify({accepted: 1, rejected: [
                {index: 0, error: 'not stored (ProvisionedThroughputExceededException); retry later'},
                {index: 1, error: 'quantity must be within 1..1000'}]}), {status: 202});
            return new Response(JSON.stringify({accepted: 1, rejected: []}), {status: 202});
        }});
        for (const id of ['a', 'b', 'c', 'd']) recs.addToCart(id);
    }""")
    assert kit_page.evaluate("recs.queued") == 3  # bounded: the oldest went
    for _ in range(4):
        kit_page.clock.run_for(70_000)
    bodies = kit_page.evaluate("bodies")
    first, second, third = ([e["event_id"] for e in b["events"]] for b in bodies[:3])
    assert first == second  # after a 503: the same events, the same ids
    assert third == [second[0]]  # only the one the API asked to retry; the invalid one is dropped
    assert kit_page.evaluate("recs.queued") == 0


def test_impressions_need_half_visible_for_a_second_with_positions_and_echo_the_decision(kit_page):
    kit_page.set_viewport_size({"width": 800, "height": 500})
    kit_page.answers["recommendations"] = {
        "rec_id": "exp~challenger~ffffffff~n~mac", "variant": "challenger", "decision": "signed.decision",
        "items": [{"item_id": f"i{n}", "score": 1.0 - n / 10} for n in range(4)], "fallback": False}
    _open(kit_page, clock=True)
    kit_page.evaluate("window.recs = createRecs(); recs.slot(document.getElementById('slot'), {k: 4})")
    kit_page.wait_for_selector("#slot li[data-rec-id]")
    # 300 px items in a 500 px viewport: i0 wholly visible, i1 two thirds, i2 and i3 not at all.
    kit_page.clock.run_for(600)
    kit_page.mouse.wheel(0, 0)
    kit_page.clock.run_for(600)
    kit_page.clock.run_for(6_000)  # the kit's batch timer
    kit_page.wait_for_function("true")
    impressions = [e for call in kit_page.answers["events"] for e in call["body"]["events"]
                   if e["type"] == "impression"]
    assert impressions, "no impression sent"
    assert impressions[0]["items"] == ["i0", "i1"] and impressions[0]["positions"] == [1, 2]
    assert impressions[0]["decision"] == "signed.decision"
    assert impressions[0]["rec_id"] == "exp~challenger~ffffffff~n~mac"
    # Scrolled into view for half a second only: no impression for i3.
    kit_page.evaluate("document.querySelector('[data-item-id=i3]').scrollIntoView()")
    kit_page.clock.run_for(500)
    kit_page.evaluate("scrollTo(0, 0)")
    kit_page.clock.run_for(8_000)
    later = [i for call in kit_page.answers["events"] for e in call["body"]["events"]
             if e["type"] == "impression" for i in e["items"]]
    assert "i3" not in later
    # A click keeps the rec_id for later pages, without the decision (the impression carries it).
    with kit_page.expect_navigation():
        kit_page.click("[data-item-id=i0] a")
    kit_page.wait_for_function("window.ready === true")
    assert kit_page.evaluate("createRecs().attribution('i0')") == "exp~challenger~ffffffff~n~mac"
    clicks = [e for call in kit_page.answers["events"] for e in call["body"]["events"] if e["type"] == "click"] or [
        e for e in kit_page.evaluate("JSON.parse(sessionStorage.getItem('rt.q'))") if e["type"] == "click"]
    assert clicks and clicks[0]["rec_id"] == "exp~challenger~ffffffff~n~mac" and "decision" not in clicks[0]
    assert clicks[0]["position"] == 1
