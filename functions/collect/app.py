"""HTTP API ``POST /events``: validate shopper events and put them on the stream."""

import json
import time

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import collect, settings
from personalize.adapters.stream import KinesisEventStream

config = settings.load(settings.EVENTS_STREAM)
logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
app = APIGatewayHttpResolver()
stream = KinesisEventStream(config[settings.EVENTS_STREAM])


def _json(status: int, body: dict) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


@app.post("/events")
@tracer.capture_method
def post_events() -> Response:
    try:
        events = collect.parse_body(app.current_event.decoded_body)
    except collect.BodyError as exc:
        metrics.add_metric("RequestsRejected", MetricUnit.Count, 1)
        return _json(exc.status, {"message": str(exc)})
    country = app.current_event.headers.get("cloudfront-viewer-country")
    result = collect.collect(events, stream, int(time.time() * 1000), country)
    metrics.add_metric("EventsAccepted", MetricUnit.Count, result.accepted)
    metrics.add_metric("EventsRejected", MetricUnit.Count, len(result.rejected))
    return _json(202, result.to_body())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
