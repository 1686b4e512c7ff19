"""Does int8 pay for itself? (``model.quantization`` in build/bench.json, issue 23 item 2)

The newest registered MLP's float graph (``models/ranker-mlp/<newest>/model.onnx`` is float
when its manifest says so) against its int8 twins made by onnxruntime's quantizer, each
calibrated on the same 5,000 training rows of the Instacart dataset (``make train``'s:
its order and session decisions), measured in one run,
interleaved, on the same 300 validation rows:

* ``qdq``: static QDQ, per-tensor, every layer (what ``make train`` tried until 2026-12-06:
  the ``v3`` champion);
* ``qdq_per_channel``: static QDQ, per-channel weights;
* ``qoperator``: static, operator format (QLinearMatMul: fused integer kernels);
* ``qdq_float_head``: static QDQ with the last layer (MatMul, Add, Sigmoid) left in float,
  so that the score keeps float resolution (the per-tensor twin's 256 output levels tie the
  10th place in about a quarter of decisions): what ``make train`` tries since 2026-12-06
  (``learners.quantize_static``);
* ``dynamic``: dynamic (MatMulInteger): activations scaled per call, so a row's score moves
  with the rows beside it (``batch_max_diff``), which serving cannot accept.

For each: p50/p99 microseconds for 300 rows (``learners.latency_us``, rounds alternating
between variants, each round starting with the next one), bytes, the validation NDCG@10
difference with float (returning and new shoppers together), the share of validation
decisions whose 10th place is a tie, and the largest score difference between a row
alone and in a batch. ``pays`` names the variants that are faster than float at p50 and
p99 with no NDCG loss beyond ``train.INT8_MAX_NDCG_LOSS``, no more ties than
``train.INT8_MAX_EXTRA_TIES`` above float and batch-independent.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from models import learners, metrics, train
from models.dataset import DEFAULT_DIR, Dataset

ROUNDS = 7
RUNS = 400


def _variants(float_bytes: bytes, calibration: np.ndarray) -> dict[str, bytes]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize = learners.quantize_static
    out = {"float": float_bytes,
           "qdq": quantize(float_bytes, calibration, float_output_layer=False),
           "qdq_per_channel": quantize(float_bytes, calibration, float_output_layer=False, per_channel=True),
           "qoperator": quantize(float_bytes, calibration, float_output_layer=False, operator_format=True),
           "qdq_float_head": quantize(float_bytes, calibration)}  # make train's own
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "dynamic.onnx"
        src.write_bytes(float_bytes)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        out["dynamic"] = dst.read_bytes()
    return out


def run(folder: Path | None = None, dataset_dir: Path = DEFAULT_DIR) -> dict:
    if folder is None:
        versions = sorted((p for p in (train.MODELS_DIR / "ranker-mlp").iterdir() if (p / "manifest.json").exists()),
                          key=lambda p: int(p.name.lstrip("v")))
        folder = next(p for p in reversed(versions)
                      if json.loads((p / "manifest.json").read_text())["quantization"]["ships"] == "float")
    if not (dataset_dir / "window.json").exists():
        return {"skipped": f"no dataset in {dataset_dir}: make dataset"}
    dataset = Dataset.load(dataset_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    features = manifest["features"]
    X, *_ = train.training_data(dataset, features=features)  # as make train calibrates
    calibration = X[np.random.default_rng(train.SEED).choice(len(X), min(5000, len(X)), replace=False)]
    variants = _variants((folder / "model.onnx").read_bytes(), calibration.astype(np.float32))
    rankers = {name: learners.ranker_for("ranker-mlp", data, features) for name, data in variants.items()}
    val = dataset.split("validation")
    sample = val.X[:500]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in rankers}
    names = list(rankers)
    for r in range(ROUNDS):  # interleaved, the order rotated: the machine's moods fall on every variant alike
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(learners.latency_us(rankers[name], sample, runs=RUNS))
    out: dict = {"model": f"ranker-mlp/{folder.name}", "rows": 300, "rounds": ROUNDS, "runs_per_round": RUNS}
    base = None
    for name, ranker in rankers.items():
        scores = train.scores_of(ranker, val)
        rows = train.evaluate_groups(scores, val)
        ndcg = float(rows[:, 0].mean())
        ties = metrics.tie_share(scores)["boundary"]
        p50 = float(np.median([t[0] for t in times[name]]))
        p99 = float(np.median([t[1] for t in times[name]]))
        if base is None:
            base = {"ndcg": ndcg, "ties": ties, "p50": p50, "p99": p99}
        out[name] = {"bytes": len(variants[name]), "p50_us": round(p50, 1), "p99_us": round(p99, 1),
                     "p50_ratio_to_float": round(p50 / base["p50"], 3),
                     "p99_ratio_to_float": round(p99 / base["p99"], 3),
                     "validation_ndcg_delta": round(ndcg - base["ndcg"], 6), "top10_boundary_ties": round(ties, 4),
                     "batch_max_diff": learners.batch_difference(ranker, sample)}
    out["pays"] = [name for name in rankers if name != "float"
                   and out[name]["p50_ratio_to_float"] < 1 and out[name]["p99_ratio_to_float"] < 1
                   and out[name]["validation_ndcg_delta"] >= -train.INT8_MAX_NDCG_LOSS
                   and out[name]["top10_boundary_ties"] <= base["ties"] + train.INT8_MAX_EXTRA_TIES
                   and out[name]["batch_max_diff"] <= train.BATCH_TOLERANCE]
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
