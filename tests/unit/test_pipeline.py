"""The delivery pipeline a shop adopts as is: lint and tests on every push in a Debian
container with chromium, one build per environment from one commit, dev deployed
automatically, prod only after a person approves, short-lived credentials (OIDC), no keys."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "pipeline.yaml"
DOC = yaml.safe_load(WORKFLOW.read_text())
JOBS = DOC["jobs"]
ACTIONLINT = Path(sys.executable).with_name("actionlint")


def steps(job: str) -> list[dict]:
    return JOBS[job]["steps"]


def runs(job: str) -> str:
    return "\n".join(s.get("run", "") for s in steps(job))


@pytest.mark.skipif(not ACTIONLINT.exists() and not shutil.which("actionlint"), reason="actionlint not installed")
def test_the_workflows_pass_the_linter():
    binary = str(ACTIONLINT) if ACTIONLINT.exists() else "actionlint"
    result = subprocess.run([binary], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_push_is_linted_and_tested_in_debian_with_chromium():
    assert "push" in DOC[True] and "pull_request" in DOC[True]  # YAML reads the key `on` as True
    job = JOBS["test"]
    assert job["container"].startswith("debian:")
    assert "chromium" in runs("test")
    assert "make lint" in runs("test") and "make test" in runs("test")


def test_each_environment_is_built_once_from_the_tested_commit_and_its_build_checked():
    build = JOBS["build"]
    assert build["needs"] == "test" and build["strategy"]["matrix"]["env"] == ["dev", "prod"]
    assert "refs/heads/main" in build["if"]
    assert "make build ENV=${{ matrix.env }}" in runs("build")
    assert "infra.deploy check --env ${{ matrix.env }}" in runs("build")
    assert "sam package" in runs("build")
    for job in ("deploy-dev", "deploy-prod"):  # deploys the packaged build, never rebuilds
        assert "make build" not in runs(job) and "sam build" not in runs(job)
        assert "--template-file packaged-" in runs(job)


def test_the_builds_compile_what_lambda_runs_with_its_python():
    """infra/bytecode.py needs a python3.12; the pipeline's builds have one and refuse to ship
    without bytecode (every cold start would compile the bundle)."""
    build = JOBS["build"]
    setup = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert "3.12" in str(setup["with"]["python-version"]).split()
    step = next(s for s in build["steps"] if "make build" in str(s.get("run", "")))
    assert step["env"]["REQUIRE_BYTECODE"] == "1"


def test_dev_deploys_automatically_and_prod_only_after_approval_and_dev():
    assert JOBS["deploy-dev"]["needs"] == "build" and JOBS["deploy-dev"]["environment"] == "dev"
    assert JOBS["deploy-prod"]["needs"] == "deploy-dev"
    assert JOBS["deploy-prod"]["environment"] == "prod"  # required reviewers are set on this environment
    for job in ("deploy-dev", "deploy-prod"):
        assert "make smoke ENV=" in runs(job)


def test_credentials_are_short_lived_role_assumptions_never_stored_keys():
    text = WORKFLOW.read_text()
    assert not re.search(r"aws-(access-key-id|secret-access-key)|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY", text)
    assert "secrets." not in text
    assert DOC["permissions"] == {"contents": "read"}  # nothing more by default
    for name, job in JOBS.items():
        assumes = [s for s in job["steps"]
                   if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials")]
        if name == "test":
            assert not assumes and "permissions" not in job
            continue
        assert job["permissions"]["id-token"] == "write", name  # OIDC
        [assume] = assumes
        assert "role-to-assume" in assume["with"] and int(assume["with"]["role-duration-seconds"]) <= 3600


def test_actions_are_pinned_to_a_major_version():
    for job in JOBS.values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
