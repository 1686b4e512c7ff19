"""``make retrain`` (``make train`` is the same): train candidate rankers on the point-in-time
dataset and register each with a manifest that names its data window and carries
validation figures only.

1. The dataset (``models.dataset``: ``make dataset`` builds it; here it is reused when its
   id matches, else built): the returning shoppers' training decisions train; a tenth of
   those shoppers stop training early (grouped by shopper).
2. Every choice on validation: early stopping's held-out shoppers, int8 or float, and which
   candidate is best. The test window is never read here (it is sealed: ``models.ledger``);
   ``make evaluate`` reads it once per candidate.
3. Each candidate is written to ``models/<name>/<version>/`` (``model.onnx``,
   ``manifest.json``) under the next free version; a candidate byte-identical to a registered
   version is not registered twice. The flags' champion is not changed here: a candidate
   becomes champion after ``make evaluate`` (and, with the online half, the 2% experiment).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from personalize.serving import ranking
from personalize.serving.models import MANIFEST_FILE, MODEL_FILE, Ranker

from . import learners, metrics
from .archive_dataset import DEFAULT_DIR as ARCHIVE_DIR
from .archive_dataset import ArchiveBuilder
from .dataset import DEFAULT_DIR, Dataset, Groups, InstacartBuilder
from .learners import FEATURES, LEARNERS, SEED, batch_difference, has_matmul, latency_us, quantize_static, ranker_for

MODELS_DIR = Path(__file__).resolve().parent
FLAGS_FILE = MODELS_DIR.parent / "infra" / "flags" / "initial.json"
INT8_MAX_NDCG_LOSS = 0.005
INT8_MAX_EXTRA_TIES = 0.01   # int8 may leave at most this much more of the top-10 boundaries to a tie
BATCH_TOLERANCE = 1e-6
HOLDOUT_SHARE = 0.1  # training shoppers held out for early stopping
# An archive with fewer training decisions than this is bootstrapped with the Instacart
# sample's (19,280 of them: ranker-mlp/v4's manifest); one with fewer returning shoppers'
# validation decisions than MIN_VALIDATION leaves the choices to the sample's validation
# (ranker-mlp/v4's 95% interval of NDCG@10 on the sample's 474 is 0.051 wide).
BOOTSTRAP_BELOW = 20_000
MIN_VALIDATION = 500
DEFAULT_LEARNERS = ("ranker-mlp", "ranker-linear")
# The shipped set (the flags' champion and the registry's default challenger): what tests,
# the bench and serving load by default.
VERSION = "v3"
MODELS = {name: LEARNERS[name] for name in DEFAULT_LEARNERS}


def log(message: str) -> None:
    print(f"retrain: {message}", file=sys.stderr, flush=True)


def training_data(*datasets: Dataset,
                  features: list[str] = FEATURES) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """X (the model's features), y, rows per decision, and each decision's shopper: the
    training split's order and session decisions, of every dataset given."""
    cols = [ranking.INDEX[f] for f in features]
    parts = [d.split("train", kind) for d in datasets for kind in ("order", "session")]
    X = np.concatenate([g.X[:, cols] for g in parts]).astype(np.float32)
    y = np.concatenate([g.y for g in parts]).astype(int)
    sizes = np.concatenate([np.diff(g.offsets) for g in parts]).astype(np.int64)
    users = np.concatenate([g.user for g in parts])
    return X, y, sizes, users


def holdout_shoppers(users: np.ndarray, share: float = HOLDOUT_SHARE, seed: int = SEED) -> set[str]:
    unique = sorted(set(users.tolist()))
    return set(np.random.default_rng(seed).choice(unique, max(1, int(len(unique) * share)), replace=False).tolist())


def scores_of(ranker: Ranker, groups: Groups) -> list[np.ndarray]:
    return groups.split_scores(ranker.score(groups.X)) if len(groups) else []


def evaluate_groups(score_lists: list[np.ndarray], groups: Groups, seed: int = SEED) -> np.ndarray:
    """[decisions, 3] NDCG@10, HitRate@10, Recall@10 (ties broken at random, seeded)."""
    ys = [groups.y[groups.rows(g)] for g in range(len(groups))]
    return metrics.per_decision(score_lists, ys, groups.n_true, seed)


def validation_figures(ranker: Ranker, dataset: Dataset) -> dict:
    """The ranker on validation: per cohort (returning shoppers, new shoppers, all), the ties it
    leaves in its top 10, and the in-session task (with the session's events vs blind)."""
    val = dataset.split("validation")
    scores = scores_of(ranker, val)
    rows = evaluate_groups(scores, val)
    out = {"all": metrics.summary(rows, SEED)}
    for cohort in ("returning", "new"):
        mask = val.cohort == cohort
        if mask.any():
            out[cohort] = {**metrics.summary(rows[mask], SEED), "decisions": int(mask.sum())}
            ci = out[cohort]["ndcg_at_10_ci95"]
            out[cohort]["ndcg_at_10_interval_width"] = round(ci[1] - ci[0], 6)
    out["top10_ties"] = metrics.tie_share(scores)
    session, blind = dataset.split("validation", "session"), dataset.split("validation", "blind")
    if len(session) and len(session) == len(blind):
        s_rows = evaluate_groups(scores_of(ranker, session), session)
        b_rows = evaluate_groups(scores_of(ranker, blind), blind)
        out["session"] = {"decisions": len(session), "with_session": metrics.summary(s_rows, SEED),
                          "blind": metrics.summary(b_rows, SEED),
                          "paired_with_minus_blind": metrics.paired(s_rows, b_rows, SEED)}
    return out


def train_candidate(name: str, X: np.ndarray, y: np.ndarray, sizes: np.ndarray, holdout_rows: np.ndarray,
                    holdout_groups: np.ndarray, dataset: Dataset, sample: np.ndarray) -> dict:
    """Fit, export, choose int8 or float on validation; the shipped bytes and how it went."""
    from threadpoolctl import threadpool_limits

    t = time.monotonic()
    if name == "ranker-lgbm":
        booster, how = learners.fit_lambdarank(X, y, sizes, holdout_groups)
        float_bytes = learners.lgbm_to_onnx(booster, len(FEATURES), num_iteration=booster.best_iteration)
    else:
        with threadpool_limits(1):  # multi-threaded sums run in varying order: not reproducible
            model, how = learners.fit(name, X, y, holdout_rows)
        float_bytes = learners.to_onnx(model, len(FEATURES))
    val = dataset.split("validation")
    fr = ranker_for(name, float_bytes)
    float_scores = scores_of(fr, val)
    val_float = evaluate_groups(float_scores, val)
    q = {"float_bytes": len(float_bytes), "float_p50_us": latency_us(fr, sample)[0]}
    ships, why, int8_bytes = "float", "", None
    if has_matmul(float_bytes):
        calibration = X[np.random.default_rng(SEED).choice(len(X), min(5000, len(X)), replace=False)]
        int8_bytes = quantize_static(float_bytes, calibration.astype(np.float32))
        qr = ranker_for(name, int8_bytes)
        int8_scores = scores_of(qr, val)
        delta = float(evaluate_groups(int8_scores, val)[:, 0].mean() - val_float[:, 0].mean())
        batch = batch_difference(qr, sample)
        ties_int8, ties_float = metrics.tie_share(int8_scores), metrics.tie_share(float_scores)
        q.update(int8_bytes=len(int8_bytes), int8_p50_us=latency_us(qr, sample)[0],
                 int8_validation_ndcg_delta=round(delta, 6), int8_batch_max_diff=batch,
                 int8_top10_ties=ties_int8, float_top10_ties=ties_float)
        if delta < -INT8_MAX_NDCG_LOSS:
            why = f"static int8 loses {-delta:.4f} NDCG@10 on validation (> {INT8_MAX_NDCG_LOSS})"
        elif batch > BATCH_TOLERANCE:
            why = f"static int8 scores move {batch:.2e} with the batch"
        elif ties_int8["boundary"] > ties_float["boundary"] + INT8_MAX_EXTRA_TIES:
            why = (f"static int8 leaves the 10th place to a tie in {ties_int8['boundary']:.0%} of validation "
                   f"decisions (float: {ties_float['boundary']:.0%}): its 256 output levels would hand the order "
                   "to the candidate generator's heuristic")
        else:
            # Latency is recorded, never decided on: one timing each, one after the other, moves
            # with the machine's load (training stays reproducible). Whether the recipe is faster
            # is make bench's model.quantization, measured interleaved.
            ships, why = "int8", (f"static int8 is within {INT8_MAX_NDCG_LOSS} NDCG@10 of float on validation "
                                  f"({delta:+.4f}), batch-independent and no more tied (int8 p50 "
                                  f"{q['int8_p50_us']} us against float {q['float_p50_us']} us here, one timing each; "
                                  "make bench's model.quantization compares them interleaved)")
    else:
        why = "no MatMul in this graph (tree ensemble or LinearClassifier op): int8 has nothing to act on"
    shipped = int8_bytes if ships == "int8" else float_bytes
    ranker = ranker_for(name, shipped)
    q.update(ships=ships, why=why, batch_max_diff=batch_difference(ranker, sample),
             method=("onnxruntime.quantization.quantize_static, QDQ, QInt8 activations and weights, the output "
                     "layer float, calibrated on 5,000 training rows") if int8_bytes is not None else "none")
    p50, p99 = latency_us(ranker, sample)
    return {"bytes": shipped, "ranker": ranker, "quantization": q, "training": how,
            "serving": {"p50_us_300_rows": p50, "p99_us_300_rows": p99},
            "seconds": round(time.monotonic() - t, 1)}


def datasets_for(args) -> dict:
    """Which datasets train and which one's validation makes the choices. Without an archive:
    the Instacart sample. With one: its training decisions, and the sample's too while the
    archive holds fewer than ``BOOTSTRAP_BELOW`` of them (a young shop); choices on the
    archive's validation once it holds ``MIN_VALIDATION`` returning shoppers' decisions, else
    on the sample's."""
    built = []

    def instacart() -> Dataset:
        started = time.monotonic()
        d, fresh = InstacartBuilder(users=args.users).load_or_build(args.dataset)
        log(f"dataset {d.id} ({'built' if fresh else 'reused'}, {time.monotonic() - started:.0f}s)")
        built.extend([d.id] if fresh else [])
        return d

    if not args.archive:
        d = instacart()
        return {"train": [d], "choose": d, "all": [d], "bootstrap": None, "built": built}
    started = time.monotonic()
    archived, fresh = ArchiveBuilder(args.archive).load_or_build(args.archive_dataset)
    log(f"dataset {archived.id} ({'built' if fresh else 'reused'}, {time.monotonic() - started:.0f}s)")
    built.extend([archived.id] if fresh else [])
    decisions = sum(len(archived.split("train", kind)) for kind in ("order", "session"))
    validating = len(archived.split("validation", cohort="returning"))
    train, choose, sample = [archived], archived, None
    bootstrap_below, min_validation = args.bootstrap_below, args.min_validation
    if decisions < bootstrap_below or validating < min_validation:
        sample = instacart()
        if decisions < bootstrap_below:
            train.append(sample)
        if validating < min_validation:
            choose = sample
    bootstrap = None if sample is None else {
        "dataset": sample.id, "trains": sample in train, "chooses": choose is sample,
        "why": f"the archive holds {decisions} training decisions (bootstrap below {bootstrap_below}) and "
               f"{validating} returning shoppers' validation decisions (choices on it from {min_validation})"}
    everything = [archived] + ([sample] if sample is not None else [])
    return {"train": train, "choose": choose, "all": everything, "bootstrap": bootstrap, "built": built,
            "archive_training_decisions": decisions}


def registered_versions(out: Path, name: str) -> dict[str, str]:
    """version -> the model file's sha256, for ``models/<name>/v<N>``."""
    found = {}
    for folder in sorted((out / name).glob("v*")):
        if re.fullmatch(r"v\d+", folder.name) and (folder / MANIFEST_FILE).exists():
            found[folder.name] = json.loads((folder / MANIFEST_FILE).read_text())["sha256"]
    return found


def next_version(out: Path, names) -> str:
    """One version number for a retrain's candidates: past every registered version."""
    numbers = [int(v[1:]) for n in names for v in registered_versions(out, n)]
    return f"v{max(numbers, default=0) + 1}"


def main(argv: list[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantizer advice on pre-processing
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="the registry (models/<name>/<version>)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--users", type=int, help="a dataset of the first N shoppers only (tests)")
    parser.add_argument("--learners", nargs="+", choices=sorted(set(LEARNERS) - {"ranker-gbdt"}),
                        default=list(DEFAULT_LEARNERS))
    parser.add_argument("--version", help="register under this version (default: the next free one)")
    parser.add_argument("--archive", help="also train on the shop's own traffic: the archive, a folder (a copy of "
                                          "the bucket) or s3://bucket[/prefix] (models.archive_dataset)")
    parser.add_argument("--archive-dataset", type=Path, default=ARCHIVE_DIR)
    parser.add_argument("--bootstrap-below", type=int, default=BOOTSTRAP_BELOW,
                        help="add the sample's training decisions while the archive has fewer")
    parser.add_argument("--min-validation", type=int, default=MIN_VALIDATION,
                        help="choose on the archive's validation from this many returning shoppers' decisions")
    args = parser.parse_args(argv)
    started = time.monotonic()
    sources = datasets_for(args)
    dataset_s = time.monotonic() - started
    trained_on, chooser = sources["train"], sources["choose"]
    X, y, sizes, users = training_data(*trained_on)
    held = holdout_shoppers(users)
    holdout_groups = np.array([u in held for u in users.tolist()])
    holdout_rows = np.repeat(holdout_groups, sizes)
    sample = chooser.split("validation").X[:500]
    log(f"{len(sizes)} training decisions ({' + '.join(d.id for d in trained_on)}), {len(y)} rows "
        f"({int(y.sum())} positives); {len(held)} shoppers stop training early; choices on {chooser.id}'s validation")
    version = args.version or next_version(args.out, args.learners)
    results = {}
    for name in args.learners:
        c = train_candidate(name, X, y, sizes, holdout_rows, holdout_groups, chooser, sample)
        c["validation"] = validation_figures(c["ranker"], chooser)
        c["validation_elsewhere"] = {d.id: validation_figures(c["ranker"], d) for d in sources["all"]
                                     if d is not chooser and len(d.split("validation"))}
        results[name] = c
        v = c["validation"]
        new = v.get("new", {}).get("ndcg_at_10", float("nan"))
        log(f"{name}: validation NDCG@10 returning {v['returning']['ndcg_at_10']:.4f}, new {new:.4f} "
            f"({c['quantization']['ships']}), {c['seconds']:.0f}s")
    best = max(results, key=lambda n: (results[n]["validation"]["returning"]["ndcg_at_10"], n))
    registered = {}
    for name, c in results.items():
        digest = hashlib.sha256(c["bytes"]).hexdigest()
        same = [v for v, sha in registered_versions(args.out, name).items() if sha == digest]
        if same:
            registered[name] = f"{name}/{same[0]}"
            log(f"{name}: identical to the registered {name}/{same[0]}; not registered again")
            continue
        folder = args.out / name / version
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MODEL_FILE).write_bytes(c["bytes"])
        manifest = {
            "name": name, "version": version,
            "description": f"candidate: {LEARNERS[name]}" + (" (best of this retrain on validation)"
                                                             if name == best else ""),
            "role": "candidate", "sha256": digest, "features": FEATURES,
            "feature_docs": {f: ranking.FEATURE_DOCS[f] for f in FEATURES},
            "output": ("a ranking score (higher first; lambdarank, not a probability)" if name == "ranker-lgbm" else
                       "probabilities[:, 1]: the probability the shopper buys the item (in the next order, or in the "
                       "rest of the current one)"),
            "quantization": c["quantization"], "serving": c["serving"],
            "metrics": {"validation": c["validation"], "validation_dataset": chooser.id,
                        **({"validation_other_datasets": c["validation_elsewhere"]} if c["validation_elsewhere"]
                           else {}),
                        "note": "validation only: the test window is read by `make evaluate`, once per candidate "
                                "(models/test-reads.jsonl), and reported in models/evaluations/"},
            "training": {"library": "scikit-learn 1.9.1 + skl2onnx 1.20.0" if name != "ranker-lgbm"
                         else "lightgbm 4.7.0 (lambdarank) + models.learners.lgbm_to_onnx", "seed": SEED,
                         **c["training"], "seconds": c["seconds"], "rows": int(len(y)), "positives": int(y.sum()),
                         "decisions": int(len(sizes)), "negatives_kept": chooser.window["params"]["negatives_kept"],
                         "datasets": [d.id for d in trained_on],
                         "early_stopping": f"{len(held)} training shoppers ({HOLDOUT_SHARE:.0%}) held out"},
            "data": {"window": chooser.window, "training_windows": {d.id: d.window for d in trained_on},
                     "bootstrap": sources["bootstrap"]},
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        registered[name] = f"{name}/{version}"
        log(f"registered {name}/{version}")
    seconds = time.monotonic() - started
    summary = {"registered": registered, "best_on_validation": registered[best], "dataset": chooser.id,
               "trained_on": [d.id for d in trained_on], "bootstrap": sources["bootstrap"],
               "archive_training_decisions": sources.get("archive_training_decisions"),
               "dataset_built": bool(sources["built"]), "datasets_built": sources["built"],
               "dataset_seconds": round(dataset_s, 1), "seconds": round(seconds, 1)}
    print(json.dumps(summary))
    log(f"done in {seconds:.0f}s; best on validation (returning shoppers): {registered[best]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
