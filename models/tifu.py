"""TIFU-KNN, a published next-basket baseline (Hu et al., "Modeling Personalized Item
Frequency Information for Next-basket Recommendation", SIGIR 2020), over the whole catalogue.

A shopper's history is a vector over items: their baskets (binary) weighted by the
within-basket decay ``r_b ** (baskets after it)``, split into ``groups`` consecutive groups
(as the authors' code splits it: equal sizes, the later groups one basket longer when it does
not divide), each group averaged, the groups weighted by ``r_g ** (groups after it)`` and
averaged. The prediction is ``alpha * own + (1 - alpha) * mean of the k nearest (Euclidean)
reference shoppers' vectors``. Reference shoppers: the returning shoppers with their training
baskets only (no other shopper's validation or test basket); the shopper themself is not their
own neighbour. Tuned on validation (``tune``), then read on test once.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse

from . import metrics
from .dataset import Basket, Dataset, Groups

GRID = {
    "groups": (1, 3, 7),
    "r_b": (0.8, 0.9, 1.0),
    "r_g": (0.6, 0.7, 0.8, 0.9, 1.0),
    "k": (50, 100, 300),
    "alpha": (0.6, 0.7, 0.8, 0.9, 1.0),
}


@dataclass(frozen=True)
class Params:
    groups: int = 3
    r_b: float = 0.9
    r_g: float = 0.7
    k: int = 100
    alpha: float = 0.9


def _group_bounds(n: int, groups: int) -> list[tuple[int, int]]:
    """[start, end) of each group of ``n`` baskets, as the authors' ``group_history_list``:
    fewer baskets than groups, one group each; else ``groups`` groups of floor(n/groups),
    the last ``n mod groups`` of them one longer."""
    if n < groups:
        return [(i, i + 1) for i in range(n)]
    base, extra = divmod(n, groups)
    bounds, start = [], 0
    for g in range(groups):
        size = base + (1 if g >= groups - extra else 0)
        bounds.append((start, start + size))
        start += size
    return bounds


def history_vector(baskets: list[np.ndarray], n_items: int, p: Params) -> dict[int, float]:
    """The shopper's TIFU vector (sparse, item -> weight) from their baskets, oldest first."""
    n = len(baskets)
    if n == 0:
        return {}
    bounds = _group_bounds(n, p.groups)
    out: dict[int, float] = {}
    n_groups = len(bounds)
    for gi, (start, end) in enumerate(bounds):
        group_w = p.r_g ** (n_groups - 1 - gi) / (end - start) / n_groups
        for b in range(start, end):
            w = group_w * p.r_b ** (n - 1 - b)
            for item in set(baskets[b].tolist()):
                out[item] = out.get(item, 0.0) + w
    return out


def _matrix(vectors: list[dict[int, float]], n_items: int) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    for r, vec in enumerate(vectors):
        rows.extend([r] * len(vec))
        cols.extend(vec.keys())
        vals.extend(vec.values())
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(vectors), n_items), dtype=np.float64)


