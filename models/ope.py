"""Off-policy estimates of a candidate's click and conversion rates from logged decisions.

The input (``LoggedSlots``) is one row per shown slot of a logged decision: which decision
(rows of one decision are resampled together), the slot, the rewards that followed (click,
conversion: 0/1), the probability that the *logging* policy showed that item in that slot
(``pscore``, logged by serving with the decision), the probability that the *target* policy
would (``target_pscore``), and for the doubly robust estimator a reward model's prediction for
the logged item (``q_logged``) and its expectation under the target for that slot
(``q_target`` = sum over items of target probability x predicted reward). ``from_decisions``
builds it from decisions in the archive's JSON shape.

The estimand is the target's mean reward per shown slot (the click-through rate per slot, as
the Open Bandit Pipeline defines a policy's value). Estimators:

* ``snips``: self-normalised inverse propensity scoring, sum(w r) / sum(w), w = target / logging;
* ``dr``: doubly robust, mean(q_target + w (r - q_logged)): unbiased when the propensities are
  right, lower variance when the reward model is good;
* ``ips`` and ``dm`` (the reward model alone) for comparison.

Intervals: normal, from the decision-clustered (sandwich) variance of each estimator as a
ratio of per-decision sums; SNIPS by the delta method. Unbiasedness needs the logging policy
to show, with a known non-zero probability, every item the target would show in that slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr")


@dataclass
class LoggedSlots:
    decision: np.ndarray       # int [rows]: rows of one decision share an id (the resampling unit)
    slot: np.ndarray           # int [rows]: position, 0 = first
    item: np.ndarray           # int [rows]: the logged item's code
    rewards: dict              # name -> float [rows] (e.g. "click", "conversion")
    pscore: np.ndarray         # float [rows]: logging policy's P(item in slot | context), > 0
    target_pscore: np.ndarray  # float [rows]: target policy's P(item in slot | context)
    q_logged: dict | None = None   # name -> float [rows]: reward model at the logged item
    q_target: dict | None = None   # name -> float [rows]: sum_a target(a, slot) x reward model(a, slot)

    def __post_init__(self):
        n = len(self.decision)
        for name, arr in (("slot", self.slot), ("item", self.item), ("pscore", self.pscore),
                          ("target_pscore", self.target_pscore)):
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows, decision has {n}")
        if n and (not np.all(np.isfinite(self.pscore)) or np.any(self.pscore <= 0) or np.any(self.pscore > 1)):
            raise ValueError("every logged pscore must be in (0, 1]: a slot shown with unknown or zero probability "
                             "cannot be reweighted")
        if n and (not np.all(np.isfinite(self.target_pscore)) or np.any(self.target_pscore < 0)
                  or np.any(self.target_pscore > 1)):
            raise ValueError("target_pscore must be in [0, 1]")
        if n and np.any(self.slot < 0):
            raise ValueError("slots count from 0")

    @property
    def weights(self) -> np.ndarray:
        return self.target_pscore / self.pscore


def _ratio(num: np.ndarray, den: np.ndarray, decision: np.ndarray, level: float) -> dict:
    """sum(num) / sum(den) with a normal interval from the decision-clustered variance."""
    _, cluster = np.unique(decision, return_inverse=True)
    n_c = cluster.max() + 1 if len(cluster) else 0
    a = np.bincount(cluster, weights=num, minlength=n_c)
    b = np.bincount(cluster, weights=den, minlength=n_c)
    total_b = b.sum()
    if n_c < 2 or total_b <= 0:
        return {"estimate": float("nan"), "low": float("nan"), "high": float("nan"), "se": float("nan"),
                "decisions": int(n_c)}
    value = a.sum() / total_b
    resid = a - value * b
    se = float(np.sqrt((resid ** 2).sum() * n_c / (n_c - 1)) / total_b)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return {"estimate": float(value), "low": float(value - z * se), "high": float(value + z * se), "se": se,
            "decisions": int(n_c)}


def estimate(logs: LoggedSlots, reward: str, estimator: str, level: float = 0.9) -> dict:
    """One estimator's value and ``level`` interval for one reward."""
    r = np.asarray(logs.rewards[reward], dtype=np.float64)
    w = logs.weights
    ones = np.ones(len(r))
    if estimator == "ips":
        return _ratio(w * r, ones, logs.decision, level)
    if estimator == "snips":
        return _ratio(w * r, w, logs.decision, level)
    if logs.q_logged is None or logs.q_target is None:
        raise ValueError(f"{estimator} needs a reward model (q_logged, q_target)")
    q_l, q_t = np.asarray(logs.q_logged[reward]), np.asarray(logs.q_target[reward])
    if estimator == "dm":
        return _ratio(q_t, ones, logs.decision, level)
    if estimator == "dr":
        return _ratio(q_t + w * (r - q_l), ones, logs.decision, level)
    raise ValueError(f"unknown estimator {estimator!r}; known: {ESTIMATORS}")


