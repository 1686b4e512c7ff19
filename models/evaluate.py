"""``make evaluate``: the candidate, the champion and strong baselines side by side on the
held-out window, honestly.

* Every choice on validation: TIFU-KNN's parameters (``models.tifu``), the GBDT baseline's
  configuration and trees (LightGBM lambdarank on the same features), the candidate's own
  training. Then the test window (each shopper's last order), read once per arm through the
  ledger (``models.ledger``); an arm already read on this dataset is not read again: its
  stored per-decision results (``models/evaluations/<dataset>/``) are the result.
* Ties are broken at random (seeded per decision, the same draw for every arm), never by the
  candidate generator's order; each arm's share of undecided top-10 boundaries is reported.
* Intervals: 95% paired bootstrap over shoppers (2,000 resamples) for every difference, and
  the minimum detectable effect at this sample size (80% power, two-sided 5%); returning
  shoppers (the headline), new shoppers (never trained on, reported apart with their interval
  width) and both together.
* Off-policy: the estimators' two checks (``models.ope_checks``), and with ``--archive`` each
  candidate's (and the champion's) SNIPS and DR estimates of click and conversion from the
  decisions serving logged in the archive's test window (``models.ope_archive``).

Writes ``models/evaluations/<dataset id>/report.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from personalize.serving import ranking
from personalize.serving.models import load_folder

from . import learners, metrics, ope_archive, ope_checks, tifu
from .archive_dataset import DEFAULT_DIR as ARCHIVE_DIR
from .archive_dataset import ArchiveBuilder
from .dataset import DEFAULT_DIR, Dataset, Groups, InstacartBuilder
from .learners import FEATURES, SEED
from .ledger import AlreadyReadError, TestLedger
from .train import FLAGS_FILE, MODELS_DIR, evaluate_groups, holdout_shoppers, scores_of, training_data

EVALUATIONS_DIR = MODELS_DIR / "evaluations"
COHORTS = ("returning", "new", "all")
HEADLINE = "returning"
TEST_KINDS = ("order", "session", "blind", "blind_cart")


def log(message: str) -> None:
    print(f"evaluate: {message}", file=sys.stderr, flush=True)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


# --- arms: each scores a Groups, decision by decision ----------------------------------------


class Arm:
    """Something ranked: ``rows(groups)`` -> [decisions, 3] metrics; ``digest`` names its content."""

    kind = "ranker"

    def __init__(self, name: str, digest: str, describe: str):
        self.name, self.digest, self.describe = name, digest, describe

    def score_lists(self, groups: Groups) -> list[np.ndarray] | None:
        return None

    def rows(self, groups: Groups) -> np.ndarray:
        return evaluate_groups(self.score_lists(groups), groups)


class ModelArm(Arm):
    def __init__(self, name: str, ranker, describe: str):
        super().__init__(name, _digest(ranker.manifest.sha256, ranker.manifest.features), describe)
        self.ranker = ranker

    def score_lists(self, groups):
        return scores_of(self.ranker, groups)


class ColumnArm(Arm):
    """A heuristic from the features (decayed frequency, repeat, popularity)."""

    def __init__(self, name: str, score, describe: str):
        super().__init__(name, _digest(name, inspect.getsource(score)), describe)
        self.score = score

    def score_lists(self, groups):
        return groups.split_scores(self.score(groups.X)) if len(groups) else []


class TifuArm(Arm):
    kind = "catalogue"

    def __init__(self, dataset: Dataset, params: tifu.Params):
        super().__init__("tifu-knn", _digest("tifu", params.__dict__, inspect.getsource(tifu)),
                         f"TIFU-KNN {params.__dict__}, tuned on validation, over the whole catalogue")
        self.model = tifu.TifuKnn(dataset, params)

    def rows(self, groups):
        return tifu.per_decision(self.model.scores(groups), groups, SEED) if len(groups) else np.zeros((0, 3))


class GbdtArm(Arm):
    def __init__(self, booster, config: dict):
        super().__init__("gbdt-lambdarank", _digest(booster.model_to_string(num_iteration=booster.best_iteration)),
                         f"LightGBM lambdarank {config}, trees by held-out shoppers, configuration by validation")
        self.booster = booster
        self.cols = [ranking.INDEX[f] for f in FEATURES]

    def score_lists(self, groups):
        if not len(groups):
            return []
        scores = self.booster.predict(groups.X[:, self.cols], num_iteration=self.booster.best_iteration)
        return groups.split_scores(scores)


def _col(name):
    i = ranking.INDEX[name]
    return lambda X: X[:, i]


def heuristic_arms() -> list[Arm]:
    decayed, purchases, popularity = _col("ui_decayed"), _col("ui_purchases_log"), _col("item_purchases_log")
    days = _col("ui_days_since_log")
    return [
        ColumnArm("decayed-frequency", lambda X: decayed(X) + 1e-4 * popularity(X),
                  "the shopper's decayed purchase frequency (entities.PURCHASE_DECAY), then popularity"),
        ColumnArm("repeat", lambda X: purchases(X) - 1e-3 * days(X) + 1e-4 * popularity(X),
                  "times the shopper bought the item, then recency, then popularity"),
        ColumnArm("popularity", popularity, "the item's purchases"),
    ]


def tuned_gbdt(dataset: Dataset, grid=learners.LGBM_GRID) -> tuple[GbdtArm, dict]:
    """LightGBM lambdarank on the training split: trees by the held-out shoppers, the
    configuration by validation NDCG@10."""
    X, y, sizes, users = training_data(dataset)
    held = holdout_shoppers(users)
    holdout_groups = np.array([u in held for u in users.tolist()])
    val = dataset.split("validation")
    cols = [ranking.INDEX[f] for f in FEATURES]
    results, best = [], None
    for config in grid:
        t = time.monotonic()
        booster, how = learners.fit_lambdarank(X, y, sizes, holdout_groups, learners.lgbm_params(**config))
        scores = booster.predict(val.X[:, cols], num_iteration=booster.best_iteration)
        value = float(evaluate_groups(val.split_scores(scores), val)[:, 0].mean())
        results.append({"config": config, **how, "validation_ndcg_at_10": round(value, 6),
                        "seconds": round(time.monotonic() - t, 1)})
        log(f"  gbdt {config}: {how['trees']} trees, validation NDCG@10 {value:.4f} ({time.monotonic() - t:.0f}s)")
        if best is None or value > best[0] + 1e-12:
            best = (value, booster, config)
    return GbdtArm(best[1], best[2]), {"grid": results, "chosen": best[2], "chosen_validation_ndcg_at_10":
                                       round(best[0], 6)}


# --- the run ---------------------------------------------------------------------------------


def by_cohort(rows: np.ndarray, cohort: np.ndarray) -> dict[str, np.ndarray]:
    return {"returning": rows[cohort == "returning"], "new": rows[cohort == "new"], "all": rows}


def summarise(rows: np.ndarray) -> dict:
    if not len(rows):
        return {"decisions": 0}
    out = {**metrics.summary(rows, SEED), "decisions": int(len(rows))}
    out["ndcg_at_10_interval_width"] = round(out["ndcg_at_10_ci95"][1] - out["ndcg_at_10_ci95"][0], 6)
    return out


class Store:
    """Per-decision test results of each arm (the outcome of its one read), by dataset."""

    def __init__(self, root: Path, dataset: Dataset):
        self.folder = root / dataset.id

    def path(self, arm: Arm) -> Path:
        return self.folder / f"{arm.name.replace('/', '_')}.json"

    def get(self, arm: Arm) -> dict | None:
        p = self.path(arm)
        if not p.exists():
            return None
        doc = json.loads(p.read_text())
        return doc if doc["digest"] == arm.digest else None

    def put(self, arm: Arm, doc: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path(arm).write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def test_rows(arm: Arm, dataset: Dataset, ledger: TestLedger, store: Store, reason: str | None) -> dict:
    """The arm's per-decision test results: stored from its one read, or read now (recorded)."""
    stored = store.get(arm)
    if stored is not None and not reason:
        log(f"  {arm.name}: read before ({stored['read_at']}): its stored result stands")
        return stored
    try:
        window = ledger.read(dataset, arm.name, arm.digest, reason=reason)
    except AlreadyReadError as exc:
        raise SystemExit(f"evaluate: {exc}, but its stored result is missing from {store.folder}: a re-read needs "
                         "--reread REASON") from exc
    doc = {"arm": arm.name, "digest": arm.digest, "describe": arm.describe, "dataset": dataset.id,
           "read_at": datetime.now(UTC).isoformat(timespec="seconds"), "kinds": {}}
    for kind in TEST_KINDS:
        groups = window.get(kind)
        if groups is None or not len(groups) or (arm.kind == "catalogue" and kind != "order"):
            continue
        rows = arm.rows(groups)
        entry = {"rows": np.round(rows, 6).tolist(), "cohort": groups.cohort.tolist(),
                 "order_id": groups.order_id.tolist()}
        lists = arm.score_lists(groups)
        if lists is not None and kind == "order":
            entry["top10_ties"] = metrics.tie_share(lists)
        doc["kinds"][kind] = entry
    store.put(arm, doc)
    return doc


