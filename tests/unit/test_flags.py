"""Sticky assignment and the flag store's failure behaviour, on real flag documents."""

import pytest
from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator

from personalize.rollout import flags


def store_of(*documents, bundled=None):
    """A store whose fetch returns the documents in turn (an Exception instance raises)."""
    queue = list(documents)
    clock = {"now": 0.0}

    def fetch():
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    store = flags.CachedDocumentStore(fetch, max_age_s=10, clock=lambda: clock["now"], bundled=bundled)
    return store, clock


TWO_PERCENT = flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.02, "exp-a")


def test_documents_pass_powertools_schema_validation():
    for share in (0.0, 0.0001, 0.02, 0.5, 1.0):
        SchemaValidator(flags.rollout_document("a/v1", "b/v1", share, "e")).validate()


def test_two_percent_rule_assigns_about_two_percent_of_100k_shoppers():
    rollout = flags.Rollout(store_of(TWO_PERCENT)[0], "ranker-mlp/v1")
    variants = [rollout.assign(f"user-{i}") for i in range(100_000)]
    share = sum(v.variant == flags.CHALLENGER for v in variants) / len(variants)
    assert 0.018 <= share <= 0.022
    assert all(v.flags_loaded for v in variants[:10])
    assert {v.model for v in variants if v.variant == flags.CHALLENGER} == {"ranker-linear/v1"}


def test_share_has_a_hundredth_of_a_percent_resolution():
    doc = flags.rollout_document("a/v1", "b/v1", 0.0001, "e")
    assert flags.challenger_share(doc) == pytest.approx(0.0001)


def test_assignment_is_sticky_and_a_new_experiment_reshuffles():
    a = flags.Rollout(store_of(TWO_PERCENT)[0], "ranker-mlp/v1")
    b = flags.Rollout(store_of(TWO_PERCENT)[0], "ranker-mlp/v1")  # another edge location
    users = [f"user-{i}" for i in range(5000)]
    first = [a.assign(u).variant for u in users]
    assert first == [a.assign(u).variant for u in users] == [b.assign(u).variant for u in users]
    other = flags.Rollout(store_of(flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.02, "exp-b"))[0],
                          "ranker-mlp/v1")
    assert [other.assign(u).variant for u in users] != first


def test_anonymous_shoppers_get_the_champion_outside_the_experiment():
    rollout = flags.Rollout(store_of(flags.rollout_document("a/v1", "b/v1", 1.0, "e"))[0], "a/v1")
    anonymous = rollout.assign(None)
    assert (anonymous.variant, anonymous.model, anonymous.experiment) == (flags.OUTSIDE, "a/v1", "none")
    assert rollout.assign("someone").variant == flags.CHALLENGER
    # A consenting visitor's shop-minted id (no account) is anonymous too: one per click.
    assert rollout.assign("anon-Idknok3l-vTGTT5LKYSAw").variant == flags.OUTSIDE


def test_flags_older_than_the_maximum_age_serve_only_the_champion():
    store, clock = store_of(flags.rollout_document("a/v1", "b/v1", 1.0, "e"), RuntimeError("AppConfig down"))
    rollout = flags.Rollout(store, "a/v1")
    assert rollout.assign("someone").variant == flags.CHALLENGER
    clock["now"] = flags.FLAGS_MAX_AGE_S - 1  # failing fetches, last good document still young enough
    assert rollout.assign("someone").variant == flags.CHALLENGER
    clock["now"] = flags.FLAGS_MAX_AGE_S + 11
    stale = rollout.assign("someone")
    assert (stale.variant, stale.model, stale.experiment) == (flags.OUTSIDE, "a/v1", "none")


