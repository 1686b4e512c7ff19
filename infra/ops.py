"""Operations on the experiment, for DevOps, against the local stack or AWS:

    python -m infra.ops status                                   # per variant: share, CTR, conversion, lift
    python -m infra.ops start --challenger ranker-linear/v1 --share 0.02
    python -m infra.ops ramp --share 0.25
    python -m infra.ops kill
    python -m infra.ops promote                                  # the challenger becomes champion

Add ``--env dev`` or ``--env prod`` to act on a deployed stack (its names come from the
CloudFormation outputs of the stack named in samconfig.toml); the default is ``--env
local``, the running ``make serve``. Every change is a new hosted configuration version
plus a deployment: gradual (watched by the serving health alarm) to start, ramp and
promote; all at once to kill.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def connect(env: str):
    """(flag admin, experiment states, row store) for an environment."""
    from personalize.adapters import appconfig
    from personalize.adapters.appconfig import ALL_AT_ONCE, GRADUAL, AppConfigAdmin
    from personalize.adapters.experiment_states import ExperimentStates
    from personalize.adapters.rowstore import DynamoRowStore

    if env == "local":
        state = json.loads((ROOT / "build" / "local-stack.json").read_text())
        os.environ.update(AWS_ENDPOINT_URL=state["aws_endpoint"], AWS_DEFAULT_REGION=state["region"])
        # The local AWS enforces IAM: act with the administrator's keys it published.
        os.environ.update(AWS_ACCESS_KEY_ID=state["aws_credentials"]["access_key_id"],
                          AWS_SECRET_ACCESS_KEY=state["aws_credentials"]["secret_access_key"])
        os.environ.pop("AWS_SESSION_TOKEN", None)
        return connect_local(state["resources"])
    else:
        outputs = stack_outputs(env)
        region = outputs["_region"]
        app, envid, profile = (outputs["RolloutApplicationId"], outputs["RolloutEnvironmentId"],
                               outputs["RolloutProfileId"])
        admin = AppConfigAdmin(app, envid, profile, {ALL_AT_ONCE: outputs["AllAtOnceStrategyId"],
                                                     GRADUAL: outputs["GradualStrategyId"]},
                               appconfig.appconfig_fetcher(app, envid, profile, region), region)
        items_table = outputs["ItemsTableName"]
    return admin, ExperimentStates(items_table), DynamoRowStore({"items": items_table})


def stack_outputs(env: str) -> dict[str, str]:
    """The CloudFormation outputs of the stack samconfig.toml names for ``env`` (and its
    region, as ``_region``)."""
    import boto3

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())[env]
    region = config["deploy"]["parameters"]["region"]
    os.environ["AWS_DEFAULT_REGION"] = region
    stack = config["global"]["parameters"]["stack_name"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in boto3.client("cloudformation", region_name=region)
               .describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]}
    return {**outputs, "_region": region}


def connect_local(names: dict):
    """(flag admin, experiment states, row store) of a local stack, from its resource names."""
    from personalize.adapters import appconfig
    from personalize.adapters.experiment_states import ExperimentStates
    from personalize.adapters.rowstore import DynamoRowStore

    bucket, app, profile = names["ArtifactsBucket"], names["RolloutApplication"], names["RolloutProfile"]
    admin = appconfig.local_admin(bucket, app, profile)  # the local AppConfig (appconfig_fake)
    return admin, ExperimentStates(names["ItemsTable"]), DynamoRowStore({"items": names["ItemsTable"]})


def describe(doc: dict) -> str:
    from personalize.rollout import flags

    return (f"champion {doc['champion_model']['default']}, challenger {doc['challenger_model']['default']} at "
            f"{flags.challenger_share(doc):.2%}, experiment {doc['experiment_id']['default']}, "
            f"kill switch {'ON' if doc['kill_switch']['default'] else 'off'}")


def registry_pins(*model_keys: str) -> dict[str, str]:
    """sha256 of each model as this checkout's registry (models/<name>/<version>) has it: the
    deployer's copy, never the bucket's, so a replaced S3 object cannot pin itself."""
    from models.publish import ROOT
    from personalize.serving.models import artifact_digest

    pins = {}
    for key in model_keys:
        folder = ROOT / "models" / key
        if not (folder / "manifest.json").exists():
            raise SystemExit(f"{key}: no models/{key}/manifest.json in this checkout; train or fetch it first")
        pins[key] = artifact_digest((folder / "model.onnx").read_bytes(), (folder / "manifest.json").read_bytes())
    return pins


EXPERIMENT_ID = re.compile(r"[A-Za-z0-9._-]{1,48}")  # fits a signed rec_id (<= 128 chars), no "~"


def experiment_counters(store, doc: dict):
    """(per-variant counters over every ramp step, the guardrail's decision) of the flags
    document's experiment; (None, None) when none runs."""
    from personalize.rollout import summary

    return summary.experiment_counters(store, doc)


def main(argv: list[str] | None = None) -> int:
    from personalize.rollout import experiments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    start = sub.add_parser("start")
    start.add_argument("--challenger", required=True, help="<model name>/<version>")
    start.add_argument("--share", type=float, default=0.02)
    start.add_argument("--experiment", help="experiment id (default: exp-<utc timestamp>)")
    ramp = sub.add_parser("ramp")
    ramp.add_argument("--share", type=float, required=True)
    sub.add_parser("kill")
    sub.add_parser("promote")
    explore = sub.add_parser("explore", help="randomise the last SLOTS places of each ranked list (0: stop)")
    explore.add_argument("--slots", type=int, required=True)
    explore.add_argument("--pool", type=int, default=10, help="drawn from the POOL candidates ranked next")
    args = parser.parse_args(argv)
    admin, states, store = connect(args.env)
    if args.command == "status":
        doc = admin.current()
        experiment = doc["experiment_id"]["default"]
        print(describe(doc))
        print(f"state: {states.get(experiment) or 'running'}")
        counters, decision = experiment_counters(store, doc)
        if counters is not None:
            print(experiments.format_report(experiment, counters, decision))
        return 0
    if args.command in ("start", "ramp") and not 0 <= args.share <= 1:
        parser.error("--share must be within 0..1 (0.02 is 2%)")
    if args.command == "start" and args.experiment and not EXPERIMENT_ID.fullmatch(args.experiment):
        parser.error("--experiment must be 1-48 of A-Z a-z 0-9 . _ - (it is signed into every rec_id)")
    try:
        note, version, new = change(admin, states, args.command, share=getattr(args, "share", None),
                                    challenger=getattr(args, "challenger", None),
                                    experiment=getattr(args, "experiment", None),
                                    explore=(args.slots, args.pool) if args.command == "explore" else None)
    except ChangeRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{note}: flags version {version} deployed ({'all at once' if args.command == 'kill' else 'gradual'})"
          f"\nnow: {describe(new)}")
    return 0


