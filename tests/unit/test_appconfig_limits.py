"""Issue 19, item 6: AppConfig's data API and deployment states as AWS runs them (the limits
model, ``adapters.appconfig_fake``), and flags and kills that work within them."""

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.local import template
from personalize.adapters import appconfig
from personalize.adapters import appconfig_fake as fake
from personalize.rollout import flags

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "infra" / "flags" / "schema" / "rollout.schema.json").read_text())
START = flags.rollout_document("ranker-mlp/v3", "ranker-linear/v3", 0.02, "exp")
RAMP = flags.rollout_document("ranker-mlp/v3", "ranker-linear/v3", 0.25, "exp", earlier_steps=[200])
KILL = flags.rollout_document("ranker-mlp/v3", "ranker-linear/v3", 0.0, "exp", kill_switch=True,
                              earlier_steps=[200, 2500])


class Clock:
    def __init__(self, now=1_790_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(clock):
    w = fake.AppConfigWorld(clock)
    w.create_profile("prof", [{"Type": "JSON_SCHEMA", "Content": json.dumps(SCHEMA)}])
    w.create_strategy("once", 0, 0)
    w.create_strategy("ramp", 10, 5, 20)  # the template's GradualStrategy: 10 min in 20% steps, 5 min bake
    return w


@pytest.fixture
def admin(world, clock):
    return appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once", appconfig.GRADUAL: "ramp"},
                                    fetch=None, client=fake.FakeAppConfig(world), clock=clock, sleep=clock.sleep)


def session(world, clock, min_poll_s=appconfig.MIN_POLL_S):
    return appconfig.FlagSession(lambda: fake.FakeAppConfigData(world), "app", "env", "prof", min_poll_s, clock)


def problem(exc: ClientError) -> str:
    return next(iter(exc.response["Details"]["InvalidParameters"].values()))["Problem"]


# --- the data API ---------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [14, 86_401, 0])
def test_a_session_asks_for_an_interval_aws_allows(world, interval):
    with pytest.raises(ClientError) as raised:
        fake.FakeAppConfigData(world).start_configuration_session(
            ApplicationIdentifier="app", EnvironmentIdentifier="env", ConfigurationProfileIdentifier="prof",
            RequiredMinimumPollIntervalInSeconds=interval)
    assert raised.value.response["Error"]["Code"] == "BadRequestException"


def test_the_data_api_refuses_early_polls_used_and_expired_tokens_and_sends_only_changes(world, admin, clock):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    data = fake.FakeAppConfigData(world)
    token = data.start_configuration_session(ApplicationIdentifier="app", EnvironmentIdentifier="env",
                                             ConfigurationProfileIdentifier="prof")["InitialConfigurationToken"]
    first = data.get_latest_configuration(ConfigurationToken=token)
    assert json.loads(first["Configuration"].read()) == START
    assert first["NextPollIntervalInSeconds"] == fake.DEFAULT_POLL_S  # 60 s when the session asks for nothing
    with pytest.raises(ClientError) as used:
        data.get_latest_configuration(ConfigurationToken=token)
    assert problem(used.value) == "Corrupted"
    following = first["NextPollConfigurationToken"]
    clock.now += 59
    with pytest.raises(ClientError) as early:
        data.get_latest_configuration(ConfigurationToken=following)
    assert "Request too early" in str(early.value) and problem(early.value) == "PollIntervalNotSatisfied"
    clock.now += 1
    unchanged = data.get_latest_configuration(ConfigurationToken=following)
    assert unchanged["Configuration"].read() == b""
    clock.now += fake.TOKEN_TTL_S + 1
    with pytest.raises(ClientError) as expired:
        data.get_latest_configuration(ConfigurationToken=unchanged["NextPollConfigurationToken"])
    assert problem(expired.value) == "Expired"


