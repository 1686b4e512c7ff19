"""AppConfig: reading the flags document (``appconfig_fetcher``, ``local_fetcher``) and
changing the rollout (``FlagAdmin``: a new hosted configuration version of the flags profile,
then a deployment). AppConfig when deployed; locally (moto has hosted versions but no
deployments) the deployment is a pointer in the artifacts bucket that the local flag reader
follows."""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod

from personalize.adapters import aws

ALL_AT_ONCE = "all_at_once"
GRADUAL = "gradual"
RUNNING_STATES = ("DEPLOYING", "BAKING", "VALIDATING")


class FlagAdmin(ABC):
    @abstractmethod
    def deploy(self, document: dict, strategy: str, description: str) -> str:
        """Store ``document`` as a new version and deploy it; returns the version."""

    @abstractmethod
    def current(self) -> dict:
        """The deployed document."""


class AppConfigAdmin(FlagAdmin):
    def __init__(self, application: str, environment: str, profile: str, strategies: dict[str, str],
                 fetch, region: str | None = None):
        self.application, self.environment, self.profile = application, environment, profile
        self.strategies = strategies  # ALL_AT_ONCE / GRADUAL -> deployment strategy id
        self.fetch = fetch
        self.region = region

    def stop_running(self) -> list[int]:
        """Stop the environment's deployments still in progress (AppConfig allows one at a
        time: a kill during a gradual ramp would otherwise get ConflictException for up to
        the ramp's duration). Returns the deployment numbers stopped."""
        client = aws.client("appconfig", self.region)
        stopped = []
        for page in client.get_paginator("list_deployments").paginate(ApplicationId=self.application,
                                                                       EnvironmentId=self.environment):
            for item in page.get("Items", []):
                if item.get("State") in RUNNING_STATES:
                    client.stop_deployment(ApplicationId=self.application, EnvironmentId=self.environment,
                                           DeploymentNumber=item["DeploymentNumber"])
                    stopped.append(item["DeploymentNumber"])
        return stopped

    def deploy(self, document, strategy, description):
        client = aws.client("appconfig", self.region)
        if strategy == ALL_AT_ONCE:  # a kill: it must not wait behind a running ramp
            self.stop_running()
        version = client.create_hosted_configuration_version(
            ApplicationId=self.application, ConfigurationProfileId=self.profile, Description=description[:1024],
            Content=json.dumps(document).encode(), ContentType="application/json")["VersionNumber"]
        client.start_deployment(ApplicationId=self.application, EnvironmentId=self.environment,
                                ConfigurationProfileId=self.profile, ConfigurationVersion=str(version),
                                DeploymentStrategyId=self.strategies[strategy], Description=description[:1024])
        return str(version)

    def current(self):
        return self.fetch()


class DeploymentConflictError(Exception):
    """Another deployment is in progress in the environment (AppConfig's ConflictException)."""


class LocalFlagAdmin(FlagAdmin):
    """Deployments emulated with the pointer object: a gradual one is 'in progress' for
    ``gradual_s`` (content applied at once), and, as in AppConfig, another deployment then
    conflicts unless the running one is stopped first."""

    def __init__(self, bucket: str, application_id: str, profile_id: str, fetch, gradual_s: float = 30.0):
        self.bucket, self.application_id, self.profile_id = bucket, application_id, profile_id
        self.fetch = fetch
        self.gradual_s = gradual_s

    def _pointer(self) -> dict | None:
        try:
            return json.loads(aws.client("s3").get_object(Bucket=self.bucket, Key=LOCAL_DEPLOYED_KEY)["Body"].read())
        except Exception as exc:
            if aws.error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def stop_running(self) -> list[int]:
        pointer = self._pointer()
        if not pointer or pointer.get("deploying_until", 0) <= time.time():
            return []
        pointer["deploying_until"] = 0
        pointer["stopped"] = True
        aws.client("s3").put_object(Bucket=self.bucket, Key=LOCAL_DEPLOYED_KEY, Body=json.dumps(pointer).encode())
        return [int(pointer["version"])]

    def deploy(self, document, strategy, description):
        if strategy == ALL_AT_ONCE:
            self.stop_running()
        running = self._pointer()
        if running and running.get("deploying_until", 0) > time.time():
            raise DeploymentConflictError(f"deployment of version {running['version']} is in progress")
        version = aws.client("appconfig").create_hosted_configuration_version(
            ApplicationId=self.application_id, ConfigurationProfileId=self.profile_id,
            Description=description[:1024], Content=json.dumps(document).encode(),
            ContentType="application/json")["VersionNumber"]
        aws.client("s3").put_object(Bucket=self.bucket, Key=LOCAL_DEPLOYED_KEY, Body=json.dumps(
            {"version": version, "strategy": strategy, "description": description, "content": document,
             "deploying_until": time.time() + self.gradual_s if strategy == GRADUAL else 0}).encode())
        return str(version)

    def current(self):
        return self.fetch()


def appconfig_fetcher(application: str, environment: str, profile: str, region: str | None = None):
    """Deployed: the AppConfig data API (sessions and polling handled by Powertools)."""
    from aws_lambda_powertools.utilities.parameters import AppConfigProvider
    from botocore.config import Config

    provider = AppConfigProvider(environment=environment, application=application,
                                 boto_config=Config(region_name=region, connect_timeout=1, read_timeout=2,
                                                    retries={"mode": "standard", "total_max_attempts": 2}))

    def fetch() -> dict:
        return provider.get(profile, transform="json", force_fetch=True)

    return fetch


LOCAL_DEPLOYED_KEY = "appconfig/deployed.json"


def local_fetcher(bucket_name: str, application_id: str, profile_id: str):
    """The local stack: moto has AppConfig's hosted versions but no deployments or data API,
    so a 'deployment' there is an object in the artifacts bucket holding the deployed hosted
    version's number and content (moto's GET APIs of AppConfig fail its own signature check
    when IAM is enforced, so the content travels with the pointer)."""
    s3 = aws.client("s3")  # now, not on the first request

    def fetch() -> dict:
        pointer = json.loads(s3.get_object(Bucket=bucket_name, Key=LOCAL_DEPLOYED_KEY)["Body"].read())
        return pointer["content"]

    return fetch
