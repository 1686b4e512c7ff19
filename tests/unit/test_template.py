"""template.yaml: lint-clean, python3.12 on x86_64, least privilege, names shared with code."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.local import template
from personalize import settings

BIN = Path(sys.executable).parent
FUNCTIONS = template.of_type("AWS::Serverless::Function")


def test_cfn_lint_is_clean():
    result = subprocess.run([str(BIN / "cfn-lint"), str(template.TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _dependencies(doc: dict) -> dict[str, set[str]]:
    """Resource -> the resources it needs first (Ref, GetAtt, Sub and DependsOn), as
    CloudFormation orders them."""
    names = doc["Resources"]

    def walk(node, out):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" and isinstance(value, str):
                    out.add(value)
                elif key == "Fn::GetAtt":
                    out.add(value[0] if isinstance(value, list) else value.split(".")[0])
                elif key == "Fn::Sub":
                    text = value if isinstance(value, str) else value[0]
                    out.update(m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
                    if not isinstance(value, str):
                        walk(value[1], out)
                else:
                    walk(value, out)
        elif isinstance(node, list):
            for item in node:
                walk(item, out)

    graph = {}
    for name, resource in names.items():
        needs: set[str] = set()
        walk({k: v for k, v in resource.items() if k != "Metadata"}, needs)
        depends = resource.get("DependsOn", [])
        needs.update([depends] if isinstance(depends, str) else depends)
        graph[name] = {n for n in needs if n in names and n != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, path = [], {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for need in sorted(graph[node]):
            if state.get(need) == "open":
                found.append(path[path.index(need):] + [need])
            elif need not in state:
                visit(need)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_deployed_template_has_no_dependency_cycle():
    """CloudFormation refuses a cycle, and cfn-lint 1.58 did not see this one (reported by a newer
    check, E3004, on 2026-12-05): RolloutEnvironment -> AvailabilityBurn5mAlarm -> Distribution ->
    the edge function's version -> EdgeFunction -> EdgeRole -> RolloutEnvironment."""
    assert _cycles(_dependencies(template.transformed())) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]  # the check sees one


@pytest.mark.skipif(not (BIN / "sam").exists() and not shutil.which("sam"), reason="sam CLI not installed")
def test_sam_validate_lint_is_clean():
    sam = str(BIN / "sam") if (BIN / "sam").exists() else "sam"
    result = subprocess.run([sam, "validate", "--lint", "--template", str(template.TEMPLATE), "--region", "us-east-1"],
                            capture_output=True, text=True, env={"SAM_CLI_TELEMETRY": "0", "PATH": str(BIN)})
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_functions_run_python312_on_x86_64(name):
    globals_ = template.load()["Globals"]["Function"]
    props = {**globals_, **FUNCTIONS[name]["Properties"]}
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["x86_64"]
    assert FUNCTIONS[name]["Metadata"]["BuildMethod"] == "makefile"


@pytest.mark.parametrize("name", sorted(settings.FUNCTION_RESOURCES))
def test_function_environment_matches_the_shared_names(name):
    variables = FUNCTIONS[name]["Properties"]["Environment"]["Variables"]
    for resource in settings.FUNCTION_RESOURCES[name]:
        assert variables[resource.env] == {"Ref": resource.logical_id}, resource


