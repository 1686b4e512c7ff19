"""AppConfig as AWS runs it, in memory (or in one S3 object, for the local stack): the
AppConfig part of the limits model. moto has neither the data API nor deployments; this fake
is never kinder than AWS where the flags depend on it (sources: ``AWS-LIMITS.md`` section 3).

Data API (``FakeAppConfigData``, boto3's ``appconfigdata`` client's shape):

* ``StartConfigurationSession``: ``RequiredMinimumPollIntervalInSeconds`` 15..86,400
  (``BadRequestException`` otherwise); 60 s when not given;
* ``GetLatestConfiguration``: each token is single-use and valid 24 h (``BadRequestException``,
  problem ``Corrupted`` / ``Expired``); polled before the session's interval has passed since
  the previous poll: ``BadRequestException`` "Request too early" (``PollIntervalNotSatisfied``;
  the token stays usable, unconfirmed); the body is empty when the session already has the
  version; ``NextPollIntervalInSeconds`` is the session's interval.

Control plane (``FakeAppConfig``, boto3's ``appconfig`` client's shape, what the admin uses):

* a deployment is DEPLOYING for its strategy's duration (a session sees the new version once
  its place among the environment's targets is within the growth so far: LINEAR, G% more each
  step of duration x G / 100), then BAKING for the final bake time (everyone has it), then
  COMPLETE, on the world's clock;
* one deployment in progress (DEPLOYING or BAKING) per environment: another
  ``StartDeployment`` is a ``ConflictException``;
* ``StopDeployment``: DEPLOYING -> ROLLED_BACK; BAKING only with ``AllowRevert`` (else
  ``BadRequestException``) -> ROLLED_BACK; COMPLETE only with ``AllowRevert`` and within 72 h
  of completion -> REVERTED (else ``BadRequestException``). A rolled-back or reverted
  deployment's environment serves the version before it again;
* ``StartDeployment`` runs the profile's validators (``JSON_SCHEMA``: the content must be
  JSON that the schema accepts; ``BadRequestException`` otherwise).

Not modelled: alarms rolling a deployment back (the monitors), ``ROLLING_BACK`` lasting any
time (taken as immediate), throttling, and how many seconds a COMPLETE all-at-once deployment
takes to reach the data plane (taken as immediate; unconfirmed).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

MIN_POLL_S, MAX_POLL_S, DEFAULT_POLL_S = 15, 86_400, 60
TOKEN_TTL_S = 24 * 3600
REVERT_WINDOW_S = 72 * 3600
IN_PROGRESS = ("DEPLOYING", "BAKING")


def error(code: str, message: str, operation: str, problem: str | None = None, parameter: str | None = None,
          status: int = 400) -> ClientError:
    """The ClientError botocore raises for an AppConfig error response."""
    response: dict = {"Error": {"Code": code, "Message": message}, "Message": message,
                      "ResponseMetadata": {"HTTPStatusCode": status}}
    if problem:
        response["Reason"] = "InvalidParameters"
        response["Details"] = {"InvalidParameters": {parameter or "ConfigurationToken": {"Problem": problem}}}
    return ClientError(response, operation)


class LocalClock:
    """The local stack's AppConfig time: the wall clock, plus what tests have advanced it by
    (``advance``: "as when the poll interval has passed", without waiting for it)."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


LOCAL_CLOCK = LocalClock()


