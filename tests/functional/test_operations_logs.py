"""What the functions write to their logs, as an operator reads them: no raw user id on any
line (user ids are often e-mail addresses), CloudFront's request id on every line of that
request and in a response header, and per-request figures aggregated as EMF with values and
counts (percentiles survive), not one blob per request."""

import io
import json
import logging

import pytest

from infra.local import handlers
from infra.local.lambda_events import context, http_api_event
from personalize import settings, telemetry
from tests.conftest import now_ms, use_stack
from tests.functional.test_serving import loaded_shop

EMAIL = "jane.doe+vip@example.com"


class Captured:
    """Every line the functions print or log (Powertools loggers, stdlib loggers, EMF)."""

    def __init__(self):
        self.stream = io.StringIO()

    def attach(self, *modules) -> None:
        for module in modules:
            logger = getattr(module, "logger", None)
            if logger is not None:
                for handler in logger._logger.handlers:
                    if isinstance(handler, logging.StreamHandler):
                        handler.stream = self.stream
            figures = getattr(module, "figures", None)
            if figures is not None:
                figures.out = lambda line: self.stream.write(line + "\n")
                figures.flush_every_s = 0.0  # every invocation flushes: the test reads what it wrote
        for name in ("personalize",):
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.stream = self.stream

    def lines(self) -> list[str]:
        return [line for line in self.stream.getvalue().splitlines() if line.strip()]

    def json_lines(self) -> list[dict]:
        out = []
        for line in self.lines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


@pytest.fixture(scope="module")
def _shop(tmp_path_factory):
    with loaded_shop(tmp_path_factory) as shop:
        yield shop


@pytest.fixture
def shop(_shop, tmp_path, capsys, monkeypatch):
    """One loaded shop for the module (``module_stack``), and for each test a new edge and
    regional function: these tests break their state on purpose."""
    use_stack(_shop.stack, monkeypatch)
    serving = _shop.with_new_serving(tmp_path)
    captured = Captured()
    captured.attach(serving.edge, serving.recommend_app, serving.collect, serving.aggregate, serving.features)
    return serving, captured, capsys


def test_no_log_line_names_a_shopper_by_their_user_id(shop):
    serving, captured, capsys = shop
    ts = now_ms()
    serving.post({"event_id": "e1", "type": "view", "user_id": EMAIL, "item_id": "sku-3", "ts": ts})
    serving.post_public({"event_id": "e2", "type": "click", "item_id": "sku-3", "ts": ts}, user=EMAIL)
    serving.post_public({"event_id": "e3", "type": "click", "user_id": "someone-else", "item_id": "sku-3",
                         "ts": ts}, user=EMAIL)  # refused: the body names another shopper
    serving.drain()
    assert serving.user_features(EMAIL)[0] == 200
    serving.recommender().log_sample_rate = 1.0  # the sampled scored-candidates record too
    status, body, _ = serving.get(cookie=serving.cookie(EMAIL))
    assert status == 200 and body["user_id"] == EMAIL and body["fallback"] is False
    event = http_api_event("GET", "/recommendations", None, {"cookie": serving.cookie(EMAIL),
                                                             settings.ORIGIN_VERIFY_HEADER: serving.stack.origin_token},
                           {"k": "5"})
    serving.recommend_app.recommender.log_sample_rate = 1.0
    assert serving.recommend_app.lambda_handler(event, context("recommend"))["statusCode"] == 200
    written = captured.stream.getvalue() + "".join(capsys.readouterr())
    assert '"scored_candidates"' in written  # the record is there, under a pseudonym
    assert EMAIL not in written and "jane.doe" not in written
    [scored] = [json.loads(x) for x in written.splitlines() if '"scored_candidates"' in x][:1]
    assert scored["user"].startswith("u:") and "user_id" not in scored


