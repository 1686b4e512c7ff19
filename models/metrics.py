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


# --- honest ranking: ties broken at random, never by the candidate order ------------------


def top_k_random_ties(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the k best scores, best first; equal scores in a random (seeded) order.

    The candidates arrive in the candidate generator's order (the shopper's own items by
    decayed frequency first): breaking ties by position would credit that heuristic with
    what the model left undecided."""
    n = len(scores)
    if n <= k:
        pool = np.arange(n)
    else:
        part = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[part].min()
        pool = np.flatnonzero(scores >= threshold)
    order = np.lexsort((rng.random(len(pool)), -scores[pool]))[:k]
    return pool[order]


def from_hits(hits: np.ndarray, n_true: int) -> tuple[float, float, float]:
    """(NDCG@k, HitRate@k, Recall@k) of a top-k list's hits (best first)."""
    hits = hits.astype(float)
    dcg = float((hits * _DISCOUNTS[: len(hits)]).sum())
    ideal = float(_DISCOUNTS[: min(n_true, K)].sum())
    n_hits = hits.sum()
    return (dcg / ideal if ideal else 0.0, float(n_hits > 0), n_hits / n_true if n_true else 0.0)


def per_decision(score_lists, ys, n_trues, seed: int) -> np.ndarray:
    """[decisions, 3]: NDCG@10, HitRate@10, Recall@10, ties broken at random (seeded per
    decision, so two rankers with the same ties get the same draw)."""
    out = np.zeros((len(score_lists), 3))
    for g, (s, y, n) in enumerate(zip(score_lists, ys, n_trues)):
        top = top_k_random_ties(np.asarray(s), K, np.random.default_rng([seed, g]))
        out[g] = from_hits(y[top], int(n))
    return out


def tie_share(score_lists, k: int = K) -> dict[str, float]:
    """How often a ranker leaves its top k undecided: ``boundary``, the share of decisions
    where the k-th and (k+1)-th scores are equal (which items make the list is a tie-break);
    ``any``, where any two of the first k+1 scores are equal (order or membership)."""
    boundary = anything = 0
    for s in score_lists:
        s = np.sort(np.asarray(s, dtype=np.float64))[::-1][: k + 1]
        if len(s) > k and s[k - 1] == s[k]:
            boundary += 1
        if len(s) > 1 and np.any(s[1:] == s[:-1]):
            anything += 1
    n = max(len(score_lists), 1)
    return {"boundary": round(boundary / n, 4), "any": round(anything / n, 4)}


Z_95 = 1.959964
Z_80_POWER = 0.841621


def mde(diff: np.ndarray) -> float:
    """The minimum detectable effect of a paired comparison at this sample size: the true
    mean difference a two-sided 5% test detects with 80% power, (z_.975 + z_.8) x sd / sqrt(n)."""
    n = len(diff)
    if n < 2:
        return float("inf")
    return float((Z_95 + Z_80_POWER) * np.std(diff, ddof=1) / np.sqrt(n))


def paired_report(rows: np.ndarray, other: np.ndarray, seed: int = 0) -> dict:
    """``paired`` plus the NDCG@10 difference's minimum detectable effect and sample size."""
    out = paired(rows, other, seed)
    out["ndcg_at_10_mde"] = round(mde(rows[:, 0] - other[:, 0]), 6)
    out["n"] = int(len(rows))
    return out