@dataclass(frozen=True)
class Strategy:
    duration_s: float
    bake_s: float
    growth_factor: float = 100.0
    growth_type: str = "LINEAR"

    def share(self, elapsed_s: float) -> float:
        """How much of the environment's targets has the new version ``elapsed_s`` in."""
        if self.duration_s <= 0 or elapsed_s >= self.duration_s:
            return 1.0
        steps = max(1, round(100 / self.growth_factor))
        step = int(elapsed_s // (self.duration_s / steps)) + 1  # the first step goes out at once
        if self.growth_type == "EXPONENTIAL":
            return min(1.0, self.growth_factor / 100 * 2 ** (step - 1))
        return min(1.0, step * self.growth_factor / 100)


class MemoryState:
    """Where the world keeps its state: in memory (tests, the bench)."""

    def __init__(self):
        self.state: dict = {}

    def load(self) -> dict:
        return self.state

    def save(self, state: dict) -> None:
        self.state = state


class AppConfigWorld:
    """Profiles, hosted versions, strategies and deployments per environment, on ``clock``
    (epoch seconds). ``store`` keeps the state (``MemoryState``; the local stack keeps it in
    one S3 object so that every process sees the same deployments)."""

    def __init__(self, clock: Callable[[], float] = time.time, store=None):
        self.clock = clock
        self.store = store or MemoryState()
        self._lock = threading.Lock()

    # --- state ---
    def _state(self) -> dict:
        state = self.store.load() or {}
        for key in ("profiles", "versions", "strategies", "deployments"):
            state.setdefault(key, {})
        return state

    def _mutate(self, change: Callable[[dict], object]):
        with self._lock:
            state = self._state()
            out = change(state)
            self.store.save(state)
            return out

    # --- setup (what CloudFormation creates) ---
    def create_profile(self, profile: str, validators: list[dict] = ()) -> None:
        self._mutate(lambda s: s["profiles"].__setitem__(profile, {"validators": list(validators)}))

    def create_strategy(self, strategy: str, duration_min: float, bake_min: float, growth_factor: float = 100.0,
                        growth_type: str = "LINEAR") -> None:
        self._mutate(lambda s: s["strategies"].__setitem__(strategy, [duration_min * 60, bake_min * 60,
                                                                      growth_factor, growth_type]))

    # --- control plane ---
    def create_version(self, profile: str, content: bytes, content_type: str) -> int:
        def change(state):
            versions = state["versions"].setdefault(profile, {})
            number = len(versions) + 1
            versions[str(number)] = {"content": base64.b64encode(content).decode(), "type": content_type}
            return number
        return self._mutate(change)

    def start_deployment(self, environment: str, profile: str, version: str, strategy: str) -> dict:
        now = self.clock()

        def change(state):
            if profile not in state["profiles"]:
                raise error("ResourceNotFoundException", f"profile {profile} not found", "StartDeployment",
                            status=404)
            content = state["versions"].get(profile, {}).get(str(version))
            if content is None:
                raise error("ResourceNotFoundException", f"version {version} not found", "StartDeployment",
                            status=404)
            if strategy not in state["strategies"]:
                raise error("ResourceNotFoundException", f"strategy {strategy} not found", "StartDeployment",
                            status=404)
            deployments = state["deployments"].setdefault(environment, [])
            running = [d for d in deployments if _state_of(d, state, now) in IN_PROGRESS]
            if running:
                raise error("ConflictException", f"deployment {running[-1]['number']} is in progress in "
                            f"environment {environment}", "StartDeployment", status=409)
            _validate(state["profiles"][profile]["validators"], base64.b64decode(content["content"]))
            previous = _serving_version(deployments, state, now)
            number = len(deployments) + 1
            deployments.append({"number": number, "profile": profile, "version": str(version),
                                "previous": previous, "strategy": strategy, "started": now, "stopped": None})
            return {"DeploymentNumber": number, "State": _state_of(deployments[-1], state, now)}
        return self._mutate(change)

    def stop_deployment(self, environment: str, number: int, allow_revert: bool = False) -> dict:
        now = self.clock()

        def change(state):
            deployments = state["deployments"].get(environment, [])
            found = [d for d in deployments if d["number"] == int(number)]
            if not found:
                raise error("ResourceNotFoundException", f"deployment {number} not found", "StopDeployment",
                            status=404)
            deployment = found[0]
            current = _state_of(deployment, state, now)
            if current == "DEPLOYING" or (current == "BAKING" and allow_revert):
                deployment["stopped"] = ["ROLLED_BACK", now]
            elif current == "COMPLETE" and allow_revert:
                if now - _completed_at(deployment, state) > REVERT_WINDOW_S:
                    raise error("BadRequestException", "a deployment can be reverted only within 72 hours of its "
                                "completion", "StopDeployment")
                if deployment is not _latest(deployments):
                    raise error("BadRequestException", "only the latest deployment can be reverted",
                                "StopDeployment")
                deployment["stopped"] = ["REVERTED", now]
            else:
                raise error("BadRequestException", f"deployment {number} is {current}: StopDeployment works only "
                            "while DEPLOYING unless AllowRevert", "StopDeployment")
            return _describe(deployment, state, now)
        return self._mutate(change)

    def deployments(self, environment: str) -> list[dict]:
        state, now = self._state(), self.clock()
        return [_describe(d, state, now) for d in state["deployments"].get(environment, [])]

    # --- data plane ---
    def served(self, environment: str, profile: str, target: float) -> tuple[str | None, bytes, str]:
        """(version, content, content type) a target (its place in [0, 1) among the
        environment's targets) is served now."""
        state, now = self._state(), self.clock()
        version = None
        for deployment in state["deployments"].get(environment, []):
            if deployment["profile"] != profile:
                continue
            current = _state_of(deployment, state, now)
            if current in ("ROLLED_BACK", "REVERTED"):
                version = deployment["previous"]
            elif current == "DEPLOYING":
                strategy = Strategy(*state["strategies"][deployment["strategy"]])
                if target < strategy.share(now - deployment["started"]):
                    version = deployment["version"]
                elif version is None:
                    version = deployment["previous"]
            else:
                version = deployment["version"]
        if version is None:
            return None, b"", "application/json"
        stored = state["versions"][profile][version]
        return version, base64.b64decode(stored["content"]), stored["type"]


def _strategy(deployment: dict, state: dict) -> Strategy:
    return Strategy(*state["strategies"][deployment["strategy"]])


def _completed_at(deployment: dict, state: dict) -> float:
    strategy = _strategy(deployment, state)
    return deployment["started"] + strategy.duration_s + strategy.bake_s


def _state_of(deployment: dict, state: dict, now: float) -> str:
    if deployment.get("stopped"):
        return deployment["stopped"][0]
    strategy = _strategy(deployment, state)
    elapsed = now - deployment["started"]
    if elapsed < strategy.duration_s:
        return "DEPLOYING"
    if elapsed < strategy.duration_s + strategy.bake_s:
        return "BAKING"
    return "COMPLETE"


def _latest(deployments: list[dict]) -> dict | None:
    return deployments[-1] if deployments else None


def _serving_version(deployments: list[dict], state: dict, now: float) -> str | None:
    """The version the environment serves once everything in it settled (what a new
    deployment's rollback returns to)."""
    version = None
    for deployment in deployments:
        version = deployment["previous"] if _state_of(deployment, state, now) in ("ROLLED_BACK", "REVERTED") \
            else deployment["version"]
    return version


def _describe(deployment: dict, state: dict, now: float) -> dict:
    return {"DeploymentNumber": deployment["number"], "ConfigurationVersion": deployment["version"],
            "DeploymentStrategyId": deployment["strategy"], "State": _state_of(deployment, state, now)}


def _validate(validators: list[dict], content: bytes) -> None:
    for validator in validators:
        if validator.get("Type") != "JSON_SCHEMA":
            continue
        import jsonschema  # the fake runs in tests and the local stack only (a dev dependency)

        try:
            document = json.loads(content)
        except ValueError as exc:
            raise error("BadRequestException", f"configuration is not valid JSON: {exc}", "StartDeployment") from None
        errors = sorted(jsonschema.Draft7Validator(json.loads(validator["Content"])).iter_errors(document),
                        key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(document)"
            raise error("BadRequestException", f"configuration failed the JSON_SCHEMA validator at {where}: "
                        f"{errors[0].message}"[:500], "StartDeployment")


class FakeAppConfig:
    """The ``appconfig`` client's calls the admin makes, against a world."""

    def __init__(self, world: AppConfigWorld):
        self.world = world

    def create_hosted_configuration_version(self, ApplicationId, ConfigurationProfileId, Content,  # noqa: N803
                                            ContentType, Description=""):
        content = Content if isinstance(Content, bytes) else Content.read()
        return {"VersionNumber": self.world.create_version(ConfigurationProfileId, content, ContentType)}

    def start_deployment(self, ApplicationId, EnvironmentId, ConfigurationProfileId, ConfigurationVersion,  # noqa: N803
                         DeploymentStrategyId, Description=""):
        return self.world.start_deployment(EnvironmentId, ConfigurationProfileId, ConfigurationVersion,
                                           DeploymentStrategyId)

    def stop_deployment(self, ApplicationId, EnvironmentId, DeploymentNumber, AllowRevert=False):  # noqa: N803
        return self.world.stop_deployment(EnvironmentId, DeploymentNumber, AllowRevert)

    def list_deployments(self, ApplicationId, EnvironmentId, **_):  # noqa: N803
        return {"Items": list(reversed(self.world.deployments(EnvironmentId)))}  # newest first, as AWS lists

    def get_paginator(self, operation: str):
        fake = self

        class Paginator:
            def paginate(self, **kwargs):
                yield getattr(fake, operation)(**kwargs)

        return Paginator()


class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def read(self) -> bytes:
        return self.data


@dataclass
class _Session:
    environment: str
    profile: str
    interval_s: int
    target: float
    polled_at: float | None = None
    version: str | None = None


class FakeAppConfigData:
    """The ``appconfigdata`` client's two calls, against a world (sessions live here, in the
    client's process, as AWS keeps them server-side: a token names one)."""

    def __init__(self, world: AppConfigWorld):
        self.world = world
        self._sessions: dict[str, _Session] = {}
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (session id, issued at)
        self.polls = 0
        self.refused = 0
        self._lock = threading.Lock()

    def _issue(self, session_id: str) -> str:
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (session_id, self.world.clock())
        return token

    def start_configuration_session(self, ApplicationIdentifier, EnvironmentIdentifier,  # noqa: N803
                                    ConfigurationProfileIdentifier, RequiredMinimumPollIntervalInSeconds=None):
        interval = DEFAULT_POLL_S if RequiredMinimumPollIntervalInSeconds is None \
            else RequiredMinimumPollIntervalInSeconds
        if not MIN_POLL_S <= int(interval) <= MAX_POLL_S:
            raise error("BadRequestException", f"RequiredMinimumPollIntervalInSeconds must be from {MIN_POLL_S} to "
                        f"{MAX_POLL_S}", "StartConfigurationSession", "Corrupted",
                        "RequiredMinimumPollIntervalInSeconds")
        with self._lock:
            session_id = secrets.token_hex(8)
            target = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") / 2 ** 64
            self._sessions[session_id] = _Session(EnvironmentIdentifier, ConfigurationProfileIdentifier,
                                                  int(interval), target)
            return {"InitialConfigurationToken": self._issue(session_id)}

    def get_latest_configuration(self, ConfigurationToken):  # noqa: N803
        now = self.world.clock()
        with self._lock:
            self.polls += 1
            issued = self._tokens.get(ConfigurationToken)
            if issued is None:
                self.refused += 1
                raise error("BadRequestException", "the configuration token is not valid (or was used already)",
                            "GetLatestConfiguration", "Corrupted")
            session_id, issued_at = issued
            if now - issued_at > TOKEN_TTL_S:
                self.refused += 1
                del self._tokens[ConfigurationToken]
                raise error("BadRequestException", "the configuration token has expired", "GetLatestConfiguration",
                            "Expired")
            session = self._sessions[session_id]
            if session.polled_at is not None and now - session.polled_at < session.interval_s:
                self.refused += 1
                raise error("BadRequestException", "Request too early", "GetLatestConfiguration",
                            "PollIntervalNotSatisfied")
            del self._tokens[ConfigurationToken]
            session.polled_at = now
            version, content, content_type = self.world.served(session.environment, session.profile, session.target)
            if version == session.version:
                content = b""
            session.version = version
            return {"Configuration": _Body(content), "ContentType": content_type,
                    "NextPollConfigurationToken": self._issue(session_id),
                    "NextPollIntervalInSeconds": session.interval_s, "VersionLabel": version or ""}


class S3State:
    """The world's state in one S3 object (the local stack: every process reads it)."""

    def __init__(self, bucket: str, key: str):
        from . import aws

        self.bucket, self.key = bucket, key
        # The client is made on first use, as the deployed flags' data client is (on the refresh
        # thread, not in a cold start's build), signing as whoever made this state.
        self._identity = aws.current_identity()
        self._s3 = None
        self._lock = threading.Lock()

    @property
    def s3(self):
        with self._lock:
            if self._s3 is None:
                from . import aws

                with aws.as_identity(self._identity):
                    self._s3 = aws.client("s3")
            return self._s3

    def load(self) -> dict:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return {}
            raise

    def save(self, state: dict) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=json.dumps(state).encode())
