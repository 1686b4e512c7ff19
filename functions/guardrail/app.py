"""EventBridge schedule: the experiment guardrail (kills a clearly losing challenger)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings, telemetry
from personalize.rollout import guardrail

logger = Logger()
tracer = Tracer()
figures = telemetry.Figures(settings.NAMESPACE, "guardrail", flush_every_s=0.0)  # one EMF set per run
wiring = guardrail.wiring_from_env()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    result = guardrail.run(wiring.store, wiring.admin, wiring.states, wiring.alpha)
    for variant, counters in (result.counters or {}).items():
        figures.maximum("Impressions", counters["impressions"], "Count", variant=variant)
        figures.maximum("Purchases", counters["purchases"], "Count", variant=variant)
    figures.count("GuardrailRuns", action=result.action)  # the state over time: idle, continue, winning, killed
    if result.action == "killed":
        figures.count("GuardrailKills")
        logger.warning("guardrail killed the challenger", extra=result.__dict__)
    elif result.action == "kill_failed":
        figures.count("GuardrailKillFailures")  # GuardrailKillFailedAlarm pages
        logger.error("guardrail could not kill the challenger", extra=result.__dict__)
        figures.flush()  # before the raise: the alarm must see it
        raise RuntimeError(result.reason)  # a failed invocation too: the next run tries again
    else:
        logger.info("guardrail checked", extra=result.__dict__)
    figures.flush()
    return result.__dict__
