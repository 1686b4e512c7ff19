"""Operating the stack: every alarm reaches a person, the SLOs guard flag deployments, every
log group (the edge's regional ones included) has a retention, CloudFront never caches an
error of the API, and the dashboards and SLO alarms are the ones the code generates."""

import re
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from infra import observability
from infra.local import template
from personalize import regions, settings, telemetry
from personalize.adapters.logs import LogGroups, edge_log_group

RESOURCES = template.resources()
ALARMS = {k: v for k, v in RESOURCES.items()
          if v["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")}
TOPIC = {"Fn::If": ["HasAlarmTopicArn", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}
RUNBOOK = template.ROOT / "docs" / "operations.md"


def test_the_generated_block_is_what_the_code_generates():
    text = template.TEMPLATE.read_text()
    assert observability.block_in(text) == observability.render(), "run `make observability`"


def _components(composite: dict) -> set[str]:
    return set(re.findall(r"ALARM\(\$\{(\w+)\}\)", composite["Properties"]["AlarmRule"]["Fn::Sub"]))


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_every_alarm_reaches_a_person(name):
    """The ingest topic had no subscriber and two alarms had no action at all."""
    props = ALARMS[name]["Properties"]
    if props.get("AlarmActions"):
        assert props["AlarmActions"] == [TOPIC], name
        return
    parents = [k for k, v in ALARMS.items() if v["Type"] == "AWS::CloudWatch::CompositeAlarm"
               and name in _components(v) and v["Properties"].get("AlarmActions") == [TOPIC]]
    assert parents, f"{name} has no action and is part of no composite alarm that has one"


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_every_alarm_has_a_runbook_entry_with_the_command_that_fixes_it(name):
    assert RUNBOOK.exists(), "docs/operations.md is the runbook"
    text = RUNBOOK.read_text()
    entry = re.search(rf"^### [^\n]*`{name}`[^\n]*\n(.*?)(?=^##|\Z)", text, re.M | re.S)
    assert entry, f"docs/operations.md has no '### ... `{name}`' entry"
    assert "```" in entry.group(1) or "make " in entry.group(1), f"{name}: the entry names no command"


def test_the_on_call_is_subscribed_and_the_topic_is_one_cloudwatch_can_publish_to():
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Protocol"] == "email"
    topic = RESOURCES["AlarmTopic"]["Properties"]
    # CloudWatch cannot use the AWS-managed aws/sns key: alarms on such a topic reach no one.
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    statements = RESOURCES["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    [publishers] = [s for s in statements if s["Sid"] == "AlarmsAndBudgetsPublish"]
    assert "cloudwatch.amazonaws.com" in publishers["Principal"]["Service"]
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(publishers["Action"])


def test_the_slos_burn_rate_alarms_are_the_rollback_monitors_of_flag_deployments():
    monitors = {m["AlarmArn"]["Fn::GetAtt"][0] for m in RESOURCES["RolloutEnvironment"]["Properties"]["Monitors"]}
    assert {"ServingHealthAlarm", "AvailabilityBurn5mAlarm", "LatencyBurn5mAlarm"} <= monitors
    assert len(monitors) <= 5  # AppConfig's limit per environment
    for slo in observability.SLOS:
        fast = ALARMS[f"{slo.name}FastBurnAlarm"]
        assert _components(fast) == {f"{slo.name}Burn5mAlarm", f"{slo.name}Burn1hAlarm"}
        for window, period in (("5m", 300), ("1h", 3600)):
            props = ALARMS[f"{slo.name}Burn{window}Alarm"]["Properties"]
            assert props["Threshold"] == pytest.approx(14.4 * slo.budget)
            assert {q["MetricStat"]["Period"] for q in props["Metrics"] if "MetricStat" in q} == {period}
        assert ALARMS[f"{slo.name}SlowBurnAlarm"]["Properties"]["Threshold"] == pytest.approx(6 * slo.budget)


def test_the_slo_alarms_read_the_metrics_serving_records():
    """The names and dimensions in the alarms are the ones telemetry.record_answer writes."""
    from personalize.telemetry import Aggregate, metric_data

    recorded = Aggregate()

    class Sink:
        answer = recorded.answer

    telemetry.record_answer((Sink(),), "champion", "user_read_failed", 500.0, 12.0)
    written = {(d["MetricName"], frozenset((x["Name"], x["Value"]) for x in d["Dimensions"]))
               for d in metric_data(recorded, "edge", telemetry.GLOBAL)}
    written |= {(d["MetricName"], frozenset((x["Name"], x["Value"]) for x in d["Dimensions"]))
                for d in metric_data(recorded, "recommend")}
    for slo in observability.SLOS:
        for query in observability.error_ratio_queries(slo, 300):
            metric = query.get("MetricStat", {}).get("Metric")
            if metric and metric["Namespace"] == "RealtimePersonalization":
                key = (metric["MetricName"], frozenset((d["Name"], d["Value"]) for d in metric["Dimensions"]))
                assert key in written, key


def test_the_rollback_alarm_reads_the_metrics_serving_records():
    """ServingHealthAlarm's names and dimensions are the ones a signed-in shopper's answers
    write (a challenger's fault and a champion's answer), at the edge's home copy and in the region."""
    from personalize.telemetry import Aggregate, metric_data

    recorded, minutes = Aggregate(), telemetry.ShopperMinutes()
    telemetry.record_answer((recorded,), "challenger", "challenger_failed", 5.0, None, True, "ann", minutes, 0.0)
    telemetry.record_answer((recorded,), "champion", "challenger_failed", 5.0, None, True, "bob", minutes, 0.0)
    written = set()
    for service, extra in (("edge", telemetry.GLOBAL), ("recommend", ())):
        written |= {(d["MetricName"], frozenset((x["Name"], x["Value"]) for x in d["Dimensions"]))
                    for d in metric_data(recorded, service, extra)}
    queries = [m for m in RESOURCES["ServingHealthAlarm"]["Properties"]["Metrics"] if "MetricStat" in m]
    for query in queries:
        metric = query["MetricStat"]["Metric"]
        if metric["Namespace"] == "RealtimePersonalization":
            key = (metric["MetricName"], frozenset((d["Name"], d["Value"]) for d in metric["Dimensions"]))
            assert key in written, key
    assert sum(q["MetricStat"]["Metric"]["Namespace"] == "RealtimePersonalization" for q in queries) == 8


def test_the_experiments_dashboard_plots_what_the_rollback_alarm_compares():
    """On-call review: neither dashboard showed Shoppers or ModelFallbackShoppers, so the page
    could not be checked against what the alarm saw."""
    plotted = set()
    for widget in observability.experiment_dashboard()["widgets"]:
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], str):
                names = [x for x in row[2:] if isinstance(x, str)]
                plotted.add((row[1], frozenset(zip(names[::2], names[1::2]))))
    for query in RESOURCES["ServingHealthAlarm"]["Properties"]["Metrics"]:
        metric = query.get("MetricStat", {}).get("Metric")
        if metric and metric["Namespace"] == "RealtimePersonalization":
            assert (metric["MetricName"], frozenset((d["Name"], d["Value"]) for d in metric["Dimensions"])) in plotted