def test_a_new_document_reaches_shoppers_already_assigned_by_the_previous_one():
    store, clock = store_of(flags.rollout_document("a/v1", "b/v1", 1.0, "e"),
                            flags.rollout_document("a/v1", "b/v1", 1.0, "e", kill_switch=True),
                            flags.rollout_document("c/v1", "b/v1", 0.0, "e2"))
    rollout = flags.Rollout(store, "a/v1")
    users = [f"u{i}" for i in range(50)]
    assert {rollout.assign(u).variant for u in users} == {flags.CHALLENGER}
    clock["now"] = 11  # the killed document
    rollout.assign(users[0])  # a stale document is re-read, then served
    assert {rollout.assign(u).variant for u in users} == {flags.CHAMPION}
    clock["now"] = 22
    rollout.assign(users[0])
    assert {(a.variant, a.model, a.experiment.split("@")[0]) for a in map(rollout.assign, users)} == {
        (flags.CHAMPION, "c/v1", "e2")}


def test_kill_switch_sends_everyone_to_the_champion():
    killed = flags.rollout_document("a/v1", "b/v1", 1.0, "e", kill_switch=True)
    rollout = flags.Rollout(store_of(killed)[0], "a/v1")
    assert {rollout.assign(f"u{i}").variant for i in range(100)} == {flags.CHAMPION}


def test_a_failing_store_keeps_the_last_good_document_and_counts():
    store, clock = store_of(TWO_PERCENT, RuntimeError("AppConfig down"))
    rollout = flags.Rollout(store, "ranker-mlp/v1")
    assert rollout.assign("u1").flags_loaded
    clock["now"] = 20  # past the refresh interval, within FLAGS_MAX_AGE_S
    assignment = rollout.assign("u1")
    assert assignment.flags_loaded and assignment.experiment == "exp-a@200"  # the experiment at its ramp step
    assert store.failures == 1


def test_before_any_document_the_champion_is_served_and_it_is_not_silent():
    store, _ = store_of(RuntimeError("no AppConfig yet"))
    assignment = flags.Rollout(store, "ranker-mlp/v1").assign("u1")
    assert (assignment.variant, assignment.model, assignment.flags_loaded) == ("champion", "ranker-mlp/v1", False)
    assert store.failures == 1 and not store.loaded


class DeferredExecutor:
    """Runs submitted work only when asked: shows what happens off the request path."""

    def __init__(self):
        self.pending = []

    def submit(self, fn):
        self.pending.append(fn)

    def run(self):
        while self.pending:
            self.pending.pop(0)()


def test_a_stale_document_is_refreshed_off_the_request_path():
    new = flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.5, "exp-b")
    documents = [TWO_PERCENT, new]
    clock = {"now": 0.0}
    executor = DeferredExecutor()
    store = flags.CachedDocumentStore(lambda: documents.pop(0) if len(documents) > 1 else documents[0],
                                      max_age_s=10, clock=lambda: clock["now"], executor=executor)
    assert store.refresh_now() == TWO_PERCENT
    clock["now"] = 11
    assert store.get_configuration() == TWO_PERCENT  # answered at once, with the last document
    assert len(executor.pending) == 1
    executor.run()
    assert store.get_configuration() == new


def test_aging_a_store_refreshes_it_only_past_its_own_interval():
    """The local stack's tests let the poll interval pass at once (LocalStack.advance_flags_clock):
    the store refreshes on the next request through its own age check, so a store that polls
    less often than that is not refreshed by it."""
    new = flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 0.5, "exp-b")
    documents = [TWO_PERCENT, new]
    executor = DeferredExecutor()
    store = flags.CachedDocumentStore(lambda: documents.pop(0) if len(documents) > 1 else documents[0],
                                      max_age_s=15, clock=lambda: 100.0, executor=executor)
    slow = flags.CachedDocumentStore(lambda: new, max_age_s=900, clock=lambda: 100.0, executor=executor)
    assert store.refresh_now() == TWO_PERCENT and slow.refresh_now() == new
    store.age(14.9)
    assert store.get_configuration() == TWO_PERCENT and not executor.pending  # not yet due
    store.age(0.1)
    slow.age(15)
    assert slow.get_configuration() == new and not executor.pending  # 15 s are not its 15 minutes
    assert store.get_configuration() == TWO_PERCENT and len(executor.pending) == 1  # due: refreshed off the path
    executor.run()
    assert store.get_configuration() == new


