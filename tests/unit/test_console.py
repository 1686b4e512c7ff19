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

    now = [1_000_020.0]  # 20 s into the minute that starts at 1,000,000
    metrics = FakeMetrics({
        "events": [(999_880.0, 1200.0), (999_940.0, 600.0), (1_000_000.0, 30.0)],  # the last minute is filling
        "lag": [(999_940.0, 850.0)],
        "champion_edge": [(999_940.0, 90.0)], "challenger_region": [(999_940.0, 10.0)],
    })
    quarantine = MemoryQuarantine()
    quarantine.send([{"id": "1", "reason": "bad", "raw": "e30=", "source": "s"}])
    sources = DeployedSources(metrics, quarantine, None, None, None, None, None, "agg", clock=lambda: now[0])
    summary = Summary(sources, min_interval_s=10.0, clock=lambda: now[0])
    got = summary.summary()
    assert got["now"]["events_per_s"] == 10.0  # 600 in the last complete minute, not the filling one
    assert got["now"]["ingest_lag_ms"] == 850.0 and got["now"]["served_challenger_share"] == 0.1
    assert got["now"]["quarantined"] == 1 and got["now"]["snapshot_age_s"] is None  # unknown, not an error
    assert [m["events_per_s"] for m in got["history"]] == [20.0, 10.0, 0.5]  # a point a minute, the last hour
    now[0] += 30
    summary.summary()
    assert metrics.reads == 1  # CloudWatch's resolution is a minute: read at most once a minute


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

    def down(url, region, credentials):
        raise SummaryRouteError("GET https://api/console/summary answered 403: forbidden")

    status, body = _get(wsgi(RemoteConsole("https://api/console/summary", "r", lambda: None, get=down)),
                        "/api/summary")
    assert status == 502 and "403" in body["message"]


def _get(app, path):
    status = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda s, h: status.append(int(s.split()[0]))))
    return status[0], json.loads(body)
