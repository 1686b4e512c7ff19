"""Which replica each edge execution region reads (a table baked at build time), and an
edge bundle that finds itself in another stack than it was built for."""

import json

import pytest

from infra import edge_build, environments
from infra.local import template
from personalize import regions, settings
from personalize.serving.wiring import ServingConfig, stack_of_function

PROD = ["eu-west-1", "ap-southeast-1", "us-west-2", "ap-northeast-1"]


@pytest.mark.parametrize("region, replica", [
    pytest.param("us-east-1", "us-east-1", id="home"),
    pytest.param("us-west-1", "us-west-2", id="us-west-1-next-door"),
    pytest.param("eu-central-1", "eu-west-1", id="europe"),
    pytest.param("ap-northeast-2", "ap-northeast-1", id="seoul-reads-tokyo"),
    pytest.param("ap-south-1", "ap-southeast-1", id="mumbai-reads-singapore"),
    pytest.param("sa-east-1", "us-east-1", id="sao-paulo-reads-home"),
])
def test_the_prod_replica_set_gives_each_execution_region_its_nearest_replica(region, replica):
    assert regions.replica_table("us-east-1", PROD)[region]["replica"] == replica


def test_every_read_timeout_covers_its_round_trip():
    for home_only in (True, False):
        table = regions.replica_table("us-east-1", [] if home_only else PROD)
        for entry in table.values():
            assert entry["rtt_ms"] / 1000 < entry["timeout_s"] <= regions.MAX_TIMEOUT_MS / 1000
    # With prod's replicas no edge reads from farther than ~120 ms (Sao Paulo from us-east-1).
    assert max(e["rtt_ms"] for e in regions.replica_table("us-east-1", PROD).values()) <= 120


def test_the_built_edge_config_bakes_the_environments_replica_table():
    prod = edge_build.edge_config("prod")
    assert prod["stack"] == "rt-personalization-prod"
    assert prod["replica_table"]["us-west-2"]["replica"] == "us-west-2"
    assert edge_build.edge_config("dev")["replica_table"]["us-west-2"]["replica"] == "us-east-1"


def test_a_dev_bundle_deployed_to_prod_reads_prods_tables_from_home():
    dev = ServingConfig(**json.loads(json.dumps(edge_build.edge_config("dev"))))
    stack = stack_of_function("us-east-1.rt-personalization-prod-edge")  # a Lambda@Edge replica's name
    assert stack == "rt-personalization-prod"
    running = dev.for_stack(stack)
    assert running.features_table == "rt-personalization-prod-features"
    assert running.signing_secret == "rt-personalization-prod/cookie-signing-key"
    assert running.flags["application"] == "rt-personalization-prod"
    assert running.replica_table == {} and running.replica_regions == []
    assert dev.for_stack("rt-personalization-dev") is dev
    assert stack_of_function("some-other-function") is None


# --- one source: samconfig.toml's replica regions, and every resource an edge reads near itself

def _replica_regions(logical_id: str, props: dict) -> list:
    """The regions a near-edge resource has a copy in, besides the stack's own."""
    if logical_id == settings.FEATURES_TABLE.logical_id:
        return [r["Region"] for r in props["Replicas"] if r["Region"] != {"Ref": "AWS::Region"}]
    if logical_id == settings.SIGNING_KEY_SECRET.logical_id:
        return [r["Region"] for r in props.get("ReplicaRegions", [])]
    raise AssertionError(f"{logical_id}: say how its replica regions are declared")


@pytest.mark.parametrize("env", environments.names())
def test_every_resource_an_edge_reads_near_itself_has_a_copy_in_each_replica_region(env):
    """Prod listed 4 replica regions for the table but replicated the signing key to 2:
    edges mapped to the other two could not verify cookies at cold start."""
    environment = environments.load(env)
    evaluate = template.Evaluator(environment.parameters)
    for resource in settings.NEAR_EDGE:
        copies = _replica_regions(resource.logical_id, evaluate.resource(resource.logical_id))
        assert sorted(copies) == sorted(environment.replica_regions), (env, resource.logical_id, copies)


def test_the_template_has_a_slot_for_every_replica_and_no_near_edge_resource_skips_one():
    slots = {f"ReplicaRegion{n}" for n in range(1, environments.REPLICA_SLOTS + 1)}
    assert slots <= set(template.load()["Parameters"])
    every = {name: f"{name}-region" for name in slots}
    evaluate = template.Evaluator(every)
    for resource in settings.NEAR_EDGE:
        copies = _replica_regions(resource.logical_id, evaluate.resource(resource.logical_id))
        assert sorted(copies) == sorted(every.values()), resource.logical_id