def test_the_finding_powertools_provider_refreshed_every_10_s_is_refused(world, admin, clock):
    """What serving did before (adapters.appconfig.appconfig_fetcher, issue 12): Powertools'
    AppConfigProvider, force-fetched by a 10 s store, in a session that asks for no interval.
    Against the data API's rules, every refresh within a minute of the last poll is refused."""
    from aws_lambda_powertools.utilities.parameters import AppConfigProvider

    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    provider = AppConfigProvider(environment="env", application="app", boto3_client=fake.FakeAppConfigData(world))
    assert provider.get("prof", transform="json", force_fetch=True) == START
    refused = 0
    for _ in range(5):  # the next 50 s of 10 s refreshes
        clock.now += 10
        try:
            provider.get("prof", transform="json", force_fetch=True)
        except Exception as exc:  # noqa: BLE001 - Powertools wraps the BadRequestException
            refused += "Request too early" in str(exc)
    assert refused == 5


def test_the_session_asks_for_15_s_and_never_polls_faster(world, admin, clock):
    """Before: Powertools' provider, force-fetched every 10 s, in a session that asked for no
    interval (60 s): all but one poll a minute were refused ("Request too early")."""
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    s = session(world, clock)
    assert s.fetch() == START and s.client._sessions[next(iter(s.client._sessions))].interval_s == 15
    for _ in range(14):
        clock.now += 1
        with pytest.raises(appconfig.PollTooEarly):
            s.fetch()
    assert s.polls == 1 and s.client.refused == 0  # waited without calling
    clock.now += 1
    assert s.fetch() == START and s.polls == 2  # empty answer: the document it has


def test_the_session_waits_out_a_refusal_and_renews_an_expired_token(world, admin, clock):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    s = session(world, clock)
    s.fetch()
    s.next_poll_at = clock.now  # our clock says yes, AppConfig's says too early
    with pytest.raises(appconfig.PollTooEarly):
        s.fetch()
    assert s.too_early == 1 and s.next_poll_at == clock.now + 15
    clock.now += fake.TOKEN_TTL_S + 60  # a provisioned-concurrency instance, a day later
    admin.deploy(KILL, appconfig.ALL_AT_ONCE, "kill")
    assert s.fetch() == KILL and s.sessions == 2


def test_a_larger_next_poll_interval_is_respected(world, admin, clock):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    s = session(world, clock, min_poll_s=300)
    s.fetch()
    clock.now += 200
    with pytest.raises(appconfig.PollTooEarly):
        s.fetch()


# --- deployments ----------------------------------------------------------------------------------


def states(world):
    return [d["State"] for d in world.deployments("env")]


def test_a_gradual_deployment_deploys_then_bakes_then_completes(world, admin, clock):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    admin.deploy(RAMP, appconfig.GRADUAL, "ramp")
    assert states(world) == ["COMPLETE", "DEPLOYING"]
    seen = {world.served("env", "prof", t / 100)[0] for t in range(100)}
    assert seen == {"1", "2"}  # 20% of targets have the ramp in its first step
    clock.now += 10 * 60
    assert states(world)[-1] == "BAKING" and {world.served("env", "prof", t / 100)[0] for t in range(100)} == {"2"}
    clock.now += 5 * 60
    assert states(world)[-1] == "COMPLETE"


def test_one_deployment_at_a_time(world, admin):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    admin.deploy(RAMP, appconfig.GRADUAL, "ramp")
    with pytest.raises(ClientError) as raised:
        admin.deploy(RAMP, appconfig.GRADUAL, "another ramp")
    assert raised.value.response["Error"]["Code"] == "ConflictException"


def test_stop_deployment_works_while_baking_only_with_allow_revert(world, admin, clock):
    """The finding: the guardrail's kill stopped a running deployment without AllowRevert,
    which AppConfig refuses while BAKING (the last 5 minutes of every ramp)."""
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    admin.deploy(RAMP, appconfig.GRADUAL, "ramp")
    clock.now += 11 * 60
    client = fake.FakeAppConfig(world)
    with pytest.raises(ClientError) as raised:
        client.stop_deployment(ApplicationId="app", EnvironmentId="env", DeploymentNumber=2)
    assert raised.value.response["Error"]["Code"] == "BadRequestException"
    assert client.stop_deployment(ApplicationId="app", EnvironmentId="env", DeploymentNumber=2,
                                  AllowRevert=True)["State"] == "ROLLED_BACK"
    assert world.served("env", "prof", 0.5)[0] == "1"  # back to the 2% share: the kill must still land


