"""A candidate's off-policy estimate from the archive's logged decisions (models.ope_archive):
the target's probabilities mirror serving's exploration, a candidate that ranks as the logging
policy did is estimated at exactly what the logs show, and the whole path runs on records in
the archive's own format (the flushes of one list united, rewards joined by rec_id)."""

import json

import numpy as np
import pytest

from models import archive_dataset as ad
from models import ope_archive
from models.dataset import InstacartBuilder
from models.instacart import order_events
from models.replay import Logged
from personalize import identity
from personalize.ingest import archive

KEY = "archive-key-for-tests-0123456789abcdef"


class ColumnRanker:
    def __init__(self, sign: float = 1.0, key: str = "test/v1"):
        self.sign, self.key = sign, key

    def score(self, X):
        return self.sign * X[:, 0].astype(np.float64)


def logged_policy(n_decisions: int, seed: int, fixed: int = 2, pool: int = 3):
    """Decisions as serving makes them with exploration: the top ``fixed`` of column 0, then one
    place drawn from the ``pool`` ranked next (propensity 1/pool); a click on each shown item
    with a probability that falls with its place."""
    rng = np.random.default_rng(seed)
    logged, shown, outcomes = [], {}, {}
    for d in range(n_decisions):
        cands = [f"item-{i}" for i in rng.permutation(12)]
        X = rng.normal(size=(12, 3)).astype(np.float32)
        order = np.argsort(-X[:, 0], kind="stable")
        pick = int(rng.integers(pool))
        items = [cands[i] for i in order[:fixed]] + [cands[order[fixed + pick]]]
        rec_id = f"exp~champion~ffff~{d:08x}"
        impression = {"event_id": f"list-{d}", "type": "impression", "user_id": "p:x", "rec_id": rec_id,
                      "items": items, "positions": [1, 2, 3],
                      "decision": {"model": "ranker/v1", "items": items, "propensities": [1.0] * fixed + [1 / pool],
                                   "candidates": "h"}}
        logged.append(Logged(impression, cands, X, 0))
        shown[impression["event_id"]] = {item: p + 1 for p, item in enumerate(items)}
        clicks = {item for p, item in enumerate(items) if rng.random() < 0.3 / (p + 1)}
        outcomes[rec_id] = {"click": clicks, "conversion": {i for i in clicks if rng.random() < 0.5}}
    return logged, shown, outcomes


def test_exploration_is_read_from_the_logged_propensities():
    assert ope_archive.exploration_of([1.0, 1.0, 1 / 3]) == (2, 3)
    assert ope_archive.exploration_of([1.0, 1.0, 1.0]) == (3, 0)
    assert ope_archive.exploration_of([1.0, 0.1, 0.1]) == (1, 10)
    assert ope_archive.exploration_of([1.0, 0.5, 0.25]) is None  # not serving's policy
    assert ope_archive.exploration_of([1.0, 0.5, 0.5, 0.5]) is None  # three drawn from a pool of two


def test_a_candidate_that_ranks_as_serving_did_is_estimated_at_what_the_logs_show():
    logged, shown, outcomes = logged_policy(400, seed=3)
    result = ope_archive.estimate(ColumnRanker(), logged, shown, outcomes)
    report = result["report"]
    assert report["weights"]["mean"] == 1.0 and report["weights"]["max"] == 1.0  # every weight exactly 1
    for reward in ("click", "conversion"):
        assert report[reward]["snips"]["estimate"] == pytest.approx(report[reward]["logged_mean"], abs=1e-12)
        assert report[reward]["dr"]["low"] <= report[reward]["logged_mean"] <= report[reward]["dr"]["high"]
    assert result["not_worse"] and result["left_out"] == {} and result["ranked_places_agreeing"] == 1.0


def test_the_targets_probability_is_one_zero_or_one_over_the_pool():
    logged, shown, outcomes = logged_policy(50, seed=4)
    reverse = ColumnRanker(-1.0)
    logs, _ = ope_archive.slots(reverse, logged, shown, outcomes)
    for d, entry in enumerate(logged):
        scores = reverse.score(entry.X)
        ranked, tail = ope_archive.target_places(scores, entry.candidates, 3, 2, 3)
        rows = np.flatnonzero(logs.decision == d)
        for row in rows:
            item = entry.impression["decision"]["items"][logs.slot[row]]
            expected = (1.0 if ranked[logs.slot[row]] == item else 0.0) if logs.slot[row] < 2 else \
                (1 / 3 if item in tail else 0.0)
            assert logs.target_pscore[row] == pytest.approx(expected)
    assert set(np.unique(logs.target_pscore)) <= {0.0, 1 / 3, 1.0}


