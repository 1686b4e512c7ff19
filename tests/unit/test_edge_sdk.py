"""The AWS SDK the edge bundle ships (``infra/edge_build.py``: pinned, its data trimmed to
EDGE_SERVICES, documentation texts cut) makes the same clients as the whole SDK: the same
operations with the same shapes, the same endpoints and signing in every partition; every service
the edge's code makes a client for is in it, and a service left out fails at once, by name, here
too: the local stack and the moto stack refuse the edge's role a client of any other service
(``infra/local/handlers.py``), so every test that runs the edge runs it as its bundle would.
(That it answers real calls is checked by the cold edge in tests/functional/test_smoke.py and by
``make bench``'s cold starts, which run on it.)"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import botocore.session
import pytest

from infra import edge_build

ROOT = Path(__file__).resolve().parents[2]
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1")

# Runs in a fresh interpreter on the trimmed SDK: every edge service's client in each region,
# described as the test compares them; then a service the bundle leaves out.
DESCRIBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import botocore, botocore.exceptions, botocore.session
assert botocore.__file__.startswith(sys.argv[1]), botocore.__file__
from tests.unit.test_edge_sdk import describe
from personalize.adapters.aws import PickledFirst
class Counting(PickledFirst):  # the bundle's pickled data, read as personalize.adapters.aws reads it
    pickled = 0
    def load_file(self, file_path):
        Counting.pickled += self._pickle(file_path) is not None
        return super().load_file(file_path)
session = botocore.session.Session()  # as personalize.adapters.aws makes clients
session.get_component("data_loader").file_loader = Counting()
session.set_credentials("x", "y")
out = {"described": describe(session, json.loads(sys.argv[2]), json.loads(sys.argv[3]))}
out["pickled"] = Counting.pickled
from personalize.adapters import aws  # the sessions the edge's clients come from
out["adapter_loader"] = type(aws._session().get_component("data_loader").file_loader).__name__
s3 = session.create_client("s3", region_name="us-east-1")
out["docstrings"] = [len(str(getattr(s3, m).__doc__)) for m in ("get_object", "put_object", "head_object")]
try:
    session.create_client("kinesis", region_name="us-east-1")
    out["left_out"] = "made"
except botocore.exceptions.UnknownServiceError as exc:
    out["left_out"] = str(exc)
print(json.dumps(out))
"""


def describe(session, services, regions) -> dict:
    """What a client is, minus documentation: each operation's input and output members, its
    HTTP binding, and the endpoint and signing name per region."""
    described = {}
    for service in services:
        for region in regions:
            client = session.create_client(service, region_name=region)
            model = client.meta.service_model
            described[f"{service} {region}"] = {
                "endpoint": client.meta.endpoint_url, "signing": model.signing_name,
                "operations": {name: _operation(model.operation_model(name)) for name in model.operation_names}}
    return described


def _operation(operation) -> dict:
    def members(shape):
        return None if shape is None else sorted(shape.members) if hasattr(shape, "members") else shape.type_name

    return {"http": operation.http, "input": members(operation.input_shape),
            "output": members(operation.output_shape), "errors": sorted(e.name for e in operation.error_shapes)}


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory):
    target = tmp_path_factory.mktemp("sdk")
    edge_build.vendor_sdk(target)
    return target


