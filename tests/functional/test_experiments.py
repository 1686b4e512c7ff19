"""A 2% experiment on the edge, attribution through POST /events, and the guardrail."""

import hashlib

import pytest

from infra.local.lambda_events import context
from personalize import identity
from personalize.adapters import appconfig, appconfig_fake
from personalize.adapters.experiment_states import ExperimentStates
from personalize.rollout import experiments, flags
from tests.conftest import now_ms, use_stack
from tests.functional.test_serving import loaded_shop


@pytest.fixture(scope="module")
def _shop(tmp_path_factory):
    """One shop for the module: each test runs its own experiment (``experiment_id``), with
    its own shoppers and event ids; the guardrail judges the experiment the flags name."""
    with loaded_shop(tmp_path_factory) as serving:
        serving.guardrail = serving._load("guardrail")
        yield serving


@pytest.fixture
def lab(_shop, monkeypatch, request):
    use_stack(_shop.stack, monkeypatch)
    _shop.experiment = experiment_id(request.node.name)
    return _shop


def experiment_id(test_name: str) -> str:
    """The test's own experiment: its shoppers' buckets, counters and state are its own."""
    return "exp-" + hashlib.sha256(test_name.encode()).hexdigest()[:10]


def refresh(lab):
    """The edge's flags once AppConfig's poll interval has passed (the local AppConfig keeps
    AWS's 15 s: its clock is moved on rather than waited for)."""
    appconfig_fake.LOCAL_CLOCK.advance(appconfig.MIN_POLL_S)
    return lab.edge._state["rollout"].store.refresh_now()


def deploy(lab, document):
    lab.stack.deploy_flags(document)
    lab.edge.recommender()  # cold start if not yet
    refresh(lab)


def rollout(lab, **kwargs):
    """The test's experiment: the linear challenger on 2% of shoppers."""
    return flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.02, lab.experiment, **kwargs)


def served_variants(lab, users):
    return [lab.get("k=3", cookie=lab.cookie(u))[1]["variant"] for u in users]


def challengers(lab, n=20):
    """The first ``n`` shoppers the experiment's sticky bucket puts in the challenger arm at 2%
    (flags.bucket, as serving assigns them): a kill must move every one of them (a probe of
    shoppers drawn at random may hold none)."""
    end, out = flags.share_step(0.02), []
    for i in range(100_000):
        if flags.bucket(f"shopper-{i}", lab.experiment) < end:
            out.append(f"shopper-{i}")
            if len(out) == n:
                return out
    raise AssertionError("no challengers")


def test_two_percent_of_shoppers_see_the_challenger_and_stay_there(lab):
    deploy(lab, rollout(lab))
    users = [f"shopper-{i}" for i in range(1500)]
    variants = served_variants(lab, users)
    share = variants.count("challenger") / len(variants)
    assert 0.01 <= share <= 0.03
    assert lab.edge._state["rollout"].store.document == rollout(lab)  # the real document was loaded
    assert served_variants(lab, users[:200]) == variants[:200]
    _, body, _ = lab.get(cookie=lab.cookie(users[variants.index("challenger")]))
    assert (body["variant"], body["model"]) == ("challenger", "ranker-linear/v1")
    assert body["rec_id"].startswith(f"{lab.experiment}@200~")  # the experiment at its ramp step (2%)


def attribute(lab, variant, impressions, purchases, sign=True):
    """Impressions and purchases of recommendations serving issued (signed rec_ids), or with
    ``sign=False`` what a client inventing variants would send."""
    events = []
    for n in range(impressions):
        # The guardrail counts shoppers (issue 19): one each, the test's own.
        user = f"{lab.experiment}-{variant}-shopper-{n}"
        # The experiment at its ramp step (2%): what serving names in the rec_ids it issues.
        rec = (identity.issue_rec_id(lab.stack.signing_key, f"{lab.experiment}@200", variant, user, now_ms() / 1000)
               if sign else f"{lab.experiment}~{variant}~ffffffff~{n:012x}~{'A' * 22}")
        events.append({"event_id": f"{user}-i", "type": "impression", "user_id": user, "items": ["sku-1"],
                       "ts": now_ms(), "rec_id": rec, "variant": variant})
        if n < purchases:
            events.append({"event_id": f"{user}-p", "type": "purchase", "user_id": user, "item_id": "sku-1",
                           "ts": now_ms(), "rec_id": rec, "variant": variant, "price": 10.0})
    for start in range(0, len(events), 500):
        status, answer = lab.post({"events": events[start:start + 500]})
        assert answer["accepted"] == len(events[start:start + 500])
    lab.drain()


# The evidence a decision is made on: past the guardrail's 500 exposed shoppers per variant
# and past its mSPRT threshold of 20 (alpha 0.05) with room to spare, at half the shoppers the
# tests once sent (3,000 and 1,500: a ratio of 1,442). WORSE: 10% against 0.67% (ratio 232);
# BETTER: 2% against 8% (ratio 275). Every count is exact (no sampling): the decision is
# deterministic, and a third of WORSE's challenger shoppers lost would already make it none.
WORSE = {"champion": (1500, 150), "challenger": (750, 5)}
BETTER = {"champion": (1500, 30), "challenger": (750, 60)}


def attribute_evidence(lab, evidence):
    for variant, (impressions, purchases) in evidence.items():
        attribute(lab, variant, impressions, purchases)


