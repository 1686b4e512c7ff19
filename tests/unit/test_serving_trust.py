"""Serving's part of issue 19: what the flags rollback alarm counts against the challenger,
a model that fails on a request, and a sold-out list that did not change."""

import json
import shutil
from pathlib import Path

from personalize import identity
from personalize.adapters.artifacts import MemoryArtifacts
from personalize.adapters.soldout import MemorySoldOut
from personalize.adapters.userstore import MemoryUserStore
from personalize.ingest import entities
from personalize.rollout import flags
from personalize.serving import wiring
from personalize.serving.recommendations import Recommender, Variant, model_fault
from tests.unit.test_recommender import KEY, NOW, RANKER, _click, cookie, snapshot


class Broken:
    """A challenger's ranker that fails on every input (a bad export, a shape mismatch)."""

    key = "ranker-broken/v1"
    manifest = RANKER.manifest
    columns = RANKER.columns

    def score(self, X):
        raise RuntimeError("input shape mismatch")


def recommender(choose, users=None):
    artifacts = MemoryArtifacts()
    artifacts.put_snapshot("v1", snapshot("v1"), {})
    user = entities.UserRow()
    entities.apply_user_event(user, _click("sku-3"), 1)
    rec = Recommender(users or MemoryUserStore({"u1": user}), artifacts, MemorySoldOut(), KEY, choose,
                      log_sample_rate=0)
    rec.warm()
    return rec


def test_a_new_accounts_fallback_is_not_the_challengers_fault():
    """Before: every fallback of a challenger-assigned shopper counted against the challenger
    (Fallbacks_challenger), so a wave of sign-ups (no row yet) could trip the rollback."""
    rec = recommender(lambda user_id: Variant("challenger", RANKER, "exp@200"))
    body = rec.recommend({"k": "5"}, cookie("brand-new"), "US", NOW).body
    assert (body["fallback"], body["fallback_reason"]) == (True, "no_user_row")
    assert not model_fault(body)
    body = rec.recommend({"k": "5"}, None, "US", NOW).body
    assert body["fallback_reason"] == "anonymous" and not model_fault(body)


def test_a_user_read_that_failed_is_no_models_fault():
    """On-call review: ``user_read_failed`` ends in ``_failed`` and counted against the
    variant, so a replica outage could roll back a healthy challenger."""
    assert not model_fault({"fallback": True, "fallback_reason": "user_read_failed", "variant": "challenger"})
    assert model_fault({"fallback": True, "fallback_reason": "challenger_failed", "variant": "challenger"})
    assert not model_fault({"fallback": True, "fallback_reason": "champion_failed", "variant": "challenger"})


def test_a_challenger_model_that_did_not_load_is_its_fault():
    rec = recommender(lambda user_id: Variant("challenger", RANKER, "exp@200", "challenger_unavailable"))
    body = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW).body
    assert body["fallback_reason"] == "challenger_unavailable" and model_fault(body)


def test_a_model_that_fails_on_a_request_answers_trending_and_is_counted():
    """Before: an exception in scoring escaped the request (a 5xx at the region, a pass-through
    at the edge) and the alarm only saw it as a Lambda error of no variant."""
    rec = recommender(lambda user_id: Variant("challenger", Broken(), "exp@200"))
    answer = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW)
    assert answer.status == 200 and len(answer.body["items"]) == 5
    assert answer.body["fallback_reason"] == "challenger_failed" and model_fault(answer.body)


def test_the_rollback_figures_take_the_shopper_from_the_answer_once_however_often_they_ask():
    """``recommendations.record`` passes the verified user id: 50 failing answers to one
    shopper are 50 ModelFallbacks but one shopper the challenger failed; an anonymous answer is
    no shopper of any variant's."""
    import time

    from personalize import telemetry
    from personalize.serving import recommendations

    rec = recommender(lambda user_id: Variant("challenger", Broken(), "exp@200"))
    sink, minutes = telemetry.Aggregate(), telemetry.ShopperMinutes()
    for _ in range(50):
        answer = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW)
        recommendations.record((sink,), answer, time.perf_counter(), None, minutes)
    recommendations.record((sink,), rec.recommend({"k": "5"}, None, "US", NOW), time.perf_counter(), None, minutes)
    counts = sink.take().counts
    challenger = (("variant", "challenger"),)
    assert counts[("ModelFallbacks", challenger)] == 50 and counts[("Requests", challenger)] == 51
    assert counts[("ModelFallbackShoppers", challenger)] == 1 and counts[("Shoppers", challenger)] == 1
    # A consented visitor (the kit's anon- id) is in no experiment: no variant's shopper.
    outside = recommender(lambda user_id: Variant("outside", RANKER, "none"))
    recommendations.record((sink,), outside.recommend({"k": "5"}, cookie("anon-v1"), "US", NOW), time.perf_counter(),
                           None, minutes)
    assert not any(name == "Shoppers" for name, _ in sink.take().counts)