def test_a_completed_deployment_reverts_only_within_72_hours(world, admin, clock):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    admin.deploy(RAMP, appconfig.GRADUAL, "ramp")
    client = fake.FakeAppConfig(world)
    clock.now += 15 * 60 + 72 * 3600 + 1
    with pytest.raises(ClientError):
        client.stop_deployment(ApplicationId="app", EnvironmentId="env", DeploymentNumber=2, AllowRevert=True)
    with pytest.raises(ClientError):
        client.stop_deployment(ApplicationId="app", EnvironmentId="env", DeploymentNumber=2)


def test_the_admin_reads_its_own_writes_until_another_deployment_or_a_rollback(world, clock):
    """Found merging issue 19 with the console: a change composed within the data API's poll
    interval of the previous one (start, then kill from the console) started from the version
    before it, through a stale poll: the kill named the previous experiment."""
    fetched = []

    def fetch():
        fetched.append(clock.now)
        return json.loads(world.served("env", "prof", 0.99)[1])

    admin = appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once", appconfig.GRADUAL: "ramp"},
                                     fetch=fetch, client=fake.FakeAppConfig(world), clock=clock, sleep=clock.sleep)
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    admin.deploy(RAMP, appconfig.GRADUAL, "ramp")
    assert world.served("env", "prof", 0.99)[1] == json.dumps(START).encode()  # most sessions: the old one
    assert admin.current() == RAMP and not fetched
    other = appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once"}, fetch=fetch,
                                     client=fake.FakeAppConfig(world), clock=clock, sleep=clock.sleep)
    other.kill(KILL, "guardrail kill")  # another writer: this admin reads the environment again
    assert admin.current() == KILL and fetched


@pytest.mark.parametrize("state, minutes", [("DEPLOYING", 3), ("BAKING", 12), ("COMPLETE", 20), ("none", None)])
def test_a_kill_lands_in_every_deployment_state(world, admin, clock, state, minutes):
    admin.deploy(START, appconfig.ALL_AT_ONCE, "start")
    if minutes is not None:
        admin.deploy(RAMP, appconfig.GRADUAL, "ramp")
        clock.now += minutes * 60
        assert states(world)[-1] == state
    admin.kill(KILL, "guardrail kill")
    assert {world.served("env", "prof", t / 100)[1] for t in range(100)} == {json.dumps(KILL).encode()}
    assert states(world)[-1] == "COMPLETE"


def test_a_kill_that_cannot_land_raises_to_page(world, clock):
    class Stuck(fake.FakeAppConfig):
        def start_deployment(self, **kwargs):
            raise fake.error("ConflictException", "a deployment is in progress", "StartDeployment", status=409)

    admin = appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once"}, fetch=None,
                                     client=Stuck(world), clock=clock, sleep=clock.sleep)
    with pytest.raises(appconfig.KillFailedError, match="did not land"):
        admin.kill(KILL, "kill")
    assert clock.now - 1_790_000_000.0 <= appconfig.KILL_DEADLINE_S + 2


def test_a_failing_kill_with_slow_calls_still_pages_before_the_guardrail_times_out(world, clock):
    """On-call review: the deadline was checked only between attempts, so slow control-plane
    calls (each up to its client's budget) took a refused kill past the guardrail's 60 s
    timeout: the invocation died without the KillFailedError that pages."""
    class SlowStuck(fake.FakeAppConfig):
        def list_deployments(self, **kwargs):
            clock.now += appconfig.KILL_CALL_BUDGET_S
            return super().list_deployments(**kwargs)

        def start_deployment(self, **kwargs):
            clock.now += appconfig.KILL_CALL_BUDGET_S
            raise fake.error("ThrottlingException", "rate exceeded", "StartDeployment", status=429)

    admin = appconfig.AppConfigAdmin("app", "env", "prof", {appconfig.ALL_AT_ONCE: "once"}, fetch=None,
                                     client=SlowStuck(world), clock=clock, sleep=clock.sleep)
    with pytest.raises(appconfig.KillFailedError):
        admin.kill(KILL, "kill")
    guardrail_timeout = template.resources()["GuardrailFunction"]["Properties"]["Timeout"]
    # Within its own deadline (no attempt starts that cannot end by then), well inside the guardrail's.
    assert clock.now - 1_790_000_000.0 <= appconfig.KILL_DEADLINE_S + 2 < guardrail_timeout - 10


