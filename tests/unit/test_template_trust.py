"""template.yaml's part of issue 19 (trust): the rollback alarm, the flags profile and its
validator, the kill's alarm, the collect function's origins, the WAF rule for events."""

import json

from infra.local import template

RESOURCES = template.resources()


def _metric_stats(alarm):
    return [m for m in alarm["Properties"]["Metrics"] if "MetricStat" in m]


def test_the_rollback_alarm_counts_only_the_challengers_model_fallbacks_against_the_champions():
    """Before: it watched Fallbacks_challenger, every fallback of a challenger-assigned
    shopper (a new account's no_user_row included), against a fixed 20%; then ModelFallbacks
    against Requests, per answer, so one identity's flood moved the share (issue 23's review)."""
    alarm = RESOURCES["ServingHealthAlarm"]
    watched = {(m["MetricStat"]["Metric"]["MetricName"],
                next((d["Value"] for d in m["MetricStat"]["Metric"].get("Dimensions", []) if d["Name"] == "variant"),
                     None))
               for m in _metric_stats(alarm)}
    assert ("Fallbacks", "challenger") not in watched
    assert not {name for name, _ in watched} & {"Requests", "ModelFallbacks"}  # per answer: one identity's flood
    assert {("ModelFallbackShoppers", "challenger"), ("Shoppers", "challenger"), ("ModelFallbackShoppers", "champion"),
            ("Shoppers", "champion")} <= watched
    expressions = " ".join(m["Expression"] for m in alarm["Properties"]["Metrics"] if "Expression" in m)
    assert "all_challenger_faulted_shoppers / all_challenger_shoppers" in expressions
    assert "all_champion_faulted_shoppers / all_champion_shoppers" in expressions
    # CloudWatch's limits for one alarm: 10 metrics, 10 expressions.
    assert len(_metric_stats(alarm)) <= 10
    assert len(alarm["Properties"]["Metrics"]) - len(_metric_stats(alarm)) <= 10
    returned = [m for m in alarm["Properties"]["Metrics"] if m.get("ReturnData")]
    assert len(returned) == 1


def test_a_waf_rule_bounds_event_posts_per_address():
    rules = {r["Name"]: r for r in RESOURCES["WebAcl"]["Properties"]["Rules"]}
    rule = rules["events-rate-per-ip"]["Statement"]["RateBasedStatement"]
    assert rule["AggregateKeyType"] == "IP" and rule["Limit"] == {"Ref": "WafEventPostsPer5MinPerIp"}
    scope = json.dumps(rule["ScopeDownStatement"])
    assert "/events" in scope and "POST" in scope


def test_the_flags_profile_is_freeform_with_the_projects_schema_as_its_validator():
    """Before: AWS.AppConfig.FeatureFlags, whose own schema (version, flags, values;
    additionalProperties false) refuses Powertools' documents: the first deployment would fail."""
    profile = RESOURCES["RolloutProfile"]["Properties"]
    assert profile["Type"] == "AWS.Freeform"
    [validator] = profile["Validators"]
    assert validator["Type"] == "JSON_SCHEMA"
    schema = template.ROOT / "infra" / "flags" / "schema" / "rollout.schema.json"
    assert json.loads(validator["Content"]) == json.loads(schema.read_text())
    assert len(validator["Content"]) <= 32_768  # AppConfig's limit for a validator's content


def test_the_initial_version_passes_the_profiles_validator():
    import jsonschema

    content = json.loads(RESOURCES["RolloutInitialVersion"]["Properties"]["Content"])
    schema = json.loads(RESOURCES["RolloutProfile"]["Properties"]["Validators"][0]["Content"])
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(content))


def test_a_failed_kill_pages():
    alarm = RESOURCES["GuardrailKillFailedAlarm"]["Properties"]
    assert alarm["MetricName"] == "GuardrailKillFailures" and alarm["Threshold"] == 0
    # the on-call's topic (AlarmTopic, or the operator's AlarmTopicArn), as every alarm's
    assert alarm["AlarmActions"] == RESOURCES["ServingHealthAlarm"]["Properties"]["AlarmActions"]
