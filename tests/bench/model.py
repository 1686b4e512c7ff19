"""Model figures for build/bench.json (``model``).

* Each shipped model (the flags' champion and the registry's default challenger): its size,
  int8 or float, and onnxruntime latency for 300 candidates, measured here; ``quantization``:
  the newest float MLP against its int8 twins (``tests/bench/quantization.py``).
* Quality comes from ``make evaluate``'s report for the current dataset
  (``models/evaluations/<dataset id>/report.json``): the test window is read once per
  candidate there, never by the bench. ``champion_ndcg_at_10`` is the leave-last-order-out
  figure over every shopper (as before the honest protocol, for comparison);
  ``champion_minus_tifu_ndcg_at_10_ci95`` the paired 95% interval on the returning shoppers
  (the headline), with new shoppers' figures apart. No report for the current dataset (its
  code or data changed since): ``evaluation`` says so and the quality keys are absent.
"""

from __future__ import annotations

import json

import numpy as np

from infra.local.template import ROOT
from models import train
from models.dataset import DEFAULT_DIR, Dataset, InstacartBuilder
from models.evaluate import EVALUATIONS_DIR, HEADLINE
from personalize.serving import ranking
from personalize.serving.models import load_folder


def shipped() -> dict:
    flags = json.loads(train.FLAGS_FILE.read_text())
    return {"champion": flags["champion_model"]["default"],
            "challenger": next((f"{n}/{train.VERSION}" for n in train.MODELS
                                if f"{n}/{train.VERSION}" != flags["champion_model"]["default"]), None)}


def quality(report: dict) -> dict:
    out: dict = {}
    champion = report["champion"]
    test = report["test"]
    c = test[champion]
    out["champion"] = champion
    out["champion_ndcg_at_10"] = c["all"]["ndcg_at_10"]
    out["champion_ndcg_at_10_ci95"] = c["all"]["ndcg_at_10_ci95"]
    out["champion_ndcg_at_10_returning"] = c[HEADLINE]["ndcg_at_10"]
    out["champion_ndcg_at_10_new_shoppers"] = c["new"]["ndcg_at_10"]
    out["champion_ndcg_at_10_new_shoppers_ci95"] = c["new"]["ndcg_at_10_ci95"]
    out["champion_ndcg_at_10_new_shoppers_interval_width"] = c["new"]["ndcg_at_10_interval_width"]
    out["champion_top10_ties"] = c.get("top10_ties")
    for arm, key in (("tifu-knn", "tifu"), ("gbdt-lambdarank", "gbdt"), ("decayed-frequency", "decayed"),
                     ("repeat", "repeat"), ("popularity", "popularity")):
        out[f"baseline_{key}_ndcg_at_10"] = test[arm][HEADLINE]["ndcg_at_10"]
        paired = report["paired"][f"{champion} - {arm}"]
        out[f"champion_minus_{key}_ndcg_at_10"] = paired[HEADLINE]["ndcg_at_10"]
        out[f"champion_minus_{key}_ndcg_at_10_ci95"] = paired[HEADLINE]["ndcg_at_10_ci95"]
        out[f"champion_minus_{key}_ndcg_at_10_mde"] = paired[HEADLINE]["ndcg_at_10_mde"]
        out[f"champion_minus_{key}_ndcg_at_10_ci95_all"] = paired["all"]["ndcg_at_10_ci95"]
    out["baseline_tifu_params"] = report["tuning"]["tifu-knn"]["chosen"]
    out["decisions_returning"] = c[HEADLINE]["decisions"]
    out["decisions_new_shoppers"] = c["new"]["decisions"]
    session = report["session"].get(champion)
    if session:
        out["session_ndcg_at_10"] = session["with_session"]["ndcg_at_10"]
        out["session_blind_ndcg_at_10"] = session["blind"]["ndcg_at_10"]
        out["session_minus_blind_ndcg_at_10"] = session["paired_with_minus_blind"]["ndcg_at_10"]
        out["session_minus_blind_ndcg_at_10_ci95"] = session["paired_with_minus_blind"]["ndcg_at_10_ci95"]
        out["session_blind_cart_removed_ndcg_at_10"] = session["blind_cart_removed"]["ndcg_at_10"]
        beyond = session["paired_with_minus_blind_cart_removed"]
        out["session_minus_blind_cart_removed_ndcg_at_10"] = beyond["ndcg_at_10"]
        out["session_minus_blind_cart_removed_ndcg_at_10_ci95"] = beyond["ndcg_at_10_ci95"]
    out["evaluated_at"] = report["measured_at"]
    out["test_reads"] = report["test_reads"]
    return out


def run() -> dict:
    out: dict = {}
    models = shipped()
    for role, key in models.items():
        if key is None:
            continue
        folder = ROOT / "models" / key
        manifest = json.loads((folder / "manifest.json").read_text())
        q = manifest["quantization"]
        rows = np.random.default_rng(0).random((300, len(ranking.FEATURES)), dtype=np.float32)
        p50, p99 = train.latency_us(load_folder(folder), rows, runs=3000)
        if role == "champion" and "user_row_bytes" in manifest.get("data", {}):  # v1-v3 measured it in make train
            out["user_row_bytes_p50"] = manifest["data"]["user_row_bytes"]["p50"]
            out["user_row_bytes_p99"] = manifest["data"]["user_row_bytes"]["p99"]
        out[key.split("/")[0]] = {
            "version": key.split("/")[1], "role": role, "float_bytes": q["float_bytes"],
            "int8_bytes": q.get("int8_bytes"), "int8_ndcg_delta": q.get("int8_validation_ndcg_delta"),
            "ships": q["ships"], "batch_max_diff": q["batch_max_diff"], "p50_us": round(p50, 1),
            "p99_us": round(p99, 1)}
    from tests.bench import quantization

    out["quantization"] = quantization.run()  # does int8 pay for itself (issue 23)
    dataset_id = InstacartBuilder().id()
    folder = DEFAULT_DIR
    if (folder / "window.json").exists() and json.loads((folder / "window.json").read_text())["id"] == dataset_id:
        val = Dataset.load(folder).split("validation")  # candidate recall on validation (test stays sealed)
        out["candidate_recall_validation"] = round(float(val.y.sum() / val.n_true.sum()), 6)
        out["candidates_per_decision_validation"] = round(float(np.diff(val.offsets).mean()), 1)
    report_file = EVALUATIONS_DIR / dataset_id / "report.json"
    out["dataset"] = dataset_id
    if report_file.exists():
        report = json.loads(report_file.read_text())
        if report["champion"] == models["champion"]:
            out.update(quality(report))
            out["evaluation"] = f"models/evaluations/{dataset_id}/report.json"
        else:
            out["evaluation"] = (f"the report evaluated {report['champion']}, the flags' champion is "
                                 f"{models['champion']}: run make evaluate")
    else:
        out["evaluation"] = f"no make evaluate report for dataset {dataset_id} (its data or feature code changed)"
    return out