def test_a_scheduled_kill_switch_takes_effect_when_its_window_opens(monkeypatch):
    """Answers are remembered per document, except for a document with time-based rules:
    its answers change with the clock (Powertools' comparators read it; moved here)."""
    import datetime as dt

    from aws_lambda_powertools.utilities.feature_flags import comparators

    clock = {"now": dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)}
    monkeypatch.setattr(comparators, "_get_now_from_timezone", lambda tz: clock["now"].astimezone(tz))
    doc = flags.rollout_document("ranker-mlp/v1", "ranker-linear/v1", 1.0, "exp")  # everyone challenger
    doc["kill_switch"]["rules"] = {"kill at ten": {"when_match": True, "conditions": [
        {"action": "SCHEDULE_BETWEEN_DATETIME_RANGE", "key": "CURRENT_DATETIME",
         "value": {"START": "2026-11-28T10:00:00", "END": "2026-11-28T11:00:00", "TIMEZONE": "UTC"}}]}}
    store, _ = store_of(doc)
    rollout = flags.Rollout(store, "ranker-mlp/v1", "none")
    assert rollout.assign("shopper-1").variant == flags.CHALLENGER
    clock["now"] = dt.datetime(2026, 11, 28, 10, 0, 1, tzinfo=dt.UTC)
    assert rollout.assign("shopper-1").variant == flags.CHAMPION, "the same warm instance obeys the window"


EXPLORING = [({"slots": 1, "pool": 10}, True), ({"slots": 3, "pool": 3}, True), ({"slots": 0, "pool": 50}, True),
             ({"slots": 4, "pool": 10}, False), ({"slots": 1, "pool": 2}, False), ({"slots": 1, "pool": 51}, False),
             ({"slots": True, "pool": 10}, False), ({"slots": 1.0, "pool": 10}, True),
             ({"slots": 1.5, "pool": 10}, False), ({"slots": 1}, False),
             ({"slots": 1, "pool": 10, "epsilon": 0.5}, False), ([1, 10], False)]


@pytest.mark.parametrize("value, valid", EXPLORING, ids=[str(v) for v, _ in EXPLORING])
def test_exploration_is_bounded_and_the_profiles_validator_agrees(value, valid):
    import json

    import jsonschema

    from infra.local.template import ROOT

    doc = {**flags.rollout_document("ranker-mlp/v3", "ranker-linear/v3", 0.02, "exp-1"),
           flags.EXPLORATION: {"default": value, "boolean_type": False}}
    schema = json.loads((ROOT / "infra" / "flags" / "schema" / "rollout.schema.json").read_text())
    schema_accepts = not list(jsonschema.Draft7Validator(schema).iter_errors(doc))
    assert schema_accepts == valid
    if valid:
        flags.validate_document(doc)
    else:
        with pytest.raises(flags.FlagsDocumentError, match="exploration"):
            flags.validate_document(doc)


def test_exploration_survives_every_change_of_arms_and_reaches_the_rollout():
    doc = flags.with_exploration(flags.rollout_document("ranker-mlp/v3", None, 0.0, "none"), 2, 10)
    killed = flags.keep_exploration(doc, flags.rollout_document("ranker-mlp/v3", "ranker-linear/v3", 0.0, "exp-1",
                                                                kill_switch=True))
    assert killed[flags.EXPLORATION]["default"] == {"slots": 2, "pool": 10}
    assert flags.EXPLORATION not in flags.with_exploration(doc, 0, 10)  # 0 slots: off
    store = flags.CachedDocumentStore(lambda: killed)
    store.refresh_now()
    assert flags.Rollout(store, "ranker-mlp/v3").exploration() == (2, 10)
    plain = flags.CachedDocumentStore(lambda: flags.rollout_document("ranker-mlp/v3", None, 0.0, "none"))
    plain.refresh_now()
    assert flags.Rollout(plain, "ranker-mlp/v3").exploration() == (0, 0)
