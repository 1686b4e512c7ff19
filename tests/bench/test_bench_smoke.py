"""The benchmarks run (on a small stream) and their write accounting holds: a guard
against a bench that silently stops measuring. Timing is never asserted here."""

import contextlib
import io
import json
import time

from infra.local.lambda_events import context
from infra.local.stack import cloudfront_event
from personalize import identity
from personalize.ingest import entities
from personalize.ingest.events import parse_event
from personalize.serving import snapshots
from personalize.serving.prepared import Served
from tests.bench import ingest
from tests.bench.serving_floor import (
    Floor,
    MemoisedInputs,
    PackedUserStore,
    in_memory_edge,
    interleaved,
    summary,
    without_candidates_features,
)


def test_ingest_bench_writes_at_most_one_per_entity_per_batch():
    figures = ingest.run(n_events=4000, n_moto_events=2000, n_fault_schedules=20)
    assert figures["ddb_writes"] > 0
    assert figures["fault_schedules"] == 20 and figures["fault_events"] > 0
    assert (figures["fault_lost"], figures["fault_doubled"]) == (0, 0)
    assert figures["ddb_writes_per_event"] <= 1.5 * figures["entity_floor_per_event"]
    assert figures["naive_writes_per_event"] > figures["ddb_writes_per_event"]
    assert figures["events_per_s"] > 0
    assert figures["floor_events_per_s"] > 0 and figures["ratio_to_floor"] > 0


def test_the_serving_floor_answers_the_same_request_as_the_edge_handler():
    now = int(time.time() * 1000)
    views = {}
    for i in range(600):
        item = entities.ItemRow()
        item.totals = [i, 0, 0, i % 7]
        item.popularity = [float(i), now]
        views[f"sku-{i}"] = entities.merge_item_rows([item], now)
    rows = {}
    for u in range(12):
        row = rows[f"u{u}"] = entities.UserRow()
        for j in range(6):
            kind = ("view", "click", "add_to_cart", "purchase")[(u + j) % 4]
            event = {"event_id": f"e{u}-{j}", "type": kind, "user_id": f"u{u}",
                     "item_id": f"sku-{(u * 37 + j * 11) % 600}", "ts": now - 60_000 * (6 - j)}
            if kind in ("add_to_cart", "purchase"):
                event["quantity"] = 1
            entities.apply_user_event(row, parse_event(event), j)
    users = PackedUserStore.of(rows)
    module, recommender = in_memory_edge(snapshots.build(views, now, "smoke").encode(), users, "smoke-key",
                                         log_sample_rate=0, freeze=False)
    ids = list(rows)
    events = [cloudfront_event("GET", "/recommendations", {"k": "10"},
                               {"cookie": "rt_uid=" + identity.cookie_value(u, "smoke-key"), "x-country": "US"})
              for u in ids]
    floor = Floor(recommender, users.packed, ids, "US", 10, now)
    with contextlib.redirect_stdout(io.StringIO()):
        answers = [json.loads(module.lambda_handler(e, context("edge"))["body"]) for e in events]
        times = interleaved(lambda e: module.lambda_handler(e, context("edge")), events, floor, ids,
                            requests=24, warmup=2)
    assert all(a["user_id"] == u and not a["fallback"] and len(a["items"]) == 10 for u, a in zip(ids, answers))
    assert [floor.top_items(u) for u in ids] == [[i["item_id"] for i in a["items"]] for a in answers]
    figures = summary(times)
    assert all(len(v) == 24 for v in times.values()) and users.reads >= 36
    assert figures["ratio_p50"] > 0 and figures["cpu_ratio_p50"] > 0

    # The headroom pass: each shopper's candidates and features read from a dict after their
    # first request, the same answers, and everything put back afterwards.
    computed = Served.inputs
    memo = MemoisedInputs(recommender)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for e in events:
                module.lambda_handler(e, context("edge"))
            memo.reads = 0
            again = [json.loads(module.lambda_handler(e, context("edge"))["body"]) for e in events]
    finally:
        memo.undo()
    assert memo.reads == len(events) and len(memo.memo) == len(ids)
    assert [[i["item_id"] for i in a["items"]] for a in again] == [[i["item_id"] for i in a["items"]] for a in answers]
    assert Served.inputs is computed and "get" not in vars(users)
    with contextlib.redirect_stdout(io.StringIO()):
        figures, reads = without_candidates_features(
            recommender, lambda e: module.lambda_handler(e, context("edge")), events, floor, ids, requests=24)
    assert reads == 24 + 200 and figures["ratio_p50"] > 0 and Served.inputs is computed


