"""``make iterate``: one turn of the learning loop. Retrain, evaluate the best candidate
against the champion and the baselines, and put it on 2% of live traffic as the challenger
when it earns it; the guardrail then kills or promotes it on what shoppers do.

1. ``make retrain`` (``models.train``; with ``ARCHIVE=`` the shop's own traffic, bootstrapped
   by the Instacart sample while the archive is young): the best candidate on validation.
2. ``make evaluate`` (``models.evaluate``) of that candidate on the dataset its choices were
   made on (the archive's once it validates there): its test window read once.
3. The gates, written down with their figures in a proposal (``build/iterate/``):
   * **offline**: the paired 95% interval of NDCG@10 (candidate - champion, returning
     shoppers) lies above zero;
   * **off-policy**: the candidate's click and conversion estimated from the decisions serving
     logged in the archive's test window (``models.ope_archive``: SNIPS and DR, 90% intervals)
     are not worse than what the logging policy got (no interval's upper end below its mean).
     Without an archive, with fewer than two logged decisions, or when the replay reproduces
     serving too loosely (the champion re-scored on it ranks serving's item at fewer than
     ``MIN_AGREEMENT`` of the places serving ranked), the gate says "not assessed", which
     passes only under ``--off-policy if-available`` (the default; ``required`` refuses), and
     the proposal says so.
4. The roll-out: the model is published to the stack's artifacts bucket and started as the
   challenger at ``SHARE`` (2%). In ``prod`` nothing is published by ``make iterate``: the
   proposal waits for an operator's approval, ``make iterate-approve PROPOSAL=... ENV=prod
   CONFIRM=<stack name>``, which re-checks it and rolls it out.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import re
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from infra.ops import ChangeRefused

from . import evaluate, train
from .archive_dataset import read_records
from .evaluate import EVALUATIONS_DIR, HEADLINE
from .ope_archive import MIN_AGREEMENT

ROOT = Path(__file__).resolve().parents[1]
PROPOSALS_DIR = ROOT / "build" / "iterate"
SHARE = 0.02
OFF_POLICY_MODES = ("if-available", "required")


def log(message: str) -> None:
    print(f"iterate: {message}", file=sys.stderr, flush=True)


def _last_json(run, argv: list[str]) -> dict | None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(argv)
    if code != 0:
        raise SystemExit(f"iterate: {run.__module__} {' '.join(argv)} failed (exit {code})")
    lines = out.getvalue().strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def gates(report: dict, candidate: str, champion: str, off_policy: str = "if-available") -> dict:
    """The offline and off-policy gates of ``candidate`` against ``champion`` from an
    evaluation report, each with its figures and whether it passes."""
    paired = report["paired"].get(f"{candidate} - {champion}", {}).get(HEADLINE)
    if paired is None:
        offline = {"passes": False, "why": f"the report pairs no {candidate} - {champion} on {HEADLINE} shoppers"}
    else:
        low, high = paired["ndcg_at_10_ci95"]
        offline = {"passes": low > 0, "ndcg_at_10_difference": paired["ndcg_at_10"], "ci95": [low, high],
                   "mde": paired["ndcg_at_10_mde"], "n": paired["n"], "cohort": HEADLINE,
                   "why": (f"NDCG@10 {paired['ndcg_at_10']:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] on "
                           f"{paired['n']} {HEADLINE} shoppers: " +
                           ("above zero" if low > 0 else "not above zero (a difference this size is noise here; "
                            f"the minimum detectable effect is {paired['ndcg_at_10_mde']:.4f})"))}
    estimates = report.get("off_policy", {}).get("candidates", {})
    estimate, fidelity = estimates.get(candidate), (estimates.get(champion) or {}).get("ranked_places_agreeing")
    if isinstance(estimate, dict) and estimate.get("not_worse") is not None and (
            fidelity is None or fidelity < MIN_AGREEMENT):
        estimate = {**estimate, "not_worse": None,
                    "why": (f"the replay reproduces serving too loosely to trust it: the champion re-scored on it "
                            f"ranks serving's item at {fidelity if fidelity is not None else 'no'} of the places "
                            f"serving ranked (needs {MIN_AGREEMENT})")}
    if isinstance(estimate, dict) and estimate.get("not_worse") is not None:
        off = {"assessed": True, "passes": bool(estimate["not_worse"]), "why": estimate["why"],
               "figures": {r: estimate["report"][r] for r in ("click", "conversion")},
               "weights": estimate["report"]["weights"], "limits": estimate["limits"]}
    else:
        why = "not assessed: " + (estimate["why"] if isinstance(estimate, dict) else
                                  "no logged decisions were read (evaluated without ARCHIVE=...)")
        off = {"assessed": False, "passes": off_policy == "if-available", "mode": off_policy,
               "why": why + ("; passes under --off-policy if-available, the live 2% experiment and its guardrail "
                             "judging alone" if off_policy == "if-available" else "; --off-policy required refuses")}
    return {"offline": offline, "off_policy": off, "publish": offline["passes"] and off["passes"]}


def turn(args) -> dict:
    """Retrain, evaluate, gate: the proposal (also written to ``args.proposals``). The archive
    is read once, into a folder both steps read: a live bucket keeps growing, and a second
    read would be another dataset (its id is a digest of the content)."""
    if not args.archive:
        return _turn(args, None)
    args.proposals.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.proposals, prefix="archive-") as folder:
        records = read_records(args.archive)
        with gzip.open(Path(folder) / "events.gz", "wb") as out:
            for record in records:
                out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        return _turn(args, folder)


def _turn(args, archive_copy: str | None) -> dict:
    started = time.monotonic()
    users = ["--users", str(args.users)] if args.users else []
    archive = (["--archive", archive_copy, "--archive-dataset", str(args.archive_dataset),
                "--min-validation", str(args.min_validation)] if archive_copy else [])
    log("retrain ...")
    retrained = _last_json(train.main, users + archive + ["--dataset", str(args.dataset), "--out", str(args.registry)]
                           + (["--learners", *args.learners] if args.learners else []))
    archive = [a for a in archive if a not in ("--min-validation", str(args.min_validation))]
    candidate = retrained["best_on_validation"]
    champion = args.champion or args.live_champion or \
        json.loads(train.FLAGS_FILE.read_text())["champion_model"]["default"]
    # Evaluated where its choices were made: the archive's test window once it validates there.
    on_archive = retrained["dataset"].startswith("archive-")
    log(f"evaluate {candidate} against {champion} on {retrained['dataset']} ...")
    code = evaluate.main(users + (archive if on_archive else [])
                  + ["--dataset", str(args.dataset), "--registry", str(args.registry),
                     "--evaluations", str(args.evaluations), "--candidate", candidate, "--champion", champion]
                  + (["--ledger", str(args.ledger)] if args.ledger else [])
                  + (["--quick", "--no-ope"] if args.quick else []))
    report_path = args.evaluations / retrained["dataset"] / "report.json"
    if code != 0 or not report_path.exists():
        raise SystemExit(f"iterate: the evaluation of {candidate} on {retrained['dataset']} wrote no report "
                         f"({report_path}); nothing proposed")
    report = json.loads(report_path.read_text())
    verdict = gates(report, candidate, champion, args.off_policy)
    proposal = {
        "made_at": datetime.now(UTC).isoformat(timespec="seconds"), "env": args.env,
        "candidate": candidate, "champion": champion, "share": args.share, "retrain": retrained,
        "champion_from": ("--champion" if args.champion else f"the {args.env} stack's flags" if args.live_champion
                          else "infra/flags/initial.json (no stack read)"),
        "evaluation": {"dataset": retrained["dataset"], "report": str(report_path.relative_to(ROOT))
                       if report_path.is_relative_to(ROOT) else str(report_path)},
        "gates": verdict, "candidate_digest": model_digest(args.registry / candidate),
        "next": (f"publish and start at {args.share:.0%}" if verdict["publish"] else "keep the champion"),
        "seconds": round(time.monotonic() - started, 1),
    }
    args.proposals.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{proposal['made_at']}-{candidate}")
    path = args.proposals / f"{name}.json"
    path.write_text(json.dumps(proposal, indent=1) + "\n")
    proposal["path"] = str(path)
    return proposal


def model_digest(folder: Path) -> str | None:
    """The pin of a registered model (its file and manifest), as the flags document carries it."""
    from personalize.serving.models import MANIFEST_FILE, MODEL_FILE, artifact_digest

    if not (folder / MODEL_FILE).exists() or not (folder / MANIFEST_FILE).exists():
        return None
    return artifact_digest((folder / MODEL_FILE).read_bytes(), (folder / MANIFEST_FILE).read_bytes())


def experiment_of(proposal: dict) -> str:
    """The experiment a proposal starts: named by it, so a second approval finds it started."""
    return "it-" + re.sub(r"[^0-9]", "", proposal["made_at"])[:14]


def roll_out(proposal: dict, registry: Path, bucket: str, s3, admin, states, replace: bool = False) -> dict:
    """Publish the proposal's candidate and start it as the challenger at its share, after
    checking it against the live flags: the champion it was measured against still serves, no
    experiment is running (unless ``replace``), and it was not rolled out already."""
    from infra import ops

    from .publish import publish

    if not proposal["gates"]["publish"]:
        raise ops.ChangeRefused(f"the proposal for {proposal['candidate']} did not pass its gates: "
                                f"{proposal['gates']['offline'].get('why')}")
    if proposal.get("candidate_digest") != model_digest(registry / proposal["candidate"]):
        raise ops.ChangeRefused(f"{proposal['candidate']} in {registry} is not the model the proposal evaluated "
                                "(its digest changed, or the proposal names none)")
    experiment = experiment_of(proposal)
    if proposal.get("rolled_out") or states.get(experiment):
        raise ops.ChangeRefused(f"this proposal was rolled out already (experiment {experiment})")
    doc = admin.current()
    live_champion, running = doc["champion_model"]["default"], doc["experiment_id"]["default"]
    if live_champion != proposal["champion"]:
        raise ops.ChangeRefused(f"the champion serving now is {live_champion}, not {proposal['champion']} that "
                                f"{proposal['candidate']} was measured against: run make iterate again")
    status = (states.get(running) or {}).get("status", "running") if running != "none" else None
    if status == "running" and not doc.get("kill_switch", {}).get("default") and not replace:
        raise ops.ChangeRefused(f"experiment {running} is running ({doc['challenger_model']['default']}): kill or "
                                "promote it first, or approve with --replace")
    keys = publish(registry / proposal["candidate"], bucket, s3)
    note, version, _ = ops.change(admin, states, "start", share=proposal["share"], challenger=proposal["candidate"],
                                  experiment=experiment)
    return {"published": keys, "flags_version": version, "note": note, "experiment": experiment,
            "at": datetime.now(UTC).isoformat(timespec="seconds")}


def _stack_name(env: str) -> str:
    return tomllib.loads((ROOT / "samconfig.toml").read_text())[env]["global"]["parameters"]["stack_name"]


def _live_champion(env: str) -> str | None:
    """The champion the environment's flags serve now, or None when no stack answers."""
    from infra import ops

    try:
        admin, _, _ = ops.connect(env)
        return admin.current()["champion_model"]["default"]
    except Exception:  # noqa: BLE001 - no stack (a laptop without make serve), no credentials
        return None


