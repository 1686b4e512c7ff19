"""HTTP API ``POST /events`` (browsers, via CloudFront) and ``POST /server/events`` (the
shop's backend, IAM-authorized): validate events and put them on the stream."""

import base64
import binascii
import json

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import identity, settings, telemetry
from personalize.ingest import collect

logger = Logger()
copy_config_to_registered_loggers(source_logger=logger, include={"personalize"})
tracer = Tracer()
figures = telemetry.Figures(settings.NAMESPACE, "collect", flush_every_s=5.0)  # EMF, aggregated per container
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
        figures.count(result.metric, route=route)
    else:
        figures.count("EventsAccepted", result.accepted, route=route)
        figures.count("EventsRejected", len(result.rejected), route=route)
        figures.count("EventsAttributed", result.attributed)
        figures.count("DecisionsEchoed", result.decisions)  # the archive's served-and-seen lists
        figures.count("DecisionsRefused", result.decisions_refused)
    headers = {"Cache-Control": "no-store", "x-request-id": logger.get_correlation_id() or ""}
    if "retry_after_s" in body:
        headers["Retry-After"] = str(body["retry_after_s"])
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body),
                    headers=headers)


@app.post("/events")
@tracer.capture_method
def post_events() -> Response:
    return _answer(collect.PUBLIC)


@app.post("/server/events")
@tracer.capture_method
def post_server_events() -> Response:
    return _answer(collect.SERVER)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # CloudFront's request id when it forwarded the request (the viewer's x-amz-cf-id), else API Gateway's.
    logger.set_correlation_id(telemetry.correlation_id(event))
    try:
        return app.resolve(event, context)
    finally:
        figures.flush_if_due()
