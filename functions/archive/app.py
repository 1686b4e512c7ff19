"""Kinesis Data Firehose data transformation: each record of the events stream as the
archive keeps it, shopper ids pseudonymised, partitioned by the event's date and hour
(``personalize/ingest/archive.py``)."""

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.data_classes import (
    KinesisFirehoseDataTransformationRecord,
    KinesisFirehoseDataTransformationRecordMetadata,
    KinesisFirehoseDataTransformationResponse,
    KinesisFirehoseEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings, telemetry
from personalize.ingest import archive

logger = Logger()
tracer = Tracer()
figures = telemetry.Figures(settings.NAMESPACE, "archive", flush_every_s=0.0)  # one EMF set per batch
keys = archive.key_from_env()


@logger.inject_lambda_context
@tracer.capture_lambda_handler(capture_response=False)  # never a refused record, raw, in a trace
@event_source(data_class=KinesisFirehoseEvent)
def lambda_handler(event: KinesisFirehoseEvent, context: LambdaContext) -> dict:
    key = keys.current
    if key is None:  # never archive a shopper id in the clear: Firehose retries the batch
        raise RuntimeError("archive key unavailable")
    response = KinesisFirehoseDataTransformationResponse()
    failed = total = 0
    for record in event.records:
        total += 1
        # The events stream's arrival time (the Kinesis source's), else Firehose's own.
        arrival = record.metadata.approximate_arrival_timestamp if record.metadata else \
            record.approximate_arrival_timestamp
        out = archive.transform(record.record_id, record.data_as_bytes, key,
                                int(arrival) if isinstance(arrival, (int, float)) else None)
        if out.result != "Ok":
            failed += 1
            response.add_record(KinesisFirehoseDataTransformationRecord(
                record_id=record.record_id, result=out.result, data=record.data))
            continue
        response.add_record(KinesisFirehoseDataTransformationRecord(
            record_id=record.record_id, data=archive.b64(out.data),
            metadata=KinesisFirehoseDataTransformationRecordMetadata(partition_keys=out.partition)))
    figures.count("EventsArchived", total - failed)
    if failed:
        figures.count("ArchiveRecordsFailed", failed)  # under errors/ in the archive bucket
        logger.warning("records the archive refused", extra={"failed": failed})
    figures.flush()
    return response.asdict()
