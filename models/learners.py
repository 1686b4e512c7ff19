"""The learners ``make retrain`` and ``make evaluate`` fit, and their export to the ONNX that
serving runs (``personalize.serving.models.Ranker``).

* ``ranker-linear``, ``ranker-mlp``: scikit-learn, exported by skl2onnx (int8 when that is
  no worse on validation, batch-independent and leaves the top 10 no more undecided);
* ``ranker-lgbm``: LightGBM lambdarank (the ranking objective, one group per decision),
  exported by ``lgbm_to_onnx`` to an ONNX ``TreeEnsembleRegressor`` whose thresholds are the
  float32 values that make every comparison exactly LightGBM's on float32 features.
"""

from __future__ import annotations

import copy
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from personalize.serving.models import Manifest, Ranker

SEED = 20261126
MLP_MAX_EPOCHS = 30
# What the Instacart sample supports: carts and purchases, no views, clicks, categories,
# prices or countries, so no feature built from those.
FEATURES = [
    "ui_decayed", "ui_basket_rate", "ui_rate_since_first", "ui_orders_since_log", "ui_days_since_purchase_log",
    "ui_cycle_log",
    "ui_purchases_log", "ui_carts_log", "ui_days_since_log", "ui_in_session", "ui_in_recent",
    "session_covisit_log", "copurchase_log", "covisit_log", "context_covisit_log",
    "user_orders_log", "user_basket_log", "user_reorder_share", "user_order_cycle_log", "user_days_since_log",
    "session_items_log",
    "item_purchases_log", "item_reorder_ratio", "item_popularity_log", "popular_rank_log",
]
LINEAR = "logistic regression on standardised features"
LEARNERS = {
    "ranker-lgbm": "LightGBM lambdarank (one group per decision), exported as an ONNX tree ensemble",
    "ranker-mlp": "MLP (64, 32) on standardised features",
    "ranker-linear": LINEAR,
    "ranker-gbdt": "gradient-boosted trees (scikit-learn HistGradientBoosting, binary log-loss)",
}


def log(message: str) -> None:
    print(f"train: {message}", file=sys.stderr, flush=True)


# --- learners -------------------------------------------------------------------------


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit(name: str, X: np.ndarray, y: np.ndarray, holdout: np.ndarray) -> tuple[object, dict]:
    """The fitted model and how training went. ``holdout``: rows of the early-stopping
    shoppers (grouped by shopper, so no order is on both sides)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit_rows = ~holdout
    if name == "ranker-linear":
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=SEED))
        model.fit(X, y)
        lr = model.steps[-1][1]
        return model, {"iterations": int(lr.n_iter_[0]), "converged": bool(lr.n_iter_[0] < 2000)}
    if name == "ranker-gbdt":
        # Grown 25 trees at a time on the other shoppers while the held-out shoppers' log-loss
        # improves; the best ensemble is kept (no refit: the held-out tenth only stops it).
        model = HistGradientBoostingClassifier(max_iter=25, warm_start=True, learning_rate=0.1, max_leaf_nodes=31,
                                               min_samples_leaf=200, l2_regularization=1.0, early_stopping=False,
                                               random_state=SEED)

        def grow(n: int):
            model.set_params(max_iter=n)
            model.fit(X[fit_rows], y[fit_rows])
            return model, model.predict_proba(X[holdout])[:, 1]

        best_model, history = _early_stopped(name, "trees", range(25, 301, 25), grow, y[holdout], patience=2)
        return best_model, {"iterations": best_model.max_iter, "early_stopping_logloss": history}
    # MLP: epochs until the held-out shoppers' log-loss stops improving (patience 3).
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X).astype(np.float32)
    mlp = MLPClassifier(hidden_layer_sizes=(64, 32), alpha=1e-4, batch_size=1024, learning_rate_init=1e-3,
                        random_state=SEED, shuffle=True)

    def epoch(_: int):
        mlp.partial_fit(Xs[fit_rows], y[fit_rows], classes=np.array([0, 1]))
        return mlp, mlp.predict_proba(Xs[holdout])[:, 1]

    best_model, history = _early_stopped(name, "epoch", range(1, MLP_MAX_EPOCHS + 1), epoch, y[holdout], patience=3)
    from sklearn.pipeline import Pipeline

    return Pipeline([("standardscaler", scaler), ("mlpclassifier", best_model)]), {
        "epochs": len(history), "best_epoch": int(min(history, key=lambda h: h[1])[0]),
        "early_stopping_logloss": history}


def _early_stopped(name: str, unit: str, steps, step, y_holdout: np.ndarray, patience: int):
    """Run ``step(n)`` (which returns the model and its held-out probabilities) for each
    ``n`` of ``steps`` until the held-out log-loss has not improved ``patience`` times; the
    best model (a copy) and the [step, log-loss] history."""
    best, best_model, stale, history = np.inf, None, 0, []
    for n in steps:
        model, p = step(n)
        loss = _logloss(p, y_holdout)
        history.append([n, round(loss, 6)])
        log(f"  {name}: {unit} {n}, held-out log-loss {loss:.5f}")
        if loss < best - 1e-5:
            best, best_model, stale = loss, copy.deepcopy(model), 0
        else:
            stale += 1
            if stale >= patience:
                break
    return best_model, history


def _patch_skl2onnx_hist_trees() -> None:
    """skl2onnx 1.20 passes the leaves' missing-value flag of a HistGradientBoosting tree as a
    Python bool, which onnx's integer attribute refuses: pass it as the int it stands for."""
    from skl2onnx.common import tree_ensemble

    if getattr(tree_ensemble.add_node, "patched", False):
        return
    original = tree_ensemble.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node.patched = True
    tree_ensemble.add_node = add_node


