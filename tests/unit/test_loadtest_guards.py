"""`make loadtest` never aims a sale at a stack nobody named (attacker review): no targets
from the environment, a deployed run confirmed by its stack's name, a URL that must belong
to the stack, a local target that must be local."""

import json

import pytest

from infra import loadtest

OUTPUTS = {"DistributionDomain": "d-dev.cloudfront.net", "ApiUrl": "https://api-dev.example/",
           "FeaturesTableName": "features-dev", "QuarantineQueueUrl": "https://sqs.example/q"}


class FakeSession:
    def __init__(self, region_name=None):
        self.region_name = region_name

    def client(self, service, **_):
        assert service == "cloudformation"
        return self

    def describe_stacks(self, StackName):  # noqa: N803 - boto3's name
        return {"Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in OUTPUTS.items()]}]}


@pytest.fixture
def no_load(monkeypatch):
    """Records what would have been run instead of sending anything."""
    ran = []
    monkeypatch.setattr(loadtest, "run", lambda target, **_: ran.append(target) or {})
    monkeypatch.setattr("boto3.Session", FakeSession)
    return ran


def test_an_exported_env_does_not_turn_a_local_run_into_a_deployed_one(monkeypatch, no_load):
    monkeypatch.setenv("ENV", "prod")
    monkeypatch.setenv("TARGET", "https://d-prod.cloudfront.net")
    parsed = _parse([])
    assert (parsed.env, parsed.target) == ("local", None)


def _parse(argv):
    captured = {}

    class Stop(Exception):
        pass

    def capture(self, args=None, namespace=None):
        captured["args"] = original(self, args, namespace)
        raise Stop

    import argparse
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        loadtest.main(argv)
    except Stop:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["args"]


@pytest.mark.parametrize("confirm", [
    pytest.param(None, id="not-confirmed"),
    pytest.param("rt-personalization-prod", id="another-stack-named"),
])
def test_a_deployed_run_sends_nothing_until_its_stack_is_named(no_load, confirm, capsys):
    argv = ["--env", "dev"] + (["--confirm", confirm] if confirm else [])
    assert loadtest.main(argv) == 2
    assert no_load == []
    assert "CONFIRM=rt-personalization-dev" in capsys.readouterr().err


def test_a_target_of_another_stack_is_refused(no_load):
    assert loadtest.deployed_target("dev").public_url == "https://d-dev.cloudfront.net"
    with pytest.raises(SystemExit, match="served at https://d-dev.cloudfront.net"):
        loadtest.deployed_target("dev", "https://d-prod.cloudfront.net")


@pytest.mark.parametrize("raw,fallback", [
    pytest.param(b'{"items": [], "fallback": true}', True, id="fallback"),
    pytest.param(b'{"items": [{"item_id": "a"}]}', False, id="ranked"),
    pytest.param(b'{"note": "fallback: true"}', False, id="the-words-elsewhere"),
    pytest.param(b"not json", False, id="garbage"),
])
def test_fallback_answers_are_recognised_by_their_field(raw, fallback):
    assert loadtest._is_fallback(raw) is fallback


@pytest.mark.parametrize("url,allowed", [
    pytest.param("http://127.0.0.1:8080", True, id="loopback"),
    pytest.param("http://localhost:9000", True, id="localhost"),
    pytest.param("https://dxxxx.cloudfront.net", False, id="a-deployed-url"),
])
def test_a_local_target_must_be_local(tmp_path, url, allowed):
    state = tmp_path / "local-stack.json"
    state.write_text(json.dumps({"endpoint": "http://127.0.0.1:8080", "aws_endpoint": "http://127.0.0.1:5000",
                                 "region": "us-east-1", "signing_key": "k",
                                 "aws_credentials": {"access_key_id": "a", "secret_access_key": "s"},
                                 "resources": {"SigningKeySecret": "s", "FeaturesTable": "f", "QuarantineQueue": "q"}}))
    if allowed:
        assert loadtest.local_target(url, state).public_url == url
    else:
        with pytest.raises(SystemExit, match="neither loopback"):
            loadtest.local_target(url, state)