class ChangeRefused(RuntimeError):
    """A change the experiment's state does not allow (ramping a killed experiment)."""


def change(admin, states, command: str, share: float | None = None, challenger: str | None = None,
           experiment: str | None = None, explore: tuple[int, int] | None = None) -> tuple[str, int, dict]:
    """Start, ramp, kill or promote: a new flags version and its deployment (gradual, or all at
    once for a kill); or explore (``explore``: slots, pool; 0 slots: stop), in both arms alike.
    The CLI and the console's admin controls both come here."""
    from personalize.adapters import aws
    from personalize.adapters.appconfig import ALL_AT_ONCE, GRADUAL
    from personalize.rollout import flags

    doc = admin.current()
    state = None  # a start's or promotion's new state: written once its deployment was accepted
    champion, current_challenger = doc["champion_model"]["default"], doc["challenger_model"]["default"]
    current = doc["experiment_id"]["default"]
    if command in ("start", "ramp") and (share is None or not 0 <= share <= 1):
        raise ChangeRefused("share must be within 0..1 (0.02 is 2%)")
    if command == "start":
        if not challenger or not flags.is_model_name(challenger):
            raise ChangeRefused("start needs a challenger: a plain <model name>/<version> (no path: the flags' "
                                "schema refuses one)")
        experiment = experiment or time.strftime("exp-%Y%m%d-%H%M%S", time.gmtime())
        if not EXPERIMENT_ID.fullmatch(experiment):
            raise ChangeRefused("an experiment id is 1-48 of A-Z a-z 0-9 . _ - (it is signed into every rec_id)")
        new = flags.rollout_document(champion, challenger, share, experiment,
                                     pins=registry_pins(champion, challenger))
        strategy, note = GRADUAL, f"start {experiment}: {challenger} at {share:.2%}"
        state = (experiment, {"status": "running", "at": time.time(), "challenger": challenger})
    elif command == "ramp":
        known = states.get(current) or {}
        if current == "none" or known.get("status") in ("killed", "promoted"):
            raise ChangeRefused(f"experiment {current} is {known.get('status', 'not running')}: start a new one")
        new = flags.rollout_document(champion, current_challenger, share, current,
                                     pins=registry_pins(champion, current_challenger),
                                     earlier_steps=flags.ramp_steps(doc))
        strategy, note = GRADUAL, f"ramp {current} to {share:.2%}"
    elif command == "kill":
        new = flags.rollout_document(champion, current_challenger, 0.0, current, kill_switch=True,
                                     pins=registry_pins(champion, current_challenger),
                                     earlier_steps=flags.ramp_steps(doc))
        strategy, note = ALL_AT_ONCE, f"kill {current} (operator)"
        # A kill's intent is written first: whatever happens to its deployment, it stays killed.
        states.put(current, {"status": "killed", "by": "operator", "at": time.time()})
    elif command == "promote":
        new = flags.rollout_document(current_challenger, None, 0.0, "none", pins=registry_pins(current_challenger))
        strategy, note = GRADUAL, f"promote {current_challenger} (from {current})"
        state = (current, {"status": "promoted", "at": time.time()})
    elif command == "explore":
        slots, pool = explore or (0, 0)
        try:
            new = flags.with_exploration(doc, slots, pool)
        except flags.FlagsDocumentError as exc:
            raise ChangeRefused(str(exc)) from None
        strategy, note = GRADUAL, f"explore {slots} of {pool}" if slots else "stop exploring"
    else:
        raise ChangeRefused(f"unknown command {command!r}")
    if command != "explore":
        new = flags.keep_exploration(doc, new)
    try:
        version = admin.deploy(new, strategy, note)
    except Exception as exc:
        if aws.error_code(exc) == "ConflictException":  # AppConfig runs one deployment at a time per environment
            raise ChangeRefused(f"a flags deployment is still in progress ({exc}); wait for it to complete "
                                "(a ramp takes up to 15 minutes), or kill, which stops it") from exc
        raise
    if state is not None:
        states.put(*state)
    return note, version, new


if __name__ == "__main__":
    sys.exit(main())
