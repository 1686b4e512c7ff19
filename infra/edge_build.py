"""Build the Lambda@Edge bundle (``functions/edge/Makefile`` calls this from ``sam build``).

The edge gets no layers and no environment variables, so the bundle carries everything:
the handler, the ``personalize`` package, the shipped models, the runtime packages
cross-installed for python3.12 x86_64 (manylinux_2_28) and trimmed, and
``edge_config.json``, which names the us-east-1 resources. Names follow the stack name
(``<stack>-features``, ``<stack>-artifacts-{account}``, ``<stack>/cookie-signing-key``, the
AppConfig application ``<stack>``), so the file is produced from samconfig.toml's stack name
for ``SAM_CONFIG_ENV`` (default dev) before the stack exists; ``{account}`` is filled at cold
start from the function's own ARN. Fails when the zipped bundle exceeds 50 MB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 50.0
# Runtime packages the edge needs.
PACKAGES = ["onnxruntime", "numpy", "msgpack", "aws-lambda-powertools", "jmespath", "typing-extensions"]
# The AWS SDK ships in the bundle too, pinned like the rest: Lambda puts /var/task before its own
# copy on sys.path, so the edge runs the SDK its tests ran, not whatever the runtime has that day
# (the SDK's dependencies with it: a vendored SDK over the runtime's urllib3 can break on an
# update). Its botocore data is trimmed to EDGE_SERVICES with their documentation texts cut: at
# cold start botocore lists every service folder it has (about 420) and parses each client's model
# and the 1.25 MB endpoints file; the first client took about 70 ms of the edge's cold start
# (2026-12-06), most of it that.
SDK_PACKAGES = ["boto3", "botocore", "s3transfer", "urllib3", "python-dateutil", "six"]
SDK_IMPORTS = ("boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six.py")  # what they install
# Every AWS service the edge's code makes a client for (tests/unit/test_edge_sdk.py checks the
# edge's modules name no other): a client of any other service fails at its creation.
EDGE_SERVICES = ("s3", "dynamodb", "secretsmanager", "appconfigdata", "cloudwatch")
# botocore's data pre-parsed, beside its JSON (personalize.adapters.aws.PickledFirst reads it).
PICKLED = ".pickle"
# The model's documentation texts (help, docstrings): cut to "-".
_DOC_KEYS = frozenset({"documentation", "documentationUrl"})
TRIM_DIRS = {"tests", "testing", "__pycache__", "include", "benchmarks", "docs"}
TRIM_SUFFIXES = (".pyi", ".pyc", ".h", ".hpp", ".c", ".cpp", ".pxd", ".pyx")
# Parts of packages that serving never imports (model tooling, build helpers).
TRIM_PATHS = ["onnxruntime/tools", "onnxruntime/transformers", "onnxruntime/quantization", "numpy/f2py",
              "numpy/_pyinstaller", "numpy/typing", "numpy/doc", "bin",
              "aws_lambda_powertools/utilities/parser", "aws_lambda_powertools/utilities/data_classes",
              "aws_lambda_powertools/event_handler", "aws_lambda_powertools/utilities/idempotency"]


def pinned(packages: list[str]) -> list[str]:
    pins = {}
    for line in (ROOT / "requirements" / "dev.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version.strip()
    return [f"{p}=={pins[p]}" for p in packages]


def edge_config(env: str) -> dict:
    sys.path.insert(0, str(ROOT / "layers" / "personalize"))
    sys.path.insert(0, str(ROOT))
    from infra import environments
    from personalize.regions import replica_table
    from personalize.serving.wiring import ServingConfig
    from personalize.settings import DEFAULT_CHAMPION

    environment = environments.load(env)
    stack = os.environ.get("STACK_NAME") or environment.stack
    params = environment.parameters
    replicas = environment.replica_regions
    return ServingConfig(
        stack=stack, replica_table=replica_table("us-east-1", replicas),
        home_region="us-east-1", features_table=f"{stack}-features",
        artifacts_bucket=f"{stack}-artifacts-{{account}}", signing_secret=f"{stack}/cookie-signing-key",
        flags={"source": "appconfig", "application": stack, "environment": params.get("Stage", env),
               "profile": "rollout"},
        default_champion=DEFAULT_CHAMPION,
        replica_regions=replicas,
        log_sample_rate=float(params.get("ScoredLogSampleRate", "0.01")),
    ).__dict__


def fallback_items(n: int = 100) -> dict:
    """The popular items a cold edge serves while AWS is unreachable: from the snapshot file
    named by ``FALLBACK_SNAPSHOT`` (e.g. one downloaded from the stack's bucket,
    ``snapshots/current/v2.msgpack``), available items with stock not low, best first.
    Without one the bundle carries an empty list (a cold outage then answers no items)."""
    import time

    path = os.environ.get("FALLBACK_SNAPSHOT")
    if not path:
        print("FALLBACK_SNAPSHOT not set: the edge bundle's outage fallback list is empty", file=sys.stderr)
        return {"built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "items": []}
    sys.path.insert(0, str(ROOT / "layers" / "personalize"))
    from personalize.serving.degraded import popular_list
    from personalize.serving.snapshots import ItemSnapshot

    snap = ItemSnapshot.decode(Path(path).read_bytes())
    return {"built_at": snap.version, "items": popular_list(snap, n)}


def trim(target: Path) -> None:
    for relative in TRIM_PATHS:
        shutil.rmtree(target / relative, ignore_errors=True)
    for path in sorted(target.rglob("*"), reverse=True):
        in_sdk = path.relative_to(target).parts[0] in SDK_IMPORTS  # botocore.docs: every client imports it
        if path.is_dir() and path.name in TRIM_DIRS and not (in_sdk and path.name == "docs"):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and (path.suffix in TRIM_SUFFIXES or path.name.startswith("libonnxruntime.so")):
            path.unlink()  # the Python API links onnxruntime_pybind11_state, not the C API library


def _undocumented(node):
    """The model with every documentation text cut to "-", its keys kept: botocore reads some
    of them outside documentation (the endpoint parameters' ``documentation``), and an empty
    text drops a docstring section that botocore's S3 docstring handlers then look up."""
    if isinstance(node, dict):
        return {k: "-" if k in _DOC_KEYS and isinstance(v, str) else _undocumented(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_undocumented(v) for v in node]
    return node


def _read_model(path: Path):
    import gzip
    import json

    raw = path.read_bytes()
    return json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


def trim_sdk(target: Path, services: tuple[str, ...] = EDGE_SERVICES) -> None:
    """botocore's and boto3's data in ``target`` cut to ``services``: other services' folders
    removed, each kept service's model without its documentation texts (and without the
    examples, which only documentation reads), the endpoints file without other services' entries."""
    import json

    data = target / "botocore" / "data"
    prefixes = set()
    for folder in list(data.iterdir()):
        if not folder.is_dir():
            continue
        if folder.name not in services:
            shutil.rmtree(folder)
            continue
        for version in folder.iterdir():
            (version / "examples-1.json").unlink(missing_ok=True)
            for model in version.glob("service-2.json*"):
                doc = _undocumented(_read_model(model))
                prefixes.add(doc["metadata"].get("endpointPrefix", folder.name))
                model.unlink()
                (version / "service-2.json").write_text(json.dumps(doc, separators=(",", ":")))
    missing = set(services) - {f.name for f in data.iterdir() if f.is_dir()}
    if missing:
        raise SystemExit(f"botocore in {target} has no model for {sorted(missing)}")
    endpoints = _read_model(data / "endpoints.json")
    for partition in endpoints["partitions"]:
        partition["services"] = {k: v for k, v in partition["services"].items() if k in prefixes}
    (data / "endpoints.json").write_text(json.dumps(endpoints, separators=(",", ":")))
    resources = target / "boto3" / "data"
    for folder in list(resources.iterdir()) if resources.is_dir() else ():
        if folder.is_dir() and folder.name not in services:
            shutil.rmtree(folder)
    pickle_data(data)


def pickle_data(data: Path) -> int:
    """Beside each of botocore's data files in ``data``, what botocore's JSON loader returns for
    it, pickled (``personalize.adapters.aws.PickledFirst`` reads these first). Returns how many."""
    import gzip
    import json
    import pickle
    from collections import OrderedDict

    for stale in data.rglob(f"*{PICKLED}"):  # a reused target: none may outlive its JSON
        stale.unlink()
    bases = {str(p)[: -len(".json.gz")] if p.name.endswith(".json.gz") else str(p)[: -len(".json")]
             for p in data.rglob("*.json*") if p.name.endswith((".json", ".json.gz"))}
    for base in sorted(bases):
        # As botocore.loaders.JSONFileLoader reads it (tests/unit/test_edge_sdk.py compares the
        # two): the plain file first, else the gzipped one; UTF-8; an OrderedDict per object.
        plain = Path(base + ".json")
        raw = plain.read_bytes() if plain.is_file() else gzip.decompress(Path(base + ".json.gz").read_bytes())
        loaded = json.loads(raw.decode("utf-8"), object_pairs_hook=OrderedDict)
        Path(base + PICKLED).write_bytes(pickle.dumps(loaded, protocol=5))
        if pickle.loads(Path(base + PICKLED).read_bytes()) != loaded:  # what ships reads back the same
            raise SystemExit(f"{base + PICKLED} does not read back as its JSON")
    return len(bases)


def vendor_sdk(target: Path) -> None:
    """This interpreter's SDK (the same pins ``build`` installs) copied into ``target`` and
    trimmed as the bundle ships it: for the bench and tests, which run the bundle here."""
    import botocore

    source = Path(botocore.__file__).resolve().parents[1]
    for name in SDK_IMPORTS:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, ignore=shutil.ignore_patterns("__pycache__"),
                            dirs_exist_ok=True)
        else:
            shutil.copy(source / name, target / name)
    trim_sdk(target)


def zipped_mb(folder: Path) -> float:
    out = folder.parent / f"{folder.name}.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in folder.rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(folder))
    size = out.stat().st_size / 1e6
    out.unlink()
    return size


def _check_champion(folder: Path) -> None:
    """The default champion is in the bundle, its file the one its manifest names, its features
    ones serving computes (``models.verify``): an instance that cannot load it would retry its
    whole cold start forever, so such a bundle is never built."""
    import json

    from personalize.serving.models import MANIFEST_FILE, MODEL_FILE, Manifest, ModelError, verify

    if not (folder / MODEL_FILE).exists() or not (folder / MANIFEST_FILE).exists():
        raise ModelError(f"the default champion is not in the bundle: {folder} lacks {MODEL_FILE} or {MANIFEST_FILE}")
    verify(Manifest.from_dict(json.loads((folder / MANIFEST_FILE).read_text())), (folder / MODEL_FILE).read_bytes())


def build(target: Path, env: str = "dev", install: bool = True) -> float:
    import json

    from infra import bytecode

    target.mkdir(parents=True, exist_ok=True)
    # Written last (below): a build that fails on the way leaves none, so `make deploy`'s check
    # (infra/deploy.py) refuses the folder instead of finding an earlier build's.
    (target / "edge_config.json").unlink(missing_ok=True)
    # A reused target: nothing compiled from an earlier build's sources may ship (unchecked-hash pycs).
    shutil.rmtree(target / "personalize", ignore_errors=True)
    shutil.rmtree(target / "__pycache__", ignore_errors=True)
    shutil.copy(ROOT / "functions" / "edge" / "app.py", target / "app.py")
    shutil.copytree(ROOT / "layers" / "personalize" / "personalize", target / "personalize", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for manifest in (ROOT / "models").glob("*/*/manifest.json"):
        folder = manifest.parent
        shutil.copytree(folder, target / "shipped_models" / folder.parent.name / folder.name, dirs_exist_ok=True)
    config = edge_config(env)
    _check_champion(target / "shipped_models" / config["default_champion"])
    (target / "fallback_items.json").write_text(json.dumps(fallback_items(), indent=2))
    if install:
        # --upgrade: into a reused target, pip otherwise keeps the packages already there and
        # only warns (the pins' new versions would not ship).
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--no-deps",
                        "--only-binary=:all:",
                        "--platform", "manylinux_2_28_x86_64", "--python-version", "3.12", "--implementation",
                        "cp", "--target", str(target), *pinned(PACKAGES + SDK_PACKAGES)], check=True)
        trim(target)
        trim_sdk(target)
        python = bytecode.lambda_python()
        if python is None:
            if bytecode.missing("the edge bundle"):
                raise SystemExit(1)
        else:
            bytecode.precompile(target, python)
    else:  # the packages are this interpreter's, and so is the bundle (tests, the bench)
        bytecode.precompile(target, sys.executable)
    (target / "edge_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return zipped_mb(target)


def main(argv: list[str] | None = None) -> int:
    # Run as a script by sam build (functions/edge/Makefile): neither the repository nor the
    # domain package is on the path yet.
    sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "personalize")]
    from infra import environments

    target = Path((argv if argv is not None else sys.argv[1:])[0])
    env = os.environ.get("SAM_CONFIG_ENV") or environments.DEFAULT
    if env not in environments.names():  # the bundle bakes one stack's names and replica table
        print(f"no environment {env!r} in samconfig.toml: make build ENV={'|'.join(environments.names())}",
              file=sys.stderr)
        return 2
    if not os.environ.get("SAM_CONFIG_ENV"):
        print(f"edge bundle for {env} (the default; make build ENV=... or SAM_CONFIG_ENV=... for another)")
    problems = environments.load(env).problems()
    if problems:
        print(f"samconfig.toml, {env}: " + "; ".join(problems), file=sys.stderr)
        return 2
    size = build(target, env)
    print(f"edge bundle: {size:.1f} MB zipped (limit {LIMIT_MB:.0f} MB, goal 30 MB)")
    if size > LIMIT_MB:
        print("edge bundle is over the Lambda@Edge origin-request limit", file=sys.stderr)
        (target / "edge_config.json").unlink(missing_ok=True)  # not a bundle `make deploy` may ship
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