def test_the_loop_bench_measures_its_contract_keys():
    from tests.bench import live_lift, loop

    figures = loop.run(ope_seeds=3, retrain_users=20, archive_shoppers=2, live_shoppers=1000, control_shoppers=500)
    assert {"ope_coverage", "obd_covers_on_policy", "obd_relative_width", "retrain_s",
            "archive_loss_rate", "live_lift_ci_low"} <= set(figures)
    assert figures["archive"]["decisions_accepted"] == 6 and figures["archive_loss_rate"] == 0.0
    assert 0 <= figures["ope_coverage"] <= 1 and figures["ope"]["seeds"] == 3
    assert figures["obd_relative_width"] > 0 and figures["retrain_s"] > 0
    assert figures["retrain"]["registered"] == ["ranker-linear", "ranker-mlp"]
    # retrained on the scenario's archive, bootstrapped by the sample (a young archive)
    assert figures["retrain"]["trained_on"][0].startswith("archive-") and figures["retrain"]["bootstrap"]["trains"]
    assert figures["retrain"]["archive_training_decisions"] >= 1  # a returning shopper's second order
    assert figures["archive"]["purchases_archived"] == figures["archive"]["purchases_sent"]
    # every shopper had a row, so the model decided each answer but one whose row read outlasted
    # serving's 50 ms timeout on a loaded machine (CI, 2026-12-06: 5 of 6); each one it decided is archived
    assert figures["archive"]["model_decisions_archived"] == figures["archive"]["model_decisions_served"] >= 3
    assert figures["champion_from_logs"]["logged_decisions"] == figures["archive"]["model_decisions_served"]
    assert 0 <= figures["replay_agreement"] <= 1
    live = figures["live_lift"]
    # the real flags document assigned the shoppers, and each arm served its own model
    assert live["flags_loads"] >= 1
    assert live["models"] == ["challenger: ranker-mlp/live-lift", "champion: ranker-mlp/v3"]
    arms = live["arms"]
    assert sum(a["shoppers"] for a in arms.values()) > 950 and 0 < arms["challenger"]["shoppers"] < 0.05 * 1000
    # What 1,000 shoppers can detect (25 in the 2% arm: the experiment's own interval is
    # reported, not asserted; make bench runs 28,000): the truth over every shopper, both arms
    # on the same baskets, and the offline comparison on the shop's validation window.
    assert live["truth_lift"] > 0.2
    assert live["exploration_served"] == list(live_lift.EXPLORATION)  # read back from the document
    assert live["covers_truth"]  # seeded: the interval of this run covers the truth
    # the control, the same shop without the drift: the retrained model is no better there, so
    # the lift above is the loop's answer to the drift, not a fit to this simulated shop
    assert abs(figures["live_lift_control"]["truth_lift"]) < 0.1
    assert live["validation"]["challenger_minus_champion_ndcg_at_10_ci95"][0] > 0