def test_every_line_of_an_edge_request_carries_cloudfronts_request_id_which_the_answer_returns(shop):
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    serving, captured, _ = shop
    # Deployed, each function has its own process; here the domain's loggers follow the last
    # handler module imported: point them at the edge's, as its own process has them.
    copy_config_to_registered_loggers(source_logger=serving.edge.logger, include={"personalize"})
    captured.attach(serving.edge)
    serving.get()  # warm
    recommender = serving.recommender()
    # This request must re-read the sold-out list itself (too old) and fails to: the domain
    # logs two warnings on the request's own thread.
    recommender.soldout.load = lambda current: (_ for _ in ()).throw(ConnectionError("DynamoDB down"))
    recommender.soldout.succeeded_at = float("-inf")
    recommender.soldout.attempted_at = float("inf")  # no background refresh in between
    captured.stream.seek(0)
    captured.stream.truncate()
    answer = serving.edge.lambda_handler(_cloudfront_event(serving, "req-id-1234567890abcdef"), context("edge"))
    headers = {k: v[0]["value"] for k, v in answer["headers"].items()}
    assert headers["x-request-id"] == "req-id-1234567890abcdef"
    logs = [line for line in captured.json_lines() if "_aws" not in line]
    assert len(logs) >= 2, captured.stream.getvalue()[:2000]  # the failed re-read and the low-stock fallback
    for line in logs:
        assert line.get("correlation_id") == "req-id-1234567890abcdef", line


def _cloudfront_event(serving, request_id, cookie=None):
    from infra.local.stack import cloudfront_event

    event = cloudfront_event("GET", "/recommendations", {"k": "5"},
                             {"cloudfront-viewer-country": "FR", **({"cookie": cookie} if cookie else {})})
    event["Records"][0]["cf"]["config"]["requestId"] = request_id
    return event


def test_the_regional_functions_log_under_cloudfronts_request_id_when_it_forwarded_the_request(shop):
    serving, captured, _ = shop
    event = http_api_event("POST", "/events", json.dumps({"event_id": "x1", "type": "view", "item_id": "sku-3",
                                                          "ts": now_ms()}),
                           {settings.ORIGIN_VERIFY_HEADER: serving.stack.origin_token, "x-amz-cf-id": "cf-abc=="})
    response = serving.collect.lambda_handler(event, context("collect"))
    assert response["headers"]["x-request-id"] == "cf-abc=="
    assert response["headers"]["Cache-Control"] == "no-store"


def test_per_request_figures_leave_as_few_emf_documents_with_values_and_counts(shop):
    serving, captured, _ = shop
    serving.edge.figures.flush_every_s = 3600.0  # one flush for the whole run
    for n in range(200):
        serving.get(cookie=serving.cookie(f"bg{n % 50}") if n % 2 else None)
    captured.stream.seek(0)
    captured.stream.truncate()
    serving.edge.figures.flush()
    documents = [d for d in captured.json_lines() if "_aws" in d]
    assert 1 <= len(documents) <= 8  # one per dimension set (variant, reason), not one per request
    latency = [d["LatencyMs"] for d in documents if "LatencyMs" in d]
    assert sum(h["Count"] for h in latency) == 200
    for histogram in latency:
        assert len(histogram["Values"]) == len(histogram["Counts"]) <= 100
        assert histogram["Min"] <= min(histogram["Values"]) and max(histogram["Values"]) <= histogram["Max"]
    requests = sum(d.get("Requests", 0) for d in documents)
    assert requests == 200
    # The rollback monitor's shoppers: the 25 signed-in ones once each, not their 100 answers (a
    # minute turning mid-loop counts each once more).
    assert 25 <= sum(d.get("Shoppers", 0) for d in documents) <= 50
    for doc in documents:
        [directive] = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == settings.NAMESPACE and directive["Dimensions"][0][0] == "service"
        assert all(not m["Name"].endswith(("_champion", "_challenger", "_outside")) for m in directive["Metrics"])
    assert len(captured.stream.getvalue()) < 200 * 100  # far under a blob per request


def test_the_home_region_copy_never_adds_to_the_us_east_1_edges_own_figures():
    sent = []

    class CloudWatch:
        def put_metric_data(self, Namespace, MetricData):  # noqa: N803 - boto3's names
            sent.extend(MetricData)

    home = telemetry.HomeMetrics("NS", "edge", CloudWatch, submit=lambda fn: fn(), flush_every_s=0.0)
    telemetry.record_answer((home,), "challenger", "user_read_failed", 150.0)
    dimensions = {d["MetricName"]: {x["Name"]: x["Value"] for x in d["Dimensions"]} for d in sent}
    assert all(dims["scope"] == "global" and dims["service"] == "edge" for dims in dimensions.values())
    expected = {"Requests", "LatencyMs", "SlowAnswers", "Fallbacks", "FallbackReasons", "DegradedAnswers"}
    assert expected <= set(dimensions)
    [latency] = [d for d in sent if d["MetricName"] == "LatencyMs"]
    assert latency["Counts"] == [1.0] and abs(latency["Values"][0] - 150.0) < 15