@pytest.mark.parametrize("env", environments.names())
def test_each_environments_replica_regions_are_usable(env):
    assert environments.load(env).problems() == []


def test_a_replica_list_with_a_duplicate_the_home_region_or_an_unknown_region_is_refused():
    env = environments.Environment("x", "s", "us-east-1", {"ReplicaRegion1": "eu-west-1", "ReplicaRegion2": "eu-west-1",
                                                          "ReplicaRegion3": "us-east-1", "ReplicaRegion4": "mars-1"})
    problems = " | ".join(env.problems())
    assert "twice" in problems and "home region" in problems and "mars-1" in problems


def test_the_edge_build_bakes_the_environments_own_replica_list():
    for env in environments.names():
        config = edge_build.edge_config(env)
        assert config["replica_regions"] == environments.load(env).replica_regions
        mapped = {entry["replica"] for entry in config["replica_table"].values()}
        assert mapped <= {"us-east-1", *config["replica_regions"]}
        assert set(config["replica_table"]) == set(regions.EDGE_EXECUTION_REGIONS)


def test_plain_sam_build_builds_the_default_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SAM_CONFIG_ENV", raising=False)
    monkeypatch.setattr(edge_build, "build", lambda target, env: (tmp_path / "env").write_text(env) or 1.0)
    assert edge_build.main([str(tmp_path / "out")]) == 0
    assert (tmp_path / "env").read_text() == environments.DEFAULT
    monkeypatch.setenv("SAM_CONFIG_ENV", "staging")
    assert edge_build.main([str(tmp_path / "out")]) == 2


def test_a_deploy_refuses_a_build_baked_for_another_environment(tmp_path, capsys):
    from infra import deploy

    edge = tmp_path / "EdgeFunction"
    edge.mkdir()
    assert "make build ENV=prod" in deploy.check("prod", tmp_path)  # nothing built yet
    (edge / "edge_config.json").write_text(json.dumps(edge_build.edge_config("dev")))
    # The edge built, another resource failed: SAM wrote no template, and `sam deploy` would
    # fall back to the source one.
    assert "did not finish" in deploy.check("dev", tmp_path)
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    assert deploy.check("dev", tmp_path) is None
    assert "rt-personalization-dev" in deploy.check("prod", tmp_path)
    assert deploy.main(["check", "--env", "prod", "--build-dir", str(tmp_path)]) == 2
    assert "refused" in capsys.readouterr().err
    stale = edge_build.edge_config("prod")
    stale["replica_regions"] = stale["replica_regions"][:2]  # built before a replica was added
    (edge / "edge_config.json").write_text(json.dumps(stale))
    assert "again" in deploy.check("prod", tmp_path)


def test_a_build_that_fails_on_the_way_leaves_no_config_for_a_deploy_to_find(tmp_path, monkeypatch):
    """``edge_config.json`` is the build's last file: an earlier build's is removed first, so a
    failed rebuild (a full disk while compiling) is refused by `make deploy`'s check."""
    from infra import bytecode, deploy

    edge = tmp_path / "EdgeFunction"
    edge.mkdir()
    (edge / "edge_config.json").write_text(json.dumps(edge_build.edge_config("dev")))  # an earlier build's
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    assert deploy.check("dev", tmp_path) is None

    def full_disk(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bytecode, "precompile", full_disk)
    with pytest.raises(OSError):
        edge_build.build(edge, "dev", install=False)
    assert "make build ENV=dev" in deploy.check("dev", tmp_path)
    monkeypatch.undo()
    edge_build.build(edge, "dev", install=False)
    assert deploy.check("dev", tmp_path) is None


def test_a_bundle_over_the_size_limit_leaves_no_config_for_a_deploy_to_find(tmp_path, monkeypatch):
    from infra import deploy

    edge = tmp_path / "EdgeFunction"
    (tmp_path / "template.yaml").write_text("Resources: {}\n")

    def too_big(target, env):
        target.mkdir(parents=True, exist_ok=True)
        (target / "edge_config.json").write_text(json.dumps(edge_build.edge_config(env)))
        return edge_build.LIMIT_MB + 1

    monkeypatch.setattr(edge_build, "build", too_big)
    monkeypatch.setenv("SAM_CONFIG_ENV", "dev")
    assert edge_build.main([str(edge)]) == 1
    assert "make build ENV=dev" in deploy.check("dev", tmp_path)