# --- the schema: nothing malformed is deployed, and serving refuses what arrives anyway ------------


@pytest.mark.parametrize("document", [
    pytest.param(b"{not json", id="malformed"),
    pytest.param(json.dumps({**START, "champion_model": {"default": "../../tmp/evil/v1"}}).encode(), id="path"),
    pytest.param(json.dumps({k: v for k, v in START.items() if k != "kill_switch"}).encode(), id="no-kill-switch"),
    pytest.param(json.dumps({"version": "1", "flags": {}, "values": {}}).encode(), id="aws-feature-flags-format"),
])
def test_a_malformed_or_schema_invalid_document_cannot_be_deployed(world, document):
    client = fake.FakeAppConfig(world)
    version = client.create_hosted_configuration_version(ApplicationId="app", ConfigurationProfileId="prof",
                                                         Content=document, ContentType="application/json")
    with pytest.raises(ClientError) as raised:
        client.start_deployment(ApplicationId="app", EnvironmentId="env", ConfigurationProfileId="prof",
                                ConfigurationVersion=str(version["VersionNumber"]), DeploymentStrategyId="once")
    assert raised.value.response["Error"]["Code"] == "BadRequestException"


def test_every_flag_document_the_project_deploys_passes_the_schema(world):
    for path in sorted((ROOT / "infra" / "flags").glob("*.json")):
        flags.validate_document(json.loads(path.read_text()))
    for document in (START, RAMP, KILL, flags.rollout_document("a/v1", None, 0.0, "none", pins={"a/v1": "0" * 64})):
        flags.validate_document(document)


def _refusing(documents):
    from tests.unit.test_flags import store_of

    return store_of(*documents, bundled=flags.rollout_document("ranker-mlp/v3", None, 0.0, "none"))


def test_a_refused_document_keeps_the_last_good_one_and_says_so():
    """Before: a malformed document made Powertools raise on every evaluation: the regional
    route answered 5xx and the edge passed every request through."""
    broken = {**START, "challenger": {"default": "yes", "rules": "everyone"}}
    store, clock = _refusing([START, broken])
    rollout = flags.Rollout(store, "ranker-mlp/v3")
    users = [f"u{i}" for i in range(300)]
    before = [rollout.assign(u) for u in users]
    clock["now"] = 11
    store.refresh_now()
    assert store.refused == 1 and "challenger" in store.refusal and store.document == START
    assert [rollout.assign(u) for u in users] == before


def test_cold_with_a_refused_document_serves_the_bundled_one():
    store, _ = _refusing([{**START, "champion_model": {"default": "/opt/evil/v1"}}])
    rollout = flags.Rollout(store, "ranker-mlp/v3")
    assignment = rollout.assign("u1")
    assert (assignment.variant, assignment.model, assignment.experiment) == (flags.CHAMPION, "ranker-mlp/v3", "none")
    assert store.refused == 1 and store.document == store.bundled


@pytest.mark.parametrize("relative", [True, False], ids=["relative-path", "absolute-path"])
def test_a_model_name_with_a_path_is_refused_before_any_file_is_read(tmp_path, relative):
    """Before: ``bundled / key`` with a path in ``key`` named a folder outside the bundle, and
    a model.onnx planted there (any writable place: /tmp) loaded with no sha256 pin."""
    import shutil

    from personalize.serving.wiring import ModelCache, ModelUnavailableError

    class NoBucket:
        def get(self, key):
            raise AssertionError("the bucket is never asked for a refused name")

    bundled = tmp_path / "shipped"
    bundled.mkdir()
    planted = tmp_path / "planted" / "v1"
    shutil.copytree(ROOT / "models" / "ranker-linear" / "v1", planted)
    key = "../planted/v1" if relative else str(planted)
    cache = ModelCache(bundled, NoBucket())
    with pytest.raises(ModelUnavailableError, match="plain"):
        cache.get(key)
    for other in ("ranker-mlp/../../x", "a/b/c", "x"):
        with pytest.raises(ModelUnavailableError, match="plain"):
            cache.get(other)


