"""The off-policy estimators, checked twice (``make evaluate`` and ``make bench``):

1. ``simulated_coverage``: a simulated shop whose click and conversion probabilities are known.
   Each seed draws a shop (items, shoppers' taste, position bias), logs decisions under the
   serving policy with exploration (with probability ``epsilon`` the whole list is a uniformly
   random one, else the logging model's top list: every (item, slot) has a known, non-zero
   propensity), and estimates a different target policy's click and conversion rates per slot.
   The truth is exact (the target's expected reward over a large fresh sample of shoppers).
   The 90% intervals should cover it in about 90% of seeds.
2. ``open_bandit_check``: real logs, the Open Bandit Dataset sample shipped in ``obp``
   (ZOZOTOWN, campaign "all"): from the uniform-random policy's logs, estimate the Bernoulli
   Thompson sampling policy's click rate (its action distribution by Monte Carlo from the
   production prior ``obp/policy/conf/prior_bts.yaml``, as the Open Bandit Pipeline's
   ``BernoulliTS(is_zozotown_prior=True).compute_batch_action_dist`` does); compare with the
   click rate the Thompson logs really show (on-policy, with its own interval).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from . import ope

SIM_ITEMS = 20
SIM_SLOTS = 3
SIM_DECISIONS = 20_000
SIM_EPSILON = 0.3
SIM_TRUTH_SHOPPERS = 50_000
SIM_FEATURES = 4


def _shop(rng: np.random.Generator) -> dict:
    return {
        "taste": rng.normal(0, 1.0, (SIM_ITEMS, SIM_FEATURES)),
        "appeal": rng.normal(-3.0, 0.5, SIM_ITEMS),
        "position_bias": np.array([1.0, 0.7, 0.5])[:SIM_SLOTS],
        "buy_given_click": rng.uniform(0.05, 0.4, SIM_ITEMS),
        "logging_noise": rng.normal(0, 1.0, (SIM_ITEMS, SIM_FEATURES)),
        "target_noise": rng.normal(0, 0.5, (SIM_ITEMS, SIM_FEATURES)),
    }


def _click_prob(shop: dict, x: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[shoppers, slots]: P(click | item ``items[i, k]`` shown to shopper i in the first slot)."""
    logits = np.einsum("nf,nkf->nk", x, shop["taste"][items]) * 0.8 + shop["appeal"][items]
    return 1 / (1 + np.exp(-logits))


def _ranking(shop: dict, x: np.ndarray, noise_key: str) -> np.ndarray:
    """[shoppers, slots]: a model's top list (its estimate of taste is the truth + noise)."""
    scores = x @ (shop["taste"] + shop[noise_key]).T + shop["appeal"]
    top = np.argpartition(-scores, SIM_SLOTS - 1, axis=1)[:, :SIM_SLOTS]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def simulate(seed: int, decisions: int = SIM_DECISIONS, epsilon: float = SIM_EPSILON) -> tuple[ope.LoggedSlots, dict]:
    """Logged slots of one simulated shop and the target's true per-slot click and conversion rates."""
    rng = np.random.default_rng(seed)
    shop = _shop(rng)
    x = rng.normal(0, 1, (decisions, SIM_FEATURES))
    logging_top = _ranking(shop, x, "logging_noise")
    target_top = _ranking(shop, x, "target_noise")
    explore = rng.random(decisions) < epsilon
    random_lists = np.argsort(rng.random((decisions, SIM_ITEMS)), axis=1)[:, :SIM_SLOTS]
    shown = np.where(explore[:, None], random_lists, logging_top)
    slots = np.arange(SIM_SLOTS)
    # P(item a in slot k) = (1 - eps) [a is the logging model's k-th] + eps / items (uniform lists)
    pscore = (1 - epsilon) * (shown == logging_top) + epsilon / SIM_ITEMS
    target_pscore = (shown == target_top).astype(float)
    p_click = _click_prob(shop, x, shown) * shop["position_bias"][slots]
    click = rng.random(p_click.shape) < p_click
    conversion = click & (rng.random(p_click.shape) < shop["buy_given_click"][shown])
    logs = ope.LoggedSlots(
        decision=np.repeat(np.arange(decisions), SIM_SLOTS), slot=np.tile(slots, decisions),
        item=shown.ravel().astype(np.int64),
        rewards={"click": click.ravel().astype(float), "conversion": conversion.ravel().astype(float)},
        pscore=pscore.ravel(), target_pscore=target_pscore.ravel())
    ql, qt = ope.cross_fitted_item_slot_model(logs, target_top.reshape(-1, 1), np.ones((decisions * SIM_SLOTS, 1)),
                                              seed=seed)
    logs.q_logged, logs.q_target = ql, qt
    # The truth: the target's expected reward per slot over a large fresh sample of shoppers.
    fresh = np.random.default_rng([seed, 1]).normal(0, 1, (SIM_TRUTH_SHOPPERS, SIM_FEATURES))
    top = _ranking(shop, fresh, "target_noise")
    pc = _click_prob(shop, fresh, top) * shop["position_bias"][slots]
    truth = {"click": float(pc.mean()), "conversion": float((pc * shop["buy_given_click"][top]).mean())}
    return logs, truth


