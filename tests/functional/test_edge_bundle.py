"""The built edge bundle, run by a separate interpreter that sees only the bundle (with its own
trimmed AWS SDK) and the Lambda runtime's boto3 after it, with every AWS endpoint unreachable or silent: each
CloudFront origin-request for /recommendations gets a 200 named fallback from the bundle.
(How fast is measured by `make bench`: serving.edge_outage_*.)"""

import pytest

from infra.local.stack import cloudfront_event
from personalize import settings
from personalize.ingest import entities
from personalize.serving import snapshots
from tests.bench import edge_outage


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    target = tmp_path_factory.mktemp("edge")
    views = {}
    for i in range(30):
        row = entities.ItemRow()
        row.totals = [i, 0, 0, 0]
        row.popularity = [float(i), 1_790_000_000_000]
        if i == 29:
            row.stock = [1, 1_790_000_000_000, 0]  # the most popular item is nearly gone
        views[f"sku-{i}"] = entities.merge_item_rows([row], 1_790_000_000_000)
    snap = target / "latest.msgpack"
    snap.write_bytes(snapshots.build(views, 1_790_000_000_000, "v-build").encode())
    edge_outage.build_bundle(target, snap)
    return target


@pytest.mark.parametrize("outage", ["refused", "silent"])
def test_the_bundle_answers_a_named_fallback_with_aws_unreachable(bundle, outage):
    event = cloudfront_event("GET", "/recommendations", {"k": "3"}, {"cookie": "rt_uid=u1.x"})
    if outage == "refused":
        answers = edge_outage.run_offline(bundle, edge_outage.refused_endpoint(), event)
    else:
        with edge_outage.Blackhole() as endpoint:
            answers = edge_outage.run_offline(bundle, endpoint, event)
    assert len(answers) == 3
    for answer in answers:
        body = answer["body"]
        assert answer["status"] == "200"
        assert body["fallback"] is True and body["fallback_reason"] == "cold_start_unavailable"
        assert [i["item_id"] for i in body["items"]] == ["sku-28", "sku-27", "sku-26"]  # low stock left out
        assert body["variant"] == "outside" and body["model"] == settings.DEFAULT_CHAMPION
