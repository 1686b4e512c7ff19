"""The built edge bundle run the way Lambda runs it, with every AWS endpoint unreachable:
a separate interpreter that sees only the bundle and what the Lambda Python runtime
provides (boto3 and its dependencies, after the bundle on the path: the bundle's own trimmed
SDK is the one imported), nothing from this project's virtualenv."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from infra import bytecode, edge_build

# What the python3.12 Lambda runtime puts beside a function: boto3 and its dependencies (the
# bundle carries its own, found first, as /var/task is in Lambda).
RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
# What edge_build installs into the bundle (cross-installed for 3.12 when deployed; here the
# same packages for this interpreter).
BUNDLED = ("numpy", "numpy.libs", "onnxruntime", "msgpack", "aws_lambda_powertools", "jmespath",
           "typing_extensions.py")

RUNNER = r"""
import json, sys, time
bundle, runtime = sys.argv[1], sys.argv[2]
sys.path[:0] = [bundle, runtime]
event = json.loads(sys.stdin.read())
import app

class Context:
    function_name = "us-east-1.rt-personalization-dev-edge"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rt-personalization-dev-edge"
    memory_limit_in_mb = 1024
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    def get_remaining_time_in_millis(self):
        return 5000

for _ in range(int(sys.argv[3])):
    started = time.perf_counter()
    answer = app.lambda_handler(event, Context())
    seconds = time.perf_counter() - started
    print("RESULT " + json.dumps({"status": answer.get("status"), "body": json.loads(answer.get("body") or "null"),
                                  "seconds": seconds}), flush=True)
# Lambda never finalizes the interpreter (the sandbox is frozen, then killed): no exit-time
# teardown while the background rebuild is inside onnxruntime (it aborts the process there).
import os
os._exit(0)
"""


def site_packages() -> Path:
    import numpy

    return Path(numpy.__file__).resolve().parents[1]


def lambda_python() -> str | None:
    return bytecode.lambda_python()


def build_bundle(target: Path, fallback_snapshot: Path | None = None, as_deployed: bool = False) -> Path:
    """edge_build's bundle (handler, domain package, models, config, fallback list) plus its
    third-party packages: this interpreter's, or (``as_deployed``) the python3.12 manylinux
    wheels ``sam build`` installs, trimmed as deployed (pip, from the package registry).
    Returns the runtime folder beside it."""
    if fallback_snapshot is not None:
        os.environ["FALLBACK_SNAPSHOT"] = str(fallback_snapshot)
    try:
        edge_build.build(target / "bundle", "dev", install=as_deployed)
    finally:
        os.environ.pop("FALLBACK_SNAPSHOT", None)
    if not as_deployed:
        edge_build.vendor_sdk(target / "bundle")  # a copy, trimmed as the deployed bundle's
    source = site_packages()
    for name in () if as_deployed else BUNDLED:
        if (source / name).exists() and not (target / "bundle" / name).exists():
            (target / "bundle" / name).symlink_to(source / name)
    (target / "runtime").mkdir(exist_ok=True)
    for name in RUNTIME:
        if (source / name).exists():
            (target / "runtime" / name).symlink_to(source / name)
    return target / "runtime"


class Blackhole:
    """A TCP endpoint that accepts connections (its backlog) and never answers: a slow AWS."""

    def __enter__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(64)
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}"

    def __exit__(self, *exc):
        self.socket.close()


def refused_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connections are refused


def run_offline(target: Path, endpoint: str, event: dict, requests: int = 3,
                python: str = sys.executable) -> list[dict]:
    env = {"PATH": os.environ.get("PATH", ""), "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "edge", "AWS_SECRET_ACCESS_KEY": "edge",
           "AWS_SESSION_TOKEN": "edge", "AWS_EC2_METADATA_DISABLED": "true", "POWERTOOLS_METRICS_NAMESPACE": "x"}
    result = subprocess.run([python, "-I", "-S", "-c", RUNNER, str(target / "bundle"), str(target / "runtime"),
                             str(requests)], input=json.dumps(event), capture_output=True, text=True, env=env,
                            timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"the bundle failed: {result.stderr[-3000:]}")
    return [json.loads(line[len("RESULT "):]) for line in result.stdout.splitlines() if line.startswith("RESULT ")]