def test_the_trimmed_sdk_makes_the_same_clients_as_the_whole_one(trimmed, monkeypatch):
    env_free = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}
    services, regions = list(edge_build.EDGE_SERVICES), list(REGIONS)
    out = subprocess.run([sys.executable, "-c", DESCRIBE, str(trimmed), json.dumps(services), json.dumps(regions)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**env_free, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'layers' / 'personalize'}"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name in [k for k in __import__("os").environ if k.startswith("AWS_")]:  # as the trimmed side's
        monkeypatch.delenv(name)
    session = botocore.session.Session()
    session.set_credentials("x", "y")
    whole = describe(session, services, regions)
    assert result["described"] == whole
    # Each service's model and endpoint rules, the endpoints and partitions: from the pickles.
    assert result["pickled"] >= 2 * len(services) + 2, result["pickled"]
    assert result["adapter_loader"] == "PickledFirst"
    assert all(d["operations"] for d in whole.values())
    assert "kinesis" in result["left_out"]
    assert all(result["docstrings"])  # help() works on the bundle (S3's docstring handlers)


def test_the_trimmed_sdk_is_smaller_where_a_cold_start_reads_it(trimmed):
    data = trimmed / "botocore" / "data"
    assert sorted(p.name for p in data.iterdir() if p.is_dir()) == sorted(edge_build.EDGE_SERVICES)
    whole = Path(botocore.__file__).parent / "data"
    assert (data / "endpoints.json").stat().st_size < (whole / "endpoints.json").stat().st_size / 10
    model = json.loads((data / "s3" / "2006-03-01" / "service-2.json").read_text())
    assert model["operations"]["GetObject"]["documentation"] == "-"  # cut, the key kept
    assert len(model["operations"]) == len(botocore.session.get_session().get_service_model("s3").operation_names)


def _typed(node):
    """``node`` with each container's type beside it: equal only when the types are too."""
    if isinstance(node, dict):
        return (type(node).__name__, [(k, _typed(v)) for k, v in node.items()])
    if isinstance(node, list):
        return ("list", [_typed(v) for v in node])
    return node


def test_the_bundles_pickled_sdk_data_is_what_botocores_json_loader_reads(trimmed):
    from botocore.loaders import JSONFileLoader

    from personalize.adapters import aws

    assert edge_build.PICKLED == aws.PICKLED
    pickles = sorted((trimmed / "botocore" / "data").rglob(f"*{aws.PICKLED}"))
    assert {p.parent.parent.name for p in pickles if p.name.startswith("service-2")} == set(edge_build.EDGE_SERVICES)
    for path in pickles:
        base = str(path)[: -len(aws.PICKLED)]
        assert _typed(__import__("pickle").loads(path.read_bytes())) == _typed(JSONFileLoader().load_file(base)), path


def test_a_pickle_outside_botocores_own_data_is_never_loaded(tmp_path, monkeypatch):
    """AWS_DATA_PATH and ~/.aws/models are searched too: a pickle there would run code."""
    import pickle

    from personalize.adapters import aws

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    (tmp_path / "thing.json").write_text('{"from": "json"}')
    (tmp_path / f"thing{aws.PICKLED}").write_bytes(pickle.dumps(Boom()))
    loader = aws.PickledFirst()
    assert loader.load_file(str(tmp_path / "thing")) == {"from": "json"}
    assert loader.exists(str(tmp_path / "thing"))
    assert not loader.exists(str(tmp_path / "nothing"))


# Named in a module the edge loads, but made only by code the edge never runs.
NOT_MADE_BY_THE_EDGE = {"appconfig": ("appconfig.py", "AppConfigAdmin")}  # the guardrail's control plane
CLIENT_CALL = re.compile(r"""(?:aws\.client|uncached_client|\.client)\(\s*["']([a-z0-9-]+)["']""")
DYNAMIC_CALL = re.compile(r"""(?:aws\.client|uncached_client)\(\s*[a-z_]""")

LOADED = r"""
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()
                        if n.split(".")[0] == "personalize" and getattr(m, "__file__", None))))
"""


def test_every_service_the_edges_code_makes_a_client_for_is_in_the_bundle():
    """The modules the edge loads (its handler and the domain modules it imports), read for the
    services they make clients of: all in EDGE_SERVICES, none named by a variable (which this
    reading could not check)."""
    out = subprocess.run([sys.executable, "-c", LOADED, str(ROOT / "functions" / "edge"),
                          str(ROOT / "layers" / "personalize")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    files = [Path(f) for f in json.loads(out.stdout.strip().splitlines()[-1])] + [ROOT / "functions/edge/app.py"]
    named, dynamic = set(), []
    for path in files:
        source = path.read_text()
        named |= set(CLIENT_CALL.findall(source))
        if path.name != "aws.py":  # the adapter that makes every client, from its callers' names
            dynamic += [f"{path.name}: {m.group(0)}" for m in DYNAMIC_CALL.finditer(source)]
    assert {"s3", "dynamodb", "secretsmanager", "appconfigdata", "cloudwatch"} <= named
    assert named - set(NOT_MADE_BY_THE_EDGE) <= set(edge_build.EDGE_SERVICES), named - set(edge_build.EDGE_SERVICES)
    assert not dynamic, dynamic
    for module, maker in NOT_MADE_BY_THE_EDGE.values():  # nothing the edge loads uses the maker
        assert not [p.name for p in files if p.name != module and maker in p.read_text()]


def test_the_sdk_the_edge_ships_is_the_one_the_tests_run():
    """The edge build installs dev.lock's pins (``edge_build.pinned``); the layers and the
    README's runtime list read runtime.txt: the two agree, and every SDK package is pinned."""
    def pins(name: str) -> dict:
        return {k.strip().lower().replace("_", "-"): v.strip() for k, v in (
            line.split("==", 1) for line in (ROOT / "requirements" / name).read_text().splitlines()
            if "==" in line and not line.startswith("#"))}

    lock, runtime = pins("dev.lock"), pins("runtime.txt")
    assert {name: lock.get(name) for name in runtime} == runtime
    shipped = dict(p.split("==", 1) for p in edge_build.pinned(edge_build.SDK_PACKAGES))
    assert set(shipped) == set(edge_build.SDK_PACKAGES)
    import boto3

    assert (shipped["boto3"], shipped["botocore"]) == (boto3.__version__, botocore.__version__)


def test_the_edges_role_gets_no_client_of_a_service_its_bundle_lacks(stack):
    from botocore.exceptions import UnknownServiceError

    from infra.local import handlers
    from personalize.adapters import aws

    with aws.as_identity(handlers.identity("edge")):
        for service in edge_build.EDGE_SERVICES:
            aws.client(service, "us-east-1")
        for service in ("sqs", "sts", "kinesis"):
            with pytest.raises(UnknownServiceError, match=service):
                aws.client(service, "us-east-1")
    with aws.as_identity(handlers.identity("aggregate")):  # the other functions have the whole SDK
        aws.client("sqs", "us-east-1")


EDGE_WORKER = r"""
from botocore.exceptions import UnknownServiceError
from infra.local import handlers
from personalize.adapters import aws
handlers.edge_process()  # what infra/local/worker.py does for the edge's own processes
for service in ("s3", "dynamodb", "secretsmanager", "appconfigdata", "cloudwatch"):
    aws.client(service, "us-east-1")
try:
    aws.client("sqs", "us-east-1")
    print("made")
except UnknownServiceError as exc:
    print("refused:", exc)
"""


def test_an_edge_worker_process_gets_no_client_of_a_service_its_bundle_lacks():
    """The local stack's worker mode runs the edge in a process of its own, as its role from
    the environment: the check holds there too (a process of its own: the hook is global)."""
    assert 'if name == "edge":\n            handlers.edge_process()' in (ROOT / "infra/local/worker.py").read_text()
    out = subprocess.run([sys.executable, "-c", EDGE_WORKER], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**__import__("os").environ,
                                        "PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'personalize'}"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("refused: Unknown service: 'sqs'"), out.stdout


def test_without_pickled_data_the_loader_stays_botocores_own():
    """The layers and a dev venv (their botocore's data never pickled): no look for pickles."""
    from botocore.loaders import JSONFileLoader

    from personalize.adapters import aws

    assert not aws._pickled_data()
    assert type(aws._session().get_component("data_loader").file_loader) is JSONFileLoader


def test_the_pickle_is_what_is_read_where_there_is_one(tmp_path, monkeypatch):
    import pickle

    from personalize.adapters import aws

    monkeypatch.setattr(aws, "_BUILTIN_DATA", str(tmp_path.resolve()) + __import__("os").sep)
    (tmp_path / "thing.json").write_text('{"from": "json"}')
    (tmp_path / f"thing{aws.PICKLED}").write_bytes(pickle.dumps({"from": "pickle"}))
    assert aws.PickledFirst().load_file(str(tmp_path / "thing")) == {"from": "pickle"}
    (tmp_path / "only.json").write_text('{"from": "json"}')
    assert aws.PickledFirst().load_file(str(tmp_path / "only")) == {"from": "json"}


def test_a_path_that_climbs_out_of_botocores_data_reads_no_pickle(tmp_path):
    """``AWS_DATA_PATH`` or ``HOME`` naming botocore's folder and ``..`` out of it."""
    import os
    import pickle

    from personalize.adapters import aws

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    (tmp_path / "thing.json").write_text('{"from": "json"}')
    (tmp_path / f"thing{aws.PICKLED}").write_bytes(pickle.dumps(Boom()))
    climbing = aws._BUILTIN_DATA + os.sep.join([".."] * (aws._BUILTIN_DATA.count(os.sep) + 1)) + str(tmp_path)
    assert climbing.startswith(aws._BUILTIN_DATA)
    assert aws.PickledFirst().load_file(os.path.join(climbing, "thing")) == {"from": "json"}


def test_a_rebuild_leaves_no_pickle_without_its_json(tmp_path):
    """A reused build folder: a pickle whose JSON is gone (a botocore update moved a file) would
    still be read first; the build writes every pickle afresh and removes the rest."""
    import pickle

    version = tmp_path / "svc" / "2020-01-01"
    version.mkdir(parents=True)
    (version / "service-2.json").write_text('{"b": 1, "a": [2]}')
    (version / f"paginators-1{edge_build.PICKLED}").write_bytes(pickle.dumps({"stale": True}))
    (version / f"service-2{edge_build.PICKLED}").write_bytes(pickle.dumps({"stale": True}))
    assert edge_build.pickle_data(tmp_path) == 1
    assert sorted(p.name for p in version.iterdir()) == ["service-2.json", f"service-2{edge_build.PICKLED}"]
    assert pickle.loads((version / f"service-2{edge_build.PICKLED}").read_bytes()) == {"b": 1, "a": [2]}


def test_a_damaged_pickle_is_named_once_and_its_json_read_instead(tmp_path, monkeypatch, caplog):
    import pickle

    from personalize.adapters import aws

    monkeypatch.setattr(aws, "_BUILTIN_DATA", str(tmp_path.resolve()) + __import__("os").sep)
    monkeypatch.setattr(aws, "_unreadable", set())
    (tmp_path / "endpoints.json").write_text('{"from": "json"}')
    (tmp_path / f"endpoints{aws.PICKLED}").write_bytes(pickle.dumps({"from": "pickle"})[:-5])  # truncated
    loader = aws.PickledFirst()
    with caplog.at_level("WARNING", logger="personalize.adapters.aws"):
        assert loader.load_file(str(tmp_path / "endpoints")) == {"from": "json"}
        assert loader.load_file(str(tmp_path / "endpoints")) == {"from": "json"}
    named = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(named) == 1 and f"endpoints{aws.PICKLED}" in named[0] and "UnpicklingError" in named[0]


def test_a_pickle_without_its_json_is_not_seen(tmp_path, monkeypatch):
    import pickle

    from personalize.adapters import aws

    monkeypatch.setattr(aws, "_BUILTIN_DATA", str(tmp_path.resolve()) + __import__("os").sep)
    (tmp_path / f"service-2{aws.PICKLED}").write_bytes(pickle.dumps({"stale": True}))
    loader = aws.PickledFirst()
    assert not loader.exists(str(tmp_path / "service-2"))
    assert loader.load_file(str(tmp_path / "service-2")) is None