def simulated_coverage(seeds: int = 200, level: float = 0.9, decisions: int = SIM_DECISIONS,
                       estimators=("snips", "dr")) -> dict:
    """Share of seeds whose ``level`` interval covers the truth, per estimator and reward."""
    covered = {(e, r): 0 for e in estimators for r in ("click", "conversion")}
    widths = {k: [] for k in covered}
    errors = {k: [] for k in covered}
    for seed in range(seeds):
        logs, truth = simulate(seed, decisions)
        for e in estimators:
            for r in ("click", "conversion"):
                est = ope.estimate(logs, r, e, level)
                covered[(e, r)] += est["low"] <= truth[r] <= est["high"]
                widths[(e, r)].append((est["high"] - est["low"]) / truth[r])
                errors[(e, r)].append((est["estimate"] - truth[r]) / truth[r])
    out = {"seeds": seeds, "level": level, "decisions_per_seed": decisions, "slots": SIM_SLOTS, "items": SIM_ITEMS,
           "epsilon": SIM_EPSILON, "coverage": {}, "median_relative_width": {}, "mean_relative_bias": {}}
    for (e, r), n in covered.items():
        out["coverage"][f"{e}_{r}"] = round(n / seeds, 4)
        out["median_relative_width"][f"{e}_{r}"] = round(float(np.median(widths[(e, r)])), 4)
        out["mean_relative_bias"][f"{e}_{r}"] = round(float(np.mean(errors[(e, r)])), 4)
    out["min_coverage"] = min(out["coverage"].values())
    return out


# --- the Open Bandit Dataset ---------------------------------------------------------------

OBD_ITEMS = 80
OBD_SLOTS = 3


def obd_folder() -> Path:
    spec = importlib.util.find_spec("obp")  # read its files only: importing obp needs torch, pandas, ...
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the obp package is not installed: `make venv` installs it (requirements/data.txt)")
    return Path(spec.submodule_search_locations[0])


def read_obd(policy: str, campaign: str = "all") -> dict[str, np.ndarray]:
    """item_id, position (0-based), click and propensity_score of one logged policy's sample."""
    path = obd_folder() / "dataset" / "obd" / policy / campaign / f"{campaign}.csv"
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["timestamp"])
    positions = sorted({int(r["position"]) for r in rows})
    rank = {p: i for i, p in enumerate(positions)}  # obp: rankdata(position, "dense") - 1
    return {"item": np.array([int(r["item_id"]) for r in rows]),
            "position": np.array([rank[int(r["position"])] for r in rows]),
            "click": np.array([float(r["click"]) for r in rows]),
            "pscore": np.array([float(r["propensity_score"]) for r in rows])}


def thompson_action_dist(campaign: str = "all", n_sim: int = 100_000, seed: int = 12345) -> np.ndarray:
    """[items, slots]: P(item in slot) under Bernoulli Thompson sampling with the production
    prior: each simulation draws every item's Beta(alpha, beta) and shows the three highest."""
    import yaml

    prior = yaml.safe_load((obd_folder() / "policy" / "conf" / "prior_bts.yaml").read_text())[campaign]
    alpha, beta = np.array(prior["alpha"], dtype=float), np.array(prior["beta"], dtype=float)
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(alpha), OBD_SLOTS))
    for start in range(0, n_sim, 10_000):
        n = min(10_000, n_sim - start)
        draws = rng.beta(alpha, beta, size=(n, len(alpha)))
        top = np.argsort(-draws, axis=1)[:, :OBD_SLOTS]
        for k in range(OBD_SLOTS):
            counts[:, k] += np.bincount(top[:, k], minlength=len(alpha))
    return counts / n_sim


def open_bandit_check(level: float = 0.95, campaign: str = "all", n_sim: int = 100_000) -> dict:
    """Estimate the Thompson policy's click rate from the random policy's logs; compare with
    what the Thompson logs show."""
    random_logs, bts_logs = read_obd("random", campaign), read_obd("bts", campaign)
    dist = thompson_action_dist(campaign, n_sim)
    n = len(random_logs["item"])
    logs = ope.LoggedSlots(
        decision=np.arange(n), slot=random_logs["position"], item=random_logs["item"],
        rewards={"click": random_logs["click"]}, pscore=random_logs["pscore"],
        target_pscore=dist[random_logs["item"], random_logs["position"]])
    items = np.tile(np.arange(dist.shape[0]), (n, 1))
    probs = dist[:, random_logs["position"]].T
    logs.q_logged, logs.q_target = ope.cross_fitted_item_slot_model(logs, items, probs, seed=0)
    on_policy = ope.estimate(ope.LoggedSlots(
        decision=np.arange(len(bts_logs["item"])), slot=bts_logs["position"], item=bts_logs["item"],
        rewards={"click": bts_logs["click"]}, pscore=np.ones(len(bts_logs["item"])),
        target_pscore=np.ones(len(bts_logs["item"]))), "click", "ips", level)
    truth = float(bts_logs["click"].mean())
    out = {"campaign": campaign, "level": level, "random_rows": n, "random_clicks": int(random_logs["click"].sum()),
           "bts_rows": len(bts_logs["item"]), "bts_clicks": int(bts_logs["click"].sum()),
           "thompson_click_rate_on_policy": round(truth, 6),
           "on_policy_interval": [round(on_policy["low"], 6), round(on_policy["high"], 6)],
           "monte_carlo_simulations": n_sim}
    for name in ("snips", "dr", "ips"):
        est = ope.estimate(logs, "click", name, level)
        out[name] = {"estimate": round(est["estimate"], 6), "interval": [round(est["low"], 6), round(est["high"], 6)],
                     "covers_on_policy": bool(est["low"] <= truth <= est["high"]),
                     "relative_width": round((est["high"] - est["low"]) / est["estimate"], 3),
                     "relative_error": round((est["estimate"] - truth) / truth, 3)}
    out["covers_on_policy"] = out["snips"]["covers_on_policy"] and out["dr"]["covers_on_policy"]
    out["relative_width"] = max(out["snips"]["relative_width"], out["dr"]["relative_width"])
    return out
