"""AppConfig: reading the flags document (``FlagSession``, the data API's session) and
changing the rollout (``AppConfigAdmin``: a new hosted configuration version of the flags
profile, then a deployment; ``kill``: in every deployment state).

Deployed, both talk to AWS. Locally (moto has neither the data API nor deployments) they talk
to ``appconfig_fake``, the AppConfig part of the limits model, whose state lives in one object
of the artifacts bucket (``LOCAL_STATE_KEY``): the same code paths, the same rules.

The data API's rules, as the session keeps them: it asks for the shortest poll interval AWS
allows (``RequiredMinimumPollIntervalInSeconds`` = 15; 60 s when not asked), never polls before
the interval the last answer gave (``NextPollIntervalInSeconds``: ``PollTooEarly`` instead, no
call), takes "Request too early" as a wait, starts a new session when its token expired (24 h)
or was refused, and keeps the document it has when the answer is empty (unchanged).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from personalize.adapters import aws

log = logging.getLogger(__name__)

ALL_AT_ONCE = "all_at_once"
GRADUAL = "gradual"
IN_PROGRESS = ("DEPLOYING", "BAKING", "VALIDATING", "ROLLING_BACK")
MIN_POLL_S = 15  # the data API's floor for RequiredMinimumPollIntervalInSeconds
TOKEN_REFRESH_S = 23 * 3600  # a session older than this is started again (tokens last 24 h)
KILL_DEADLINE_S = 40.0  # a kill that has not landed by then raises KillFailedError (it pages)
# One control-plane call at most (2 attempts of 1 s connect + 3 s read): no attempt of a kill
# starts unless its four calls fit before the deadline, so the guardrail (60 s) reports a
# failed kill itself instead of timing out.
KILL_CALL_BUDGET_S = 8.0
LOCAL_STATE_KEY = "appconfig/world.json"


class PollTooEarly(Exception):  # noqa: N818 - not an error: the caller waits
    """The data API may not be polled yet (its interval since the last poll)."""

    def __init__(self, retry_in_s: float):
        super().__init__(f"AppConfig may be polled again in {retry_in_s:.1f} s")
        self.retry_in_s = retry_in_s


class FlagsUnavailableError(Exception):
    """No flags document could be read (the environment has none deployed, or AWS failed)."""


class KillFailedError(Exception):
    """The kill did not land (every attempt refused, or it never became the deployed
    version): the guardrail fails loudly so that its alarm pages."""


def _code(exc: Exception) -> str:
    return aws.error_code(exc)


def _problem(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    details = response.get("Details") if isinstance(response, dict) else None
    details = details.get("InvalidParameters") if isinstance(details, dict) else None
    if not isinstance(details, dict):
        return ""
    return " ".join(str(v.get("Problem", "")) for v in details.values() if isinstance(v, dict))


class FlagSession:
    """One configuration session of the data API: ``fetch()`` returns the deployed document
    (parsed JSON, validated by the caller), or raises ``PollTooEarly`` when the interval has
    not passed (nothing is called), or another exception when AWS fails. ``confirmed_at``:
    when AppConfig last answered (the document is at most that old)."""

    def __init__(self, client_factory: Callable[[], object], application: str, environment: str, profile: str,
                 min_poll_s: int = MIN_POLL_S, clock: Callable[[], float] = time.monotonic):
        self.client_factory = client_factory
        self.application, self.environment, self.profile = application, environment, profile
        self.min_poll_s = min_poll_s
        self.clock = clock
        self._client = None
        self.token: str | None = None
        self.token_at = float("-inf")
        self.interval_s = float(min_poll_s)
        self.next_poll_at = float("-inf")
        self.content: bytes | None = None
        self.confirmed_at = float("-inf")
        self.polls = 0
        self.too_early = 0
        self.sessions = 0

    @property
    def client(self):
        if self._client is None:
            self._client = self.client_factory()
        return self._client

    def _start(self, now: float) -> None:
        self.token = self.client.start_configuration_session(
            ApplicationIdentifier=self.application, EnvironmentIdentifier=self.environment,
            ConfigurationProfileIdentifier=self.profile,
            RequiredMinimumPollIntervalInSeconds=self.min_poll_s)["InitialConfigurationToken"]
        self.token_at = now
        self.sessions += 1

    def fetch(self) -> dict:
        now = self.clock()
        if now < self.next_poll_at:
            raise PollTooEarly(self.next_poll_at - now)
        if self.token is None or now - self.token_at >= TOKEN_REFRESH_S:
            self._start(now)
        try:
            answer = self._poll()
        except Exception as exc:
            if _code(exc) != "BadRequestException":
                if _code(exc) == "ThrottlingException":
                    self.next_poll_at = now + self.interval_s
                raise
            text = f"{exc} {_problem(exc)}".lower()
            if "pollintervalnotsatisfied" in text or "too early" in text:
                self.too_early += 1
                self.next_poll_at = now + self.interval_s
                raise PollTooEarly(self.interval_s) from None
            # Expired, used or corrupted token: a new session, once, now.
            log.warning("AppConfig refused the session's token (%s); starting a new session", exc)
            self._start(now)
            answer = self._poll()
        self.token = answer["NextPollConfigurationToken"]
        self.interval_s = max(float(self.min_poll_s), float(answer.get("NextPollIntervalInSeconds") or 0))
        self.next_poll_at = now + self.interval_s
        body = answer["Configuration"].read()
        if body:
            self.content = body
        self.confirmed_at = now
        if self.content is None:
            raise FlagsUnavailableError("no flags document is deployed in the environment")
        return json.loads(self.content)

    def _poll(self) -> dict:
        self.polls += 1
        return self.client.get_latest_configuration(ConfigurationToken=self.token)


class FlagAdmin(ABC):
    @abstractmethod
    def deploy(self, document: dict, strategy: str, description: str) -> str:
        """Store ``document`` as a new version and deploy it; returns the version."""

    @abstractmethod
    def current(self) -> dict:
        """The deployed document."""

    def kill(self, document: dict, description: str) -> str:
        """Deploy a kill (``document``: share 0, kill switch on) whatever the environment's
        deployment is doing."""
        return self.deploy(document, ALL_AT_ONCE, description)


class AppConfigAdmin(FlagAdmin):
    """The control plane: ``client`` is boto3's ``appconfig`` client (deployed) or
    ``appconfig_fake.FakeAppConfig`` (locally, tests)."""

    def __init__(self, application: str, environment: str, profile: str, strategies: dict[str, str],
                 fetch, region: str | None = None, client=None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, kill_deadline_s: float = KILL_DEADLINE_S):
        self.application, self.environment, self.profile = application, environment, profile
        self.strategies = strategies  # ALL_AT_ONCE / GRADUAL -> deployment strategy id
        self.fetch = fetch
        self.region = region
        self._client = client
        self.clock, self.sleep = clock, sleep
        self.kill_deadline_s = kill_deadline_s

    @property
    def client(self):
        # Short budgets: every call of a kill fits inside its deadline (``KILL_CALL_BUDGET_S``).
        return self._client if self._client is not None else aws.client(
            "appconfig", self.region, connect_timeout=1.0, read_timeout=3.0, attempts=2)

    def running(self) -> list[dict]:
        """The environment's deployments in progress (newest first)."""
        out = []
        for page in self.client.get_paginator("list_deployments").paginate(ApplicationId=self.application,
                                                                           EnvironmentId=self.environment):
            out += [item for item in page.get("Items", []) if item.get("State") in IN_PROGRESS]
        return out

    def stop_running(self) -> list[int]:
        """Stop the environment's deployments in progress, whatever their state: with
        ``AllowRevert`` (StopDeployment refuses a BAKING deployment without it), so the
        environment goes back to the version before each. Returns the numbers stopped."""
        stopped = []
        for item in self.running():
            self.client.stop_deployment(ApplicationId=self.application, EnvironmentId=self.environment,
                                        DeploymentNumber=item["DeploymentNumber"], AllowRevert=True)
            stopped.append(item["DeploymentNumber"])
        return stopped

    def _version(self, document: dict, description: str) -> str:
        return str(self.client.create_hosted_configuration_version(
            ApplicationId=self.application, ConfigurationProfileId=self.profile, Description=description[:1024],
            Content=json.dumps(document).encode(), ContentType="application/json")["VersionNumber"])

    def _start(self, version: str, strategy: str, description: str) -> dict:
        return self.client.start_deployment(
            ApplicationId=self.application, EnvironmentId=self.environment, ConfigurationProfileId=self.profile,
            ConfigurationVersion=version, DeploymentStrategyId=self.strategies[strategy],
            Description=description[:1024])

    def deploy(self, document, strategy, description):
        if strategy == ALL_AT_ONCE:  # must not wait behind a running ramp
            return self.kill(document, description)
        version = self._version(document, description)
        self._start(version, strategy, description)
        self._written = (version, document)
        return version

    def kill(self, document, description):
        """Stop whatever is in progress (DEPLOYING, BAKING: with AllowRevert, which returns the
        environment to the share before it, so the kill still has to land), then deploy
        ``document`` all at once, retrying a conflict (another deployment started meanwhile,
        or a rollback not yet settled) until ``kill_deadline_s``; then check that it is the
        deployment the environment ends with. ``KillFailedError`` otherwise (it pages)."""
        started = self.clock()
        version = self._version(document, description)
        attempts = 0
        last: Exception | None = None
        # The first attempt always; another only if its four calls fit before the deadline.
        while attempts == 0 or self.clock() - started + 4 * KILL_CALL_BUDGET_S <= self.kill_deadline_s:
            attempts += 1
            try:
                self.stop_running()
                deployment = self._start(version, ALL_AT_ONCE, description)
            except Exception as exc:  # noqa: BLE001 - a conflict, a throttle, a blip: again until the deadline
                last = exc
                log.warning("kill attempt %d refused (%s); retrying", attempts, exc)
                self.sleep(min(2.0, 0.25 * attempts))
                continue
            number = deployment.get("DeploymentNumber")
            landed = [d for d in self.client.list_deployments(ApplicationId=self.application,
                                                              EnvironmentId=self.environment).get("Items", [])
                      if d.get("DeploymentNumber") == number]
            if landed and landed[0].get("State") in ("ROLLED_BACK", "REVERTED"):
                last = KillFailedError(f"kill deployment {number} was {landed[0]['State']}")
                self.sleep(min(2.0, 0.25 * attempts))
                continue
            self._written = (version, document)
            return version
        raise KillFailedError(f"the kill did not land in {self.kill_deadline_s:.0f} s ({attempts} attempts): {last}")

    def current(self):
        """The document the environment is deploying or has deployed. After this admin
        deployed one, that one (read your own writes: the data API serves a gradual
        deployment to a growing share of sessions, and answers a poll inside its interval with
        nothing new, so a change composed right after another would start from the version
        before it) for as long as it is the environment's latest deployment and was not
        rolled back; otherwise the data API's (the last one read while its poll interval has
        not passed)."""
        written = getattr(self, "_written", None)
        if written is not None:
            version, document = written
            latest = self._latest_deployment()
            if latest is not None and str(latest.get("ConfigurationVersion")) == version and \
                    latest.get("State") not in ("ROLLED_BACK", "REVERTED"):
                return document
            self._written = None
        try:
            self._current = self.fetch()
        except PollTooEarly:
            if getattr(self, "_current", None) is None:
                raise
        return self._current

    def _latest_deployment(self) -> dict | None:
        try:
            items = self.client.list_deployments(ApplicationId=self.application,
                                                 EnvironmentId=self.environment).get("Items", [])
        except Exception:  # noqa: BLE001 - the control plane unreadable: fall back to the data API
            log.warning("list_deployments failed; reading the flags through the data API", exc_info=True)
            return None
        return max(items, key=lambda d: d.get("DeploymentNumber", 0), default=None)


