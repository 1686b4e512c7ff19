"""A kill during a gradual AppConfig deployment, against boto3's own request shapes (the
Stubber): the running deployment is stopped with AllowRevert (AppConfig refuses to stop a
BAKING deployment without it), then the kill deployed all at once, then checked.
``tests/unit/test_appconfig_limits.py`` runs the same admin against the deployment states."""

import json

import boto3
from botocore.stub import Stubber

from personalize.adapters import appconfig


def _admin(client):
    return appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once", appconfig.GRADUAL: "ramp"},
                                    fetch=dict, client=client)


def test_a_kill_stops_the_running_ramp_with_allow_revert_then_deploys_all_at_once():
    client = boto3.client("appconfig", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    document = {"kill_switch": {"default": True}}
    with Stubber(client) as stub:
        stub.add_response("create_hosted_configuration_version", {"VersionNumber": 9},
                          {"ApplicationId": "app", "ConfigurationProfileId": "prof", "Description": "kill",
                           "Content": json.dumps(document).encode(), "ContentType": "application/json"})
        stub.add_response("list_deployments", {"Items": [
            {"DeploymentNumber": 7, "State": "BAKING"}, {"DeploymentNumber": 6, "State": "COMPLETE"}]},
            {"ApplicationId": "app", "EnvironmentId": "env"})
        stub.add_response("stop_deployment", {}, {"ApplicationId": "app", "EnvironmentId": "env",
                                                  "DeploymentNumber": 7, "AllowRevert": True})
        stub.add_response("start_deployment", {"DeploymentNumber": 8},
                          {"ApplicationId": "app", "EnvironmentId": "env", "ConfigurationProfileId": "prof",
                           "ConfigurationVersion": "9", "DeploymentStrategyId": "once", "Description": "kill"})
        stub.add_response("list_deployments", {"Items": [{"DeploymentNumber": 8, "State": "COMPLETE"}]},
                          {"ApplicationId": "app", "EnvironmentId": "env"})
        assert _admin(client).deploy(document, appconfig.ALL_AT_ONCE, "kill") == "9"
        stub.assert_no_pending_responses()


def test_a_ramp_does_not_stop_anything():
    client = boto3.client("appconfig", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("create_hosted_configuration_version", {"VersionNumber": 3})
        stub.add_response("start_deployment", {"DeploymentNumber": 2})
        assert _admin(client).deploy({}, appconfig.GRADUAL, "ramp") == "3"
        stub.assert_no_pending_responses()
