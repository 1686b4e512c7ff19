"""``make smoke`` against the local stack, with the same code a deployed stack gets: every
check passes, the backend's route refuses what API Gateway's IAM authorizer refuses, and the
synthetic shopper and test item move no shared figure. A cold edge in a process of its own, on the
AWS SDK its bundle ships (trimmed: ``infra/edge_build.py``), builds from the stack and answers."""

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from infra import loadtest, smoke
from infra.local import sigv4
from infra.local.stack import LocalStack
from personalize import keys
from tests.bench import serving

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_passes_against_the_local_stack_and_moves_no_shared_figure(tmp_path):
    state = tmp_path / "stack.json"
    stack = LocalStack(snapshot_interval_s=1.0, guardrail_interval_s=60.0, state_file=state).start()
    try:
        check = smoke.Smoke(loadtest.local_target(state_file=state))
        assert check.run(), [(c.name, c.detail) for c in check.checks if not c.ok]
        assert len(check.checks) == 6
        stack.functions["snapshot"]({})
        body = json.loads(urllib.request.urlopen(f"{stack.endpoint}/recommendations?k=50", timeout=10).read())
        assert not any(keys.is_synthetic(i["item_id"]) for i in body["items"])
        snapshot = stack.edge_recommender().snapshot.value
        assert not any(keys.is_synthetic(i) for i in snapshot.items)

        # the bench's cold edge (it asserts a built, not a fallback, answer): S3, DynamoDB, Secrets
        # Manager and the flags' calls made through the bundle's trimmed SDK
        program = serving.compiled_edge(ROOT, stack, 0.0, tmp_path / "cold")
        env = serving.child_env(AWS_ENDPOINT_URL=stack.aws_endpoint, AWS_LAMBDA_FUNCTION_NAME="edge")
        # As in Lambda, only the bundle's packages are on its path (the bench's cold starts run so):
        # nothing it loaded came from anywhere else but the standard library.
        only_bundle = (
            "\nimport os, sysconfig\n"
            "stdlib = tuple(os.path.join(sysconfig.get_paths()[k], '') for k in ('stdlib', 'platstdlib'))\n"
            "bundle = os.path.join({!r}, '')\n"
            "def outside(path):\n"
            "    if path is None or path.startswith(bundle):\n"
            "        return False\n"
            "    return not path.startswith(stdlib) or 'site-packages' in path\n"
            "loaded = sorted(n for n, m in list(sys.modules.items()) if outside(getattr(m, '__file__', None)))\n"
            "assert not loaded, loaded\n"
            "assert 'awscrt' not in sys.modules and 'OpenSSL' not in sys.modules\n").format(str(tmp_path / "cold"))
        cold = subprocess.run(serving.child(program.replace("import app as edge", (
            "import app as edge, botocore; assert botocore.__file__.startswith({!r}), botocore.__file__"
        ).format(str(tmp_path / "cold"))) + only_bundle), capture_output=True, text=True, env=env, timeout=300)
        assert cold.returncode == 0, (cold.stderr[-3000:], cold.stdout[-3000:])
        assert json.loads(cold.stdout.strip().splitlines()[-1])["busy"] == []

        # what the IAM authorizer refuses: a function role's signature (no execute-api:Invoke)
        url, body = f"{stack.endpoint}/server/events", b'{"events": []}'
        role = stack.resources.identities.functions["recommend"]
        headers = sigv4.sign("POST", url, body, role.access_key_id, role.secret_access_key, role.session_token)
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("a role without execute-api:Invoke was let in")
        except urllib.error.HTTPError as refused:
            assert refused.code == 403 and "execute-api:Invoke" in json.loads(refused.read())["message"]
    finally:
        stack.stop()


def test_a_failing_check_is_reported_with_its_reason_and_the_run_fails(capsys):
    class Target:
        name, public_url, api_url = "nowhere", "http://127.0.0.1:9", "http://127.0.0.1:9"

    check = smoke.Smoke(Target())
    assert not check.run()
    assert all(not c.ok and c.detail for c in check.checks)
    assert "0 passed, 6 failed" in capsys.readouterr().out


class _Edge:
    """An edge that answers its bundled fallback (cold_start_unavailable) ``cold`` times."""

    def __init__(self, cold: int):
        self.cold, self.last_headers = cold, {}

    def request(self, method, url, body=None, headers=None):
        reason, self.cold = ("cold_start_unavailable" if self.cold > 0 else None), self.cold - 1
        self.last_headers = {"cache-control": "private, no-store", "x-request-id": "r" * 20}
        return 200, json.dumps({"rec_id": "x", "user_id": None, "variant": "outside", "model": "m", "items": [],
                                "fallback": reason is not None, "fallback_reason": reason,
                                "snapshot_version": None}).encode()


@pytest.mark.parametrize("cold, passes", [(3, True), (10_000, False)])
def test_an_edge_still_on_its_bundled_list_after_its_build_time_fails_the_smoke(cold, passes):
    class Target:
        name, public_url, api_url = "edge", "https://shop.example", "https://api.example"

    now = [0.0]
    check = smoke.Smoke(Target(), http=_Edge(cold), clock=lambda: now[0],
                        sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert check.check("anonymous recommendations", check.anonymous_recommendations) is passes
    if not passes:
        assert "cannot build" in check.checks[0].detail and now[0] >= smoke.COLD_BUILD_S


def test_the_cold_edge_wait_ends_even_on_a_clock_that_does_not_move():
    class Target:
        name, public_url, api_url = "edge", "https://shop.example", "https://api.example"

    edge = _Edge(10_000)
    check = smoke.Smoke(Target(), http=edge, clock=lambda: 0.0, sleep=lambda s: None)
    assert check.check("anonymous recommendations", check.anonymous_recommendations) is False
    assert 10_000 - edge.cold <= smoke.COLD_BUILD_S / 2 + 1  # requests made
