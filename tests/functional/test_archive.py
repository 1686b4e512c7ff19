"""The archive (issue 22) on the local stack: shoppers' impressions echo the decision serving
signed, collect verifies it, Firehose (emulated: infra/local/firehose.py) writes the stream to
the archive bucket through the archive function. Under injected faults (posts failing before
and after collect, the transformation failing), every decision collect accepted reaches the
archive: the reference is what collect acknowledged, the measure what the archive holds."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request

import pytest

from infra.local.firehose import read_archive
from infra.local.stack import LocalStack
from personalize import identity
from personalize.adapters import aws
from personalize.ingest import archive

ITEMS = [f"sku-{n}" for n in range(30)]
SHOPPERS = [f"shopper-{n}@mail.example" for n in range(12)]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@pytest.fixture(autouse=True)
def _no_real_aws():
    """Overrides the suite's per-test reset of the AWS variables: one local stack per module
    owns them here (its endpoint, its administrator's keys)."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(fault_every=3, state_file=tmp_path_factory.mktemp("archive") / "local-stack.json").start()
    try:
        now = int(time.time() * 1000)
        catalogue = [{"event_id": f"cat-{i}", "type": "catalogue", "item_id": i, "listed": True, "ts": now}
                     for i in ITEMS]
        views = [{"event_id": f"v-{n}", "type": "view", "user_id": "seed", "item_id": ITEMS[n % 30], "ts": now}
                 for n in range(90)]
        _post(stack, "/server/events", catalogue + views, signed=True)
        stack.poller.drain(60)
        stack.publish_snapshot()
        stack.edge_recommender().snapshot.refresh_now()
        yield stack
    finally:
        stack.stop()


def _post(stack, path: str, events: list[dict], cookie: str | None = None, signed: bool = False) -> set[str]:
    """POST as a client that retries a failed post with the same events (their event_ids),
    as the kit does; the event_ids collect acknowledged."""
    from infra.local import sigv4

    body = json.dumps({"events": events}).encode()
    url = stack.endpoint + path
    for _ in range(10):
        headers = {"Content-Type": "application/json", "User-Agent": BROWSER}
        if cookie:
            headers.update(Cookie=cookie, Origin=stack.endpoint)
        if signed:
            admin = stack.resources.identities.admin
            headers.update(sigv4.sign("POST", url, body, admin.access_key_id, admin.secret_access_key))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"),
                                        timeout=30) as answer:
                result = json.loads(answer.read())
        except urllib.error.HTTPError as failed:
            assert failed.code in (429, 503), failed.read()
            continue
        refused = {r["index"] for r in result["rejected"]}
        assert not refused, result
        return {e["event_id"] for e in events}
    raise AssertionError("a post failed ten times")


def _recommend(stack, cookie: str) -> dict:
    request = urllib.request.Request(stack.endpoint + "/recommendations?k=6", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


class Flaky:
    """The archive function, failing every third invocation: Firehose retries the batch (a
    batch that failed on every retry would go under errors/, which this never provokes)."""

    def __init__(self, function):
        self.function, self.calls, self.failures = function, 0, 0

    def __call__(self, event, context=None):
        self.calls += 1
        if self.calls % 3 == 0:
            self.failures += 1
            raise RuntimeError("injected: the archive function failed")
        return self.function(event, context)


def test_every_decision_collect_accepted_reaches_the_archive_under_faults(stack):
    stack.archive.transform = Flaky(stack.archive.transform)
    rng = random.Random(7)
    shown: dict[str, list[str]] = {}  # rec_id -> the items the shopper saw (the reference)
    for user in SHOPPERS:
        cookie = "rt_uid=" + identity.cookie_value(user, stack.signing_key)
        for _ in range(3):
            answer = _recommend(stack, cookie)
            assert answer["items"] and answer["decision"]
            seen = rng.sample(range(len(answer["items"])), 3)
            event = {"event_id": f"imp-{answer['rec_id'][-12:]}", "type": "impression", "ts": int(time.time() * 1000),
                     "rec_id": answer["rec_id"], "decision": answer["decision"],
                     "items": [answer["items"][p]["item_id"] for p in seen], "positions": [p + 1 for p in seen]}
            _post(stack, "/events", [event], cookie=cookie)
            shown[answer["rec_id"]] = answer["items"]
    stack.poller.drain(60)
    stack.archive.drain(60)
    archived = [e for e in read_archive(stack.resources.names["ArchiveBucket"]) if e["type"] == "impression"]
    decided = {e["rec_id"]: e["decision"] for e in archived if "decision" in e}
    lost = set(shown) - set(decided)
    assert not lost, f"{len(lost)} of {len(shown)} accepted decisions are not in the archive"
    assert all(decided[r]["items"] == [i["item_id"] for i in shown[r]] for r in shown)
    assert stack.faults.failed_before and stack.faults.failed_after and stack.archive.transform.failures
    # Pseudonymised: no shopper id in the clear anywhere in the archive, the same pseudonym per shopper.
    raw = json.dumps(read_archive(stack.resources.names["ArchiveBucket"]))
    assert not [u for u in SHOPPERS if u in raw]
    assert len({e["user_id"] for e in archived}) == len(SHOPPERS)


def test_a_record_the_archive_cannot_read_is_kept_under_errors_not_dropped(stack):
    stream = stack.resources.names["EventsStream"]
    aws.client("kinesis").put_record(StreamName=stream, PartitionKey="x", Data=b"\xff not json")
    stack.poller.drain(60)
    stack.archive.drain(60)
    errors = read_archive(stack.resources.names["ArchiveBucket"], "errors/")
    assert any(json.loads(json.dumps(e)).get("rawData") == "/yBub3QganNvbg==" for e in errors)


def test_the_archive_reads_each_shard_within_its_share_of_the_read_limit(stack):
    # AWS: 5 GetRecords a second per shard, shared by every consumer of the stream.
    assert 1 / stack.poller.READ_INTERVAL_S + 1 / stack.archive.poller.READ_INTERVAL_S <= 5


def test_a_pseudonym_is_keyed_stable_and_says_nothing_of_the_shopper():
    one, again, other_key = (archive.pseudonym("alice@shop.example", k) for k in ("k1", "k1", "k2"))
    assert one == again != other_key and "alice" not in one
    refused = archive.transform("r1", b'{"type": "view"}', "k1")  # no ts: cannot be partitioned
    assert refused.result == "ProcessingFailed" and refused.data == b'{"type": "view"}'
    kept = archive.transform("r2", json.dumps({"ts": 1_790_000_000_000, "user_id": "alice", "actor": 7}).encode(),
                             "k1")
    assert json.loads(kept.data) == {"ts": 1_790_000_000_000, "user_id": archive.pseudonym("alice", "k1")}
    assert kept.partition == {"dt": "2026-09-21", "hour": "14"}
