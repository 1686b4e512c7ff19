"""EventBridge schedule: the experiment guardrail (kills a clearly losing challenger)."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings
from personalize.rollout import guardrail

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
wiring = guardrail.wiring_from_env()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    result = guardrail.run(wiring.store, wiring.admin, wiring.states, wiring.alpha)
    for variant, counters in (result.counters or {}).items():
        metrics.add_metric(f"Impressions_{variant}", MetricUnit.Count, counters["impressions"])
        metrics.add_metric(f"Purchases_{variant}", MetricUnit.Count, counters["purchases"])
    if result.action == "killed":
        metrics.add_metric("GuardrailKills", MetricUnit.Count, 1)
        logger.warning("guardrail killed the challenger", extra=result.__dict__)
    elif result.action == "kill_failed":
        metrics.add_metric("GuardrailKillFailures", MetricUnit.Count, 1)  # GuardrailKillFailedAlarm pages
        logger.error("guardrail could not kill the challenger", extra=result.__dict__)
        raise RuntimeError(result.reason)  # a failed invocation too: the next run tries again
    else:
        logger.info("guardrail checked", extra=result.__dict__)
    return result.__dict__
