"""Datasets from the archive (models.archive_dataset): orders read back from pseudonymous
events, windows cut by time, new shoppers held out entirely, nothing from after a decision in
its features, at-least-once delivery read once. The archive here is the real format: contract
events from the Instacart sample put through the archive function's transformation."""

import gzip
import json

import numpy as np
import pytest

from models import archive_dataset as ad
from models.dataset import Dataset, InstacartBuilder, SealedError
from models.instacart import order_events
from personalize.ingest import archive

KEY = "archive-key-for-tests-0123456789abcdef"
USERS = 30


def archived(event: dict) -> dict:
    answer = archive.transform("record", json.dumps(event).encode(), KEY)
    assert answer.result == "Ok"
    return json.loads(answer.data)


@pytest.fixture(scope="module")
def orders():
    """The sample's orders, but one a shopper placed within ``ORDER_GAP_MS`` of their previous
    checkout (Instacart's day-and-hour times put a few on top of each other): the archive,
    which has no order id, would read the two as one checkout."""
    kept, last = [], {}
    for o in InstacartBuilder(users=USERS).orders():
        if o.placed_ms - last.get(o.user_id, -ad.ORDER_GAP_MS - 1) > ad.ORDER_GAP_MS:
            kept.append(o)
            last[o.user_id] = o.checkout_ms + len(o.products)
    return kept


@pytest.fixture(scope="module")
def records(orders):
    out = []
    for o in orders:
        for e in order_events(o):
            out.append(archived({**e, "route": "server"}))
    return out


def build(records, **kw):
    return ad.ArchiveBuilder("test", records=records, parallel=False, progress=False, **kw)


@pytest.fixture(scope="module")
def builder(records):
    return build(records)


@pytest.fixture(scope="module")
def built(builder):
    return builder.build()


def test_orders_read_back_from_the_archive_are_the_shoppers_orders(orders, builder):
    found, _, others = ad.orders_of(builder.events)
    assert others == []  # every add-to-cart went into the order it was bought in
    expected = {}
    for o in orders:
        expected.setdefault(archive.pseudonym(o.user_id, KEY), []).append(o.products)
    got = {}
    for o in sorted(found, key=lambda o: (o.user_id, o.number)):
        got.setdefault(o.user_id, []).append(o.products)
    assert got == expected
    assert not any(u.startswith("ic") for u in got)  # pseudonyms, never the shop's ids


def test_windows_are_cut_by_time_across_every_shopper(builder, built):
    validation_from, test_from = builder.cutoffs()
    assert builder.events[0]["ts"] < validation_from < test_from < builder.events[-1]["ts"]
    for (split, _), g in built.groups.items():
        if split == "train":
            assert (g.decision_ms < validation_from).all()
        elif split == "validation":
            assert ((g.decision_ms >= validation_from - 1) & (g.decision_ms < test_from)).all()
        else:
            assert (g.decision_ms >= test_from - 1).all()
    assert len(built.split("train")) and len(built.split("validation")) and len(built._unsealed("test"))
    with pytest.raises(SealedError):
        built.split("test")


def test_new_shoppers_never_train_and_their_events_move_no_one_elses_features(records, built):
    new = {b.user for b in built.baskets if b.cohort == "new"}
    assert len(new) == round(len({b.user for b in built.baskets}) * ad.NEW_SHOPPER_SHARE)
    for kind in ("order", "session"):
        assert not set(built.split("train", kind).user) & new
    assert set(built.split("validation", cohort="new").user) <= new
    # A held-out shopper's burst of views of every item bought: returning shoppers' features stay as they were.
    one = sorted(new)[0]
    items = sorted({r["item_id"] for r in records if r["type"] == "purchase"})
    middle = records[len(records) // 2]["ts"]
    burst = [archived({"event_id": f"burst-{n}", "type": "view", "user_id": "x", "item_id": item, "ts": middle + n})
             for n, item in enumerate(items)]
    for e in burst:
        e["user_id"] = one
    again = build(records + burst).build()
    for split in ("train", "validation"):
        before, after = built.split(split, cohort="returning"), again.split(split, cohort="returning")
        assert np.array_equal(before.X, after.X) and np.array_equal(before.decision_ms, after.decision_ms)


def test_a_decision_sees_only_what_came_before_it(records, built):
    """Anonymous views of every bought item at one moment: every decision before it is
    unchanged, and decisions after it see the views in their item features."""
    items = sorted({r["item_id"] for r in records if r["type"] == "purchase"})
    moment = sorted(r["ts"] for r in records)[len(records) // 3]
    views = [archived({"event_id": f"anon-{n}-{k}", "type": "view", "actor": f"visitor-{k}", "item_id": item,
                       "ts": moment, "route": "public"})
             for n, item in enumerate(items) for k in range(3)]
    again = build(records + views).build()
    before, after = built.split("train"), again.split("train")
    assert np.array_equal(before.decision_ms, after.decision_ms)
    early = before.decision_ms <= moment
    changed = [not np.array_equal(before.X[before.rows(g)], after.X[after.rows(g)]) for g in range(len(before))]
    assert early.any() and not any(c for c, e in zip(changed, early) if e)
    assert any(c for c, e in zip(changed, early) if not e)


def test_at_least_once_delivery_is_read_once_and_odd_records_are_counted_not_fatal(records, built):
    noisy = records + records[:50] + [{"type": "view"}, {"__unreadable__": True}]
    events, skipped = ad.clean(noisy)
    assert len(events) == len(records)
    assert skipped["duplicate event_id (delivered again)"] == 50
    assert skipped["not a JSON object"] == 1 and sum(skipped.values()) == 52
    assert build(noisy).id() == build(records).id()  # the same content: the same dataset


def test_an_archive_folder_is_read_as_firehose_writes_it(records, tmp_path):
    part = tmp_path / "events" / "dt=2026-01-05" / "hour=00"
    part.mkdir(parents=True)
    (part / "batch-1.gz").write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records)))
    (tmp_path / "errors" / "processing-failed").mkdir(parents=True)
    (tmp_path / "errors" / "processing-failed" / "x.gz").write_bytes(gzip.compress(b'{"rawData": "eA=="}\n'))
    assert list(ad.read_records(str(tmp_path))) == records
    with pytest.raises(FileNotFoundError):
        list(ad.read_records(str(tmp_path / "nowhere")))


def test_a_dataset_from_the_archive_survives_its_files(built, tmp_path):
    built.save(tmp_path)
    loaded = Dataset.load(tmp_path)
    assert loaded.id == built.id and loaded.window["source"] == "archive (test)"
    assert np.array_equal(loaded.split("train").X, built.split("train").X)
