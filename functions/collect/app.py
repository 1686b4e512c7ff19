"""HTTP API ``POST /events`` (browsers, via CloudFront) and ``POST /server/events`` (the
shop's backend, IAM-authorized): validate events and put them on the stream."""

import base64
import binascii
import json

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import identity, settings
from personalize.ingest import collect

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
app = APIGatewayHttpResolver()
collector = collect.build_collector()


def _body(event) -> str | bytes | None:
    # Not decoded_body: it decodes the bytes as UTF-8 and raises on anything else.
    if not event.is_base64_encoded or event.body is None:
        return event.body
    try:
        return base64.b64decode(event.body)
    except (binascii.Error, ValueError):
        return b"\xff"  # undecodable: parse_body answers 400


def _answer(route: str) -> Response:
    event = app.current_event
    headers = event.headers
    cookies = list(event.cookies or []) + [headers.get("cookie", "")]
    request = collect.Request(
        route, _body(event), identity.cookie_from_headers(cookies), headers.get("cloudfront-viewer-country"),
        headers.get(settings.ORIGIN_VERIFY_HEADER), content_type=headers.get("content-type"),
        origin=headers.get("origin"), user_agent=headers.get("user-agent"),
        viewer_address=headers.get("cloudfront-viewer-address"),
        anonymous_cookie=identity.cookie_from_headers(cookies, identity.ANONYMOUS_COOKIE))
    status, body, result = collector.handle(request)
    if isinstance(result, collect.Refused):
        metrics.add_metric(result.metric, MetricUnit.Count, 1)
    else:
        metrics.add_metric(f"EventsAccepted_{route}", MetricUnit.Count, result.accepted)
        metrics.add_metric(f"EventsRejected_{route}", MetricUnit.Count, len(result.rejected))
        metrics.add_metric("EventsAttributed", MetricUnit.Count, result.attributed)
    extra = {"Retry-After": str(body["retry_after_s"])} if "retry_after_s" in body else None
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body),
                    headers=extra)


@app.post("/events")
@tracer.capture_method
def post_events() -> Response:
    return _answer(collect.PUBLIC)


@app.post("/server/events")
@tracer.capture_method
def post_server_events() -> Response:
    return _answer(collect.SERVER)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
