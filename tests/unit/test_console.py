"""The console's summary and its admin controls, with fake sources and a controllable clock."""

from __future__ import annotations

import io
import json

from infra.console import Console, Sources, wsgi
from personalize.rollout import flags


class FakeSources(Sources):  # flags, experiment and change: its own, not infra.ops
    def __init__(self):
        self.total, self.counts, self.changes = 0, {"champion": 0, "challenger": 0}, []
        self.doc = flags.rollout_document("ranker-mlp/v3", "ranker-linear/v3", 0.5, "exp-1")

    def events_total(self): return self.total  # noqa: E704
    def ingest_lag_ms(self): return 120.0  # noqa: E704
    def quarantined(self): raise RuntimeError("queue unreadable")  # noqa: E704
    def snapshot_built_at_ms(self): return 95_000  # noqa: E704
    def stockouts(self): return 3  # noqa: E704
    def served(self): return dict(self.counts)  # noqa: E704
    def flags(self): return self.doc  # noqa: E704
    def experiment(self, doc): return None, None, {"status": "running"}  # noqa: E704

    def change(self, command, **kwargs):
        self.changes.append((command, kwargs))
        return f"{command} exp-1", 7, {}


def test_rates_and_the_served_share_come_from_successive_samples():
    sources, now = FakeSources(), [100.0]
    console = Console(sources, clock=lambda: now[0])
    console.sample()
    sources.total, sources.counts = 500, {"champion": 30, "challenger": 10}
    now[0] += 0.5
    assert "events_per_s" not in console.sample()  # at most one read per second
    now[0] += 1.5
    sample = console.sample()
    assert sample["events_per_s"] == 250.0 and sample["served_challenger_share"] == 0.25
    assert sample["quarantined"] is None  # unreadable: unknown, the page still renders
    assert sample["snapshot_age_s"] == 7.0 and sample["stockouts"] == 3 and sample["share"] == 0.5
    assert len(console.summary()["history"]) == 2


def _post(app, body, token=None, origin=None, kind="application/json"):
    data = json.dumps(body).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/experiment", "CONTENT_TYPE": kind,
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data), "wsgi.url_scheme": "http",
               "HTTP_HOST": "127.0.0.1:8080"}
    if token:
        environ["HTTP_X_CONSOLE_TOKEN"] = token
    if origin:
        environ["HTTP_ORIGIN"] = origin
    status = []
    body = b"".join(app(environ, lambda s, h: status.append(int(s.split()[0]))))
    return status[0], json.loads(body)


def test_only_the_admin_token_from_the_console_page_may_kill():
    sources = FakeSources()
    app = wsgi(Console(sources, admin_token="s3cret"))
    assert _post(app, {"command": "kill"})[0] == 403
    assert _post(app, {"command": "kill"}, token="wrong")[0] == 403
    assert _post(app, {"command": "kill"}, token="s3cret", origin="http://evil.test")[0] == 403
    assert _post(app, {"command": "kill"}, token="s3cret", kind="text/plain")[0] == 415
    assert _post(app, {"command": "ramp", "share": "all"}, token="s3cret")[0] == 400
    assert _post(app, {"command": "drop tables"}, token="s3cret")[0] == 400
    assert sources.changes == []
    assert _post(app, {"command": "kill"}, token="s3cret", origin="http://127.0.0.1:8080") == (
        200, {"message": "kill exp-1: flags version 7"})
    read_only = wsgi(Console(sources, admin_token="s3cret"), read_only=True)
    assert _post(read_only, {"command": "kill"}, token="s3cret")[0] == 404


class FakeMetrics:
    def __init__(self, series):
        self.series_by_id, self.reads = series, 0

    def series(self, queries, minutes):
        self.reads += 1
        assert {q.id for q in queries} >= set(self.series_by_id) and minutes == 60
        return self.series_by_id


def test_a_deployed_stacks_figures_come_from_cloudwatchs_complete_minutes():
    from personalize.adapters.quarantine import MemoryQuarantine
    from personalize.rollout.summary import DeployedSources, Summary

    now = [1_000_030.0]  # minutes start at 999,840, 999,900, 999,960 (EMF still arriving), 1,000,020 (filling)
    metrics = FakeMetrics({
        "events": [(999_840.0, 1200.0), (999_900.0, 600.0), (999_960.0, 300.0), (1_000_020.0, 30.0)],
        "lag": [(999_900.0, 850.0)],
        "champion_edge": [(999_900.0, 90.0)], "challenger_region": [(999_900.0, 10.0)],
    })
    quarantine = MemoryQuarantine()
    quarantine.send([{"id": "1", "reason": "bad", "raw": "e30=", "source": "s"}])
    sources = DeployedSources(metrics, quarantine, None, None, None, None, None, "agg", clock=lambda: now[0])
    summary = Summary(sources, min_interval_s=10.0, clock=lambda: now[0], deadline_s=5.0)
    got = summary.summary()
    assert got["now"]["events_per_s"] == 10.0  # the newest complete minute, not one still filling
    assert got["now"]["ingest_lag_ms"] == 850.0 and got["now"]["served_challenger_share"] == 0.1
    assert got["now"]["quarantined"] == 1 and got["now"]["snapshot_age_s"] is None  # unknown, not an error
    assert got["now"]["experiment"] is None and got["now"]["flags_error"]  # unreadable flags: not "none"
    assert [m["events_per_s"] for m in got["history"]] == [20.0, 10.0]
    now[0] += 30
    summary.summary()
    assert metrics.reads == 1  # CloudWatch's resolution is a minute: read at most once a minute
    # A stalled ingest: no EventsIn point in the newest complete minute reads as 0, never the last rate.
    stalled = DeployedSources(FakeMetrics({"events": [(999_840.0, 1200.0)]}), quarantine, None, None, None, None,
                              None, "agg", clock=lambda: 1_000_030.0)
    assert stalled.events_per_s() == 0.0 and stalled.ingest_lag_ms() is None