def test_every_log_group_has_a_retention_and_every_regional_function_its_group():
    groups = {k: v for k, v in RESOURCES.items() if v["Type"] == "AWS::Logs::LogGroup"}
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name
    named = {g["Properties"]["LogGroupName"]["Fn::Sub"] for g in groups.values()}
    for name in template.of_type("AWS::Serverless::Function"):
        if name != "EdgeFunction":
            assert f"/aws/lambda/${{{name}}}" in named, f"{name} logs to a group without retention"


def test_the_edges_log_groups_in_every_execution_region_get_the_retention():
    function = RESOURCES["EdgeLogsFunction"]["Properties"]
    assert function["Environment"]["Variables"]["EDGE_FUNCTION_NAME"] == {"Fn::Sub": "${AWS::StackName}-edge"}
    assert RESOURCES["EdgeFunction"]["Properties"]["FunctionName"] == {"Fn::Sub": "${AWS::StackName}-edge"}
    [statement] = function["Policies"][0]["Statement"]
    assert all(r["Fn::Sub"].startswith("arn:${AWS::Partition}:logs:*:") for r in statement["Resource"])
    with mock_aws():
        report = telemetry.keep_edge_logs("shop-edge", 30)
        assert set(report) == set(regions.EDGE_EXECUTION_REGIONS)
        assert set(report.values()) == {"created"}
        for region in regions.EDGE_EXECUTION_REGIONS:
            [group] = boto3.client("logs", region).describe_log_groups(
                logGroupNamePrefix=edge_log_group("shop-edge"))["logGroups"]
            assert group["retentionInDays"] == 30
        assert set(telemetry.keep_edge_logs("shop-edge", 14).values()) == {"set"}  # again: only the retention


