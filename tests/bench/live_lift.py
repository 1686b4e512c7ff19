"""The learning loop's live effect (``loop.live_lift_ci_low``, issue 22 item 6).

A simulated shop whose shoppers' preferences are known and drift, run through the loop's own
code from the shopper's events to the experiment's verdict:

1. **The shop** (``population``): ``items`` products in departments, with a season's new
   products (``new_items``) launched at ``DRIFT_START``. Each shopper has staples (bought
   again and again) and a taste for departments. An order's basket is drawn from the
   shopper's preferences at that moment: before the drift mostly staples and old products
   (``HABIT_BEFORE`` of each basket's draws from staples), after it mostly the new season
   (``HABIT_AFTER``), the change linear over ``DRIFT_START``..``DRIFT_FULL``. The truth is
   known: what each shopper would buy at each visit.
2. **Serving's features** (``models.replay``): every order's events in time order through
   the aggregation, snapshot and ranking-feature code that production runs; each decision's
   candidates and features point-in-time (nothing after it).
3. **Retrain** from the shop's own recent traffic (``models.train.train_candidate``, the
   champion's learner, ``ranker-mlp``): training decisions from ``TRAIN_WINDOW``, the int8
   or float choice on the validation window after it (``VALIDATION_WINDOW``), as
   ``make retrain`` does, with no Instacart order in it.
4. **The 2% experiment**: the flags document ``rollout.flags.rollout_document`` writes (the
   shipped champion, the retrained challenger at 2%, serving's exploration), read by
   ``rollout.flags.Rollout``, assigns each shopper's next visit after the history
   (``EXPERIMENT_DAYS``); each arm scores the candidates with its ONNX model through
   ``serving.models.Ranker`` and shows ``K`` items picked by serving's
   ``recommendations.explored``. The shopper buys a shown item that is in the basket they
   came for with the probability of examining its place (``BUY_AT``): a conversion, one per
   exposed shopper, as the guardrail counts.
5. **The verdict**: the relative lift and its 95% interval by ``rollout.experiments.lift``
   (``live_lift_ci_low`` is that interval's low end, in relative terms), and the guardrail's
   decision by ``rollout.experiments.decide``.

Beside the experiment's estimate, the truth it estimates: every shopper's expected
conversion under each arm, for the same basket (``truth``): the experiment's interval
should cover it. Left out: the archive's files and Firehose (``archive_loss_rate`` measures
those), the stream's and the snapshot's lag (the replay rebuilds the snapshot every
``SNAPSHOT_EVERY`` orders), views and clicks (the rankers learn from carts and purchases:
docs/known-gaps.md). What it shows: that the loop turns logged traffic into a model that
converts better once preferences moved, and that a 2% experiment of this size resolves it.
What it cannot: that real shoppers' drift looks like this one.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

import numpy as np

from models import metrics, train
from models.dataset import Dataset, assemble
from models.instacart import DAY_MS, HOUR_MS, START_MS, Order
from models.replay import replay
from personalize.rollout import experiments, flags
from personalize.serving import recommendations
from personalize.serving.models import load_folder

SEED = 20261206
DEPARTMENTS = 12
STAPLES = 8
BASKET_MEAN = 5.0             # items per order: 1 + Poisson(BASKET_MEAN - 1)
GAP_DAYS = (4.0, 4.0)         # between a shopper's orders: the first + Exponential(the second)
DRIFT_START, DRIFT_FULL = 14, 28
HABIT_BEFORE, HABIT_AFTER = 0.75, 0.3
NEW_SEASON_APPEAL = 6.0       # a new product's appeal after the drift, relative to an old one's
DECLINE = 0.5                 # how much an old product's appeal falls meanwhile
REPEAT_AFTER = 0.1            # after the drift, a product the shopper bought before is wanted this much as before
TRAIN_WINDOW = (28, 42)       # days: the retrained model's training decisions
VALIDATION_WINDOW = (42, 49)  # days: its int8-or-float choice
HISTORY_END = 49              # the experiment starts
EXPERIMENT_DAYS = 7
TRAINING_SHOPPERS = 4000      # shoppers whose decisions in the windows train (the rest only feed features)
SHARE = 0.02
K = 10
EXPLORATION = (2, 10)         # serving's (slots, pool), both arms alike
BUY_AT = tuple(0.5 / np.log2(np.arange(K) + 2))  # a wanted item shown at place k is bought with this chance


@dataclass
class Shop:
    shoppers: int = 28_000      # 2% of them: about 560 in the challenger (the guardrail decides from 500)
    items: int = 240
    new_items: int = 60
    seed: int = SEED
    drift: bool = True          # False: the control, preferences as they were before day DRIFT_START throughout


def _ids(shop: Shop) -> list[str]:
    return [f"sim{i:04d}" for i in range(shop.items + shop.new_items)]


def population(shop: Shop) -> tuple[list[Order], list[Order]]:
    """(the history's orders, each shopper's order in the experiment: the basket they came for)."""
    rng = np.random.default_rng(shop.seed)
    n = shop.items + shop.new_items
    ids = _ids(shop)
    department = rng.integers(0, DEPARTMENTS, n)
    appeal = rng.lognormal(0.0, 1.0, n)
    is_new = np.arange(n) >= shop.items
    history, experiment = [], []
    for u in range(shop.shoppers):
        user = f"shopper{u:06d}"
        old_weights = appeal[:shop.items] / appeal[:shop.items].sum()
        staples = rng.choice(shop.items, STAPLES, replace=False, p=old_weights)
        staple_w = rng.dirichlet(np.ones(STAPLES))
        taste = rng.dirichlet(np.full(DEPARTMENTS, 0.3))[department]
        bought = np.zeros(n, dtype=bool)
        day, number = float(rng.uniform(0, 7)), 1
        while True:
            final = day >= HISTORY_END
            if final:  # the experiment's visit: one per shopper, within its days
                day = HISTORY_END + float(rng.uniform(0, EXPERIMENT_DAYS))
            drift = min(max((day - DRIFT_START) / (DRIFT_FULL - DRIFT_START), 0.0), 1.0) if shop.drift else 0.0
            habit = HABIT_BEFORE + (HABIT_AFTER - HABIT_BEFORE) * drift
            season = np.where(is_new, NEW_SEASON_APPEAL * drift, 1.0 - DECLINE * drift)
            explore = taste * appeal * season
            p = (1 - habit) * explore / explore.sum()
            p[staples] += habit * staple_w
            p[bought] *= 1.0 - (1.0 - REPEAT_AFTER) * drift
            size = min(1 + int(rng.poisson(BASKET_MEAN - 1)), n)
            basket = rng.choice(n, size, replace=False, p=p / p.sum())
            at = START_MS + int(day * DAY_MS) + int(rng.integers(8, 21)) * HOUR_MS
            order = Order(f"{user}-{number}", user, number, at, [ids[i] for i in basket])
            (experiment if final else history).append(order)
            bought[basket] = True
            if final:
                break
            day += GAP_DAYS[0] + float(rng.exponential(GAP_DAYS[1]))
            number += 1
    history.sort(key=lambda o: (o.placed_ms, o.order_id))
    return history, experiment


def _day(order: Order) -> float:
    return (order.placed_ms - START_MS) / DAY_MS


def splits_of(history: list[Order], experiment: list[Order], trainers: set[str]) -> dict[str, str]:
    """Training and validation decisions by time window (the ``trainers``' only), the
    experiment's as ``test``; every other order feeds features and makes no decision."""
    out = {}
    for o in history:
        day = _day(o)
        window = ("train" if TRAIN_WINDOW[0] <= day < TRAIN_WINDOW[1]
                  else "validation" if VALIDATION_WINDOW[0] <= day < VALIDATION_WINDOW[1] else "history")
        out[o.order_id] = window if o.user_id in trainers and o.number > 1 else "history"
    for o in experiment:
        out[o.order_id] = "test"
    return out


def retrain(dataset: Dataset) -> dict:
    """``ranker-mlp`` on the window's training decisions, as ``make retrain`` trains it."""
    X, y, sizes, users = train.training_data(dataset)
    held = train.holdout_shoppers(users)
    holdout_groups = np.array([u in held for u in users.tolist()])
    return train.train_candidate("ranker-mlp", X, y, sizes, np.repeat(holdout_groups, sizes), holdout_groups,
                                 dataset, dataset.split("validation").X[:500]) | {"decisions": int(len(sizes)),
                                                                                  "dataset": dataset}


def validation_gate(arms: dict, dataset: Dataset) -> dict:
    """Both arms on the validation window (what ``make iterate``'s offline gate compares, on
    the shop's own decisions): NDCG@10 each, and the paired difference with its 95% interval."""
    val = dataset.split("validation")
    rows = {v: train.evaluate_groups(train.scores_of(r, val), val) for v, r in arms.items()}
    diff = metrics.paired(rows[experiments.CHALLENGER], rows[experiments.CHAMPION], train.SEED)
    return {"decisions": len(val), **{f"{v}_ndcg_at_10": round(float(r[:, 0].mean()), 4) for v, r in rows.items()},
            "challenger_minus_champion_ndcg_at_10": diff["ndcg_at_10"],
            "challenger_minus_champion_ndcg_at_10_ci95": diff["ndcg_at_10_ci95"]}


def dataset_of(shop: Shop, examples: list, history: list[Order], splits: dict[str, str]) -> Dataset:
    """The windows' decisions as a dataset (train and validation; no test split)."""
    vocab = {item: i for i, item in enumerate(_ids(shop))}
    groups, baskets, counts = assemble(examples, [o for o in history if splits[o.order_id] != "history"],
                                       splits, set(), vocab)
    return Dataset({"id": f"live-lift-{shop.seed}", "decisions": counts}, list(vocab), groups, baskets)


def run(shop: Shop | None = None) -> dict:
    shop = shop or Shop()
    started = time.perf_counter()
    history, experiment = population(shop)
    generated_s = time.perf_counter() - started
    users = sorted({o.user_id for o in experiment})
    trainers = set(random.Random(shop.seed).sample(users, min(TRAINING_SHOPPERS, len(users))))
    splits = splits_of(history, experiment, trainers)
    orders = history + experiment
    # The experiment's baskets are what each arm's list is judged on: they feed no item's
    # features (what a shopper buys in the experiment depends on their arm).
    feeds = {o.order_id for o in history}
    champion_key = json.loads(train.FLAGS_FILE.read_text())["champion_model"]["default"]
    challenger_key = "ranker-mlp/live-lift"
    document = flags.with_exploration(flags.rollout_document(champion_key, challenger_key, SHARE, "live-lift"),
                                      *EXPLORATION)
    store = flags.CachedDocumentStore(lambda: document)
    rollout = flags.Rollout(store, champion_key)
    rng = np.random.default_rng(shop.seed + 1)
    explorer = random.Random(shop.seed + 2)
    counters = {v: experiments.Counters() for v in (experiments.CHAMPION, experiments.CHALLENGER)}
    expected = dict.fromkeys(counters, 0.0)
    models_seen, trained, candidate = set(), [], None
    t = time.perf_counter()
    retrain_s = 0.0
    for ex in replay(orders, negatives_kept=0.2, seed=shop.seed, progress=False, sessions=False, parallel=True,
                     splits=splits, feeds_items=feeds):
        if ex.kind != "order":
            continue
        if ex.split != "test":  # the windows come first (time order): the experiment starts after them
            if candidate is not None:
                raise RuntimeError(f"a {ex.split} decision after the experiment started ({ex.order.order_id})")
            trained.append(ex)
            continue
        if candidate is None:  # the history is over: retrain from it, then run the experiment
            r = time.perf_counter()
            candidate = retrain(dataset_of(shop, trained, history, splits))
            trained = []
            retrain_s = time.perf_counter() - r
            served = {champion_key: load_folder(train.MODELS_DIR / champion_key), challenger_key: candidate["ranker"]}
            offline = validation_gate({experiments.CHAMPION: served[champion_key],
                                       experiments.CHALLENGER: served[challenger_key]}, candidate.pop("dataset"))
        assignment = rollout.assign(ex.order.user_id)
        assert assignment.flags_loaded, "the experiment's flags document was not loaded"
        exploration = rollout.exploration()  # serving's (slots, pool), as the document says
        models_seen.add((assignment.variant, assignment.model))
        chance = {}
        for key, ranker in served.items():  # both models for every shopper: the truth beside the estimate
            shown, _ = recommendations.explored(ranker.score(ex.X), K, *exploration, rng=explorer)
            chance[key] = 1.0 - float(np.prod(1.0 - np.asarray(BUY_AT[:len(shown)]) * ex.y[shown]))
        expected[experiments.CHAMPION] += chance[champion_key]
        expected[experiments.CHALLENGER] += chance[challenger_key]
        c = counters[assignment.variant]  # the shopper sees the model the flags assigned
        c.impressions += 1
        c.purchases += int(rng.random() < chance[assignment.model])
    replay_s = time.perf_counter() - t - retrain_s
    if candidate is None:
        raise RuntimeError("the simulated shop made no decision in the experiment")
    tests = counters[experiments.CHAMPION].impressions + counters[experiments.CHALLENGER].impressions
    champion, challenger = counters[experiments.CHAMPION], counters[experiments.CHALLENGER]
    lifted = experiments.lift(champion, challenger)
    decision = experiments.decide(champion, challenger)
    true_lift = expected[experiments.CHALLENGER] / expected[experiments.CHAMPION] - 1
    return {
        "live_lift_ci_low": round(lifted[1], 4) if lifted else None,
        "lift": round(lifted[0], 4) if lifted else None,
        "lift_ci95": [round(lifted[1], 4), round(lifted[2], 4)] if lifted else None,
        "truth_lift": round(true_lift, 4),
        "covers_truth": bool(lifted and lifted[1] <= true_lift <= lifted[2]),
        "truth_conversion": {v: round(e / tests, 4) for v, e in expected.items()},
        "arms": {v: {"shoppers": c.impressions, "converted": c.purchases, "conversion": round(c.conversion, 4)}
                 for v, c in counters.items()},
        "models": sorted(f"{v}: {m}" for v, m in models_seen),
        "guardrail": {"action": decision.action, "reason": decision.reason},
        "flags_loads": store.loads, "exploration_served": list(exploration),
        "shop": {"shoppers": shop.shoppers, "items": shop.items, "new_items": shop.new_items, "drift": shop.drift,
                 "history_orders": len(history), "training_shoppers": len(trainers),
                 "drift_days": [DRIFT_START, DRIFT_FULL], "habit": [HABIT_BEFORE, HABIT_AFTER],
                 "share": SHARE, "k": K, "exploration": list(EXPLORATION), "new_season_appeal": NEW_SEASON_APPEAL,
                 "old_decline": DECLINE, "repeat_after": REPEAT_AFTER,
                 "buy_at": [round(b, 3) for b in BUY_AT]},
        "validation": offline,
        "retrained": {"decisions": candidate["decisions"], "ships": candidate["quantization"]["ships"],
                      "training": {k: v for k, v in candidate["training"].items() if not isinstance(v, (list, dict))}},
        "seconds": {"population": round(generated_s, 1), "replay": round(replay_s, 1),
                    "retrain": round(retrain_s, 1), "total": round(time.perf_counter() - started, 1)},
    }


if __name__ == "__main__":
    import sys

    print(json.dumps(run(Shop(shoppers=int(sys.argv[1]) if len(sys.argv) > 1 else Shop.shoppers)), indent=1))