def compare(docs: dict[str, dict], a: str, b: str, kind: str = "order") -> dict:
    """Paired differences a - b per cohort (same decisions, same order)."""
    da, db = docs[a]["kinds"][kind], docs[b]["kinds"][kind]
    if da["order_id"] != db["order_id"]:
        raise ValueError(f"{a} and {b} were read on different decisions")
    ra, rb, cohort = np.array(da["rows"]), np.array(db["rows"]), np.array(da["cohort"])
    out = {}
    for name, (xa, xb) in {c: (by_cohort(ra, cohort)[c], by_cohort(rb, cohort)[c]) for c in COHORTS}.items():
        if len(xa):
            out[name] = metrics.paired_report(xa, xb, SEED)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", action="append", default=[],
                        help="NAME/VERSION of a registered candidate (repeatable; default: the newest of each learner)")
    parser.add_argument("--champion", help="NAME/VERSION (default: the flags document's champion)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--users", type=int, help="a dataset of the first N shoppers only (tests)")
    parser.add_argument("--archive", help="evaluate on the shop's own traffic instead: the archive, a folder (a "
                                          "copy of the bucket) or s3://bucket[/prefix]; its test window is its "
                                          "newest time")
    parser.add_argument("--archive-dataset", type=Path, default=ARCHIVE_DIR)
    parser.add_argument("--registry", type=Path, default=MODELS_DIR)
    parser.add_argument("--evaluations", type=Path, default=EVALUATIONS_DIR)
    parser.add_argument("--ledger", type=Path, default=None,
                        help="the test-read ledger (default models/test-reads.jsonl)")
    parser.add_argument("--reread", metavar="REASON", help="read the test window again for every arm, recorded "
                                                           "with this reason")
    parser.add_argument("--quick", action="store_true", help="small tuning grids (tests)")
    parser.add_argument("--no-ope", action="store_true", help="skip the off-policy checks")
    parser.add_argument("--ope-seeds", type=int, default=200)
    args = parser.parse_args(argv)
    started = time.monotonic()
    archive_builder = None
    if args.archive:
        archive_builder = ArchiveBuilder(args.archive)
        dataset, _ = archive_builder.load_or_build(args.archive_dataset)
    else:
        dataset, _ = InstacartBuilder(users=args.users).load_or_build(args.dataset)
    if not len(dataset.split("validation")) or not len(dataset._unsealed("test")):
        raise SystemExit(f"evaluate: {dataset.id} has no validation or no test decisions "
                         f"({dataset.window.get('orders')} orders, {dataset.window.get('decisions')}): too young to "
                         "evaluate on (a shopper's second order in a window makes one)")
    ledger = TestLedger(args.ledger) if args.ledger else TestLedger()
    store = Store(args.evaluations, dataset)
    champion_key = args.champion or json.loads(FLAGS_FILE.read_text())["champion_model"]["default"]
    candidates = args.candidate or newest_candidates(args.registry)
    log(f"dataset {dataset.id}; champion {champion_key}; candidates {candidates}")

    # 1. Validation: every choice.
    val = dataset.split("validation")
    grid = ({"groups": (3,), "r_b": (0.9,), "r_g": (0.7,), "k": (50,), "alpha": (0.7, 0.9)} if args.quick else None)
    t = time.monotonic()
    params, tifu_tuning = tifu.tune(dataset, val, SEED, grid, log=log)
    log(f"tifu-knn on validation: {params} NDCG@10 {tifu_tuning['chosen_validation_ndcg_at_10']:.4f} "
        f"({time.monotonic() - t:.0f}s)")
    gbdt_arm, gbdt_tuning = tuned_gbdt(dataset, learners.LGBM_GRID[:1] if args.quick else learners.LGBM_GRID)
    arms: dict[str, Arm] = {}
    for key in dict.fromkeys([champion_key, *candidates]):
        arms[key] = ModelArm(key, load_folder(args.registry / key), f"registered model {key}")
    arms["tifu-knn"] = TifuArm(dataset, params)
    arms["gbdt-lambdarank"] = gbdt_arm
    for arm in heuristic_arms():
        arms[arm.name] = arm
    validation = {}
    for name, arm in arms.items():
        rows = arm.rows(val)
        validation[name] = {c: summarise(r) for c, r in by_cohort(rows, val.cohort).items()}

    # 2. Test: once per arm.
    docs = {name: test_rows(arm, dataset, ledger, store, args.reread) for name, arm in arms.items()}
    test = {}
    for name, doc in docs.items():
        order = doc["kinds"]["order"]
        rows, cohort = np.array(order["rows"]), np.array(order["cohort"])
        test[name] = {c: summarise(r) for c, r in by_cohort(rows, cohort).items()}
        if "top10_ties" in order:
            test[name]["top10_ties"] = order["top10_ties"]
    paired = {}
    for a in dict.fromkeys([champion_key, *candidates]):
        for b in arms:
            if a != b:
                paired[f"{a} - {b}"] = compare(docs, a, b)
    session = {}
    for key in dict.fromkeys([champion_key, *candidates]):
        kinds = docs[key]["kinds"]
        if {"session", "blind", "blind_cart"} <= set(kinds):
            s, b, bc = (np.array(kinds[k]["rows"]) for k in ("session", "blind", "blind_cart"))
            session[key] = {"decisions": len(s), "with_session": summarise(s), "blind": summarise(b),
                            "blind_cart_removed": summarise(bc),
                            "paired_with_minus_blind": metrics.paired_report(s, b, SEED),
                            "paired_with_minus_blind_cart_removed": metrics.paired_report(s, bc, SEED)}
    ope = {}
    if not args.no_ope:
        t = time.monotonic()
        ope["simulated_shop"] = ope_checks.simulated_coverage(seeds=args.ope_seeds)
        ope["open_bandit_dataset"] = ope_checks.open_bandit_check()
        ope["seconds"] = round(time.monotonic() - t, 1)
    if archive_builder is not None:
        # Each candidate (and the champion) estimated from the decisions serving logged in the
        # test window, scored on the replay's features as of each (models.ope_archive).
        t = time.monotonic()
        keys = list(dict.fromkeys([*candidates, champion_key]))
        logged = archive_builder.logged(rankers=[arms[key].ranker for key in keys])  # scores, not features
        shown, outcomes = ope_archive.shown_of(archive_builder.raw), ope_archive.outcomes_of(archive_builder.events)
        ope["candidates"] = {key: ope_archive.estimate(arms[key].ranker, logged, shown, outcomes) for key in keys}
        ope["from_logs_seconds"] = round(time.monotonic() - t, 1)
    else:
        ope["candidates"] = {}
        ope["candidate_from_logs"] = "the candidate's estimate from logged decisions needs the archive (ARCHIVE=...)"
    reads = ledger.entries()
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make evaluate" + (" " + " ".join(argv) if argv else ""),
        "dataset": dataset.window, "champion": champion_key, "candidates": candidates, "headline_cohort": HEADLINE,
        "arms": {name: arm.describe for name, arm in arms.items()},
        "validation": validation, "test": test, "paired": paired, "session": session,
        "tuning": {"tifu-knn": tifu_tuning, "gbdt-lambdarank": gbdt_tuning},
        "off_policy": ope,
        "test_reads": {"this_dataset": sum(e["dataset"] == dataset.id for e in reads), "all_datasets": len(reads),
                       "ledger": "models/test-reads.jsonl"},
        "seconds": round(time.monotonic() - started, 1),
    }
    store.folder.mkdir(parents=True, exist_ok=True)
    (store.folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print_summary(report)
    return 0


def newest_candidates(registry: Path) -> list[str]:
    """The newest registered version of each learner that has one past the shipped set."""
    from .train import VERSION, registered_versions

    out = []
    for name in ("ranker-mlp", "ranker-linear", "ranker-lgbm", "ranker-mlp-distilled"):
        versions = sorted(registered_versions(registry, name), key=lambda v: int(v[1:]))
        if versions and int(versions[-1][1:]) > int(VERSION[1:]):
            out.append(f"{name}/{versions[-1]}")
    return out


def print_summary(report: dict) -> None:
    h = report["headline_cohort"]
    log(f"test NDCG@10 ({h} shoppers; new shoppers apart):")
    for name, t in report["test"].items():
        r, n = t.get(h, {}), t.get("new", {})
        new, width = n.get("ndcg_at_10", float("nan")), n.get("ndcg_at_10_interval_width", float("nan"))
        if r.get("decisions"):
            log(f"  {name:28s} {r['ndcg_at_10']:.4f} {r['ndcg_at_10_ci95']}  new {new:.4f} (width {width:.3f})")
    champion = report["champion"]
    for other in ("tifu-knn", "gbdt-lambdarank", "decayed-frequency"):
        p = report["paired"].get(f"{champion} - {other}", {}).get(h)
        if p:
            log(f"  {champion} - {other}: {p['ndcg_at_10']:+.4f} {p['ndcg_at_10_ci95']} (MDE {p['ndcg_at_10_mde']:.4f},"
                f" n={p['n']})")
    if "open_bandit_dataset" in report["off_policy"]:
        o, s = report["off_policy"]["open_bandit_dataset"], report["off_policy"]["simulated_shop"]
        log(f"  off-policy: simulated coverage {s['coverage']} (min {s['min_coverage']}); OBD covers "
            f"{o['covers_on_policy']}, relative width {o['relative_width']}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
