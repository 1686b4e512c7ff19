"""Which replica each edge execution region reads (a table baked at build time), and an
edge bundle that finds itself in another stack than it was built for."""

import json

import pytest

from infra import edge_build
from personalize import regions
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