def test_a_challenger_whose_features_fail_where_the_champions_do_not_is_its_fault(tmp_path, caplog, monkeypatch):
    """Before: a challenger reading a column the champion does not (here the 10-minute window
    sums, read from the shopper's minute tiles) failed on rows the champion serves, and each
    answer was ``features_failed``, no model's fault: the rollback alarm never saw the
    challenger fail, and its shoppers got trending. Now the champion ranks them and the
    answer is ``challenger_failed``; a row no model can read stays ``features_failed``.
    Through the real chooser, flags document and bundled models."""
    models = Path(__file__).resolve().parents[2] / "models"
    bundled = tmp_path / "shipped"
    shutil.copytree(models / "ranker-mlp" / "v1", bundled / "ranker-mlp" / "v1")
    windows = bundled / "ranker-windows" / "v1"
    shutil.copytree(models / "ranker-mlp" / "v1", windows)
    manifest = json.loads((windows / "manifest.json").read_text())
    swap = {"user_purchases_log": "user_click_rate_10m", "user_days_since_log": "user_views_10m_log"}
    manifest.update(name="ranker-windows", features=[swap.get(f, f) for f in manifest["features"]])
    (windows / "manifest.json").write_text(json.dumps(manifest))
    document = flags.rollout_document("ranker-mlp/v1", "ranker-windows/v1", 1.0, "exp-w")
    rollout = flags.Rollout(flags.CachedDocumentStore(lambda: document), "ranker-mlp/v1")
    assert rollout.assign("u1") == flags.Assignment(flags.CHALLENGER, "ranker-windows/v1", "exp-w@10000", True,
                                                    "ranker-mlp/v1")  # the document above, loaded
    user = entities.UserRow()
    entities.apply_user_event(user, _click("sku-3"), 1)
    models = wiring.ModelCache(bundled, MemoryArtifacts())
    rec = recommender(wiring.chooser(rollout, models, "ranker-mlp/v1"), MemoryUserStore({"u1": user}))

    healthy = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW).body
    assert (healthy["variant"], healthy["model"], healthy["fallback"]) == ("challenger", "ranker-windows/v1", False)

    (minute, tile), = user.tiles.items()
    user.tiles[minute] = tile[:1]  # a tile the window sums cannot read; the champion reads no window
    # An instance that has not loaded the champion does not load it on a failing request's path
    # (a read from the bucket): it cannot tell, and says features_failed.
    body = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW).body
    assert body["fallback_reason"] == "features_failed" and "ranker-mlp/v1" not in models.rankers
    champion = models.get("ranker-mlp/v1")  # as warm_up loads it at cold start, or its first request
    with caplog.at_level("ERROR"):
        answer = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW)
    body = answer.body
    assert answer.status == 200 and (body["variant"], body["fallback"]) == ("challenger", True)
    assert body["fallback_reason"] == "challenger_failed" and model_fault(body)
    assert body["model"] == "ranker-mlp/v1" and len(body["items"]) == 5 and body["candidates"] >= 10  # ranked
    assert identity.verify_decision(body["decision"], body["rec_id"], KEY).model == "ranker-mlp/v1"
    assert any(r.exc_info and "ranker-windows/v1 failed where the champion's did not" in r.getMessage()
               for r in caplog.records)

    # The champion ranking instead fails too: no model could rank, and the fault is not told
    # apart from the champion's: trending, no model's fault.
    def broken(X):
        raise RuntimeError("input shape mismatch")

    monkeypatch.setattr(champion, "run", broken)
    body = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW).body
    assert body["fallback_reason"] == "features_failed" and not model_fault(body)
    monkeypatch.undo()

    user.items["sku-4"] = [*next(iter(user.items.values())), 0]  # ragged stats: no model's features read it
    body = rec.recommend({"k": "5"}, cookie("u1"), "US", NOW).body
    assert body["fallback_reason"] == "features_failed" and not model_fault(body) and "candidates" not in body


def test_the_sold_out_generation_moves_only_when_the_list_changes():
    """Before: each one-second re-read made a new set, a new generation, and so a new
    snapshot.without(sold) for the next request, whatever the list held."""
    soldout = MemorySoldOut()
    soldout.update({"sku-1"}, set())
    artifacts = MemoryArtifacts()
    artifacts.put_snapshot("v1", snapshot("v1"), {})
    rec = Recommender(MemoryUserStore({}), artifacts, soldout, KEY,
                      lambda user_id: Variant("champion", RANKER, "exp"), log_sample_rate=0)
    rec.warm()
    generation = rec.soldout.generation
    served = rec.current_snapshot()
    for _ in range(5):
        rec.soldout.refresh_now()
    assert rec.soldout.generation == generation and rec.current_snapshot() is served
    soldout.update({"sku-2"}, set())
    rec.soldout.refresh_now()
    assert rec.soldout.generation == generation + 1 and rec.current_snapshot() is not served
