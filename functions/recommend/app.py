"""HTTP API ``GET /recommendations``: the regional twin of the edge function (CloudFront's
origin, and the API for server-side callers)."""

import json
import os
import time
from pathlib import Path

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import identity, settings
from personalize.serving import recommendations, wiring

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
app = APIGatewayHttpResolver()
MODELS_DIR = Path(os.environ.get("MODELS_DIR", "/opt/python/shipped_models"))
config = wiring.ServingConfig.from_env()
recommender, rollout, models = wiring.build(config, MODELS_DIR, os.environ.get("AWS_REGION"))
origin = wiring.origin_keys(config)
recommender.warm(rollout.store.refresh_now, origin.refresh_now)
_seen = {"refused": 0}


@app.get("/recommendations")
@tracer.capture_method
def get_recommendations() -> Response:
    started = time.perf_counter()
    event = app.current_event
    if not origin.token_matches(event.headers.get(settings.ORIGIN_VERIFY_HEADER)):
        metrics.add_metric("RequestsBypassingCdn", MetricUnit.Count, 1)
        return Response(status_code=403, content_type="application/json",
                        body=json.dumps({"message": "browsers reach this API only through the CDN"}))
    cookie = identity.cookie_from_headers([c for c in (event.cookies or [])] +
                                          [event.headers.get("cookie", "")])
    answer = recommender.recommend(event.query_string_parameters or {}, cookie,
                                   event.headers.get("cloudfront-viewer-country"))
    if rollout.store.refused > _seen["refused"]:  # a flags document broke the schema: the last good one serves
        metrics.add_metric("FlagsDocumentRefused", MetricUnit.Count, rollout.store.refused - _seen["refused"])
        _seen["refused"] = rollout.store.refused
    variant = answer.body.get("variant", "none")
    metrics.add_metric(f"Requests_{variant}", MetricUnit.Count, 1)
    metrics.add_metric(f"LatencyMs_{variant}", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)
    if answer.body.get("fallback"):
        metrics.add_metric(f"Fallbacks_{variant}", MetricUnit.Count, 1)
        if recommendations.model_fault(answer.body):  # what the rollback alarm counts
            metrics.add_metric(f"ModelFallbacks_{variant}", MetricUnit.Count, 1)
    return Response(status_code=answer.status, body=json.dumps(answer.body), headers=answer.headers)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
