"""Shared fixtures: moto-backed AWS built from template.yaml, handlers loaded after it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from moto import mock_aws

from infra.local import handlers, resources
from infra.local.lambda_events import http_api_event, response_json
from infra.local.poller import KinesisPoller
from personalize import identity, settings
from personalize.adapters import aws

EVENTS_DIR = Path(__file__).parent / "events"


def load_event(name: str):
    """A JSON file from tests/events/."""
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture
def stack(monkeypatch):
    """Moto started first, then the template's resources, then the functions' env."""
    with mock_aws():
        aws.reset()
        created = resources.create_all()
        for name, value in created.env().items():
            monkeypatch.setenv(name, value)
        yield created
    aws.reset()


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
            max_retries=3)

    def post(self, body, headers: dict | None = None, path: str = "/server/events") -> tuple[int, dict]:
        """As the shop's backend (user_id from the body), or ``path="/events"`` as a browser."""
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        response = self.collect.lambda_handler(http_api_event("POST", path, raw, headers), _context("collect"))
        return response["statusCode"], response_json(response)

    def post_public(self, body, user: str | None = None, headers: dict | None = None,
                    via_cdn: bool = True) -> tuple[int, dict]:
        """As a browser through CloudFront: the shopper's signed cookie (``user``; None:
        anonymous) and the origin-verify header CloudFront adds."""
        headers = dict(headers or {})
        if user is not None:
            headers["cookie"] = "rt_uid=" + identity.cookie_value(user, self.stack.signing_key)
        if via_cdn:
            headers[settings.ORIGIN_VERIFY_HEADER] = self.stack.origin_token
        return self.post(body, headers, path="/events")

    def user_features(self, user_id: str) -> tuple[int, dict]:
        response = self.features.lambda_handler(
            http_api_event("GET", f"/features/users/{user_id}", path_parameters={"user_id": user_id}),
            _context("features"))
        return response["statusCode"], response_json(response)

    def drain(self) -> None:
        self.poller.drain()


def _context(name):
    from infra.local.lambda_events import context
    return context(name)


@pytest.fixture
def pipeline(stack) -> Pipeline:
    return Pipeline(stack)


def now_ms() -> int:
    return int(time.time() * 1000)
