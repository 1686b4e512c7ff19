"""The model registry's contract and the shipped models."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from models import train
from personalize import ranking
from personalize.models import Manifest, ModelError, Ranker, load_folder, verify

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = [pytest.param(name, id=name) for name in train.MODELS]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_scores_300_candidates(name):
    ranker = load_folder(MODELS / name / train.VERSION)
    X = np.random.default_rng(0).random((300, len(ranking.FEATURES)), dtype=np.float32)
    scores = ranker.score(X)
    assert scores.shape == (300,)
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("name", SHIPPED)
def test_manifest_is_a_model_card(name):
    manifest = json.loads((MODELS / name / train.VERSION / "manifest.json").read_text())
    assert manifest["features"] == train.FEATURES
    assert set(manifest["feature_docs"]) == set(train.FEATURES)
    assert manifest["quantization"]["ships"] in ("int8", "float")
    m = manifest["metrics"]
    assert {"ndcg_at_10", "hit_rate_at_10", "recall_at_10"} <= set(m["test"])
    assert 0 < m["candidate_recall"] <= 1
    assert manifest["data"]["orders"] == 15_183


def test_champion_beats_the_stronger_baseline():
    m = json.loads((MODELS / "ranker-mlp" / train.VERSION / "manifest.json").read_text())["metrics"]
    stronger = max(m["baseline_popularity"]["ndcg_at_10"], m["baseline_repeat"]["ndcg_at_10"])
    assert m["test"]["ndcg_at_10"] > stronger


def test_a_tampered_model_file_is_refused():
    folder = MODELS / "ranker-linear" / train.VERSION
    manifest = Manifest.from_dict(json.loads((folder / "manifest.json").read_text()))
    blob = (folder / "model.onnx").read_bytes()
    with pytest.raises(ModelError, match="sha256"):
        verify(manifest, blob + b"\0")


def test_a_model_wanting_features_this_code_lacks_is_refused():
    folder = MODELS / "ranker-linear" / train.VERSION
    blob = (folder / "model.onnx").read_bytes()
    manifest = Manifest("m", "x", hashlib.sha256(blob).hexdigest(), ["ui_purchases_log", "shoe_size"], {})
    with pytest.raises(ModelError, match="shoe_size"):
        Ranker(manifest, blob)