class TifuKnn:
    """Fitted on the reference shoppers; scores decisions over the whole catalogue."""

    def __init__(self, dataset: Dataset, params: Params):
        self.params = params
        self.n_items = len(dataset.items)
        self.history: dict[str, list[Basket]] = {}
        for b in sorted(dataset.baskets, key=lambda b: (b.user, b.number)):
            self.history.setdefault(b.user, []).append(b)
        ref = {u: [b.products for b in bs if b.split == "train"] for u, bs in self.history.items()
               if bs[0].cohort == "returning"}
        self.ref_users = sorted(u for u, bs in ref.items() if bs)
        self.ref = _matrix([history_vector(ref[u], self.n_items, params) for u in self.ref_users], self.n_items)
        self.ref_sq = np.asarray(self.ref.multiply(self.ref).sum(axis=1)).ravel()
        self.ref_pos = {u: i for i, u in enumerate(self.ref_users)}

    def query_vectors(self, groups: Groups) -> sparse.csr_matrix:
        """Each decision's shopper vector from their baskets before that order."""
        vecs = []
        for user, number in zip(groups.user, groups.order_number):
            prior = [b.products for b in self.history[str(user)] if b.number < int(number)]
            vecs.append(history_vector(prior, self.n_items, self.params))
        return _matrix(vecs, self.n_items)

    def scores(self, groups: Groups) -> np.ndarray:
        """float [decisions, items]."""
        p = self.params
        q = self.query_vectors(groups)
        own = q.toarray()
        if p.alpha >= 1.0 or len(self.ref_users) == 0:
            return own
        q_sq = np.asarray(q.multiply(q).sum(axis=1)).ravel()
        dist = q_sq[:, None] + self.ref_sq[None, :] - 2 * (q @ self.ref.T).toarray()
        for r, user in enumerate(groups.user):  # never one's own neighbour
            pos = self.ref_pos.get(str(user))
            if pos is not None:
                dist[r, pos] = np.inf
        k = min(p.k, len(self.ref_users) - 1) if len(self.ref_users) > 1 else 1
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        neighbours = np.zeros_like(own)
        ref_dense_rows = self.ref
        for r in range(len(own)):
            neighbours[r] = np.asarray(ref_dense_rows[nearest[r]].mean(axis=0)).ravel()
        return p.alpha * own + (1 - p.alpha) * neighbours


def per_decision(scores: np.ndarray, groups: Groups, seed: int) -> np.ndarray:
    """[decisions, 3] NDCG@10, HitRate@10, Recall@10 of catalogue-wide scores (ties broken at
    random, seeded per decision: no item order gets credit)."""
    out = np.zeros((len(groups), 3))
    for g in range(len(groups)):
        truth = groups.truth_of(g)
        y = np.zeros(scores.shape[1], dtype=bool)
        y[truth] = True
        top = metrics.top_k_random_ties(scores[g], metrics.K, np.random.default_rng([seed, g]))
        out[g] = metrics.from_hits(y[top], len(truth))
    return out


def tune(dataset: Dataset, groups: Groups, seed: int, grid: dict | None = None, log=None) -> tuple[Params, dict]:
    """The parameters with the best validation NDCG@10 over ``grid`` (the vectors are built
    once per (groups, r_b, r_g), the neighbours once per k)."""
    grid = grid or GRID
    results: dict[str, float] = {}
    best, best_params = -1.0, None
    for g, rb, rg in itertools.product(grid["groups"], grid["r_b"], grid["r_g"]):
        base = TifuKnn(dataset, Params(g, rb, rg, max(grid["k"]), 1.0))
        own = base.query_vectors(groups)
        own_dense = own.toarray()
        q_sq = np.asarray(own.multiply(own).sum(axis=1)).ravel()
        dist = q_sq[:, None] + base.ref_sq[None, :] - 2 * (own @ base.ref.T).toarray()
        for r, user in enumerate(groups.user):
            pos = base.ref_pos.get(str(user))
            if pos is not None:
                dist[r, pos] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")
        for k in grid["k"]:
            kk = min(k, len(base.ref_users) - 1)
            nb = np.stack([np.asarray(base.ref[order[r, :kk]].mean(axis=0)).ravel() for r in range(len(own_dense))])
            for alpha in grid["alpha"]:
                params = Params(g, rb, rg, k, alpha)
                value = float(per_decision(alpha * own_dense + (1 - alpha) * nb, groups, seed)[:, 0].mean())
                results[_key(params)] = round(value, 6)
                if value > best + 1e-12:
                    best, best_params = value, params
        if log:
            log(f"  tifu-knn groups={g} r_b={rb} r_g={rg}: best so far {best:.4f} {best_params}")
    return best_params, {"grid": {k: list(v) for k, v in grid.items()}, "validation_ndcg_at_10": results,
                         "chosen": asdict(best_params), "chosen_validation_ndcg_at_10": round(best, 6)}


def _key(p: Params) -> str:
    return f"groups={p.groups},r_b={p.r_b},r_g={p.r_g},k={p.k},alpha={p.alpha}"
