"""The dependencies layer (``requirements/runtime.txt`` and what it requires, no extra unless
named) holds everything the regional functions import and make at init: a fresh interpreter
that can see only those distributions imports every handler's modules and the whole domain
package, and makes the Powertools objects the handlers make. Powertools' Tracer imports the
X-Ray SDK, an optional extra: until 2026-12-06 the layer lacked it, and every handler that makes
a Tracer would have failed its init when deployed, while the tests (whose venv had it) passed."""

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> set[str]:
    """The distributions ``pip install -r runtime.txt`` installs: the listed ones and, through
    their metadata, what each requires (an extra's requirements only when it is asked for)."""
    todo = [Requirement(line) for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        if _normal(req.name) in seen:
            continue
        seen.add(_normal(req.name))
        for text in distribution(req.name).requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(dep)
    return seen


def handler_imports() -> list[str]:
    """Every import statement of the regional handlers (``functions/*/app.py``, the edge aside:
    its bundle is built apart), at module level or inside a module-level try."""
    out = []
    for app in sorted(ROOT.glob("functions/*/app.py")):
        if app.parent.name == "edge":
            continue
        nodes = ast.parse(app.read_text()).body
        for node in nodes:
            inner = node.body if isinstance(node, ast.Try) else [node]
            out += [ast.unparse(n) for n in inner if isinstance(n, (ast.Import, ast.ImportFrom))]
    return sorted(set(out))


ONLY_THE_LAYER = r"""
import importlib, importlib.abc, importlib.metadata, json, pkgutil, sys
allowed, imports = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])
owners = importlib.metadata.packages_distributions()
norm = lambda n: n.replace("_", "-").replace(".", "-").lower()

class OnlyTheLayer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.split(".")[0])
        if dists and not any(norm(d) in allowed for d in dists):
            raise ModuleNotFoundError(f"No module named {name!r} (from {dists}: not in the layer)", name=name)

sys.meta_path.insert(0, OnlyTheLayer())
for statement in imports:
    exec(statement, {})
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
Tracer(); Logger(); Metrics(namespace="x"); APIGatewayHttpResolver()
BatchProcessor(event_type=EventType.KinesisDataStreams)
import personalize
names = [m.name for m in pkgutil.walk_packages(personalize.__path__, "personalize.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": len(names)}))
"""


def test_the_layer_holds_what_the_regional_functions_import_and_make():
    closure = runtime_closure()
    assert {"aws-lambda-powertools", "aws-xray-sdk", "wrapt", "boto3", "numpy", "onnxruntime"} <= closure
    imports = handler_imports()
    assert any("Tracer" in i for i in imports)  # what made the X-Ray SDK a requirement
    out = subprocess.run([sys.executable, "-c", ONLY_THE_LAYER, json.dumps(sorted(closure)), json.dumps(imports)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={"PATH": "", "PYTHONPATH": str(ROOT / "layers" / "personalize"),
                              "POWERTOOLS_TRACE_DISABLED": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["modules"] > 50


def test_the_check_sees_a_missing_distribution():
    """The same check with the X-Ray SDK left out of the layer fails, as the init did."""
    closure = runtime_closure() - {"aws-xray-sdk"}
    out = subprocess.run([sys.executable, "-c", ONLY_THE_LAYER, json.dumps(sorted(closure)),
                          json.dumps(handler_imports())], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={"PATH": "", "PYTHONPATH": str(ROOT / "layers" / "personalize")})
    assert out.returncode != 0 and "aws_xray_sdk" in out.stderr