def to_onnx(model, n_features: int) -> bytes:
    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType

    _patch_skl2onnx_hist_trees()
    last = model.steps[-1][1] if hasattr(model, "steps") else model
    onx = convert(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                  options={id(last): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    # skl2onnx may declare the default domain twice; the quantizer needs exactly one.
    unique = {}
    for op in onx.opset_import:
        unique[op.domain or ""] = max(unique.get(op.domain or "", 0), op.version)
    del onx.opset_import[:]
    for domain, version in sorted(unique.items()):
        onx.opset_import.add(domain=domain, version=version)
    return onx.SerializeToString()


def has_matmul(model_bytes: bytes) -> bool:
    import onnx

    return any(n.op_type in ("MatMul", "Gemm") for n in onnx.load_from_string(model_bytes).graph.node)


def float_head(model_bytes: bytes) -> list[str]:
    """The output layer and what follows it: the MatMul (or Gemm) nearest the score serving
    reads (``probabilities`` when the graph has it, else its last output, as ``Ranker``
    picks) and every node downstream of it. Node names must be non-empty and unique
    (``nodes_to_exclude`` goes by name)."""
    import onnx

    graph = onnx.load_from_string(model_bytes).graph
    names = [n.name for n in graph.node]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError("the graph's node names are empty or repeated: its output layer cannot be named")
    outputs = [o.name for o in graph.output]
    scored = "probabilities" if "probabilities" in outputs else outputs[-1]
    producer = {o: n for n in graph.node for o in n.output}
    # the score's ancestors, nearest first (breadth-first from the output)
    order, seen, frontier = [], set(), [scored]
    while frontier:
        nxt = []
        for tensor in frontier:
            node = producer.get(tensor)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            order.append(node)
            nxt.extend(node.input)
        frontier = nxt
    head = next((n for n in order if n.op_type in ("MatMul", "Gemm")), None)
    if head is None:
        raise ValueError(f"no MatMul or Gemm leads to {scored}: nothing to keep float")
    # every node downstream of the head, not only those on the score's path: a quantizable
    # consumer of the score (skl2onnx's ArgMax for the label) would put a QuantizeLinear on it
    descendants, frontier = {head.name}, set(head.output)
    while frontier:
        nxt = set()
        for n in graph.node:
            if n.name not in descendants and frontier & set(n.input):
                descendants.add(n.name)
                nxt.update(n.output)
        frontier = nxt
    return [n for n in names if n in descendants]


def quantize_static(model_bytes: bytes, calibration: np.ndarray, float_output_layer: bool = True,
                    operator_format: bool = False, per_channel: bool = False) -> bytes:
    """Static int8: activation scales fixed from ``calibration`` rows, so a row's score does
    not depend on the rows beside it. ``make train``'s recipe (the defaults): QDQ, per-tensor,
    the output layer float (``float_head``): quantized, its 256 levels tie the 10th place in
    about a quarter of decisions; kept float, the hidden layers' int8 kernels still make the
    model faster than its float twin (tests/bench/quantization.py, which measures the other
    options too: 0.60x at p50, 0.64x at p99 for 300 rows on this CPU). A result with no int8
    layer is refused."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as quantize

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"features": calibration[i:i + 1000]} for i in range(0, len(calibration), 1000)])

        def get_next(self):
            return next(self.batches, None)

    exclude = float_head(model_bytes) if float_output_layer else []
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        fmt = QuantFormat.QOperator if operator_format else QuantFormat.QDQ
        quantize(str(src), str(dst), Reader(), quant_format=fmt, activation_type=QuantType.QInt8,
                 weight_type=QuantType.QInt8, per_channel=per_channel, nodes_to_exclude=exclude)
        out = dst.read_bytes()
    if not any(n.op_type in ("QuantizeLinear", "QLinearMatMul") for n in onnx.load_from_string(out).graph.node):
        raise ValueError("quantize_static quantized nothing: no int8 layer in the result")
    return out


def ranker_for(name: str, model_bytes: bytes, features: list[str] | None = None) -> Ranker:
    manifest = Manifest(name, "eval", hashlib.sha256(model_bytes).hexdigest(), features or FEATURES, {})
    return Ranker(manifest, model_bytes)


def batch_difference(ranker: Ranker, X: np.ndarray) -> float:
    """Largest score difference for the first 10 rows scored alone (one by one) and inside
    a 500-row batch."""
    rows = X[:500]
    together = ranker.score(rows)[:10]
    alone = np.array([ranker.score(rows[i:i + 1])[0] for i in range(min(10, len(rows)))])
    return float(np.abs(together - alone).max())


def latency_us(ranker: Ranker, X: np.ndarray, runs: int = 500) -> tuple[float, float]:
    """onnxruntime p50 and p99 (microseconds) of scoring 300 rows of ``X`` (``make train``
    and ``make bench`` alike), after ``runs // 10`` warm-up calls."""
    rows = X[:300]
    for _ in range(max(1, runs // 10)):
        ranker.score(rows)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        ranker.score(rows)
        times.append((time.perf_counter() - t) * 1e6)
    return round(float(np.percentile(times, 50)), 1), round(float(np.percentile(times, 99)), 1)




# --- LightGBM lambdarank ------------------------------------------------------------------

LGBM_GRID = ({"num_leaves": 15, "min_child_samples": 100}, {"num_leaves": 31, "min_child_samples": 100},
             {"num_leaves": 63, "min_child_samples": 200})
LGBM_MAX_TREES = 600


def lgbm_params(num_leaves: int = 31, min_child_samples: int = 100, learning_rate: float = 0.05) -> dict:
    """Deterministic (one thread order, row-wise histograms): the same data gives the same trees."""
    return {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "lambdarank_truncation_level": 20,
            "num_leaves": num_leaves, "min_child_samples": min_child_samples, "learning_rate": learning_rate,
            "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
            "seed": SEED, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1}


def fit_lambdarank(X: np.ndarray, y: np.ndarray, sizes: np.ndarray, holdout_groups: np.ndarray,
                   params: dict | None = None, max_trees: int = LGBM_MAX_TREES, patience: int = 50):
    """A LightGBM lambdarank booster: one group per decision (``sizes`` rows each), trees
    added while the held-out shoppers' NDCG@10 improves (``holdout_groups``: bool per group;
    the held-out shoppers only stop it). Returns the booster and how training went."""
    import lightgbm as lgb

    row_holdout = np.repeat(holdout_groups, sizes)
    train_set = lgb.Dataset(X[~row_holdout], y[~row_holdout], group=sizes[~holdout_groups], free_raw_data=False)
    valid_set = lgb.Dataset(X[row_holdout], y[row_holdout], group=sizes[holdout_groups], reference=train_set)
    history: dict = {}
    booster = lgb.train(params or lgbm_params(), train_set, num_boost_round=max_trees, valid_sets=[valid_set],
                        valid_names=["holdout"],
                        callbacks=[lgb.early_stopping(patience, verbose=False), lgb.record_evaluation(history)])
    curve = history["holdout"]["ndcg@10"]
    return booster, {"trees": int(booster.best_iteration), "holdout_ndcg_at_10": round(float(max(curve)), 6),
                     "holdout_curve_every_50": [[i + 1, round(v, 6)] for i, v in enumerate(curve) if (i + 1) % 50 == 0]}


def _f32_at_most(value: float) -> np.float32:
    """The largest float32 <= ``value``: for a float32 x, ``x <= value`` iff ``x <= this``."""
    f = np.float32(value)
    if float(f) > value:
        f = np.nextafter(f, np.float32(-np.inf))
    return f


def lgbm_to_onnx(booster, n_features: int, num_iteration: int | None = None) -> bytes:
    """A LightGBM booster's raw score as an ONNX ``TreeEnsembleRegressor`` (ai.onnx.ml 3):
    input ``features`` float32 [N, n_features], output ``scores`` float32 [N, 1]. Numerical
    splits only (the features are never categorical); a NaN goes where LightGBM sends it."""
    import onnx
    from onnx import TensorProto, helper

    dump = booster.dump_model(num_iteration=num_iteration)
    attrs = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
                             "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
                             "target_treeids", "target_nodeids", "target_ids", "target_weights")}
    trees = dump["tree_info"][: num_iteration or None] if num_iteration else dump["tree_info"]
    for tree in trees:
        _add_tree(attrs, tree["tree_index"], tree["tree_structure"])
    ensemble = helper.make_node("TreeEnsembleRegressor", ["features"], ["scores"], domain="ai.onnx.ml",
                                n_targets=1, aggregate_function="SUM", post_transform="NONE", base_values=[0.0],
                                **attrs)
    graph = helper.make_graph([ensemble], "lgbm_lambdarank",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, n_features])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name="models.learners")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _add_tree(attrs: dict, tid: int, root: dict) -> None:
    """One LightGBM tree's nodes into the TreeEnsemble attribute lists (depth first, node ids
    counted from 0 within the tree)."""
    counter = [0]

    def walk(node: dict) -> int:
        nid = counter[0]
        counter[0] += 1
        attrs["nodes_treeids"].append(tid)
        attrs["nodes_nodeids"].append(nid)
        if "split_feature" not in node:
            attrs["nodes_featureids"].append(0)
            attrs["nodes_values"].append(0.0)
            attrs["nodes_modes"].append("LEAF")
            attrs["nodes_truenodeids"].append(0)
            attrs["nodes_falsenodeids"].append(0)
            attrs["nodes_missing_value_tracks_true"].append(0)
            attrs["target_treeids"].append(tid)
            attrs["target_nodeids"].append(nid)
            attrs["target_ids"].append(0)
            attrs["target_weights"].append(float(node.get("leaf_value", 0.0)))
            return nid
        if node.get("decision_type", "<=") != "<=":
            raise ValueError(f"split {node.get('decision_type')!r} is not exported (numerical '<=' only)")
        if node.get("missing_type", "None") == "Zero":
            raise ValueError("zero-as-missing splits are not exported")
        at = len(attrs["nodes_modes"])
        attrs["nodes_featureids"].append(int(node["split_feature"]))
        attrs["nodes_values"].append(float(_f32_at_most(float(node["threshold"]))))
        attrs["nodes_modes"].append("BRANCH_LEQ")
        attrs["nodes_truenodeids"].append(-1)
        attrs["nodes_falsenodeids"].append(-1)
        attrs["nodes_missing_value_tracks_true"].append(int(bool(node.get("default_left", True))))
        attrs["nodes_truenodeids"][at] = walk(node["left_child"])
        attrs["nodes_falsenodeids"][at] = walk(node["right_child"])
        return nid

    walk(root)