def test_one_region_failing_does_not_stop_the_others():
    class Failing(LogGroups):
        def keep(self, group, region, days):
            if region == "ap-south-1":
                raise ConnectionError("opted out")
            return "set"

    report = telemetry.keep_edge_logs("shop-edge", 30, Failing())
    assert report.pop("ap-south-1").startswith("ConnectionError")
    assert set(report.values()) == {"set"}


def test_cloudfront_caches_no_error_answer_of_the_api():
    config = RESOURCES["Distribution"]["Properties"]["DistributionConfig"]
    responses = {r["ErrorCode"]: r for r in config["CustomErrorResponses"]}
    # Every status code CloudFront caches (HTTPStatusCodes / custom-error-pages-expiration).
    assert set(responses) == {400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504}
    for code, response in responses.items():
        assert response["ErrorCachingMinTTL"] == 0, code
        assert "ResponsePagePath" not in response  # the API's own error body reaches the client


def test_the_edge_function_outlives_the_stack_until_its_replicas_are_gone():
    assert RESOURCES["EdgeFunction"]["DeletionPolicy"] == "Retain"
    transformed = template.transformed()["Resources"]
    assert transformed["EdgeFunction"]["DeletionPolicy"] == "Retain"


def test_a_budget_tells_the_alarm_topic():
    budget = RESOURCES["CostBudget"]["Properties"]
    assert budget["Budget"]["BudgetLimit"]["Amount"] == {"Ref": "MonthlyBudgetUsd"}
    for notification in budget["NotificationsWithSubscribers"]:
        assert notification["Subscribers"] == [{"SubscriptionType": "SNS", "Address": TOPIC}]


def test_the_operator_dashboard_shows_edge_errors_in_every_execution_region():
    body = observability.operator_dashboard()
    [widget] = [w for w in body["widgets"] if w["properties"].get("title", "").startswith("Edge errors per")]
    shown = {row[-1]["region"] for row in widget["properties"]["metrics"]}
    assert shown == set(regions.EDGE_EXECUTION_REGIONS)
    titles = " | ".join(w["properties"]["title"] for w in body["widgets"])
    for needed in ("Ingest lag", "throughput", "quarantined", "Snapshot age", "latency", "Fallbacks by reason",
                   "Variant shares", "Guardrail", "SLO"):
        assert needed in titles, needed
    listed = {a.strip("${}").removesuffix(".Arn") for a in body["widgets"][-1]["properties"]["alarms"]}
    assert listed == set(ALARMS) - {n for n in ALARMS if re.search(r"Burn(5m|1h)Alarm$", n)}
    # What serving counts when its sold-out list cannot be read (tests/functional/test_operations_logs.py
    # asserts both functions print them with these dimensions), on the dashboard for both.
    shown = {(row[1], row[3]) for w in body["widgets"] for row in w["properties"].get("metrics", [])
             if len(row) > 3 and all(isinstance(x, str) for x in row[:4])}
    for name in ("SoldOutReadFailures", "StaleSoldOutAnswers"):
        assert {(name, "edge"), (name, "recommend")} <= shown, name