# --- the hand-written validator and the profile's JSON schema agree ----------------------------------

model_names = st.one_of(st.sampled_from(["ranker-mlp/v3", "a/v1", "../x/v1", "/abs/v1", "a/b/c", "x", "é/v1",
                                         "ranker_mlp/v10", "a" * 64 + "/v1", "a" * 65 + "/v1"]),
                        st.text(max_size=12))
flag_values = st.one_of(st.booleans(), st.integers(-2, 10_001), st.text(max_size=8), st.none())
condition = st.fixed_dictionaries({"action": st.sampled_from(["MODULO_RANGE", "EQUALS", "BOGUS"]),
                                   "key": st.sampled_from(["bucket", ""]),
                                   "value": st.one_of(st.integers(), st.dictionaries(st.sampled_from(
                                       ["BASE", "START", "END"]), st.integers(0, 10_000)))})
documents = st.builds(
    lambda champion, challenger, experiment, kill, rules, steps, pins, extra, drop: {
        k: v for k, v in {
            "champion_model": {"default": champion, "boolean_type": False},
            "challenger_model": {"default": challenger, "boolean_type": False},
            "experiment_id": {"default": experiment, "boolean_type": False},
            "kill_switch": {"default": kill},
            "challenger": {"default": False, **({"rules": rules} if rules is not None else {})},
            **({"ramp_steps": {"default": steps, "boolean_type": False}} if steps is not None else {}),
            **({"model_sha256": {"default": pins, "boolean_type": False}} if pins is not None else {}),
            **extra}.items() if k != drop},
    model_names, model_names, st.one_of(st.sampled_from(["exp", "exp-1.a_b", "", "~x"]), st.text(max_size=6)),
    flag_values,
    st.one_of(st.none(), st.dictionaries(st.sampled_from(["r1", "r2"]), st.fixed_dictionaries({
        "when_match": st.one_of(st.booleans(), st.integers(0, 1)),
        "conditions": st.lists(condition, max_size=2)}), max_size=2)),
    st.one_of(st.none(), st.lists(st.integers(-1, 10_001), max_size=3)),
    st.one_of(st.none(), st.dictionaries(model_names, st.sampled_from(["0" * 64, "A" * 64, "x"]), max_size=2)),
    st.one_of(st.just({}), st.just({"version": "1"})),
    st.sampled_from([None, "kill_switch", "experiment_id"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_serving_refuses_exactly_what_the_profiles_validator_refuses(document):
    import jsonschema

    by_schema = not list(jsonschema.Draft7Validator(SCHEMA).iter_errors(document))
    try:
        flags.validate_document(document)
        by_serving = True
    except flags.FlagsDocumentError:
        by_serving = False
    # Powertools checks rules further than a JSON schema can (a MODULO_RANGE's value): serving
    # may refuse more, never less.
    assert by_serving <= by_schema, document
    if by_schema and not by_serving:
        assert any(c.get("action") != "BOGUS" for r in document["challenger"].get("rules", {}).values()
                   for c in r["conditions"])


def test_the_local_states_client_is_made_once_on_first_use_and_signs_as_its_creator(monkeypatch):
    """The local stack's AppConfig state (an S3 object): its client is made when first used (as
    the deployed data client is, on the flags' refresh thread), whichever thread gets there first,
    and it signs as the function that made the state."""
    import threading

    from personalize.adapters import aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    creator = aws.Credentials("AKIDCREATOR", "secret", name="creator")
    with aws.as_identity(creator):
        state = fake.S3State("bucket", "key")
    assert state._s3 is None  # nothing made yet
    start, made, errors = threading.Barrier(8), [], []

    def first_use():
        start.wait()
        try:
            made.append(state.s3)
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            errors.append(exc)

    with aws.as_identity(aws.Credentials("AKIDOTHER", "secret", name="other")):
        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len({id(client) for client in made}) == 1
    assert made[0]._request_signer._credentials.access_key == "AKIDCREATOR"