def test_a_failing_cloudwatch_is_read_once_a_minute_and_slow_figures_come_back_unknown():
    import threading

    from personalize.rollout.summary import DeployedSources, Sources, Summary

    class Down:
        reads = 0

        def series(self, queries, minutes):
            Down.reads += 1
            raise ConnectionError("throttled")

    sources = DeployedSources(Down(), None, None, None, None, None, None, "agg", clock=lambda: 1_000_030.0)
    got = Summary(sources, deadline_s=5.0, clock=lambda: 1_000_030.0).summary()
    assert Down.reads == 1 and got["now"].get("events_per_s") is None
    assert all(m.get("events_per_s") is None for m in got["history"])  # its own samples: unknown rates

    release = threading.Event()

    class Slow(Sources):
        def events_total(self): return 5  # noqa: E704
        def stockouts(self): release.wait(10); return 3  # noqa: E702, E704 - a DynamoDB that hangs

    got = Summary(Slow(), deadline_s=0.2).sample()
    release.set()
    assert got["events_total"] == 5 and got["stockouts"] is None


def test_the_proxy_fetches_at_most_every_interval_and_offers_no_control_read_only():
    from infra.console.aws import RemoteConsole
    from infra.ops import ChangeRefused

    calls, now = [], [0.0]

    def get(url, region, credentials):
        calls.append((url, region, credentials))
        return {"now": {"t": now[0]}, "history": []}

    remote = RemoteConsole("https://api/console/summary", "eu-west-1", lambda: "creds", admin_token="t",
                           clock=lambda: now[0], get=get)
    remote.summary()
    now[0] += 5
    remote.summary()
    now[0] += 6
    remote.summary()
    assert calls == [("https://api/console/summary", "eu-west-1", "creds")] * 2
    assert remote.admin_token is None  # no change function: no admin token, whatever was passed
    assert remote.act("t", {"command": "kill"})[0] == 403
    try:
        remote.change("kill")
    except ChangeRefused:
        pass
    else:
        raise AssertionError("a read-only console changed the flags")
    status, body = _get(wsgi(remote, read_only=True), "/api/summary")
    assert status == 200 and body["controls"] is False


def test_an_unreachable_route_is_a_502_the_page_can_show():
    from infra.console.aws import RemoteConsole, SummaryRouteError

    calls = []

    def down(url, region, credentials):
        calls.append(url)
        raise SummaryRouteError("GET https://api/console/summary answered 403: User: arn:aws:sts::1:x",
                                "the route answered 403")

    app = wsgi(RemoteConsole("https://api/console/summary", "r", lambda: None, get=down))
    for _ in range(3):  # three tabs polling within the interval: the route is asked once
        status, body = _get(app, "/api/summary")
        assert status == 502 and "403" in body["message"] and "arn:" not in body["message"]
    assert len(calls) == 1


def _get(app, path):
    status = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda s, h: status.append(int(s.split()[0]))))
    return status[0], json.loads(body)


def test_the_proxy_answers_its_own_loopback_names_only():
    """A page whose domain re-points to 127.0.0.1 (DNS rebinding) sends its own Host."""
    from infra.console import local_server

    server = local_server(Console(FakeSources()))
    try:
        app, port = server.get_app(), server.server_port
        for host, expected in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), (f"evil.test:{port}", 421),
                               (None, 421)):
            status = []
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/console/api/summary"}
            if host:
                environ["HTTP_HOST"] = host
            b"".join(app(environ, lambda s, h, seen=status: seen.append(int(s.split()[0]))))
            assert status == [expected], host
    finally:
        server.server_close()


def test_a_signed_request_is_never_sent_on_by_a_redirect_nor_in_the_clear():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from botocore.credentials import Credentials

    from infra.console.aws import SummaryRouteError, signed_get

    received = []

    class Target(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            received.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Target)

    class Redirect(Target):
        def do_GET(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}/steal")
            self.end_headers()

    redirect = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (target, redirect):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    credentials = Credentials("AKIDEXAMPLE", "secret", "SESSIONTOKEN")
    try:
        try:
            signed_get(f"http://127.0.0.1:{redirect.server_port}/console/summary", "us-east-1", credentials)
        except SummaryRouteError as refused:
            assert "302" in str(refused)
        else:
            raise AssertionError("a redirect was followed")
        assert received == []  # the signature and the session token never left for the other host
        try:
            signed_get("http://api.example/console/summary", "us-east-1", credentials)
        except SummaryRouteError as refused:
            assert "https only" in str(refused)
        else:
            raise AssertionError("signed for a plain-http host")
    finally:
        target.shutdown()
        redirect.shutdown()
