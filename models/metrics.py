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