def appconfig_fetcher(application: str, environment: str, profile: str, region: str | None = None):
    """Deployed: the AppConfig data API through one session (``FlagSession``)."""
    from botocore.config import Config

    def client():
        return aws.uncached_client("appconfigdata", region, Config(
            connect_timeout=1, read_timeout=2, retries={"mode": "standard", "total_max_attempts": 2}))

    return FlagSession(client, application, environment, profile).fetch


def local_world(bucket: str, clock: Callable[[], float] | None = None):
    """The local stack's AppConfig (``appconfig_fake``), its state in the artifacts bucket."""
    from personalize.adapters import appconfig_fake

    return appconfig_fake.AppConfigWorld(clock or appconfig_fake.LOCAL_CLOCK,
                                         appconfig_fake.S3State(bucket, LOCAL_STATE_KEY))


def local_session(bucket: str, application_id: str, profile_id: str, environment: str = "local") -> FlagSession:
    """Locally: the same session against the fake data API (its clock: the local one)."""
    from personalize.adapters import appconfig_fake

    world = local_world(bucket)
    return FlagSession(lambda: appconfig_fake.FakeAppConfigData(world), application_id, environment, profile_id,
                       clock=appconfig_fake.LOCAL_CLOCK)


def local_fetcher(bucket_name: str, application_id: str, profile_id: str):
    return local_session(bucket_name, application_id, profile_id).fetch


def local_admin(bucket: str, application_id: str, profile_id: str, environment: str = "local") -> AppConfigAdmin:
    """Locally: the admin against the fake control plane (strategies named as the template's)."""
    from personalize.adapters import appconfig_fake

    world = local_world(bucket)
    return AppConfigAdmin(application_id, environment, profile_id,
                          {ALL_AT_ONCE: "AllAtOnceStrategy", GRADUAL: "GradualStrategy"},
                          local_fetcher(bucket, application_id, profile_id), client=appconfig_fake.FakeAppConfig(world))