def test_a_handler_module_loads_with_figures_and_no_powertools_metrics_blob_per_request(shop):
    for name in ("edge", "recommend", "collect"):
        module = handlers.load(name)
        assert not hasattr(module, "metrics"), name  # aggregated figures instead
        assert module.figures.flush_every_s <= 10


def test_a_sold_out_list_that_cannot_be_read_is_counted_by_both_serving_functions(shop):
    """Sale day, the availability log unreadable: each serving function keeps the last list
    within its 5 s budget, then drops the low-stock items; the on-call engineer sees both as
    counts (SoldOutReadFailures, StaleSoldOutAnswers), not only as warnings in the logs."""
    serving, captured, _ = shop
    regional_event = http_api_event("GET", "/recommendations", None,
                                    {settings.ORIGIN_VERIFY_HEADER: serving.stack.origin_token}, {"k": "5"})

    def regional_get():
        return serving.recommend_app.lambda_handler(regional_event, context("recommend"))["statusCode"]

    serving.recommend_app.recommender.warm()  # built at import, before the shop's snapshot was published
    assert serving.get()[0] == 200 and regional_get() == 200  # built, the list read
    for recommender in (serving.recommender(), serving.recommend_app.recommender):
        def unreadable(_):
            raise RuntimeError("availability log unreadable (injected)")

        recommender.soldout.load = unreadable
        recommender.soldout.mark_stale()  # older than the budget: the next request reads it, and fails
    sent = []  # the edge's copy for us-east-1 (PutMetricData), where the dashboard reads it

    class CloudWatch:
        def put_metric_data(self, Namespace, MetricData):  # noqa: N803 - boto3's names
            sent.extend(MetricData)

    serving.edge._state["home_metrics"] = telemetry.HomeMetrics(settings.NAMESPACE, "edge", CloudWatch,
                                                                submit=lambda fn: fn(), flush_every_s=0.0)
    captured.stream.seek(0)
    captured.stream.truncate()
    assert serving.get()[0] == 200 and regional_get() == 200  # served, degraded
    counts: dict[tuple[str, str], float] = {}
    for doc in captured.json_lines():
        if "_aws" in doc:
            for name in ("SoldOutReadFailures", "StaleSoldOutAnswers"):
                if name in doc:
                    key = (doc["service"], name)
                    counts[key] = counts.get(key, 0) + doc[name]
    for service in ("edge", "recommend"):
        assert counts.get((service, "StaleSoldOutAnswers")) == 1, counts
        assert 1 <= counts.get((service, "SoldOutReadFailures"), 0) <= 2, counts  # this request's, a refresh's
    home = {d["MetricName"]: {x["Name"]: x["Value"] for x in d["Dimensions"]} for d in sent}
    for name in ("SoldOutReadFailures", "StaleSoldOutAnswers"):
        assert home[name] == {"service": "edge", "scope": "global"}, home
    captured.stream.seek(0)
    captured.stream.truncate()
    assert serving.get()[0] == 200 and regional_get() == 200
    again = [d for d in captured.json_lines() if "_aws" in d and "StaleSoldOutAnswers" in d]
    assert sum(d["StaleSoldOutAnswers"] for d in again) == 2  # one more answer each, not the total again


def test_a_refused_flags_document_is_counted_once_by_both_serving_functions(shop):
    serving, captured, _ = shop
    regional_event = http_api_event("GET", "/recommendations", None,
                                    {settings.ORIGIN_VERIFY_HEADER: serving.stack.origin_token}, {"k": "5"})
    assert serving.get()[0] == 200  # the edge built (its rollout made on the first request)
    for rollout in (serving.edge._state["rollout"], serving.recommend_app.rollout):
        rollout.store.fetch = lambda: {"not": "a rollout document"}  # deployed past the profile's validator
        rollout.store.refresh_now()  # refused: the last good document kept
        assert rollout.store.refused == 1
    for _ in range(2):  # the second request adds nothing: the refusal is counted once
        assert serving.get()[0] == 200
        assert serving.recommend_app.lambda_handler(regional_event, context("recommend"))["statusCode"] == 200
    refused = [(d["service"], d["FlagsDocumentRefused"]) for d in captured.json_lines()
               if "_aws" in d and "FlagsDocumentRefused" in d]
    assert sorted(refused) == [("edge", 1), ("recommend", 1)], refused
