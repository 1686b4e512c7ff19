"""The model registry's contract and the shipped models."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from models import train
from personalize.serving import ranking
from personalize.serving.models import Manifest, ModelError, Ranker, load_folder, verify

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


def champion() -> str:
    return json.loads(train.FLAGS_FILE.read_text())["champion_model"]["default"]


def test_the_flags_champion_is_the_models_best_on_validation():
    name, version = champion().split("/")
    assert version == train.VERSION
    cards = {n: json.loads((MODELS / n / train.VERSION / "manifest.json").read_text()) for n in train.MODELS}
    assert cards[name]["role"] == "champion"
    assert max(cards, key=lambda n: cards[n]["metrics"]["validation"]["ndcg_at_10"]) == name


def test_champion_beats_every_baseline_on_test_with_the_paired_interval_above_zero():
    m = json.loads((MODELS / champion() / "manifest.json").read_text())["metrics"]
    for baseline in ("popularity", "repeat", "decayed"):
        low, high = m["paired_vs_baseline"][baseline]["ndcg_at_10_ci95"]
        assert 0 < low <= m["paired_vs_baseline"][baseline]["ndcg_at_10"] <= high
    assert m["test"]["ndcg_at_10"] > m["baseline_decayed"]["ndcg_at_10"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_rows_score_does_not_depend_on_its_batch(name):
    ranker = load_folder(MODELS / name / train.VERSION)
    rng = np.random.default_rng(1)
    X = rng.random((500, len(ranking.FEATURES)), dtype=np.float32) * rng.choice([1, 5, 50], len(ranking.FEATURES))
    X = X.astype(np.float32)
    together = ranker.score(X)
    alone = np.array([ranker.score(X[i:i + 1])[0] for i in range(0, 500, 25)])
    np.testing.assert_allclose(alone, together[::25], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ranker.score(X[::-1])[::-1], together, rtol=0, atol=1e-6)


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



def test_serving_defaults_to_the_flags_champion_before_any_flags_load():
    from personalize.settings import DEFAULT_CHAMPION

    assert DEFAULT_CHAMPION == champion()


def test_static_int8_keeps_the_output_layer_float_so_scores_keep_their_resolution():
    """make train's int8 (learners.quantize_static): the hidden layers int8, the output layer
    float. Quantized too, the output has at most 256 levels and ties the top 10 (v3's 24%)."""
    import onnx

    from models import learners

    float_bytes = (MODELS / "ranker-mlp" / "v4" / "model.onnx").read_bytes()
    features = json.loads((MODELS / "ranker-mlp" / "v4" / "manifest.json").read_text())["features"]
    rng = np.random.default_rng(3)
    X = np.abs(rng.normal(1.0, 1.0, (3000, len(features)))).astype(np.float32)
    int8 = learners.quantize_static(float_bytes, X[:2000])
    ops = [n.op_type for n in onnx.load_from_string(int8).graph.node]
    head = learners.float_head(float_bytes)
    assert ops.count("QuantizeLinear") > 0  # the hidden layers are quantized
    produced = {o: n for n in onnx.load_from_string(int8).graph.node for o in n.output}
    last_matmul = next(n for n in onnx.load_from_string(int8).graph.node if n.name == head[0])
    # the output layer's input comes from a dequantized activation, and its weights stay float
    assert last_matmul.op_type == "MatMul" and produced[last_matmul.input[0]].op_type == "DequantizeLinear"
    assert last_matmul.input[1] not in produced  # a float initializer, not a DequantizeLinear's output
    wide = np.zeros((3000, len(ranking.FEATURES)), dtype=np.float32)
    wide[:, [ranking.INDEX[f] for f in features]] = X
    scores = learners.ranker_for("ranker-mlp", int8, features).score(wide)
    assert len(np.unique(scores)) > 1000  # float resolution: a per-tensor int8 output has <= 256 levels


def _graph(names: list[str], extra_output_last: bool = True) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {k: numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), k)
         for k, shape in (("W1", (4, 8)), ("W2", (8, 1)), ("W3", (8, 2)))}
    a, b, c, d, e = names
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name=a), helper.make_node("Relu", ["h"], ["r"], name=b),
             helper.make_node("MatMul", ["r", "W2"], ["logit"], name=c),
             helper.make_node("Sigmoid", ["logit"], ["probabilities"], name=d),
             helper.make_node("MatMul", ["r", "W3"], ["extra"], name=e)]
    outs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("extra", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              outs if extra_output_last else outs[::-1], list(w.values()))
    return onnx.helper.make_model(graph).SerializeToString()


def test_the_float_head_is_the_layer_that_makes_the_score_whatever_else_the_graph_outputs():
    from models import learners

    # the score's MatMul and what follows it, not a second head's (listed last, or first)
    for last in (True, False):
        assert learners.float_head(_graph(["m1", "relu", "m2", "sig", "m3"], last)) == ["m2", "sig"]
    with pytest.raises(ValueError, match="names"):  # nodes_to_exclude goes by name
        learners.float_head(_graph(["m1", "", "m2", "", "m3"]))
    with pytest.raises(ValueError, match="names"):
        learners.float_head(_graph(["m1", "x", "m2", "x", "m3"]))
