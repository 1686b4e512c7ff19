"""Degraded modes with deadlines: a cold instance never waits on AWS beyond its deadline,
retries its build with backoff, and a challenger that fails to load is not retried on every
request (controllable clocks; no network)."""

import gc
import json
import threading
from types import SimpleNamespace

import pytest

from infra.local import handlers
from infra.local.lambda_events import context
from infra.local.stack import cloudfront_event
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.serving import degraded
from personalize.serving.wiring import ModelCache, ModelUnavailableError


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_failed_build_is_retried_with_backoff_not_on_every_request():
    clock, calls = Clock(), []

    def build():
        calls.append(clock.now)
        if len(calls) < 3:
            raise ConnectionError("AWS unreachable")
        return "state"

    cold = degraded.BackgroundBuild(build, clock=clock, backoff_s=(1.0, 2.0))
    assert cold.get(None) is None and calls == [0.0]
    clock.now = 0.9
    assert cold.get(None) is None and calls == [0.0]  # within the backoff: no new attempt
    clock.now = 1.0
    assert cold.get(None) is None and calls == [0.0, 1.0]
    clock.now = 2.5
    assert cold.get(None) is None and len(calls) == 2  # the second backoff is 2 s
    clock.now = 3.0
    assert cold.get(None) == "state" and len(calls) == 3
    assert cold.get(None) == "state" and len(calls) == 3


def test_a_build_that_keeps_failing_is_an_error_with_its_traceback(caplog):
    clock = Clock()

    def build():
        raise RuntimeError("Unknown service: 'sts'")

    cold = degraded.BackgroundBuild(build, clock=clock, backoff_s=(1.0, 2.0, 4.0))
    with caplog.at_level("WARNING", logger=degraded.__name__):
        for _ in range(degraded.PERSISTENT_FAILURES + 1):
            cold.get(None)
            clock.now = cold.next_attempt_at
    levels = [(r.levelname, bool(r.exc_info)) for r in caplog.records]
    persistent = degraded.PERSISTENT_FAILURES
    assert levels == [("WARNING", False)] * (persistent - 1) + [("ERROR", True)] * 2
    assert cold.failures == persistent + 1 and "4 in a row" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("remaining_ms, wait", [
    pytest.param(30_000, degraded.COLD_START_WAIT_S, id="plenty-of-time"),
    pytest.param(700, 0.4, id="short-invocation"),
    pytest.param(100, 0.0, id="nearly-out-of-time"),
])
def test_the_wait_for_the_build_fits_the_invocations_remaining_time(remaining_ms, wait):
    assert degraded.deadline_s(remaining_ms) == pytest.approx(wait)


def test_a_cold_edge_with_aws_unreachable_answers_a_named_fallback_from_its_bundle(tmp_path, monkeypatch):
    edge = handlers.load("edge")
    (tmp_path / "config.json").write_text(json.dumps({"default_champion": "ranker-mlp/v1"}))
    (tmp_path / "fallback.json").write_text(json.dumps({"built_at": "2026-11-28", "items": ["a", "b", "c"]}))
    monkeypatch.setattr(edge, "CONFIG_PATH", tmp_path / "config.json")
    monkeypatch.setattr(edge, "FALLBACK_PATH", tmp_path / "fallback.json")
    monkeypatch.setattr(edge, "COLD_START_WAIT_S", 0.01)
    never = threading.Event()
    builds = []
    monkeypatch.setattr(edge, "_build", lambda: builds.append(1) or never.wait())  # AWS never answers
    try:
        for _ in range(3):
            answer = edge.lambda_handler(cloudfront_event("GET", "/recommendations", {"k": "2"}, {}), context("edge"))
            body = json.loads(answer["body"])
            assert answer["status"] == "200"
            assert body["fallback_reason"] == "cold_start_unavailable" and body["variant"] == "outside"
            assert [i["item_id"] for i in body["items"]] == ["a", "b"] and body["model"] == "ranker-mlp/v1"
        assert builds == [1]  # one attempt in flight, not one per request
    finally:
        never.set()


