"""EventBridge schedule: the edge's log groups in every edge execution region, each with the
stack's retention (Lambda@Edge creates them on first write, kept forever)."""

import os

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings, telemetry

logger = Logger()
EDGE_FUNCTION = os.environ["EDGE_FUNCTION_NAME"]
DAYS = settings.int_setting("LOG_RETENTION_DAYS", 30, 1, 3653)


@logger.inject_lambda_context
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    report = telemetry.keep_edge_logs(EDGE_FUNCTION, DAYS)
    failed = {region: outcome for region, outcome in report.items() if outcome not in ("created", "set")}
    (logger.error if failed else logger.info)("edge log retention", extra={"report": report, "failed": len(failed)})
    if failed:
        raise RuntimeError(f"retention not set in {sorted(failed)}")  # the function's Errors metric alarms
    return report
