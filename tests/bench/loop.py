"""The learning loop's offline figures for build/bench.json (``loop``):

* ``ope_coverage``: the lowest share, over SNIPS and DR x click and conversion, of 200
  simulated shops whose 90% interval covers the known truth (budget >= 0.85), with every
  estimator's coverage, width and bias beside it (``ope``);
* ``obd_covers_on_policy``: on the Open Bandit Dataset sample, the SNIPS and DR intervals for
  the Thompson policy's click rate, estimated from the uniform-random logs, both cover the
  click rate its own logs show; ``obd_relative_width``: the wider interval's width / estimate;
* ``retrain_s``: ``make retrain ARCHIVE=...`` from nothing: the archive the scenario below
  wrote (copied to a folder), its dataset and the Instacart sample's built (the young archive
  is bootstrapped by the sample), the default candidates trained and registered into a
  scratch registry, wall seconds (budget <= 300 on this machine; ``retrain`` has its parts
  and CPU seconds);
* ``replay_agreement``: the champion estimated from the decisions it logged in that archive
  (``champion_from_logs``): the share of the places serving ranked where the champion,
  re-scored on the replay's features, ranks the same item (how far the replay reproduces
  serving; the iterate target trusts an off-policy estimate from 0.8);
* ``archive_loss_rate``: accepted decisions missing from the archive under injected faults,
  200 shoppers x 3 lists on the local stack (budget <= 0.001; ``archive`` has the rest,
  ``tests/bench/archive.py``);
* ``live_lift_ci_low``: in a simulated shop whose shoppers' preferences are known and drift
  (28,000 shoppers), the model retrained from the shop's own traffic against the shipped
  champion in a 2% experiment: the low end of the 95% interval of the challenger's relative
  conversion lift (budget > 0); ``live_lift`` has the estimate, the truth it estimates, the
  guardrail's decision and the shop's parameters (``tests/bench/live_lift.py``);
  ``live_lift_control``: the same shop without the drift, 3,000 shoppers (its ``truth_lift``
  says how much of the lift is the drift's).
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import tempfile
import time
from pathlib import Path

from models import ope_checks


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def retrain(users: int | None = None, archive: Path | None = None) -> dict:
    from models import train

    with tempfile.TemporaryDirectory() as tmp:
        started, cpu = time.perf_counter(), _cpu_s()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            train.main(["--dataset", str(Path(tmp) / "dataset"), "--out", str(Path(tmp) / "registry")]
                       + (["--users", str(users)] if users else [])
                       + (["--archive", str(archive), "--archive-dataset", str(Path(tmp) / "archive-dataset")]
                          if archive else []))
        summary = json.loads(out.getvalue().strip().splitlines()[-1])
        return {"seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(_cpu_s() - cpu, 1),
                "dataset_seconds": summary["dataset_seconds"], "users": users or "all",
                "trained_on": summary["trained_on"], "bootstrap": summary["bootstrap"],
                "archive_training_decisions": summary["archive_training_decisions"],
                "registered": sorted(summary["registered"])}


def from_logs(folder: Path) -> dict:
    """The champion estimated from the decisions it logged in the scenario's archive (all of
    them): ``ranked_places_agreeing`` says how far the replay reproduces serving."""
    from models import ope_archive
    from models.archive_dataset import ArchiveBuilder
    from models.train import FLAGS_FILE, MODELS_DIR
    from personalize.serving.models import load_folder

    champion = json.loads(FLAGS_FILE.read_text())["champion_model"]["default"]
    builder = ArchiveBuilder(str(folder), parallel=False, progress=False)
    ranker = load_folder(MODELS_DIR / champion)
    logged = builder.logged(since_ms=0, rankers=[ranker])
    result = ope_archive.estimate(ranker, logged,
                                  ope_archive.shown_of(builder.raw), ope_archive.outcomes_of(builder.events))
    return {k: v for k, v in result.items() if k != "report"} | (
        {"click": result["report"]["click"], "weights": result["report"]["weights"]} if "report" in result else {})


def run(ope_seeds: int = 200, retrain_users: int | None = None, archive_shoppers: int = 200,
        live_shoppers: int | None = None, control_shoppers: int = 3000) -> dict:
    from tests.bench import live_lift

    live = live_lift.run(live_lift.Shop(shoppers=live_shoppers) if live_shoppers else None)
    # the control: the same shop without the drift (its truth should be about no lift)
    control = live_lift.run(live_lift.Shop(shoppers=control_shoppers, drift=False))
    started = time.perf_counter()
    sim = ope_checks.simulated_coverage(seeds=ope_seeds)
    obd = ope_checks.open_bandit_check()
    ope_s = time.perf_counter() - started
    from tests.bench import archive

    with tempfile.TemporaryDirectory() as folder:
        archived = archive.run(archive_shoppers, archive_to=Path(folder))
        figures = retrain(retrain_users, archive=Path(folder))
        replayed = from_logs(Path(folder))
    return {
        "archive_loss_rate": archived["archive_loss_rate"], "archive": archived,
        "ope_coverage": sim["min_coverage"], "ope": sim, "ope_seconds": round(ope_s, 1),
        "obd_covers_on_policy": obd["covers_on_policy"], "obd_relative_width": obd["relative_width"], "obd": obd,
        "retrain_s": figures["seconds"], "retrain": figures,
        "replay_agreement": replayed.get("ranked_places_agreeing"), "champion_from_logs": replayed,
        "live_lift_ci_low": live["live_lift_ci_low"], "live_lift": live,
        "live_lift_control": {k: control[k] for k in ("truth_lift", "lift", "lift_ci95", "arms", "validation",
                                                        "seconds", "shop")},
    }
