"""Ranking metrics over examples, with the true items outside the candidates counted as
misses (so a weak candidate generator cannot flatter the ranker)."""

from __future__ import annotations

import numpy as np

K = 10
_DISCOUNTS = 1.0 / np.log2(np.arange(2, K + 2))


def at_k(scores: np.ndarray, y: np.ndarray, n_true: int, k: int = K) -> tuple[float, float, float]:
    """(NDCG@k, HitRate@k, Recall@k) for one example."""
    order = np.lexsort((np.arange(len(scores)), -scores))[:k]
    hits = y[order].astype(float)
    dcg = float((hits * _DISCOUNTS[: len(hits)]).sum())
    ideal = float(_DISCOUNTS[: min(n_true, k)].sum())
    n_hits = hits.sum()
    return (dcg / ideal if ideal else 0.0, float(n_hits > 0), n_hits / n_true if n_true else 0.0)


def mean_at_k(score_lists, ys, n_trues) -> dict[str, float]:
    rows = np.array([at_k(s, y, n) for s, y, n in zip(score_lists, ys, n_trues)])
    return {"ndcg_at_10": float(rows[:, 0].mean()), "hit_rate_at_10": float(rows[:, 1].mean()),
            "recall_at_10": float(rows[:, 2].mean())}


def candidate_recall(ys, n_trues) -> float:
    """Share of the orders' true items that the candidate generator found."""
    return float(sum(int(y.sum()) for y in ys) / sum(n_trues))


def per_example(score_lists, ys, n_trues) -> np.ndarray:
    """[examples, 3]: NDCG@10, HitRate@10, Recall@10 of each example."""
    return np.array([at_k(s, y, n) for s, y, n in zip(score_lists, ys, n_trues)]).reshape(-1, 3)


NAMES = ("ndcg_at_10", "hit_rate_at_10", "recall_at_10")
BOOTSTRAP_SAMPLES = 2000


def _resample_means(values: np.ndarray, seed: int) -> np.ndarray:
    """Means of ``BOOTSTRAP_SAMPLES`` resamples (with replacement, one example per shopper:
    the examples are independent shoppers), seeded."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(BOOTSTRAP_SAMPLES, len(values)))
    return values[idx].mean(axis=1)


def summary(rows: np.ndarray, seed: int = 0) -> dict:
    """Each metric's mean and its 95% percentile-bootstrap interval."""
    out = {}
    for i, name in enumerate(NAMES):
        means = _resample_means(rows[:, i], seed)
        out[name] = round(float(rows[:, i].mean()), 6)
        out[f"{name}_ci95"] = [round(float(np.percentile(means, 2.5)), 6), round(float(np.percentile(means, 97.5)), 6)]
    return out


def paired(rows: np.ndarray, other: np.ndarray, seed: int = 0) -> dict:
    """Mean difference (rows - other, example by example) and its 95% bootstrap interval."""
    out = {}
    for i, name in enumerate(NAMES):
        diff = rows[:, i] - other[:, i]
        means = _resample_means(diff, seed)
        out[name] = round(float(diff.mean()), 6)
        out[f"{name}_ci95"] = [round(float(np.percentile(means, 2.5)), 6), round(float(np.percentile(means, 97.5)), 6)]
    return out
