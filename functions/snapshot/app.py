"""EventBridge schedule (every minute): build the item snapshot and publish it to S3."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings
from personalize.serving import snapshot_job

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
publisher = snapshot_job.build_publisher()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    try:
        report = publisher.publish(context.get_remaining_time_in_millis)
    except Exception:
        metrics.add_metric("SnapshotFailures", MetricUnit.Count, 1)
        logger.exception("snapshot not published; the last good one stays")
        raise
    finally:  # every run, published or not: the alarm on a stale snapshot reads it
        age = publisher.age_s()
        if age is not None:
            metrics.add_metric("SnapshotAgeSeconds", MetricUnit.Seconds, round(age, 1))
    metrics.add_metric("SnapshotBuildMs", MetricUnit.Milliseconds, report.build_ms)
    metrics.add_metric("SnapshotBytes", MetricUnit.Bytes, report.bytes)
    metrics.add_metric("SnapshotItems", MetricUnit.Count, report.items)
    metrics.add_metric("PublishedItems", MetricUnit.Count, report.published_items)
    logger.info("snapshot published", extra=report.__dict__)
    return report.__dict__
