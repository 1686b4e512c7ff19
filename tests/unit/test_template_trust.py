"""template.yaml's part of issue 19 (trust): the rollback alarm, the flags profile and its
validator, the kill's alarm, the collect function's origins, the WAF rule for events."""

import json

from infra.local import template

RESOURCES = template.resources()


def _metric_stats(alarm):
    return [m for m in alarm["Properties"]["Metrics"] if "MetricStat" in m]


def test_the_rollback_alarm_counts_only_the_challengers_model_fallbacks_against_the_champions():
    """Before: it watched Fallbacks_challenger, every fallback of a challenger-assigned
    shopper (a new account's no_user_row included), against a fixed 20%."""
    alarm = RESOURCES["ServingHealthAlarm"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in _metric_stats(alarm)}
    assert "Fallbacks_challenger" not in names
    assert {"ModelFallbacks_challenger", "ModelFallbacks_champion", "Requests_champion"} <= names
    expressions = " ".join(m["Expression"] for m in alarm["Properties"]["Metrics"] if "Expression" in m)
    assert "all_champion_model_fallbacks / all_champion_requests" in expressions
    # CloudWatch's limits for one alarm: 10 metrics, 10 expressions.
    assert len(_metric_stats(alarm)) <= 10
    assert len(alarm["Properties"]["Metrics"]) - len(_metric_stats(alarm)) <= 10
    returned = [m for m in alarm["Properties"]["Metrics"] if m.get("ReturnData")]
    assert len(returned) == 1


def test_allowed_origins_reach_the_collect_function():
    variables = RESOURCES["CollectFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["ALLOWED_ORIGINS"] == {"Ref": "ShopOrigins"}


def test_a_waf_rule_bounds_event_posts_per_address():
    rules = {r["Name"]: r for r in RESOURCES["WebAcl"]["Properties"]["Rules"]}
    rule = rules["events-rate-per-ip"]["Statement"]["RateBasedStatement"]
    assert rule["AggregateKeyType"] == "IP" and rule["Limit"] == {"Ref": "WafEventPostsPer5MinPerIp"}
    scope = json.dumps(rule["ScopeDownStatement"])
    assert "/events" in scope and "POST" in scope