def test_a_shown_item_not_at_its_decisions_place_is_left_out_not_counted():
    logged, shown, outcomes = logged_policy(5, seed=5)
    first = logged[0].impression
    shown[first["event_id"]] = {first["items"][1]: 1}  # claims the second item was at place 1
    result = ope_archive.estimate(ColumnRanker(), logged, shown, outcomes)
    assert result["left_out"] == {"shown item not at its decision's place": 1}


def archived(event: dict) -> dict:
    answer = archive.transform("record", json.dumps(event).encode(), KEY)
    assert answer.result == "Ok"
    return json.loads(answer.data)


def test_the_archives_own_records_give_logged_decisions_scored_on_the_replays_features():
    orders = InstacartBuilder(users=12).orders()
    records = [archived({**e, "route": "server"}) for o in orders for e in order_events(o)]
    last = max(o.checkout_ms for o in orders)
    users = sorted({o.user_id for o in orders})[:6]
    pool = sorted({p for o in orders for p in o.products})[:30]
    for n, user in enumerate(users):
        rec_id = f"exp-1~champion~ffffffff~{n:012x}~{'A' * 22}"  # the archive cuts the mac off
        # collect writes the verified token on the stream; the archive expands it
        decision = identity.issue_decision("signing-key", rec_id, identity.Decision(
            "ranker-mlp/v3", str(last - 60_000), tuple(pool[n:n + 3]), (1.0, 1.0, 0.25), "0123456789abcdef"))
        for flush, positions in enumerate(([1, 2], [3])):  # the kit flushes one list twice
            records.append(archived({"event_id": f"list-{n}", "type": "impression", "user_id": user,
                                     "rec_id": rec_id, "items": [pool[n + p - 1] for p in positions],
                                     "positions": positions, "decision": decision, "ts": last + 1000 * n + flush,
                                     "route": "public"}))
        records.append(archived({"event_id": f"click-{n}", "type": "click", "user_id": user, "item_id": pool[n],
                                 "rec_id": rec_id, "ts": last + 1000 * n + 500, "route": "public"}))
    builder = ad.ArchiveBuilder("test", records=records, parallel=False, progress=False)
    logged = builder.logged(since_ms=last)
    assert len(logged) == len(users)  # one per list: the second flush is the same list
    assert all(len(x.candidates) == len(x.X) > 0 for x in logged)
    assert all(x.same_snapshot for x in logged)  # the snapshot serving named, rebuilt at its time
    shown = ope_archive.shown_of(builder.raw)
    assert all(len(shown[x.impression["event_id"]]) == 3 for x in logged)  # both flushes, united
    outcomes = ope_archive.outcomes_of(builder.events)
    assert all(len(v["click"]) == 1 for v in outcomes.values()) and len(outcomes) == len(users)
    result = ope_archive.estimate(ColumnRanker(), logged, shown, outcomes)
    assert result["report"]["decisions"] == len(users) and result["report"]["rows"] == 3 * len(users)
    assert result["report"]["click"]["logged_mean"] == pytest.approx(1 / 3)
    assert result["same_snapshot_share"] == 1.0
    # scored as replayed (what bounds memory on a long window): the same estimate, no features kept
    scored = builder.logged(since_ms=last, rankers=[ColumnRanker(), ColumnRanker(-1.0, "test/v2")])
    assert all(x.X.shape == (len(x.candidates), 0) for x in scored)
    again = ope_archive.estimate(ColumnRanker(), scored, shown, outcomes)
    def same(a, b):  # NaN (an estimate without support) equals itself here
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    assert same(again["report"], result["report"])
    assert again["ranked_places_agreeing"] == result["ranked_places_agreeing"]
    other = ope_archive.estimate(ColumnRanker(-1.0, "test/v2"), scored, shown, outcomes)
    assert same(other["report"], ope_archive.estimate(ColumnRanker(-1.0, "test/v2"), logged, shown, outcomes)["report"])


def test_a_browsers_purchase_claim_is_no_conversion():
    """Only the shop's backend's purchase converts (a browser's is a claim, as for the
    guardrail and the archive's orders); nothing marked automated counts."""
    rec = "exp~champion~ffffffff~000000000001"
    events = [{"type": "purchase", "item_id": "a", "rec_id": rec, "route": "public"},
              {"type": "purchase", "item_id": "b", "rec_id": rec, "route": "server"},
              {"type": "click", "item_id": "c", "rec_id": rec, "route": "public", "bot": True},
              {"type": "click", "item_id": "d", "rec_id": rec, "route": "public"}]
    assert ope_archive.outcomes_of(events) == {rec: {"click": {"d"}, "conversion": {"b"}}}
