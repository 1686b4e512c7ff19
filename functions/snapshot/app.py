"""EventBridge schedule (every minute): build the item snapshot and publish it to S3."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings, snapshot_job
from personalize.adapters.artifacts import S3Artifacts
from personalize.adapters.rowstore import DynamoRowStore

config = settings.load(settings.ITEMS_TABLE, settings.ARTIFACTS_BUCKET)
logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
store = DynamoRowStore({"items": config[settings.ITEMS_TABLE]}, read_timeout_s=snapshot_job.SCAN_READ_TIMEOUT_S,
                       request_attempts=snapshot_job.SCAN_ATTEMPTS)
artifacts = S3Artifacts(config[settings.ARTIFACTS_BUCKET])


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    report = snapshot_job.publish(store, artifacts)
    metrics.add_metric("SnapshotBuildMs", MetricUnit.Milliseconds, report.build_ms)
    metrics.add_metric("SnapshotBytes", MetricUnit.Bytes, report.bytes)
    metrics.add_metric("SnapshotItems", MetricUnit.Count, report.items)
    logger.info("snapshot published", extra=report.__dict__)
    return report.__dict__
