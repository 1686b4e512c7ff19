"""Model figures for build/bench.json (`model`): the shipped models' manifests (measured by
`make train` on the real Instacart sample) and onnxruntime latency for 300 candidates."""

from __future__ import annotations

import json

import numpy as np

from infra.local.template import ROOT
from models import train
from personalize.serving import ranking
from personalize.serving.models import load_folder


def run() -> dict:
    out: dict = {}
    champion = json.loads(train.FLAGS_FILE.read_text())["champion_model"]["default"]
    for name in train.MODELS:
        folder = ROOT / "models" / name / train.VERSION
        manifest = json.loads((folder / "manifest.json").read_text())
        m, q = manifest["metrics"], manifest["quantization"]
        rows = np.random.default_rng(0).random((300, len(ranking.FEATURES)), dtype=np.float32)
        p50, p99 = train.latency_us(load_folder(folder), rows, runs=3000)
        out[name] = {
            "ndcg_at_10": m["test"]["ndcg_at_10"], "ndcg_at_10_ci95": m["test"]["ndcg_at_10_ci95"],
            "hit_rate_at_10": m["test"]["hit_rate_at_10"], "recall_at_10": m["test"]["recall_at_10"],
            "validation_ndcg_at_10": m["validation"]["ndcg_at_10"],
            "float_bytes": q["float_bytes"], "int8_bytes": q.get("int8_bytes"),
            "int8_ndcg_delta": q.get("int8_validation_ndcg_delta"), "ships": q["ships"],
            "batch_max_diff": q["batch_max_diff"], "p50_us": round(p50, 1), "p99_us": round(p99, 1),
        }
        out["baseline_popularity_ndcg_at_10"] = m["baseline_popularity"]["ndcg_at_10"]
        out["baseline_repeat_ndcg_at_10"] = m["baseline_repeat"]["ndcg_at_10"]
        out["baseline_decayed_ndcg_at_10"] = m["baseline_decayed"]["ndcg_at_10"]
        out["baseline_decayed_lambda"] = m["baseline_decayed"]["decay"]
        out["baseline_decayed_full_history_ndcg_at_10"] = m["baseline_decayed_full_history"]["ndcg_at_10"]
        out["candidate_recall"] = m["candidate_recall"]
        out["user_row_bytes_p50"] = manifest["data"]["user_row_bytes"]["p50"]
        out["user_row_bytes_p99"] = manifest["data"]["user_row_bytes"]["p99"]
        if f"{name}/{train.VERSION}" == champion:
            session = m["session"]
            out["champion"] = champion
            out["champion_ndcg_at_10"] = m["test"]["ndcg_at_10"]
            out["champion_ndcg_at_10_ci95"] = m["test"]["ndcg_at_10_ci95"]
            for base in ("popularity", "repeat", "decayed"):
                paired = m["paired_vs_baseline"][base]
                out[f"champion_minus_{base}_ndcg_at_10"] = paired["ndcg_at_10"]
                out[f"champion_minus_{base}_ndcg_at_10_ci95"] = paired["ndcg_at_10_ci95"]
            out["session_ndcg_at_10"] = session["with_session"]["ndcg_at_10"]
            out["session_blind_ndcg_at_10"] = session["blind"]["ndcg_at_10"]
            out["session_minus_blind_ndcg_at_10"] = session["paired_with_minus_blind"]["ndcg_at_10"]
            out["session_minus_blind_ndcg_at_10_ci95"] = session["paired_with_minus_blind"]["ndcg_at_10_ci95"]
            out["session_baseline_decayed_ndcg_at_10"] = session["baseline_decayed"]["ndcg_at_10"]
            # What the session adds beyond knowing the cart (the blind ranker with the cart's
            # items taken out of its candidates by the evaluator).
            out["session_blind_cart_removed_ndcg_at_10"] = session["blind_cart_removed"]["ndcg_at_10"]
            beyond = session["paired_with_minus_blind_cart_removed"]
            out["session_minus_blind_cart_removed_ndcg_at_10"] = beyond["ndcg_at_10"]
            out["session_minus_blind_cart_removed_ndcg_at_10_ci95"] = beyond["ndcg_at_10_ci95"]
    return out
