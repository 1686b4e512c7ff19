"""The archive (issue 22) on the local stack: shoppers' impressions echo the decision serving
signed, collect verifies it, Firehose (emulated: infra/local/firehose.py) writes the stream to
the archive bucket through the archive function. Under injected faults (posts failing before
and after collect, the transformation failing), every decision collect accepted reaches the
archive: the reference is what collect acknowledged, the measure what the archive holds."""

from __future__ import annotations

import json

import pytest

from infra.local.firehose import read_archive
from infra.local.stack import LocalStack
from personalize import identity
from personalize.adapters import aws
from personalize.ingest import archive
from tests.bench import archive as scenario


@pytest.fixture(autouse=True)
def _no_real_aws():
    """Overrides the suite's per-test reset of the AWS variables: one local stack per module
    owns them here (its endpoint, its administrator's keys)."""
    yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(fault_every=3, state_file=tmp_path_factory.mktemp("archive") / "local-stack.json").start()
    try:
        scenario.seed_catalogue(stack)
        yield stack
    finally:
        stack.stop()


def test_every_decision_collect_accepted_reaches_the_archive_under_faults(stack):
    """36 decisions here (make bench: 600, loop.archive_loss_rate): one lost would fail it."""
    figures = scenario.measure(stack, shoppers=12)
    assert figures["decisions_accepted"] == 36 and figures["decisions_lost"] == 0, figures
    assert figures["decisions_altered"] == 0 and figures["shopper_ids_in_clear"] == 0
    assert figures["pseudonyms"] == 12  # one stable pseudonym per shopper
    assert figures["posts_failed_before_collect"] and figures["posts_failed_after_collect"]
    assert figures["transformations_failed"]


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


def test_nothing_archived_names_a_shopper_to_whoever_holds_another_key():
    """The rec_id's mac (over the shopper's id, with the signing key) is cut; a client's free
    text (event_id, a browser's category) cannot carry an address into the archive."""

    rec = identity.issue_rec_id("signing-key", "exp-1", "challenger", "victim@mail.example", 1_790_000_000)
    event = {"ts": 1_790_000_000_000, "event_id": "victim@mail.example", "type": "click", "item_id": "sku-1",
             "user_id": "alice", "category": "victim@mail.example", "rec_id": rec, "route": "public"}
    line = json.loads(archive.transform("r", json.dumps(event).encode(), "k").data)
    assert "victim" not in json.dumps(line)
    assert line["rec_id"] == "~".join(rec.split("~")[:4]) and "category" not in line
    assert line["event_id"] == json.loads(archive.transform("r", json.dumps(event).encode(), "k").data)["event_id"]
    server = json.loads(archive.transform("r", json.dumps({**event, "route": "server"}).encode(), "k").data)
    assert server["category"] == "victim@mail.example"  # the shop's own word about its item
    forged = json.loads(archive.transform("r", json.dumps({**event, "rec_id": "x@y.z"}).encode(), "k").data)
    assert "rec_id" not in forged


def test_forget_erases_a_shopper_from_the_features_and_the_archive_and_ledgers_them(stack):
    import base64
    import gzip

    from infra import forget
    from personalize import keys
    from personalize.adapters.secrets import SecretVersions

    names = stack.resources.names
    now = int(__import__("time").time() * 1000)
    gone, kept = "forget-me@mail.example", "keep-me@mail.example"
    scenario.post(stack, "/server/events", [
        {"event_id": f"f-{n}-{u}", "type": "view", "user_id": u, "item_id": scenario.ITEMS[n], "ts": now}
        for n in range(4) for u in (gone, kept)], signed=True)
    # Unreadable records (raw, under errors/): one names the shopper; the others name another
    # shopper whose id contains theirs, or mention it elsewhere: those stay.
    for data in (b'{"user_id": "forget-me@mail.example", broken', b'{"user_id": "xforget-me@mail.example", broken',
                 b'{"item_id": "forget-me@mail.example", "user_id": "other", broken'):
        aws.client("kinesis").put_record(StreamName=names["EventsStream"], PartitionKey="x", Data=data)
    stack.poller.drain(60)
    stack.archive.drain(60)
    key, _ = SecretVersions(names["ArchiveKeySecret"]).load()
    gone_p, kept_p = archive.pseudonym(gone, key), archive.pseudonym(kept, key)
    before = read_archive(names["ArchiveBucket"])
    # At least once: a post that failed after collect answered was sent again (its lines twice).
    lines_of_gone = sum(e.get("user_id") == gone_p for e in before)
    assert len({e["event_id"] for e in before if e.get("user_id") == gone_p}) == 4 <= lines_of_gone

    where = forget.Target(names["FeaturesTable"], names["ArchiveBucket"], names["ArchiveKeySecret"])
    report = forget.forget(gone, where)
    assert report["features_row_deleted"] and report["events_removed"] == lines_of_gone
    assert report["unreadable_removed"] == 1
    after = read_archive(names["ArchiveBucket"])
    assert not [e for e in after if gone_p in (e.get("user_id"), e.get("actor"))]
    assert len({e["event_id"] for e in after if e.get("user_id") == kept_p}) == 4
    assert len(after) == len(before) - lines_of_gone
    s3 = aws.client("s3")
    raw = b"".join(gzip.decompress(s3.get_object(Bucket=names["ArchiveBucket"], Key=o["Key"])["Body"].read())
                   for o in s3.list_objects_v2(Bucket=names["ArchiveBucket"])["Contents"]
                   if o["Key"].endswith(".gz"))
    unreadable = [base64.b64decode(e["rawData"]) for e in read_archive(names["ArchiveBucket"], "errors/")]
    assert gone.encode() not in raw and b'"user_id": "forget-me@' not in b"".join(unreadable)
    assert sum(b"forget-me@mail.example" in r for r in unreadable) == 2  # another's records stay
    pk, sk = keys.user_key(gone)
    rows = aws.client("dynamodb")
    assert "Item" not in rows.get_item(TableName=names["FeaturesTable"], Key={"pk": {"S": pk}, "sk": {"S": sk}})
    kept_pk, kept_sk = keys.user_key(kept)
    assert "Item" in rows.get_item(TableName=names["FeaturesTable"], Key={"pk": {"S": kept_pk}, "sk": {"S": kept_sk}})
    assert forget.forgotten(names["ArchiveBucket"]) == {gone_p}