def _statements(props):
    for policy in props.get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            yield from policy["Statement"]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_no_wildcard_actions_on_data(name):
    for statement in _statements(FUNCTIONS[name]["Properties"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in a for a in actions), (name, actions)
        if any(a.split(":")[0] in ("dynamodb", "kinesis", "s3", "sqs") for a in actions):
            assert statement["Resource"] != "*", (name, statement)


def test_stream_trigger_never_drops_silently():
    props = FUNCTIONS["AggregateFunction"]["Properties"]["Events"]["Stream"]["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["MaximumBatchingWindowInSeconds"] <= 1
    assert props["BisectBatchOnFunctionError"] is True
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["StreamFailureQueue", "Arn"]}
    stream = template.resources()["EventsStream"]["Properties"]
    assert stream["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"


def test_one_concurrent_batch_per_shard_is_pinned():
    """Exactly-once rests on one writer per item row per shard: with ParallelizationFactor > 1
    two batches of one shard write the same per-shard item rows and watermarks at once, and
    a record skipped by one can be marked applied by the other. Scale with shards instead."""
    props = FUNCTIONS["AggregateFunction"]["Properties"]["Events"]["Stream"]["Properties"]
    assert props["ParallelizationFactor"] == 1


def test_the_stream_outlives_a_weekend_outage_and_the_trigger_gives_up_inside_it():
    stream = template.resources()["EventsStream"]["Properties"]
    props = FUNCTIONS["AggregateFunction"]["Properties"]["Events"]["Stream"]["Properties"]
    assert stream["RetentionPeriodHours"] >= 72
    # A range the trigger gives up on is still in the stream for replay-failures.
    assert props["MaximumRecordAgeInSeconds"] <= stream["RetentionPeriodHours"] * 3600 - 12 * 3600
    from personalize.ingest import entities
    # No watermark may be forgotten while its records can still come back.
    assert entities.WATERMARK_IDLE_MS > stream["RetentionPeriodHours"] * 3_600_000


def test_ingest_has_alarms_on_lag_lateness_rows_and_both_queues():
    alarms = template.of_type("AWS::CloudWatch::Alarm")
    watched = set()
    for alarm in alarms.values():
        props = alarm["Properties"]
        metrics = [props.get("MetricName")] + [m.get("MetricStat", {}).get("Metric", {}).get("MetricName")
                                               for m in props.get("Metrics", [])]
        dims = props.get("Dimensions", [])
        for metric in filter(None, metrics):
            if metric == "ApproximateNumberOfMessagesVisible":
                watched.add(("depth", dims[0]["Value"]["Fn::GetAtt"][0]))
            else:
                watched.add(metric)
    assert {"IteratorAge", "EventsLate", "RowWriteFailures", "RowsRejected"} <= watched
    assert {("depth", "QuarantineQueue"), ("depth", "StreamFailureQueue")} <= watched


def test_samconfig_has_dev_and_prod():
    import tomllib
    config = tomllib.loads((template.ROOT / "samconfig.toml").read_text())
    assert {"dev", "prod"} <= set(config)
    stacks = {env: config[env]["global"]["parameters"]["stack_name"] for env in ("dev", "prod")}
    assert stacks["dev"] != stacks["prod"]
    for env in ("dev", "prod"):  # Lambda@Edge functions must be created in us-east-1
        assert config[env]["deploy"]["parameters"]["region"] == "us-east-1"
        assert f"Stage={env}" in config[env]["deploy"]["parameters"]["parameter_overrides"]


EDGE = FUNCTIONS["EdgeFunction"]["Properties"]


def test_edge_function_fits_lambda_at_edge():
    assert "Environment" not in EDGE and "Layers" not in EDGE and "Tracing" not in EDGE
    props = {**template.load()["Globals"]["Function"], **EDGE}
    assert props["Architectures"] == ["x86_64"] and props["Runtime"] == "python3.12"
    assert props["Timeout"] <= 30 and props["MemorySize"] <= 10240
    assert props["AutoPublishAlias"]
    assert "Environment" not in template.load()["Globals"]["Function"]
    assert "Layers" not in template.load()["Globals"]["Function"]


def test_cloudfront_runs_the_edge_on_recommendations_without_caching():
    config = template.resources()["Distribution"]["Properties"]["DistributionConfig"]
    [behavior] = [b for b in config["CacheBehaviors"] if b["PathPattern"] == "/recommendations*"]
    [association] = behavior["LambdaFunctionAssociations"]
    assert association["EventType"] == "origin-request"
    assert association["LambdaFunctionARN"] == {"Ref": "EdgeFunction.Version"}
    assert behavior["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # CachingDisabled


def test_initial_flags_document_matches_the_example_and_powertools_schema():
    import json

    from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator

    content = json.loads(template.resources()["RolloutInitialVersion"]["Properties"]["Content"])
    assert content == json.loads((template.ROOT / "infra" / "flags" / "initial.json").read_text())
    for path in sorted((template.ROOT / "infra" / "flags").glob("*.json")):
        SchemaValidator(json.loads(path.read_text())).validate()


def test_the_flags_examples_name_the_current_champion_and_challenger():
    """The example documents operators copy name the models ``make train`` last chose, never
    an older version still in the registry."""
    import json

    champion = json.loads((template.ROOT / "infra" / "flags" / "initial.json").read_text())["champion_model"]["default"]
    version = champion.split("/")[1]
    current = {champion}
    for manifest in (template.ROOT / "models").glob(f"*/{version}/manifest.json"):
        if json.loads(manifest.read_text()).get("role") == "challenger":
            current.add(f"{manifest.parent.parent.name}/{version}")
    assert len(current) == 2
    for path in sorted((template.ROOT / "infra" / "flags").glob("*.json")):
        doc = json.loads(path.read_text())
        for flag in ("champion_model", "challenger_model"):
            assert doc[flag]["default"] in current, f"{path.name} names {doc[flag]['default']}"


def test_operators_and_the_shops_backend_need_iam():
    """The SAM transform of the HTTP API: features and the backend's events behind AWS_IAM;
    the browsers' routes open (they are guarded by the origin token, WAF and throttles)."""
    import boto3
    from samtranslator.translator.transform import transform

    class Policies:
        def load(self):
            return {name: f"arn:aws:iam::aws:policy/{name}" for name in (
                "AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess", "AWSLambdaKinesisExecutionRole")}

    import copy

    doc = copy.deepcopy(template.load())
    for resource in doc["Resources"].values():  # as `sam package` leaves them
        for uri in ("CodeUri", "ContentUri"):
            if uri in resource.get("Properties", {}):
                resource["Properties"][uri] = "s3://bucket/key"
    out = transform(doc, {}, Policies(), boto3.session.Session(region_name="us-east-1"))
    security = {(path, method): spec.get("security")
                for path, methods in out["Resources"]["HttpApi"]["Properties"]["Body"]["paths"].items()
                for method, spec in methods.items()}
    assert security[("/features/users/{user_id}", "get")] == [{"AWS_IAM": []}]
    assert security[("/server/events", "post")] == [{"AWS_IAM": []}]
    assert security[("/events", "post")] is None
    assert security[("/recommendations", "get")] is None


DISTRIBUTION = template.resources()["Distribution"]["Properties"]["DistributionConfig"]


def test_viewers_speak_https_only_and_get_hsts():
    behaviors = [DISTRIBUTION["DefaultCacheBehavior"], *DISTRIBUTION["CacheBehaviors"]]
    assert {b["ViewerProtocolPolicy"] for b in behaviors} == {"https-only"}
    patterns = [b.get("PathPattern", "") for b in behaviors]  # "/x" or {"Fn::Sub": "${Prefix}/x"}
    recommendations = [b for b, p in zip(behaviors, patterns)
                       if (p["Fn::Sub"] if isinstance(p, dict) else p).endswith("/recommendations*")]
    assert len(recommendations) == 2
    assert all(b["ResponseHeadersPolicyId"] == {"Fn::If": ["HasAllowedOrigins", {"Ref": "RecommendationsCorsPolicy"},
                                                           {"Ref": "SecurityHeadersPolicy"}]} for b in recommendations)
    assert {b["ResponseHeadersPolicyId"]["Ref"] for b in behaviors if b not in recommendations} == {
        "SecurityHeadersPolicy"}
    policies = template.resources()
    security = policies["SecurityHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]
    hsts = security["StrictTransportSecurity"]
    assert hsts["AccessControlMaxAgeSec"] >= 31536000 and hsts["Override"] is True
    # The cross-origin policy is the same security headers plus CORS.
    assert policies["RecommendationsCorsPolicy"]["Properties"]["ResponseHeadersPolicyConfig"][
        "SecurityHeadersConfig"] == security


def test_one_allowed_origins_list_drives_the_origin_check_and_both_cors_answers():
    cors = template.resources()["RecommendationsCorsPolicy"]
    assert cors["Condition"] == "HasAllowedOrigins"
    config = cors["Properties"]["ResponseHeadersPolicyConfig"]["CorsConfig"]
    assert config["AccessControlAllowOrigins"] == {"Items": {"Ref": "AllowedOrigins"}}
    assert config["AccessControlAllowCredentials"] is True and config["OriginOverride"] is True
    assert config["AccessControlAllowMethods"]["Items"] == ["GET", "HEAD"]  # the behaviour's methods
    api = template.resources()["HttpApi"]["Properties"]["CorsConfiguration"]["Fn::If"]
    assert api[0] == "HasAllowedOrigins" and api[1]["AllowOrigins"] == {"Ref": "AllowedOrigins"}
    collect = FUNCTIONS["CollectFunction"]["Properties"]["Environment"]["Variables"]
    assert collect["ALLOWED_ORIGINS"] == {"Fn::Join": [",", {"Ref": "AllowedOrigins"}]}


def test_cloudfront_adds_the_origin_token_that_the_regional_functions_check():
    [origin] = DISTRIBUTION["Origins"]
    [header] = origin["OriginCustomHeaders"]
    assert header["HeaderName"] == settings.ORIGIN_VERIFY_HEADER
    condition, rotated, current = header["HeaderValue"]["Fn::If"]
    assert condition == "HasOriginTokenVersion"
    assert "resolve:secretsmanager:${OriginVerifySecret}:SecretString:::${OriginTokenVersionId}" in rotated["Fn::Sub"]
    assert current["Fn::Sub"] == "{{resolve:secretsmanager:${OriginVerifySecret}:SecretString}}"
    for name in ("CollectFunction", "RecommendFunction"):
        assert settings.ORIGIN_VERIFY_SECRET in settings.FUNCTION_RESOURCES[name]
        granted = [st["Resource"] for st in _statements(FUNCTIONS[name]["Properties"])
                   if "secretsmanager:GetSecretValue" in st["Action"]]
        assert {"Ref": "OriginVerifySecret"} in granted[0]


def test_waf_limits_each_client_ip_on_the_distribution_in_prod():
    import tomllib

    acl = template.resources()["WebAcl"]
    assert acl["Condition"] == "UseWaf" and acl["Properties"]["Scope"] == "CLOUDFRONT"
    [rate] = [r for r in acl["Properties"]["Rules"] if "RateBasedStatement" in r["Statement"]
              and "ScopeDownStatement" not in r["Statement"]["RateBasedStatement"]]  # events': test_template_trust
    assert rate["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    assert "Block" in rate["Action"]
    assert DISTRIBUTION["WebACLId"] == {"Fn::If": ["UseWaf", {"Fn::GetAtt": ["WebAcl", "Arn"]},
                                                   {"Ref": "AWS::NoValue"}]}
    prod = tomllib.loads((template.ROOT / "samconfig.toml").read_text())["prod"]["deploy"]["parameters"]
    assert "EnableWaf=true" in prod["parameter_overrides"]
    assert "ReserveConcurrency=true" in prod["parameter_overrides"]


def test_every_route_is_throttled_and_the_public_ones_explicitly():
    api = template.resources()["HttpApi"]["Properties"]
    assert api["DefaultRouteSettings"]["ThrottlingRateLimit"] <= 100
    routes = api["RouteSettings"]
    for route in ("POST /events", "POST /server/events", "GET /recommendations", "GET /features/users/{user_id}"):
        assert 0 < routes[route]["ThrottlingRateLimit"] <= routes[route]["ThrottlingBurstLimit"], route
    declared = {f"{e['Properties']['Method']} {e['Properties']['Path']}" for f in FUNCTIONS.values()
                for e in f["Properties"].get("Events", {}).values() if e["Type"] == "HttpApi"}
    assert declared == set(routes)


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - {"EdgeFunction"}))
def test_every_regional_function_can_have_its_concurrency_reserved(name):
    reserved = FUNCTIONS[name]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved["Fn::If"][0] == "UseReservedConcurrency" and reserved["Fn::If"][1] >= 1


def test_only_the_publisher_role_writes_models():
    [deny] = [s for s in template.resources()["ArtifactsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
              if s["Sid"] == "OnlyThePublisherWritesModels"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and "s3:PutObject" in deny["Action"]
    assert deny["Resource"] == {"Fn::Sub": "${ArtifactsBucket.Arn}/models/*"}
    assert deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"] == {"Fn::GetAtt": ["ModelPublisherRole", "Arn"]}
    for name, function in FUNCTIONS.items():  # no function may write a model either
        for statement in _statements(function["Properties"]):
            if "s3:PutObject" in statement["Action"]:
                assert "models/" not in json.dumps(statement["Resource"]), name


def test_checkov_passes_with_every_skip_explained():
    """The infrastructure-as-code scanner: no failed check; each skip carries its reason."""
    checkov = template.ROOT / ".venv" / "tools" / "checkov" / "bin" / "checkov"
    assert checkov.exists(), "run `make venv` (checkov lives in .venv/tools/checkov)"
    result = subprocess.run([str(checkov), "-f", str(template.TEMPLATE), "--framework", "cloudformation",
                             "-o", "json", "--quiet"], capture_output=True, text=True)
    report = json.loads(result.stdout)
    assert report["results"]["failed_checks"] == [], [c["check_id"] for c in report["results"]["failed_checks"]]
    assert report["summary"]["passed"] >= 70
    for resource in template.resources().values():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 40, skip


def test_edges_may_read_the_signing_key_replica_in_their_region():
    role = template.resources()["EdgeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    [grant] = [st for st in role if "secretsmanager:GetSecretValue" in st["Action"]]
    assert grant["Resource"]["Fn::Sub"].startswith("arn:${AWS::Partition}:secretsmanager:*:${AWS::AccountId}:secret:")
    assert grant["Resource"]["Fn::Sub"].endswith("${AWS::StackName}/cookie-signing-key-*")
    secret = template.resources()["SigningKeySecret"]["Properties"]
    assert secret["Name"] == {"Fn::Sub": "${AWS::StackName}/cookie-signing-key"} and secret["ReplicaRegions"]


def test_no_lifecycle_rule_can_expire_what_serving_reads():
    """Issue 19: the rule on snapshots/ expired objects after 2 days; the snapshot a stalled
    job last published (what cold instances read) would vanish with it (this test failed)."""
    from personalize.adapters.artifacts import POINTER_KEY
    from personalize.serving import snapshot_job

    served = [POINTER_KEY, snapshot_job.MEMBERSHIP_KEY, snapshot_job.STATE_KEY,
              *(snapshot_job.snapshot_key(f) for f in (snapshots_format(), 1))]
    rules = template.resources()["ArtifactsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    for rule in rules:
        prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix", ""))
        if any(key.startswith(prefix) for key in served):
            assert not {"ExpirationInDays", "ExpirationDate"} & set(rule), rule["Id"]
            assert rule.get("NoncurrentVersionExpiration"), "replaced versions still go"


def snapshots_format() -> int:
    from personalize.serving import snapshots

    return snapshots.FORMAT


def test_an_alarm_fires_when_the_served_snapshot_is_older_than_its_budget():
    """Issue 19: nothing alarmed on a stale snapshot (this test failed: no such alarm)."""
    from personalize.serving import snapshot_job

    alarm = template.resources()["SnapshotAgeAlarm"]["Properties"]
    assert alarm["MetricName"] == "SnapshotAgeSeconds" and alarm["Namespace"] == settings.NAMESPACE
    assert alarm["TreatMissingData"] == "breaching", "a job that never runs is stale too"
    assert alarm["Threshold"] + alarm["Period"] * alarm["EvaluationPeriods"] / 2 <= snapshot_job.AGE_BUDGET_S + 60
    assert alarm["AlarmActions"]
    handler = (template.ROOT / "functions" / "snapshot" / "app.py").read_text()
    assert '"SnapshotAgeSeconds"' in handler and "finally:" in handler, "emitted whether the run published or not"


def test_the_snapshot_function_may_not_scan_and_its_timeout_holds_the_deadline():
    from personalize.serving import snapshot_job

    snapshot = template.resources()["SnapshotFunction"]["Properties"]
    actions = {a for s in snapshot["Policies"][0]["Statement"] for a in s["Action"]}
    assert "dynamodb:Scan" not in actions
    assert snapshot["Timeout"] == snapshot_job.TIMEOUT_S > snapshot_job.DEADLINE_RESERVE_S


def test_only_the_archive_function_reads_the_archive_key_and_only_firehose_writes_the_archive():
    """Pseudonyms are only as private as their key: one reader. The archive: one writer."""
    import json as _json

    doc = template.transformed()
    grants: dict[str, list[dict]] = {}
    for logical_id, resource in doc["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for policy in resource["Properties"].get("Policies", []):
                body = policy["PolicyDocument"]["Statement"]
                grants.setdefault(logical_id, []).extend(body if isinstance(body, list) else [body])
        elif resource["Type"] == "AWS::IAM::Policy":
            body = resource["Properties"]["PolicyDocument"]["Statement"]
            for role in resource["Properties"].get("Roles", []):
                grants.setdefault(role["Ref"], []).extend(body if isinstance(body, list) else [body])

    def roles(action_prefix: str, resource: str) -> set[str]:
        found = set()
        for role, statements in grants.items():
            for st in statements:
                actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
                text = _json.dumps(st.get("Resource"))
                if any(a.startswith(action_prefix) or a == "*" for a in actions) and (
                        f'"{resource}"' in text or text == '"*"'):
                    found.add(role)
        return found

    assert roles("secretsmanager:GetSecretValue", "ArchiveKeySecret") == {"ArchiveFunctionRole"}
    assert roles("s3:PutObject", "ArchiveBucket") == {"ArchiveDeliveryRole"}