def run_guardrail(lab):
    return lab.guardrail.lambda_handler({}, context("guardrail"))


def test_the_guardrail_kills_a_worse_challenger_and_its_share_falls_to_zero(lab):
    deploy(lab, rollout(lab))
    assert set(served_variants(lab, challengers(lab))) == {"challenger"}  # before the kill
    attribute_evidence(lab, WORSE)
    result = run_guardrail(lab)
    assert result["action"] == "killed"
    assert "worse" in result["reason"]
    state = ExperimentStates(lab.stack.names["ItemsTable"]).get(lab.experiment)
    assert state["status"] == "killed" and state["by"] == "guardrail"
    refresh(lab)
    assert set(served_variants(lab, challengers(lab) + [f"shopper-{i}" for i in range(100)])) == {"champion"}
    again = run_guardrail(lab)
    assert again["action"] in ("idle", "skipped")  # a stopped experiment is never touched again


def test_a_winning_challenger_is_reported_never_promoted(lab):
    deploy(lab, rollout(lab))
    attribute_evidence(lab, BETTER)
    result = run_guardrail(lab)
    assert result["action"] == "winning"
    assert refresh(lab) == rollout(lab)


def test_no_decision_without_enough_data(lab):
    deploy(lab, rollout(lab))
    attribute(lab, "champion", 100, 5)
    attribute(lab, "challenger", 50, 0)
    assert run_guardrail(lab)["action"] == "insufficient_data"


@pytest.mark.parametrize("minutes, state", [(3, "DEPLOYING"), (12, "BAKING")])
def test_a_kill_during_a_gradual_ramp_lands_whatever_the_ramp_is_doing(lab, minutes, state):
    """AppConfig runs one deployment at a time, and StopDeployment refuses a BAKING deployment
    unless asked to revert (which returns the previous share): the guardrail's kill stops the
    ramp with AllowRevert, then deploys share 0 all at once (before: a kill in the ramp's
    5-minute bake failed)."""
    from botocore.exceptions import ClientError

    admin = lab.stack.flag_admin()
    deploy(lab, rollout(lab))
    attribute_evidence(lab, WORSE)
    ramp = rollout(lab, earlier_steps=[200])
    admin.deploy(ramp, appconfig.GRADUAL, "ramp (10 minutes, then a 5-minute bake)")
    with pytest.raises(ClientError, match="ConflictException"):
        admin.deploy(ramp, appconfig.GRADUAL, "another ramp conflicts")
    appconfig_fake.LOCAL_CLOCK.advance(minutes * 60)
    assert [d["State"] for d in admin.client.list_deployments(ApplicationId="app", EnvironmentId="local")[
        "Items"]][0] == state
    result = run_guardrail(lab)
    assert result["action"] == "killed"
    refresh(lab)
    assert set(served_variants(lab, challengers(lab))) == {"champion"}


def test_a_kill_that_cannot_land_pages_and_is_tried_again(lab, monkeypatch):
    from personalize.adapters.appconfig import AppConfigAdmin, KillFailedError

    deploy(lab, rollout(lab))
    attribute_evidence(lab, WORSE)

    def refused(self, document, description):
        raise KillFailedError("the kill did not land in 40 s (20 attempts): ConflictException")

    monkeypatch.setattr(AppConfigAdmin, "kill", refused)
    with pytest.raises(RuntimeError, match="the kill failed"):
        run_guardrail(lab)
    assert ExperimentStates(lab.stack.names["ItemsTable"]).get(lab.experiment)["status"] == "kill_failed"
    monkeypatch.undo()
    assert run_guardrail(lab)["action"] == "killed"  # the next run tries again


def test_invented_variants_move_no_counter_the_guardrail_reads(lab):
    """An attacker who read the experiment id from a rec_id and sends purchases and
    impressions claiming a variant (forged macs, or none) cannot make the guardrail kill."""
    deploy(lab, rollout(lab))
    # 600 each: were they counted, both variants would be past the 500 a decision needs.
    attribute(lab, "challenger", 600, 0, sign=False)
    attribute(lab, "champion", 600, 0, sign=False)
    counters = experiments.read_counters(_items_store(lab), lab.experiment)
    assert counters["challenger"].impressions == 0 and counters["champion"].impressions == 0
    assert run_guardrail(lab)["action"] == "insufficient_data"


def test_a_rec_id_attributes_only_for_the_shopper_it_was_issued_to(lab):
    deploy(lab, rollout(lab))
    now = now_ms()
    for_alice = identity.issue_rec_id(lab.stack.signing_key, lab.experiment, "challenger", "alice", now / 1000)
    events = [{"event_id": f"steal-{n}", "type": "impression", "user_id": "mallory", "items": ["sku-1"],
               "ts": now, "rec_id": for_alice, "variant": "challenger"} for n in range(5)]
    events.append({"event_id": "alice-1", "type": "impression", "user_id": "alice", "items": ["sku-1"],
                   "ts": now, "rec_id": for_alice})
    assert lab.post({"events": events})[1]["accepted"] == 6
    lab.drain()
    counters = experiments.read_counters(_items_store(lab), lab.experiment)
    assert counters["challenger"].impressions == 1


def _items_store(lab):
    from personalize.adapters.rowstore import DynamoRowStore
    return DynamoRowStore({"items": lab.stack.names["ItemsTable"], "users": lab.stack.names["FeaturesTable"]})