def test_two_erasures_at_once_never_write_back_what_the_other_removed(stack):
    import gzip

    from infra import forget

    s3, bucket = aws.client("s3"), stack.resources.names["ArchiveBucket"]
    key = "events/dt=2026-12-05/hour=09/race.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(b'{"user_id":"alice"}\n{"user_id":"bob"}\n'
                                                              b'{"user_id":"carol"}\n'))

    class Racing:  # alice's erasure read the object; bob's rewrites it before alice's write lands
        def __init__(self):
            self.raced = False

        def __getattr__(self, name):
            return getattr(s3, name)

        def put_object(self, **kwargs):
            if not self.raced:
                self.raced = True
                forget._rewrite(s3, bucket, key, lambda line: b'"bob"' in line)
            return s3.put_object(**kwargs)

    assert forget._rewrite(Racing(), bucket, key, lambda line: b'"alice"' in line) == (1, False)
    left = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).splitlines()
    assert left == [b'{"user_id":"carol"}']
    s3.delete_object(Bucket=bucket, Key=key)


def test_one_odd_record_is_refused_alone_never_the_batch():
    deep = b'{"ts": 1790000000000, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    surrogate = b'{"ts": 1790000000000, "user_id": "\\ud800"}'
    for data in (deep, surrogate):
        out = archive.transform("r", data, "k")
        assert out.result in ("ProcessingFailed", "Ok") and (out.result == "Ok") == (data is surrogate)


def test_the_learning_loop_reads_orders_back_from_the_archive(stack):
    """What the shop's traffic becomes in a dataset (models.archive_dataset): the real
    archive's records all parse as contract events, and a shopper's carts and checkouts come
    back as their orders, under their pseudonym."""
    from models import archive_dataset
    from personalize.adapters.secrets import SecretVersions

    names = stack.resources.names
    now = int(__import__("time").time() * 1000)
    hour = 3_600_000
    alice, bob = "orders-alice@mail.example", "orders-bob@mail.example"
    cookie = "rt_uid=" + identity.cookie_value(alice, stack.signing_key)
    items = scenario.ITEMS
    scenario.post(stack, "/server/events", [  # the shop's backend: an order three hours ago, and bob's
        {"event_id": "o-a-add-1", "type": "add_to_cart", "user_id": alice, "item_id": items[1], "ts": now - 3 * hour},
        {"event_id": "o-a-add-2", "type": "add_to_cart", "user_id": alice, "item_id": items[2],
         "ts": now - 3 * hour + 5_000},
        {"event_id": "o-a-buy-2", "type": "purchase", "user_id": alice, "item_id": items[2],
         "ts": now - 3 * hour + 60_000},
        {"event_id": "o-a-buy-1", "type": "purchase", "user_id": alice, "item_id": items[1],
         "ts": now - 3 * hour + 60_001},
        {"event_id": "o-b-buy-4", "type": "purchase", "user_id": bob, "item_id": items[4], "ts": now - 2 * hour}],
        signed=True)
    # Alice in the browser now (a backdated ts is the browser's word: the archive keeps when
    # it arrived, which the dataset goes by), then the backend reports her checkout.
    scenario.post(stack, "/events", [
        {"event_id": "o-a-click", "type": "click", "item_id": items[5], "ts": now - 3 * hour},
        {"event_id": "o-a-add-3", "type": "add_to_cart", "item_id": items[3], "ts": now}], cookie=cookie)
    scenario.post(stack, "/server/events", [
        {"event_id": "o-a-buy-3", "type": "purchase", "user_id": alice, "item_id": items[3], "ts": now + 60_000}],
        signed=True)
    stack.poller.drain(60)
    stack.archive.drain(60)
    records = read_archive(names["ArchiveBucket"])
    events, skipped = archive_dataset.clean(records)
    assert set(skipped) <= {"duplicate event_id (delivered again)"}, skipped  # every record is a contract event
    key, _ = SecretVersions(names["ArchiveKeySecret"]).load()
    orders, _, others = archive_dataset.orders_of(events)
    mine = {archive.pseudonym(alice, key): "alice", archive.pseudonym(bob, key): "bob"}
    got = sorted((mine[o.user_id], o.number, o.products) for o in orders if o.user_id in mine)
    assert got == [("alice", 1, [items[1], items[2]]), ("alice", 2, [items[3]]), ("bob", 1, [items[4]])]
    click = next(e for e in others if e.get("user_id") in mine and e["type"] == "click")  # replayed, not an order
    assert click["arrival_ms"] >= now > click["ts"]  # placed by its arrival, not the browser's word
    dataset = archive_dataset.ArchiveBuilder("local", records=records, parallel=False, progress=False).build()
    assert dataset.window["orders"] >= 3 and dataset.window["events"] == len(events)
