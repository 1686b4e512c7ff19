"""Kinesis trigger: aggregate a batch of shopper events into the feature store."""

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings
from personalize.ingest import processor as ingest

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
processor = ingest.IngestProcessor(ingestor=ingest.build_ingestor, metrics=metrics, logger=logger)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    records = event.get("Records") or [{}]
    logger.set_correlation_id(records[0].get("eventID"))
    return process_partial_response(event=event, record_handler=processor.collect, processor=processor,
                                    context=context)