def test_the_cdn_bypass_alarm_reads_what_collect_prints():
    """On-call review: collect counts refusals with a ``route`` dimension and the alarm asked
    for ``service`` alone (CloudWatch matches dimension sets exactly): it could never fire on
    collect's figures, an unreadable origin secret included."""
    import json
    import os

    from infra.local import handlers
    from infra.local.lambda_events import context, http_api_event
    from personalize import identity
    from personalize.adapters.stream import MemoryEventStream
    from personalize.ingest import collect

    saved = dict(os.environ)
    os.environ.update(EVENTS_STREAM="unused", SIGNING_KEY_SECRET="unused", ORIGIN_VERIFY_SECRET="unused",
                      ARTIFACTS_BUCKET="unused", POWERTOOLS_TRACE_DISABLED="1")
    try:
        app = handlers.load("collect")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    printed = []
    app.figures.out = printed.append
    app.collector = collect.Collector(MemoryEventStream(limits=None), identity.KeyRing.static("k"),
                                      identity.KeyRing.static("origin"))
    for token in (None, "wrong"):  # no CDN in front: refused, counted
        headers = {"content-type": "application/json", **({"x-origin-verify": token} if token else {})}
        app.lambda_handler(http_api_event("POST", "/events", "{}", headers), context("collect"))
    app.figures.flush()
    emitted = set()
    for line in printed:
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dims in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    emitted.add((metric["Name"], frozenset((d, doc[d]) for d in dims)))
    watched = {(m["MetricStat"]["Metric"]["MetricName"],
                frozenset((d["Name"], d["Value"]) for d in m["MetricStat"]["Metric"]["Dimensions"]))
               for m in ALARMS["CdnBypassAlarm"]["Properties"]["Metrics"] if "MetricStat" in m}
    from_collect = {w for w in watched if ("service", "collect") in w[1]}
    assert from_collect and any(w in emitted for w in from_collect if w[0] == "RequestsBypassingCdn"), \
        (sorted(emitted), sorted(from_collect))
    assert all(w[1] == next(iter(e[1] for e in emitted if e[0] == "RequestsBypassingCdn")) for w in from_collect)


def test_the_edge_errors_alarm_reads_what_the_edge_counts_when_it_passes_a_request_on(monkeypatch):
    """A request the edge fails on goes to the origin and is counted in the copy us-east-1 gets;
    the alarm reads that count and the edge's answers, by the names and dimensions written."""
    from infra.local import handlers
    from infra.local.lambda_events import context
    from infra.local.stack import cloudfront_event
    from personalize.telemetry import Aggregate, metric_data

    home = Aggregate()
    edge = handlers.load("edge")
    monkeypatch.setattr(edge, "home_metrics", lambda: SimpleNamespace(add=home.count))
    monkeypatch.setattr(edge, "serve", lambda *a, **k: 1 / 0)
    request = cloudfront_event("GET", "/recommendations", {"k": "2"}, {})
    passed = edge.lambda_handler(request, context("edge"))
    assert passed == request["Records"][0]["cf"]["request"]  # on to the origin
    telemetry.record_answer((SimpleNamespace(answer=home.answer),), "champion", None, 200.0, 3.0)
    written = {(d["MetricName"], frozenset((x["Name"], x["Value"]) for x in d["Dimensions"]))
               for d in metric_data(home, "edge", telemetry.GLOBAL)}
    read = {(q["MetricStat"]["Metric"]["MetricName"],
             frozenset((d["Name"], d["Value"]) for d in q["MetricStat"]["Metric"]["Dimensions"]))
            for q in ALARMS["EdgeErrorsAlarm"]["Properties"]["Metrics"] if "MetricStat" in q}
    assert {name for name, _ in read} == {"EdgeErrors", "Answers"}
    assert read <= written, read - written


