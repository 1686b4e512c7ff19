"""Shared fixtures: moto-backed AWS built from template.yaml, handlers loaded after it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import pytest
from moto import mock_aws

from infra.local import aws_limits, handlers, iam, moto_speed, resources, template
from infra.local.lambda_events import http_api_event, response_json
from infra.local.poller import KinesisPoller
from personalize import identity, settings
from personalize.adapters import aws

EVENTS_DIR = Path(__file__).parent / "events"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


# The longest files first (seconds on 2 cores): `make test` hands files to its two
# workers in collection order (``--no-loadscope-reorder``), so these start at once and the many
# short files even the workers out at the end; xdist's own order (most tests first) left the
# long one-test files (the demo, training parity) to the tail of one worker while the other
# sat idle. A file missing from the list runs after them, in collection order.
LONGEST_FIRST = (
    "tests/functional/test_experiments.py",        # 50 (2026-12-07, junit times on 2 workers)
    "tests/bench/test_bench_smoke.py",             # 48
    "tests/functional/test_demo.py",               # 45
    "tests/unit/test_hostile_input.py",            # 43
    "tests/browser/test_storefront.py",            # 43
    "tests/functional/test_loadtest.py",           # 36
    "tests/functional/test_training_parity.py",    # 26
    "tests/functional/test_iterate.py",            # 17
    "tests/functional/test_retrain_evaluate.py",   # 16
    "tests/functional/test_archive.py",            # 13
    "tests/unit/test_template.py",                 # 13
    "tests/unit/test_fault_injection.py",          # 12
    "tests/unit/test_archive_dataset.py",          # 11
)


def pytest_collection_modifyitems(config, items):
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}
    root = Path(config.rootpath)
    items.sort(key=lambda item: rank.get(Path(item.path).relative_to(root).as_posix(), len(rank)))  # stable


def function_client(function: str, service: str):
    """The cached client a function's adapters use (it signs as the function's role)."""
    with aws.as_identity(handlers.identity(function)):
        return aws.client(service)


def load_event(name: str):
    """A JSON file from tests/events/."""
    return json.loads((EVENTS_DIR / name).read_text())


NO_REAL_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1"}


def _no_real_aws_env(monkeypatch) -> None:
    for name, value in NO_REAL_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    _no_real_aws_env(monkeypatch)


@contextlib.contextmanager
def moto_stack(monkeypatch, template_path=template.TEMPLATE):
    """Moto started first, then the template's resources and roles, then the functions'
    env; IAM enforced from then on: each function runs as its own role (handlers.load),
    the test itself as the administrator; AWS's throughput limits in front of moto."""
    moto_speed.install()
    if _alive:
        raise RuntimeError(f"a moto stack is already running in this process, started by {_alive[0]}: two at "
                           "once would share (and break) moto's one state. A file whose tests share a "
                           "module_stack holds no test that asks for its own stack")
    _alive.append(os.environ.get("PYTEST_CURRENT_TEST", "this process").split(" (")[0])
    try:
        with mock_aws():
            aws.reset()
            created = resources.create_with_roles(template_path=template_path)
            for name, value in {**created.env(), **created.admin_env()}.items():
                monkeypatch.setenv(name, value)
            monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
            aws.reset()
            # AWS's throughput limits in front of moto, on every client made from here on
            # (``created.limits``: its clock can be swapped for a manual one).
            created.limits = aws_limits.AwsLimitsFront()
            hook = lambda client: aws_limits.install(client, created.limits)  # noqa: E731
            aws.on_new_client(hook)
            handlers.use_identities(created.identities.functions)
            try:
                with iam.Enforcement():
                    yield created
            finally:
                handlers.use_identities(None)
                aws.remove_client_hook(hook)
        aws.reset()
    finally:
        _alive.clear()  # a stack that failed to start holds nothing either


_alive: list[str] = []  # moto_stack's own: the test that started the running stack


@contextlib.contextmanager
def module_stack():
    """One moto stack for all the tests of a module (``scope="module"`` fixtures): most of a
    functional test's time is loading a shop into a fresh stack (about 3 s). The module's tests
    leave each other alone: each its own shoppers, items, addresses and experiments, every
    change to a shared object made through the test's ``monkeypatch`` (undone after it) or
    undone in a ``finally``. Each test calls ``use_stack`` first: the autouse fixture above puts
    the dummy credentials back. Such a file holds no test with a stack of its own (one moto
    state per process): those are in ``tests/functional/test_own_stack.py``."""
    with pytest.MonkeyPatch.context() as patch:
        _no_real_aws_env(patch)
        with moto_stack(patch) as created:
            created.environ = dict(os.environ)
            yield created


