"""Lambda@Edge origin-request for ``/recommendations``: answers from the edge, passes every
other request through. No environment variables and no layers: ``edge_config.json`` (built
into the bundle by ``infra/edge_build.py``) names the us-east-1 resources."""

import gc
import os
import time
from pathlib import Path

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from personalize import cloudfront, identity, serving_config, settings

HERE = Path(__file__).resolve().parent
CONFIG_PATH = HERE / "edge_config.json"
MODELS_DIR = HERE / "shipped_models"
logger = Logger(service="edge")
metrics = Metrics(namespace=settings.NAMESPACE, service="edge")
_state = {}


def recommender():
    """Built on the first request (cold start): config file, signing key, models, snapshot."""
    if "recommender" not in _state:
        config = serving_config.ServingConfig.from_file(CONFIG_PATH)
        config.artifacts_bucket = config.artifacts_bucket.replace("{account}", _state.get("account", ""))
        _state["recommender"], _state["rollout"], _state["models"] = serving_config.build(
            config, MODELS_DIR, os.environ.get("AWS_REGION"))
        _state["recommender"].warm(_state["rollout"].store.refresh_now)
        gc.freeze()  # what cold start built lives as long as the instance: keep it out of GC scans
    return _state["recommender"]


def serve(request: dict) -> tuple[int, dict, dict]:
    started = time.perf_counter()
    cookie = identity.cookie_from_headers(cloudfront.header_values(request, "cookie"))
    country = next(iter(cloudfront.header_values(request, "cloudfront-viewer-country")), None)
    answer = recommender().recommend(cloudfront.query(request), cookie, country)
    variant = answer.body.get("variant", "none")
    metrics.add_metric(f"Requests_{variant}", MetricUnit.Count, 1)
    metrics.add_metric(f"LatencyMs_{variant}", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)
    if answer.body.get("fallback"):
        metrics.add_metric(f"Fallbacks_{variant}", MetricUnit.Count, 1)
    return answer.status, answer.body, answer.headers


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context) -> dict:
    _state.setdefault("account", context.invoked_function_arn.split(":")[4])
    return cloudfront.handle(event, serve)