def test_a_cold_edge_counts_its_failed_builds(tmp_path, monkeypatch):
    edge = handlers.load("edge")
    (tmp_path / "config.json").write_text(json.dumps({"default_champion": "ranker-mlp/v1"}))
    monkeypatch.setattr(edge, "CONFIG_PATH", tmp_path / "config.json")
    monkeypatch.setattr(edge, "FALLBACK_PATH", tmp_path / "fallback.json")

    def unbuildable():
        raise RuntimeError("Unknown service: 'sts'")

    monkeypatch.setattr(edge, "_build", unbuildable)
    for _ in range(2):  # the second request is within the backoff: no second attempt, no second count
        answer = edge.lambda_handler(cloudfront_event("GET", "/recommendations", {"k": "2"}, {}), context("edge"))
        assert json.loads(answer["body"])["fallback_reason"] == "cold_start_unavailable"
    counted = {name: value for (name, _), value in edge.figures.pending.counts.items()
               if name == "ColdStartBuildFailures"}
    assert counted == {"ColdStartBuildFailures": 1}


def test_the_edge_pauses_the_collector_only_while_its_imports_and_build_run(monkeypatch):
    """Cold start: no cyclic collections over what the imports and the build allocate for good
    (~35-50 ms of a cold start); the collector runs again after, the build failed or not."""
    assert gc.isenabled()
    edge = handlers.load("edge")
    assert gc.isenabled(), "the edge's imports left the collector paused"
    during = []

    def build(*_):
        during.append(gc.isenabled())
        raise ConnectionError("AWS unreachable")

    config = SimpleNamespace(artifacts_bucket="artifacts-{account}", for_stack=lambda stack: config)
    monkeypatch.setattr(edge, "wiring", SimpleNamespace(
        ServingConfig=SimpleNamespace(from_file=lambda path: config), stack_of_function=lambda name: None,
        build=build))
    monkeypatch.setattr(edge, "IN_LAMBDA", True)
    frozen = gc.get_freeze_count()
    with pytest.raises(ConnectionError):
        edge._build()
    assert during == [False] and gc.isenabled()
    assert gc.get_freeze_count() == frozen, "a failed attempt is garbage: frozen, it would never be freed"
    gc.disable()  # someone else's pause (an ingest batch in the same process): theirs to end
    try:
        with pytest.raises(ConnectionError):
            edge._build()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_regional_function_pauses_the_collector_while_it_imports_and_builds(stack, monkeypatch):
    """As the edge: the regional ``recommend`` builds at import; the collector is paused for the
    imports and the build, runs again after, and what they made is frozen only in Lambda."""
    from personalize.serving import wiring

    during = []
    warm_up = wiring.warm_up
    monkeypatch.setattr(wiring, "warm_up", lambda *a: during.append(gc.isenabled()) or warm_up(*a))
    frozen = gc.get_freeze_count()
    handlers.load("recommend")
    assert during == [False] and gc.isenabled()
    assert gc.get_freeze_count() == frozen  # outside Lambda: a test loads it again and again
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "recommend")
    try:
        handlers.load("recommend")
        assert gc.isenabled() and gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()


class FailingArtifacts(MemoryArtifacts):
    def get(self, key):
        self.gets += 1
        raise ConnectionError("S3 unreachable")


def test_a_challenger_that_fails_to_load_is_remembered_as_failed_for_a_while(tmp_path):
    clock, artifacts = Clock(), FailingArtifacts()
    pins = {"ranker-linear/v9": "0" * 64}  # pinned by the flags document, so the bucket is tried
    models = ModelCache(tmp_path / "nothing-bundled", artifacts, lambda: pins, retry_after_s=60, clock=clock)
    for _ in range(3):
        with pytest.raises(ModelUnavailableError):
            models.get("ranker-linear/v9")
    assert artifacts.gets == 1
    clock.now = 61
    with pytest.raises(ModelUnavailableError):
        models.get("ranker-linear/v9")
    assert artifacts.gets == 2
