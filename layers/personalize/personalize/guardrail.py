"""``functions/guardrail``: kill a clearly losing challenger, never a good one by accident.

On each run: read the deployed rollout; if a challenger is live, read both variants'
counters and run the sequential test (``experiments.decide``). A kill writes a new flags
version with the challenger's share at 0 and the kill switch on, deploys it all at once,
and records the experiment as killed with the reason. A stopped experiment is never
touched again, and the guardrail never promotes: a winning challenger is only reported.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from . import experiments, flags
from .adapters.flagadmin import ALL_AT_ONCE, ExperimentStates, FlagAdmin

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
    counters = experiments.read_counters(store, experiment)
    decision = experiments.decide(counters[flags.CHAMPION], counters[flags.CHALLENGER], alpha)
    summary = {v: asdict(c) for v, c in counters.items()}
    if decision.action != "kill":
        if decision.action == "winning" and state.get("status") != "winning":
            states.put(experiment, {"status": "winning", "reason": decision.reason, "at": clock()})
        return GuardrailResult(experiment, decision.action, decision.reason, counters=summary)
    killed = flags.rollout_document(
        document["champion_model"]["default"], document["challenger_model"]["default"], 0.0, experiment,
        kill_switch=True, pins=(document.get(flags.MODEL_PINS) or {}).get("default"))
    version = admin.deploy(killed, ALL_AT_ONCE, f"guardrail kill of {experiment}: {decision.reason}")
    states.put(experiment, {"status": "killed", "by": "guardrail", "reason": decision.reason, "at": clock(),
                            "flags_version": version, "counters": summary,
                            "likelihood_ratio": decision.likelihood_ratio})
    return GuardrailResult(experiment, "killed", decision.reason, version, summary)
