"""The operators' read-only HTTP API routes (IAM-authorised): ``GET /features/users/{user_id}``,
a shopper's online features, and ``GET /console/summary``, the live console's figures."""

import json

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings
from personalize.rollout import summary
from personalize.serving import features

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
app = APIGatewayHttpResolver()
reader = features.build_reader()
_console: dict = {}


def console() -> summary.Summary:
    """The console's summary, built on its route's first request (a console setting missing or
    wrong fails that route alone, never a shopper's features). CloudWatch's figures change once
    a minute; the rest is read at most every 10 s per instance, side by side, within 4 s."""
    if "summary" not in _console:
        _console["summary"] = summary.Summary(summary.DeployedSources.from_env(), min_interval_s=10.0,
                                              deadline_s=4.0)
    return _console["summary"]


def _json(body: dict, status: int = 200) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body),
                    headers={"Cache-Control": "no-store"})


@app.get("/features/users/<user_id>")
@tracer.capture_method
def get_user_features(user_id: str) -> Response:
    found = reader.read(user_id)
    if found is None:
        return _json({"message": f"no features for user {user_id!r}"}, 404)
    return _json({"user_id": user_id, **found})


@app.get("/console/summary")
@tracer.capture_method
def get_console_summary() -> Response:
    try:
        current = console()
    except (settings.ConfigError, KeyError) as exc:
        logger.exception("the console's summary is not configured")
        return _json({"message": f"console summary unavailable: {exc}"}, 503)
    return _json(current.summary())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