def _roll_out_in(env: str, proposal: dict, registry: Path, replace: bool = False) -> dict:
    import boto3

    from infra import ops

    from .publish import bucket_for

    if env == "local" and not (ROOT / "build" / "local-stack.json").exists():
        raise SystemExit("iterate: no local stack is running (make serve), or say DRY_RUN=1")
    bucket, kwargs = bucket_for(env)
    admin, states, _ = ops.connect(env)
    return roll_out(proposal, registry, bucket, boto3.client("s3", **kwargs), admin, states, replace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    parser.add_argument("--archive", help="the archive (a folder or s3://bucket[/prefix]); default: Instacart only")
    parser.add_argument("--archive-dataset", type=Path, default=train.ARCHIVE_DIR)
    parser.add_argument("--dataset", type=Path, default=train.DEFAULT_DIR)
    parser.add_argument("--users", type=int, help="the first N Instacart shoppers only (tests)")
    parser.add_argument("--learners", nargs="+", choices=sorted(set(train.LEARNERS) - {"ranker-gbdt"}))
    parser.add_argument("--champion", help="NAME/VERSION (default: the flags document's champion)")
    parser.add_argument("--share", type=float, default=SHARE)
    parser.add_argument("--off-policy", choices=OFF_POLICY_MODES, default="if-available")
    parser.add_argument("--registry", type=Path, default=train.MODELS_DIR)
    parser.add_argument("--evaluations", type=Path, default=EVALUATIONS_DIR)
    parser.add_argument("--ledger", type=Path)
    parser.add_argument("--proposals", type=Path, default=PROPOSALS_DIR)
    parser.add_argument("--quick", action="store_true", help="small tuning grids, no off-policy checks (tests)")
    parser.add_argument("--dry-run", action="store_true", help="retrain, evaluate and propose; roll nothing out")
    parser.add_argument("--approve", type=Path, metavar="PROPOSAL", help="roll out this proposal (prod's approval)")
    parser.add_argument("--confirm", help="the stack's name, to approve in prod")
    parser.add_argument("--replace", action="store_true", help="roll out even though an experiment is running")
    parser.add_argument("--min-validation", type=int, default=train.MIN_VALIDATION, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        return _main(parser, args)
    except ChangeRefused as exc:
        print(f"iterate: refused: {exc}", file=sys.stderr)
        return 2


def _main(parser, args) -> int:
    if not 0 < args.share <= 0.5:
        parser.error("--share: a challenger's slice, above 0 and at most 0.5 (0.02 is 2%)")
    if args.approve:
        proposal = json.loads(args.approve.read_text())
        if proposal.get("env") != args.env:
            parser.error(f"the proposal was made for {proposal.get('env')}, not {args.env}")
        if args.env == "prod" and args.confirm != _stack_name("prod"):
            parser.error("approving in prod needs --confirm <the prod stack's name> (CONFIRM=...)")
        done = _roll_out_in(args.env, proposal, args.registry, args.replace)
        proposal["rolled_out"] = done
        args.approve.write_text(json.dumps(proposal, indent=1) + "\n")
        print(json.dumps({"approved": str(args.approve), **done}))
        return 0
    args.live_champion = None if args.champion else _live_champion(args.env)
    proposal = turn(args)
    g = proposal["gates"]
    log(f"offline: {g['offline']['why']}")
    log(f"off-policy: {g['off_policy'].get('why') or g['off_policy']}")
    if not g["publish"]:
        log(f"keep the champion {proposal['champion']}: {proposal['candidate']} did not pass ({proposal['path']})")
    elif args.dry_run:
        log(f"dry run: {proposal['candidate']} would start at {args.share:.0%} ({proposal['path']})")
    elif args.env == "prod":
        log(f"waiting for approval: make iterate-approve PROPOSAL={proposal['path']} ENV=prod CONFIRM=<stack name>")
    else:
        proposal["rolled_out"] = _roll_out_in(args.env, proposal, args.registry, args.replace)
        Path(proposal["path"]).write_text(json.dumps({k: v for k, v in proposal.items() if k != "path"}, indent=1)
                                          + "\n")
        log(f"{proposal['rolled_out']['note']}: the guardrail now judges it")
    print(json.dumps({k: proposal[k] for k in ("candidate", "champion", "gates", "next", "path")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
