"""The local stack's worker processes: each function in containers that import the
handler once, handle one invocation at a time, scale up to a bound, and are frozen
(SIGSTOP) between invocations as Lambda freezes an execution environment."""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra.local import pool
from infra.local.lambda_events import http_api_event

pytestmark = pytest.mark.skipif(not pool.CAN_FREEZE, reason="freezing needs SIGSTOP (POSIX)")


def process_state(pid: int) -> str:
    """R running, S sleeping, T stopped (frozen)..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def features(tmp_path):
    # The features function answers a path it has no route for without calling AWS.
    env = {**os.environ, "FEATURES_TABLE": "local-features", "ITEMS_TABLE": "local-items",
           "QUARANTINE_QUEUE_URL": "http://127.0.0.1:9/q", "ARTIFACTS_BUCKET": "local-artifacts",
           "AGGREGATE_FUNCTION": "aggregate", "FLAGS_SOURCE": "local", "APPCONFIG_APPLICATION": "app",
           "APPCONFIG_PROFILE": "profile", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_ACCESS_KEY_ID": "role-key", "AWS_SECRET_ACCESS_KEY": "role-secret", "AWS_DEFAULT_REGION": "us-east-1",
           "POWERTOOLS_TRACE_DISABLED": "1", "PYTHONPATH": os.pathsep.join(p for p in __import__("sys").path if p)}
    functions = pool.FunctionPool("features", env, max_workers=2, log_path=tmp_path / "functions.log")
    yield functions
    functions.stop()


def test_idle_containers_are_frozen_and_thawed_for_the_next_invocation(features):
    answer = features(http_api_event("GET", "/nowhere"))
    assert answer["statusCode"] == 404
    [container] = features._all
    assert process_state(container.process.pid) == "T"  # no CPU for its threads until the next invocation
    assert features(http_api_event("GET", "/nowhere"))["statusCode"] == 404
    assert process_state(container.process.pid) == "T"
    assert features.invocations == 2 and len(features.init_ms) == 1  # one cold start, then warm
    assert features.aws_ms == [0.0, 0.0]  # no route: no AWS call


def test_concurrency_scales_up_to_the_bound(features):
    with ThreadPoolExecutor(6) as running:
        answers = list(running.map(lambda _: features(http_api_event("GET", "/nowhere")), range(12)))
    assert [a["statusCode"] for a in answers] == [404] * 12
    assert 1 <= features.workers <= 2 and features.peak_busy <= 2
    assert len(features.durations_ms) == len(features.dispatch_ms) == 12


def test_a_handler_error_is_a_function_error_and_the_container_survives(features):
    with pytest.raises(pool.FunctionError):
        features({"not": "an API Gateway event"})
    assert features(http_api_event("GET", "/nowhere"))["statusCode"] == 404
    assert features.workers == 1


def test_stopping_ends_every_container(features):
    features.warm()
    processes = [c.process for c in features._all]
    assert len(processes) == 2
    features.stop()
    assert all(p.poll() is not None for p in processes)


def test_a_container_that_died_is_replaced_by_a_cold_start(features):
    assert features(http_api_event("GET", "/nowhere"))["statusCode"] == 404
    [container] = features._all
    container.kill()
    assert features(http_api_event("GET", "/nowhere"))["statusCode"] == 404
    assert len(features.init_ms) == 2 and features.workers == 1 and features._all != [container]


def test_a_frozen_container_ends_with_its_killed_parent():
    """SIGKILL leaves the stack no time to clean up, and a frozen worker cannot notice its
    pipes closing: the kernel's parent-death signal ends it (on-call review: stopped
    workers outlived a killed `make serve`)."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from infra.local import lifecycle

    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    child = ("from infra.local import lifecycle; lifecycle.die_with_parent(); import os, signal, time; "
             "print(os.getpid(), flush=True); os.kill(os.getpid(), signal.SIGSTOP); time.sleep(120)")
    parent = ("import os, subprocess, sys, time; from infra.local import lifecycle; "
              f"p = lifecycle.spawn([sys.executable, '-c', {child!r}], dict(os.environ), stdout=subprocess.PIPE); "
              "print(p.stdout.readline().decode().strip(), flush=True); time.sleep(120)")
    started = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, env=dict(os.environ))
    pid = int(started.stdout.readline())

    def state() -> str:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return "gone"

    deadline = time.monotonic() + 30
    while state() != "T" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state() == "T", "the container froze itself"
    started.kill()
    started.wait()
    while state() not in ("gone", "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state() in ("gone", "Z"), f"the frozen container outlived its parent (state {state()})"
    assert lifecycle.PARENT_ENV not in os.environ