def report(logs: LoggedSlots, estimators=("snips", "dr"), level: float = 0.9) -> dict:
    """Every estimator for every reward, with the on-policy mean of the logs beside them and
    the effective sample size of the weights (small: the estimate leans on few rows)."""
    w = logs.weights
    out = {"rows": int(len(w)), "decisions": int(len(np.unique(logs.decision))), "level": level,
           "weights": {"mean": round(float(w.mean()), 4) if len(w) else None,
                       "max": round(float(w.max()), 2) if len(w) else None,
                       "effective_rows": round(float(w.sum() ** 2 / max((w ** 2).sum(), 1e-300)), 1)}}
    for reward in logs.rewards:
        out[reward] = {"logged_mean": float(np.mean(logs.rewards[reward])) if len(w) else None}
        for name in estimators:
            out[reward][name] = estimate(logs, reward, name, level)
    return out


# --- a reward model for DR: per (item, slot) mean, cross-fitted ----------------------------


def cross_fitted_item_slot_model(logs: LoggedSlots, target_items: np.ndarray, target_probs: np.ndarray,
                                 folds: int = 2, prior: float = 20.0, seed: int = 0) -> tuple[dict, dict]:
    """``q_logged`` and ``q_target`` from a smoothed mean reward per (item, slot) (shrunk
    towards the fold's mean by ``prior`` pseudo-rows), each fold's rows predicted by a model
    fitted on the other folds' decisions, so a row's own reward never predicts itself.

    ``target_items``, ``target_probs`` [rows, m]: the target's distribution over items for
    each row's slot (a deterministic target: one item, probability 1). Items are int codes."""
    rng = np.random.default_rng(seed)
    ids, cluster = np.unique(logs.decision, return_inverse=True)
    fold_of = rng.integers(0, folds, len(ids))[cluster]
    item = logs.item.astype(np.int64)
    n_items = int(max(item.max(initial=0), target_items.max(initial=0))) + 1
    n_slots = int(logs.slot.max(initial=0)) + 1
    q_logged, q_target = {}, {}
    for reward, r in logs.rewards.items():
        r = np.asarray(r, dtype=np.float64)
        ql, qt = np.zeros(len(r)), np.zeros(len(r))
        for f in range(folds):
            fit, use = fold_of != f, fold_of == f
            base = r[fit].mean() if fit.any() else 0.0
            sums = np.zeros((n_items, n_slots))
            counts = np.zeros((n_items, n_slots))
            np.add.at(sums, (item[fit], logs.slot[fit]), r[fit])
            np.add.at(counts, (item[fit], logs.slot[fit]), 1.0)
            table = (sums + prior * base) / (counts + prior)
            ql[use] = table[item[use], logs.slot[use]]
            qt[use] = (target_probs[use] * table[target_items[use], logs.slot[use][:, None]]).sum(axis=1)
        q_logged[reward], q_target[reward] = ql, qt
    return q_logged, q_target


# --- the archive's decisions ---------------------------------------------------------------


def from_decisions(decisions: list[dict], target, rewards=("click", "conversion")) -> LoggedSlots:
    """Rows from logged decisions, each ``{"rec_id": str, "shown": [{"item_id", "position",
    "propensity"}], "click": [item ids], "conversion": [item ids], ...}`` (position 0 first,
    propensity: the logging policy's probability of that item in that position), and
    ``target(decision) -> {(item_id, position): probability}``: the candidate policy's
    distribution over the same decision (scored from its point-in-time features)."""
    dec, slot, item, ps, tps = [], [], [], [], []
    codes: dict[str, int] = {}
    rew = {r: [] for r in rewards}
    for d_i, d in enumerate(decisions):
        _check_decision(d_i, d, rewards)
        target_probs = target(d)
        outcome = {r: set(d.get(r, ())) for r in rewards}
        for shown in d["shown"]:
            dec.append(d_i)
            slot.append(shown["position"])
            item.append(codes.setdefault(shown["item_id"], len(codes)))
            ps.append(float(shown["propensity"]))
            tps.append(float(target_probs.get((shown["item_id"], int(shown["position"])), 0.0)))
            for r in rewards:
                rew[r].append(1.0 if shown["item_id"] in outcome[r] else 0.0)
    return LoggedSlots(np.array(dec, dtype=np.int64), np.array(slot, dtype=np.int64), np.array(item, dtype=np.int64),
                       {r: np.array(v) for r, v in rew.items()}, np.array(ps, dtype=np.float64),
                       np.array(tps, dtype=np.float64))


def _check_decision(i: int, d, rewards) -> None:
    """A logged decision is data from the archive: anything malformed is refused with where."""
    if not isinstance(d, dict) or not isinstance(d.get("shown"), list):
        raise ValueError(f"decision {i}: an object with a 'shown' list is needed")
    for j, s in enumerate(d["shown"]):
        if not isinstance(s, dict) or not isinstance(s.get("item_id"), str):
            raise ValueError(f"decision {i}, shown {j}: item_id must be a string")
        if type(s.get("position")) is not int or s["position"] < 0:
            raise ValueError(f"decision {i}, shown {j}: position must be an integer >= 0")
        p = s.get("propensity")
        if type(p) not in (int, float) or not 0 < p <= 1:
            raise ValueError(f"decision {i}, shown {j}: propensity must be a number in (0, 1]")
    for r in rewards:
        if r in d and (not isinstance(d[r], list) or not all(isinstance(x, str) for x in d[r])):
            raise ValueError(f"decision {i}: {r} must be a list of item ids")