def test_the_sold_out_alarm_reads_what_both_serving_functions_count():
    """Over a quarter of the answers past the sold-out list's budget, two 5-minute periods in a
    row, page, whichever function gave them: the alarm reads the names and dimensions both
    functions write, as their handlers count them (``count_increases`` of
    ``Recommender.degraded``, then an answer): the edge's copy for us-east-1 (PutMetricData),
    the regional function's EMF. A share over 5 minutes, not a run of 1-minute counts: a quiet
    region's instance sends its copy once a minute at most, only when a request comes (a
    re-review's simulation: pages 20-80 minutes late at one request every 20 s)."""
    from personalize.serving.recommendations import Recommender, count_increases
    from personalize.telemetry import Aggregate, emf_documents, metric_data

    totals = Recommender.degraded(SimpleNamespace(soldout=SimpleNamespace(failures=1), stale_soldout_answers=3))
    edge, regional = Aggregate(), Aggregate()
    for aggregate in (edge, regional):
        count_increases(totals, {}, (aggregate.count,))
        telemetry.record_answer((SimpleNamespace(answer=aggregate.answer),), "champion", None, 20.0, 3.0)
    written = {(d["MetricName"], frozenset((x["Name"], x["Value"]) for x in d["Dimensions"]))
               for d in metric_data(edge, "edge", telemetry.GLOBAL)}
    for doc in emf_documents(regional, settings.NAMESPACE, "recommend", 0):
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dims in directive["Dimensions"]:
                written |= {(m["Name"], frozenset((d, doc[d]) for d in dims)) for m in directive["Metrics"]}
    props = ALARMS["SoldOutStaleAlarm"]["Properties"]
    stats = {m["Id"]: m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m}
    read = {(m["Metric"]["MetricName"], frozenset((d["Name"], d["Value"]) for d in m["Metric"]["Dimensions"]))
            for m in stats.values()}
    assert {name for name, _ in read} == {"StaleSoldOutAnswers", "Answers"} and len(read) == 4
    assert read <= written, read - written
    assert {m["Period"] for m in stats.values()} == {300}
    [share] = [m for m in props["Metrics"] if "Expression" in m]
    assert all(f"FILL({k}, 0)" in share["Expression"] for k in stats)
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"], props["Threshold"]) == (2, 2, 25)
    assert "SoldOutStaleAlarm" in observability.ALARMS_ON_DASHBOARD


def test_an_edge_failing_on_every_request_logs_a_traceback_a_minute_per_cause_and_counts_each(
        monkeypatch, caplog):
    """1,000 failing requests a second would be 1,000 tracebacks a second of logs: one a minute
    per exception type, the next saying how many were left out; every one still goes to the
    origin and is counted (EdgeErrors)."""
    from personalize.serving import cloudfront

    now = [0.0]
    monkeypatch.setattr(cloudfront, "errors", telemetry.RepeatedErrors(cloudfront.log, clock=lambda: now[0]))
    event = {"Records": [{"cf": {"config": {"requestId": "r"}, "request": {"uri": "/recommendations",
                                                                         "method": "GET", "headers": {}}}}]}
    counted = []

    def fail(exc):
        def serve(request):
            raise exc
        return serve

    with caplog.at_level("ERROR", logger=cloudfront.log.name):
        for _ in range(100):
            assert cloudfront.handle(event, fail(ZeroDivisionError()), on_error=lambda: counted.append(1)) \
                == event["Records"][0]["cf"]["request"]
        cloudfront.handle(event, fail(KeyError("x")), on_error=lambda: counted.append(1))  # another cause

        def elsewhere(request):  # the same type raised by another line: a cause of its own
            return 1 / 0

        cloudfront.handle(event, elsewhere, on_error=lambda: counted.append(1))
        now[0] = 61.0
        cloudfront.handle(event, fail(ZeroDivisionError()), on_error=lambda: counted.append(1))
    lines = [r for r in caplog.records if "passing the request to the origin" in r.getMessage()]
    assert len(counted) == 103
    assert [r.exc_info[0] for r in lines] == [ZeroDivisionError, KeyError, ZeroDivisionError, ZeroDivisionError]
    assert "99 more of these" in lines[-1].getMessage() and lines[-1].left_out == 99  # a field to sum on too
    assert lines[0].left_out == 0
