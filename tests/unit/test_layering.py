"""The domain package's layering (``.importlinter``) holds, its contracts can fail, and the
handlers under ``functions/`` use only the stages' entry points and never boto3."""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "layers" / "personalize" / "personalize"
STAGES = ("ingest", "serving", "rollout")
SHARED_FOR_HANDLERS = {"settings", "identity", "telemetry", "collector"}
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def stage_constant(stage: str, name: str) -> tuple[str, ...]:
    """``PUBLIC`` / ``ENTRY_POINTS`` of a stage, read without importing it."""
    tree = ast.parse((PACKAGE / stage / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"personalize.{stage} declares no {name}")


def modules_of(stage: str) -> set[str]:
    return {p.stem if p.is_file() else p.name for p in (PACKAGE / stage).iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}


def lint_imports(root: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{root / 'layers' / 'personalize'}{os.pathsep}{root}"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_contract_is_kept():
    result = lint_imports(ROOT, ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.parametrize("stage", STAGES)
def test_what_a_stage_does_not_make_public_is_protected(stage):
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    protected = {m.strip().rsplit(".", 1)[-1] for m in
                 config[f"importlinter:contract:{stage}-internals"]["protected_modules"].split() if m.strip()}
    public = set(stage_constant(stage, "PUBLIC"))
    assert public <= modules_of(stage)
    assert protected == modules_of(stage) - public, "a new module is public (PUBLIC) or protected (.importlinter)"


@pytest.mark.parametrize(("culprit", "line", "broken"), [
    pytest.param("adapters/codec_user.py", "from personalize.serving import ranking\n", "Shared pieces import no stage",
                 id="shared-imports-a-stage"),
    pytest.param("ingest/upward.py", "from personalize.rollout import flags\n", "Shared pieces import no stage",
                 id="ingest-imports-rollout"),
    pytest.param("serving/reach_in.py", "from personalize.ingest import pipeline\n", "Ingest's internals",
                 id="serving-imports-ingest-internals"),
    pytest.param("serving/talks_to_aws.py", "import boto3\n", "Only the adapters talk to AWS",
                 id="a-stage-calls-boto3"),
    pytest.param("rollout/trains.py", "import sklearn\n", "Training libraries stay out", id="training-in-the-package"),
])
def test_the_contracts_catch_what_they_forbid(tmp_path, culprit, line, broken):
    copy = tmp_path / "repo"
    for part in ("layers/personalize/personalize", "infra", "models", "tests"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.onnx", "*.json"))
    (copy / "layers/personalize/personalize" / culprit).write_text(line)
    result = lint_imports(copy, ROOT / ".importlinter")
    assert result.returncode != 0
    assert broken in result.stdout.replace("\n", " "), result.stdout[-3000:]


def handler_imports(app: Path) -> list[tuple[str, str]]:
    """(module, name) for every import in a handler: ``import x`` gives (x, "")."""
    found = []
    for node in ast.walk(ast.parse(app.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.module or "", a.name) for a in node.names]
    return found


HANDLERS = sorted((ROOT / "functions").glob("*/app.py"))


@pytest.mark.parametrize("app", HANDLERS, ids=[p.parent.name for p in HANDLERS])
def test_a_handler_imports_only_entry_points_and_never_boto3(app):
    entry_points = {f"personalize.{stage}": set(stage_constant(stage, "ENTRY_POINTS")) for stage in STAGES}
    for module, name in handler_imports(app):
        assert module.split(".")[0] not in ("boto3", "botocore"), f"{app}: {module}"
        if module == "personalize":
            assert name in SHARED_FOR_HANDLERS, f"{app}: personalize.{name} is not for handlers"
        elif module.startswith("personalize"):
            assert module in entry_points, f"{app}: {module} (handlers import a stage's entry points)"
            assert name in entry_points[module], f"{app}: {module}.{name} is not an entry point"


def test_the_handler_check_sees_a_violation(tmp_path):
    bad = tmp_path / "app.py"
    bad.write_text("import boto3\nfrom personalize.adapters.rowstore import DynamoRowStore\n")
    assert ("boto3", "") in handler_imports(bad)
    with pytest.raises(AssertionError):
        test_a_handler_imports_only_entry_points_and_never_boto3(bad)
