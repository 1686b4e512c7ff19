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


def test_purchases_within_the_gap_are_one_checkout_and_a_late_add_is_replayed_not_ordered():
    ts = 1_790_000_000_000
    events = [
        {"event_id": "a1", "type": "add_to_cart", "user_id": "p:u", "item_id": "x", "ts": ts},
        {"event_id": "b1", "type": "purchase", "user_id": "p:u", "item_id": "x", "ts": ts + 60_000, "route": "server"},
        {"event_id": "a2", "type": "add_to_cart", "user_id": "p:u", "item_id": "y", "ts": ts + 120_000},
        {"event_id": "b2", "type": "purchase", "user_id": "p:u", "item_id": "y", "ts": ts + 29 * 60_000,
         "route": "server"},
        {"event_id": "b3", "type": "purchase", "user_id": "p:u", "item_id": "z", "ts": ts + 90 * 60_000,
         "route": "server"},
    ]
    orders, order_events, others = ad.orders_of(events)
    assert [(o.number, o.products) for o in orders] == [(1, ["x", "y"]), (2, ["z"])]
    # y was added after the first checkout began: a synthetic add stands for it in the order,
    # the real one is replayed at its time
    assert [e["event_id"] for e in others] == ["a2"]
    assert order_events[orders[1].order_id][0]["event_id"].startswith("cart-")  # z had no add: one is made


def test_a_truncated_archive_object_is_named(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "part-7.gz").write_bytes(gzip.compress(b"".join(b"%d\n" % n for n in range(5000)))[:200])
    with pytest.raises(ad.ArchiveReadError, match="part-7.gz"):
        list(ad.read_records(str(tmp_path)))


def test_a_browsers_purchase_is_a_claim_it_makes_no_order_and_no_label():
    ts = 1_790_000_000_000
    claims = [{"event_id": f"c{n}", "type": "purchase", "user_id": "p:attacker", "item_id": "x",
               "ts": ts + n * 31 * 60_000, "route": "public"} for n in range(325)]
    orders, _, others = ad.orders_of(claims)
    assert orders == [] and len(others) == 325  # replayed as they came (aggregate weighs them), never an order


def test_one_shoppers_event_id_never_hides_anothers_nor_a_relisting():
    ts = 1_790_000_000_000
    records = [
        {"event_id": "ord-1", "type": "view", "user_id": "p:attacker", "item_id": "x", "ts": ts, "route": "public"},
        {"event_id": "ord-1", "type": "purchase", "user_id": "p:victim", "item_id": "x", "ts": ts + 1,
         "route": "server"},
        {"event_id": "cat-x", "type": "catalogue", "item_id": "x", "listed": False, "ts": ts + 2, "route": "server"},
        {"event_id": "cat-x", "type": "catalogue", "item_id": "x", "listed": True, "ts": ts + 3, "route": "server"},
        {"event_id": "cat-x", "type": "catalogue", "item_id": "x", "listed": True, "ts": ts + 3, "route": "server"},
    ]
    events, skipped = ad.clean(records)
    assert [(e["type"], e.get("user_id"), e.get("listed")) for e in events] == [
        ("view", "p:attacker", None), ("purchase", "p:victim", None), ("catalogue", None, False),
        ("catalogue", None, True)]
    assert skipped == {"duplicate event_id (delivered again)": 1}  # the identical redelivery only


def test_a_shopper_the_forget_ledger_names_is_in_no_dataset(records, tmp_path):
    gone = records[0]["user_id"]
    events, skipped = ad.clean(records, forgotten={gone})
    assert not [e for e in events if e.get("user_id") == gone] and skipped["an erased shopper's (the forget ledger)"]
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "forgotten").mkdir()
    (tmp_path / "forgotten" / f"{gone}.json").write_text("{}")
    built = ad.ArchiveBuilder(str(tmp_path), parallel=False, progress=False)
    assert built.forgotten == {gone} and not [e for e in built.events if e.get("user_id") == gone]


def test_a_long_item_id_is_listed_without_breaking_the_build(records):
    long_item = "x" * 128  # the contract's longest
    extra = [archived({"event_id": "long-1", "type": "view", "user_id": "someone", "item_id": long_item,
                       "ts": records[10]["ts"], "route": "server"})]
    assert build(records + extra).build().window["items"] > 0


def test_each_shopper_is_one_held_out_decision_a_window_and_no_cart_straddles_a_cutoff(builder, built):
    validation_from, test_from = builder.cutoffs()
    for split in ("validation", "test"):
        groups = built._unsealed(split, "order")
        assert len(set(groups.user)) == len(groups.user)  # one each: intervals over shoppers
    train = built.split("train", "order")
    per_shopper = {u: int((train.user == u).sum()) for u in set(train.user)}
    assert max(per_shopper.values()) <= ad.MAX_TRAIN_ORDERS
    baskets = {b.order_id: b for b in built.baskets}
    for order_id in train.order_id:
        assert baskets[order_id].placed_ms < validation_from  # its cart and checkout in the training window


def test_a_browsers_backdated_event_reaches_no_decision_taken_before_it_arrived(records, built):
    """Public views that say they happened early but reached the stream later (the archive
    keeps their arrival): decisions between the two are as they were without them."""
    items = sorted({r["item_id"] for r in records if r["type"] == "purchase"})
    stamps = sorted(r["ts"] for r in records)
    claimed, arrived = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    views = []
    for n, item in enumerate(items):
        answer = archive.transform("r", json.dumps({"event_id": f"late-{n}", "type": "view", "actor": "visitor-1",
                                                    "item_id": item, "ts": claimed, "route": "public"}).encode(),
                                   KEY, arrival_ms=arrived)
        views.append(json.loads(answer.data))
    assert views[0]["arrival_ms"] == arrived
    again = build(records + views).build()
    before, after = built.split("train"), again.split("train")
    for g in range(len(before)):
        if before.decision_ms[g] < arrived:
            assert np.array_equal(before.X[before.rows(g)], after.X[after.rows(g)])
    assert any(not np.array_equal(before.X[before.rows(g)], after.X[after.rows(g)])
               for g in range(len(before)) if before.decision_ms[g] >= arrived)
