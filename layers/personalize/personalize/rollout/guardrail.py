"""``functions/guardrail``: kill a clearly losing challenger, never a good one by accident.

On each run: read the deployed rollout; if a challenger is live, read both variants'
counters and run the sequential test (``experiments.decide``). A kill writes a new flags
version with the challenger's share at 0 and the kill switch on, deploys it all at once
whatever the environment's deployment is doing (``FlagAdmin.kill``: a ramp still DEPLOYING
or BAKING is stopped with AllowRevert first, which returns the previous share, so the kill
still lands after it), and records the experiment as killed with the reason. A kill that does
not land is recorded (``kill_failed``) and fails the invocation: its alarm pages, and the next
run tries again. A stopped experiment is never touched again, and the guardrail never
promotes: a winning challenger is only reported.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from personalize import settings
from personalize.adapters import appconfig
from personalize.adapters.appconfig import FlagAdmin
from personalize.adapters.experiment_states import ExperimentStates
from personalize.adapters.rowstore import ITEMS, DynamoRowStore, RowStore
from personalize.rollout import experiments, flags

STOPPED = ("killed", "promoted", "stopped")


@dataclass
class GuardrailResult:
    experiment: str | None
    action: str
    reason: str
    version: str | None = None
    counters: dict | None = None


def run(store, admin: FlagAdmin, states: ExperimentStates, alpha: float = experiments.ALPHA,
        clock=time.time) -> GuardrailResult:
    document = admin.current()
    experiment = document.get("experiment_id", {}).get("default")
    share = flags.challenger_share(document)
    if not experiment or experiment == "none" or share == 0:
        return GuardrailResult(experiment, "idle", "no live challenger")
    state = states.get(experiment) or {}
    if state.get("status") in STOPPED:
        return GuardrailResult(experiment, "skipped", f"experiment already {state['status']}")
    # Each ramp step (a constant share) apart, then combined: never pooled across shares.
    steps = [flags.analysis_id(experiment, step) for step in flags.ramp_steps(document)] or [experiment]
    per_step = [experiments.read_counters(store, analysed) for analysed in steps]
    strata = [(c[flags.CHAMPION], c[flags.CHALLENGER]) for c in per_step]
    decision = experiments.decide_steps(strata, alpha)
    counters = {v: experiments.merge_counters([c[v] for c in per_step]) for v in (flags.CHAMPION, flags.CHALLENGER)}
    summary = {v: asdict(c) for v, c in counters.items()}
    if decision.action != "kill":
        if decision.action == "winning" and state.get("status") != "winning":
            states.put(experiment, {"status": "winning", "reason": decision.reason, "at": clock()})
        return GuardrailResult(experiment, decision.action, decision.reason, counters=summary)
    killed = flags.keep_exploration(document, flags.rollout_document(
        document["champion_model"]["default"], document["challenger_model"]["default"], 0.0, experiment,
        kill_switch=True, pins=(document.get(flags.MODEL_PINS) or {}).get("default"),
        earlier_steps=flags.ramp_steps(document)))
    try:
        version = admin.kill(killed, f"guardrail kill of {experiment}: {decision.reason}")
    except Exception as exc:  # noqa: BLE001 - recorded, then raised by the handler: it pages
        states.put(experiment, {"status": "kill_failed", "by": "guardrail", "reason": decision.reason,
                                "error": f"{type(exc).__name__}: {exc}"[:500], "at": clock(), "counters": summary})
        return GuardrailResult(experiment, "kill_failed", f"{decision.reason}; the kill failed: {exc}",
                               counters=summary)
    states.put(experiment, {"status": "killed", "by": "guardrail", "reason": decision.reason, "at": clock(),
                            "flags_version": version, "counters": summary,
                            "likelihood_ratio": decision.likelihood_ratio})
    return GuardrailResult(experiment, "killed", decision.reason, version, summary)


def admin_from_env() -> appconfig.FlagAdmin:
    """The flags admin for a function, from its validated environment."""
    application, profile = os.environ["APPCONFIG_APPLICATION"], os.environ["APPCONFIG_PROFILE"]
    if os.environ.get("FLAGS_SOURCE") == "local":
        bucket = settings.load(settings.ARTIFACTS_BUCKET)[settings.ARTIFACTS_BUCKET]
        return appconfig.local_admin(bucket, application, profile)
    environment = os.environ["APPCONFIG_ENVIRONMENT"]
    strategies = {appconfig.ALL_AT_ONCE: os.environ["ALL_AT_ONCE_STRATEGY"],
                  appconfig.GRADUAL: os.environ["GRADUAL_STRATEGY"]}
    return appconfig.AppConfigAdmin(application, environment, profile, strategies,
                                    appconfig.appconfig_fetcher(application, environment, profile))


@dataclass
class Wiring:
    """What ``run`` needs, as the deployed function builds it from its environment."""

    store: RowStore
    admin: appconfig.FlagAdmin
    states: ExperimentStates
    alpha: float


def wiring_from_env() -> Wiring:
    config = settings.load(settings.ITEMS_TABLE)
    return Wiring(DynamoRowStore({ITEMS: config[settings.ITEMS_TABLE]}), admin_from_env(),
                  ExperimentStates(config[settings.ITEMS_TABLE]),
                  float(os.environ.get("GUARDRAIL_ALPHA", str(experiments.ALPHA))))