def use_stack(created, monkeypatch) -> None:
    """The environment ``module_stack`` left (its names, the administrator's credentials) for
    one test."""
    for name in set(os.environ) - set(created.environ):
        if name.startswith("AWS_"):  # the dummy session token (pytest's own variables stay)
            monkeypatch.delenv(name)
    for name, value in created.environ.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)


@pytest.fixture
def stack(monkeypatch):
    with moto_stack(monkeypatch) as created:
        yield created


class Pipeline:
    """collect -> Kinesis -> poller -> aggregate, all in-process under moto."""

    def __init__(self, stack):
        self.stack = stack
        self.collect = handlers.load("collect")
        self.aggregate = handlers.load("aggregate")
        self.features = handlers.load("features")
        self.poller = KinesisPoller(
            stack.names[settings.EVENTS_STREAM.logical_id], stack.arns[settings.EVENTS_STREAM.logical_id],
            self.aggregate.lambda_handler, stack.names[settings.STREAM_FAILURE_QUEUE.logical_id],
            max_retries=3, identity=handlers.identity("aggregate"))

    @property
    def rows(self):
        """The aggregate's tables read as the administrator (the function's own role may not
        Query or Scan), on the aggregate's clock."""
        from personalize.adapters.rowstore import DynamoRowStore

        theirs = self.aggregate.processor.ingestor.store
        return DynamoRowStore(dict(theirs.tables), clock=lambda: theirs.clock())

    def post(self, body, headers: dict | None = None, path: str = "/server/events") -> tuple[int, dict]:
        """As the shop's backend (user_id from the body), or ``path="/events"`` as a browser."""
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        response = self.collect.lambda_handler(http_api_event("POST", path, raw, headers), _context("collect"))
        return response["statusCode"], response_json(response)

    def post_public(self, body, user: str | None = None, headers: dict | None = None,
                    via_cdn: bool = True, address: str = "198.51.100.7:443") -> tuple[int, dict]:
        """As a browser through CloudFront: a JSON body from a browser's User-Agent, the
        shopper's signed cookie (``user``; None: anonymous), and what CloudFront adds: the
        origin-verify header and the viewer's ``address``."""
        headers = {"content-type": "application/json", "user-agent": BROWSER, **(headers or {})}
        if user is not None:
            headers["cookie"] = "rt_uid=" + identity.cookie_value(user, self.stack.signing_key)
        if via_cdn:
            headers[settings.ORIGIN_VERIFY_HEADER] = self.stack.origin_token
            headers["cloudfront-viewer-address"] = address
        return self.post(body, headers, path="/events")

    def user_features(self, user_id: str) -> tuple[int, dict]:
        response = self.features.lambda_handler(
            http_api_event("GET", f"/features/users/{user_id}", path_parameters={"user_id": user_id}),
            _context("features"))
        return response["statusCode"], response_json(response)

    def drain(self) -> None:
        self.poller.drain()

    def publish(self, *items: str, **details) -> None:
        """The shop publishes items (``catalogue`` events on the server route), the snapshot
        job publishes the membership, and collect and aggregate read it: public events about
        them are accepted from here on (DESIGN 3.1: the shop owns the catalogue)."""
        now = now_ms()
        status, body = self.post({"events": [
            {"event_id": f"publish-{item}-{now}", "type": "catalogue", "item_id": item, "listed": True,
             "ts": now, **details} for item in items]})
        assert status == 202 and body["accepted"] == len(items), body
        self.drain()
        self.run_snapshot()

    def run_snapshot(self) -> None:
        """One run of the snapshot function, then collect and aggregate re-read the membership."""
        if self._snapshot is None:
            self._snapshot = handlers.load("snapshot")
        self._snapshot.lambda_handler({}, _context("snapshot"))
        self.collect.collector.catalogue.refresh_now()
        self.aggregate.processor.ingestor.catalogue.refresh_now()

    _snapshot = None


def _context(name):
    from infra.local.lambda_events import context
    return context(name)


@pytest.fixture
def pipeline(stack) -> Pipeline:
    return Pipeline(stack)


def now_ms() -> int:
    return int(time.time() * 1000)