def test_the_simulated_shops_preferences_drift_as_documented():
    from tests.bench import live_lift

    history, experiment = live_lift.population(live_lift.Shop(shoppers=300))
    assert len(experiment) == 300 and all(o.placed_ms >= live_lift.START_MS + live_lift.HISTORY_END * live_lift.DAY_MS
                                          for o in experiment)
    seen: dict[str, set] = {}
    repeats = {"before": [0, 0], "after": [0, 0]}
    new_share = {"before": [0, 0], "after": [0, 0]}
    new_items = set(live_lift._ids(live_lift.Shop())[live_lift.Shop().items:])
    for o in history:
        day = live_lift._day(o)
        era = "before" if day < live_lift.DRIFT_START else "after" if day >= live_lift.DRIFT_FULL else None
        mine = seen.setdefault(o.user_id, set())
        if era and o.number > 1:
            repeats[era][0] += sum(p in mine for p in o.products)
            repeats[era][1] += len(o.products)
            new_share[era][0] += sum(p in new_items for p in o.products)
            new_share[era][1] += len(o.products)
        mine.update(o.products)
    share = {era: a / b for era, (a, b) in repeats.items()}
    assert share["before"] > 0.3 and share["after"] < share["before"] / 2  # habits give way
    assert new_share["before"][0] == 0 and new_share["after"][0] / new_share["after"][1] > 0.3  # the new season


def test_the_ops_bench_counts_the_edges_log_bytes_by_kind_and_prices_a_million_requests():
    from infra import costs
    from tests.bench import ops

    figures = ops.edge_log_bytes(requests=3000, rps=100.0, error_rate=0.001)
    kinds = figures["edge_log_bytes_by_kind"]
    assert kinds.get("emf", 0) > 0 and kinds.get("error", 0) > 0  # 3 injected errors logged
    assert figures["edge_emf_flushes"] >= 3000 / 100 / 5 - 1  # every 5 s of the simulated clock
    assert figures["edge_log_bytes_per_request"] == round(sum(kinds.values()), 1) or \
        abs(figures["edge_log_bytes_per_request"] - sum(kinds.values())) < 0.5
    assert ops.platform_log_bytes()["edge_platform_log_bytes_per_request"] > 150
    assert 0 < ops.lost_share(1.0, 5.0, lifetime_s=600) < 0.05
    assert ops.lost_share(100.0, 5.0, lifetime_s=600) < ops.lost_share(100.0, 60.0, lifetime_s=600)
    model = costs.model({"ops": figures})
    assert model["usd_per_million_requests"] > 0 and all(v >= 0 for v in model["by_part"].values())
    more_replicas = costs.model({"ops": figures}, {"environment": "prod"})
    fewer = costs.model({"ops": figures}, {"environment": "dev"})
    assert more_replicas["usd_per_million_requests"] > fewer["usd_per_million_requests"]


def test_the_limits_figures_measure_what_they_name_on_small_workloads():
    """`make bench` runs them at full size (tests/bench/limits.py); here, small and quick."""
    from tests.bench import limits

    viral = limits.viral_item_hot_shard(seconds=2)
    assert viral["viral_item_hot_shard_records_per_s"] <= 1000 < viral["viral_item_hot_shard_records_per_s_before"]
    # ... and the traffic was really offered (a refused request offers nothing: 3,000 events/s over 4 shards)
    assert viral["viral_item_hot_shard_records_per_s"] > 3000 / 4 * 0.8
    churn = limits.soldout_churn(sold_out=32_000, instances=50, seconds=2)
    assert churn["soldout_churn_max_partition_wcu_per_s"] < churn["soldout_churn_max_partition_wcu_per_s_before"]
    assert churn["soldout_max_partition_rcu_per_s"] < churn["soldout_max_partition_rcu_per_s_before"]
    run = limits.snapshot_job_at(0.002)
    assert run["total_s"] > run["cpu_s"] > 0 and run["read_units"] > 0 and run["snapshot_items"] > 0
    invented = limits.invented_item(published_items=200, shoppers=100, purchases=100)
    assert invented["invented_item_top10_share"] == 0 < invented["invented_item_top10_share_before"]
    assert set(limits.KEYS) >= {"viral_item_hot_shard_records_per_s", "invented_item_top10_share"}
