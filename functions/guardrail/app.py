"""EventBridge schedule: the experiment guardrail (kills a clearly losing challenger)."""

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import guardrail, settings
from personalize.adapters.flagadmin import ExperimentStates, admin_from_env
from personalize.adapters.rowstore import DynamoRowStore

config = settings.load(settings.ITEMS_TABLE)
logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
store = DynamoRowStore({"items": config[settings.ITEMS_TABLE]})
states = ExperimentStates(config[settings.ITEMS_TABLE])
admin = admin_from_env()
ALPHA = float(os.environ.get("GUARDRAIL_ALPHA", "0.05"))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    result = guardrail.run(store, admin, states, ALPHA)
    for variant, counters in (result.counters or {}).items():
        metrics.add_metric(f"Impressions_{variant}", MetricUnit.Count, counters["impressions"])
        metrics.add_metric(f"Purchases_{variant}", MetricUnit.Count, counters["purchases"])
    if result.action == "killed":
        metrics.add_metric("GuardrailKills", MetricUnit.Count, 1)
        logger.warning("guardrail killed the challenger", extra=result.__dict__)
    else:
        logger.info("guardrail checked", extra=result.__dict__)
    return result.__dict__
