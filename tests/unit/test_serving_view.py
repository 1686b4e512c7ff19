"""Serving's view of the archive (models/serving_view.py): a logged decision is replayed on
what serving could have read when it decided, not on what the archive holds by the time
the impression arrived."""

import json

from models import serving_view
from models.replay import is_logged_decision
from personalize import identity
from personalize.ingest import archive
from personalize.serving import ranking

KEY = "archive-key-for-tests-0123456789abcdef"
T0 = 1_796_521_500_000  # a whole second
ITEMS = [f"sku-{n}" for n in range(12)]


def archived(event: dict, arrival_ms: int) -> dict:
    answer = archive.transform("record", json.dumps(event).encode(), KEY)
    assert answer.result == "Ok"
    return {**json.loads(answer.data), "arrival_ms": arrival_ms}


def rec_id_at(ms: int, n: int) -> str:
    expires = ms // 1000 + identity.REC_ID_TTL_S
    return f"none~champion~{expires:x}~{n:012x}~{'A' * 22}"


def impression(user: str, rec_id: str, items, snapshot: int, arrival_ms: int) -> dict:
    decision = identity.issue_decision("signing-key", rec_id, identity.Decision(
        "ranker-mlp/v3", str(snapshot), tuple(items), (1.0,) * len(items), "0123456789abcdef"))
    return archived({"event_id": f"imp-{rec_id[-30:]}", "type": "impression", "user_id": user, "rec_id": rec_id,
                     "items": list(items[:2]), "positions": [1, 2], "decision": decision, "ts": arrival_ms,
                     "route": "public"}, arrival_ms)


def view(records, archive_began: int | None = T0 - 60_000):
    """serving_view over ``records``, the archive beginning with a view at ``archive_began``."""
    if archive_began is not None:
        records = [archived({"event_id": "first", "type": "view", "user_id": "early", "item_id": ITEMS[0],
                             "ts": archive_began, "route": "public"}, archive_began), *records]
    preamble = [{"event_id": f"cat-{i}", "type": "stock", "item_id": i, "stock": 100, "route": "server",
                 "ts": T0 - 3_600_000} for i in ITEMS]
    return serving_view.logged_decisions(sorted(records, key=serving_view.arrival), is_logged_decision, preamble)


def test_the_decision_moment_is_the_second_its_rec_id_was_issued():
    imp = {"rec_id": rec_id_at(T0 + 1_400, 1), "arrival_ms": T0 + 2_500, "ts": T0 + 2_400}
    assert serving_view.decided_at(imp) == T0 + 1_000
    # a rec_id that says nothing usable (or a time after its impression arrived): the arrival
    for rec_id in ("none~champion~zz~1~A", "short", rec_id_at(T0 + 9_000, 1), None):
        assert serving_view.decided_at({**imp, "rec_id": rec_id}) == T0 + 2_500


def test_a_click_posted_just_before_the_next_request_is_not_in_that_decisions_row():
    user = "shopper-1"
    first, second = rec_id_at(T0 + 1_200, 1), rec_id_at(T0 + 1_300, 2)
    records = [
        impression(user, first, ITEMS[:4], T0, T0 + 1_250),
        # the list's click and cart, 50 ms before the second request: not yet in the feature store
        archived({"event_id": "c1", "type": "click", "user_id": user, "item_id": ITEMS[5], "rec_id": first,
                  "ts": T0 + 1_260, "route": "public"}, T0 + 1_262),
        impression(user, second, ITEMS[:4], T0, T0 + 1_350),
        # a request a few seconds later sees it
        impression(user, rec_id_at(T0 + 5_100, 3), ITEMS[:4], T0, T0 + 5_150),
    ]
    logged = view(records)
    assert len(logged) == 3
    clicks = ranking.INDEX["ui_clicks_log"]

    def clicked(entry):
        return float(entry.X[entry.candidates.index(ITEMS[5]), clicks]) if ITEMS[5] in entry.candidates else 0.0

    assert [clicked(x) for x in logged[:2]] == [0.0, 0.0]
    assert clicked(logged[2]) > 0
    assert all(x.same_snapshot for x in logged)


def test_a_backdated_order_that_arrived_after_the_snapshot_is_not_in_it():
    """The shop's backend's purchases are applied when they arrived here (a dataset applies
    them at their ts): serving's snapshot was built before they reached the feature store."""
    buyers = [f"buyer-{n}" for n in range(20)]
    snapshot = T0 + 10_000
    records = [archived({"event_id": f"p-{b}", "type": "purchase", "user_id": b, "item_id": ITEMS[7],
                         "ts": T0 - 3 * 3_600_000, "route": "server"}, snapshot + 500) for b in buyers]
    records.append(impression("shopper-2", rec_id_at(snapshot + 2_000, 1), ITEMS[:4], snapshot, snapshot + 2_100))
    (entry,) = view(records)
    purchases = ranking.INDEX["item_purchases_log"]
    bought = entry.X[entry.candidates.index(ITEMS[7]), purchases] if ITEMS[7] in entry.candidates else 0.0
    assert bought == 0.0 and entry.same_snapshot


def test_an_impression_sent_days_later_is_replayed_on_the_snapshot_its_decision_named():
    """The kit may hold an impression (a tab left open): the decision is still replayed at
    its own second, before the purchases and the snapshots that came after it."""
    late = rec_id_at(T0 + 1_000, 1)
    records = [archived({"event_id": f"p-{n}", "type": "purchase", "user_id": f"buyer-{n}", "item_id": ITEMS[7],
                         "ts": T0 + 3_600_000, "route": "server"}, T0 + 3_600_000) for n in range(20)]
    for n in range(10):  # other shoppers' lists on ten newer snapshots, after those purchases
        at = T0 + 7_200_000 + n * 60_000
        records.append(impression(f"other-{n}", rec_id_at(at + 500, 10 + n), ITEMS[:4], at, at + 600))
    records.append(impression("shopper-3", late, ITEMS[:4], T0, T0 + 3 * 86_400_000))
    logged = {x.impression["rec_id"]: x for x in view(records)}  # the archive pseudonymises user ids
    entry = logged[late.rsplit("~", 1)[0]]
    purchases = ranking.INDEX["item_purchases_log"]
    assert entry.same_snapshot and entry.now_ms == T0 + 1_000
    assert entry.X[entry.candidates.index(ITEMS[7]), purchases] == 0.0
    # the newer lists do see them
    other = logged[rec_id_at(T0 + 7_200_000 + 9 * 60_000 + 500, 19).rsplit("~", 1)[0]]
    assert other.X[other.candidates.index(ITEMS[7]), purchases] > 0


def test_a_snapshot_built_before_the_archive_began_is_not_called_the_same():
    """Rebuilt without the traffic it was built on: its features would be the catalogue's."""
    rec_id = rec_id_at(T0 + 5_000, 1)
    records = [archived({"event_id": "v1", "type": "view", "user_id": "shopper-4", "item_id": ITEMS[1],
                         "ts": T0 + 4_000, "route": "public"}, T0 + 4_000),
               impression("shopper-4", rec_id, ITEMS[:4], T0 - 86_400_000, T0 + 5_100)]
    (entry,) = view(records, archive_began=None)
    assert not entry.same_snapshot
