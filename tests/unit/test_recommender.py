"""The serving request with in-memory fakes behind every adapter (no network): the snapshot
refresh by ETag, the sold-out list, and the variant each answer names."""

from pathlib import Path

import pytest

from personalize import identity, snapshots, state
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.userstore import MemoryUserStore
from personalize.models import load_folder
from personalize.serving import Recommender, Variant

NOW = 1_790_000_000_000
KEY = "test-signing-key"
RANKER = load_folder(Path(__file__).resolve().parents[2] / "models" / "ranker-mlp" / "v1")


def snapshot(version: str, n_items: int = 500) -> bytes:
    views = {}
    for i in range(n_items):
        row = state.ItemRow()
        row.totals = [i, 0, 0, i % 7]
        row.popularity = [float(i), NOW]
        views[f"sku-{i}"] = state.merge_item_rows([row], NOW)
    return snapshots.build(views, NOW, version).encode()


@pytest.fixture
def parts():
    artifacts, soldout = MemoryArtifacts(), MemorySoldOut()
    artifacts.put_snapshot("v1", snapshot("v1"), {})
    user = state.UserRow()
    state.apply_user_event(user, _click("sku-3"), 1)
    users = MemoryUserStore({"u1": user})
    recommender = Recommender(users, artifacts, soldout, KEY, lambda user_id: Variant("champion", RANKER, "exp"),
                              log_sample_rate=0)
    recommender.warm()
    return recommender, artifacts, soldout, users


def _click(item):
    from personalize.events import parse_event

    return parse_event({"event_id": f"e-{item}", "type": "click", "user_id": "u1", "item_id": item, "ts": NOW})


def cookie(user_id):
    return identity.cookie_value(user_id, KEY)


def test_a_signed_in_shopper_gets_ranked_items_with_one_read(parts):
    recommender, _, _, users = parts
    answer = recommender.recommend({"k": "10"}, cookie("u1"), "FR", NOW)
    assert answer.status == 200 and answer.body["fallback"] is False
    assert len(answer.body["items"]) == 10 and answer.body["candidates"] >= 300
    assert answer.body["rec_id"].startswith("exp~") and answer.body["model"] == "ranker-mlp/v1"
    assert users.reads == 1


def test_the_snapshot_is_fetched_again_only_when_the_pointer_changed(parts):
    recommender, artifacts, _, _ = parts
    gets = artifacts.gets
    recommender.snapshot.refresh_now()
    assert artifacts.gets == gets  # same ETag: no download
    artifacts.put_snapshot("v2", snapshot("v2"), {})
    recommender.snapshot.refresh_now()
    assert artifacts.gets == gets + 1
    assert recommender.recommend({}, None, None, NOW).body["snapshot_version"] == "v2"


def test_sold_out_items_leave_every_answer_without_a_new_snapshot(parts):
    recommender, _, soldout, _ = parts
    top = [i["item_id"] for i in recommender.recommend({"k": "50"}, None, None, NOW).body["items"]]
    soldout.update(set(top[:5]), set())
    recommender.soldout.refresh_now()
    for cookie_value in (None, cookie("u1")):
        items = {i["item_id"] for i in recommender.recommend({"k": "50"}, cookie_value, None, NOW).body["items"]}
        assert not items & set(top[:5])
    soldout.update(set(), {top[0]})
    recommender.soldout.refresh_now()
    assert top[0] in {i["item_id"] for i in recommender.recommend({"k": "50"}, None, None, NOW).body["items"]}
