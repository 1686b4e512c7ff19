"""Lambda@Edge origin-request for ``/recommendations``: answers from the edge, passes every
other request through. No environment variables and no layers: ``edge_config.json`` (built
into the bundle by ``infra/edge_build.py``) names the us-east-1 resources, and
``fallback_items.json`` is what a cold instance answers while AWS is unreachable."""

import os

# numpy's OpenBLAS starts a worker thread per core as it is imported, and the thread spins: the
# cold start took 499 against 379 ms of CPU with it (0.76x without; `python -m tests.bench.cold_ab`,
# 15 rounds, 2026-12-07), CPU a cold start on Lambda's share of a core cannot spare. Serving does
# no BLAS work that a second thread would speed up. (No environment variables at the edge: set
# here, before anything imports numpy.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from personalize import collector  # noqa: E402 - after the variable above

# Cold start: the imports below and the build (_build) allocate what lives as long as the
# instance; the collector is paused while they run and, in Lambda, what they made is frozen out
# of its later scans (personalize/collector.py).
IN_LAMBDA = collector.in_lambda()
with collector.paused(freeze=IN_LAMBDA):
    import contextvars
    import json
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    from personalize import identity, settings, telemetry
    from personalize.serving import cloudfront, degraded, recommendations, wiring

HERE = Path(__file__).resolve().parent
CONFIG_PATH = HERE / "edge_config.json"
MODELS_DIR = HERE / "shipped_models"
FALLBACK_PATH = HERE / "fallback_items.json"
COLD_START_WAIT_S = degraded.COLD_START_WAIT_S
logger = Logger(service="edge")
# The domain's log lines are JSON with this request's correlation id (CloudFront's request id) too.
copy_config_to_registered_loggers(source_logger=logger, include={"personalize"})
# Per-request figures, aggregated in the container and printed as EMF at most every 5 s
# (one EMF blob per request was ~1.3 KB of logs a request).
figures = telemetry.Figures(settings.NAMESPACE, "edge", flush_every_s=5.0)
shopper_minutes = telemetry.ShopperMinutes()  # the rollback monitor's shoppers, once a minute in this instance
_state = {}
_background = ThreadPoolExecutor(1, thread_name_prefix="home-metrics")


def home_metrics() -> telemetry.HomeMetrics:
    """The same figures sent to us-east-1 once a minute, where the alarms look."""
    if "home_metrics" not in _state:
        context = contextvars.copy_context()
        _state["home_metrics"] = telemetry.home_metrics(
            settings.NAMESPACE, "edge", submit=lambda fn: _background.submit(context.copy().run, fn))
    return _state["home_metrics"]


def _build():
    """The instance's serving state (signing key, flags, models, snapshot): network calls,
    run off the request path by degraded.BackgroundBuild."""
    config = wiring.ServingConfig.from_file(CONFIG_PATH).for_stack(
        wiring.stack_of_function(_state.get("function_name")))  # a bundle built for another stack
    config.artifacts_bucket = config.artifacts_bucket.replace("{account}", _state.get("account", ""))
    with collector.paused(freeze=IN_LAMBDA):  # as for the imports (above); a failed attempt is not frozen
        built, _state["rollout"], _state["models"] = wiring.build(config, MODELS_DIR, os.environ.get("AWS_REGION"))
        wiring.warm_up(built, _state["rollout"], _state["models"], config.default_champion)
        if built.keys.current is None or built.snapshot.value is None:  # not worth serving: try again later
            raise RuntimeError("cold start incomplete: signing key or item snapshot unavailable")
    return built


def recommender(wait_s: float | None = None):
    """The serving state, built on the first request (cold start); waits at most ``wait_s``
    (None: until the build attempt ends). None when not built in time."""
    if "recommender" in _state:
        return _state["recommender"]
    if "build" not in _state:
        _state["build"] = degraded.BackgroundBuild(_build)
    built = _state["build"].get(wait_s)
    if built is not None:
        _state["recommender"] = built
    return built


def fallback() -> degraded.BundledFallback:
    if "fallback" not in _state:
        champion = json.loads(CONFIG_PATH.read_text()).get("default_champion", settings.DEFAULT_CHAMPION)
        _state["fallback"] = degraded.BundledFallback.from_file(FALLBACK_PATH, champion)
    return _state["fallback"]


def serve(request: dict, remaining_ms: int | None = None, request_id: str | None = None) -> tuple[int, dict, dict]:
    started = time.perf_counter()
    cookie = identity.cookie_from_headers(cloudfront.header_values(request, "cookie"))
    country = next(iter(cloudfront.header_values(request, "cloudfront-viewer-country")), None)
    params = cloudfront.query(request)
    built = recommender(degraded.deadline_s(remaining_ms, COLD_START_WAIT_S))
    if built is None:  # cold, and AWS unreachable or slow: answer from the bundle
        try:
            query = recommendations.parse_query(params)
        except recommendations.BadRequest as exc:
            return 400, {"message": str(exc)}, {}
        answer = recommendations.Answer(200, fallback().answer(query.k))
    else:
        answer = built.recommend(params, cookie, country)
    headers = {**answer.headers, cloudfront.REQUEST_ID_HEADER: request_id} if request_id else answer.headers
    _count_new_troubles(built)
    recommendations.record((figures, home_metrics()) if answer.status == 200 else (figures,), answer, started,
                           built.snapshot.value if built is not None else None, shopper_minutes)
    return answer.status, answer.body, headers


def _passed_to_origin() -> None:
    figures.count("EdgeErrors")
    home_metrics().add("EdgeErrors")


def _count_new_troubles(built) -> None:
    """What went wrong in this instance since the last request, as counts: a flags document
    that broke the schema (the last good one serves, the bundled one when cold:
    FlagsDocumentRefused), failed cold-start builds (ColdStartBuildFailures) and the sold-out
    list's failed reads and stale answers (``Recommender.degraded``)."""
    totals = built.degraded() if built is not None else {}
    rollout = _state.get("rollout")
    if rollout is not None:
        totals["FlagsDocumentRefused"] = rollout.store.refused
    build = _state.get("build")
    if build is not None:  # every failed cold-start build (its answers: the bundled fallback)
        totals["ColdStartBuildFailures"] = build.failures
    recommendations.count_increases(totals, _state.setdefault("counted", {}), (figures.count, home_metrics().add))


@logger.inject_lambda_context
def lambda_handler(event: dict, context) -> dict:
    _state.setdefault("account", context.invoked_function_arn.split(":")[4])
    _state.setdefault("function_name", context.function_name)
    request_id = cloudfront.request_id(event)  # = the x-amz-cf-id CloudFront answers the viewer with
    logger.set_correlation_id(request_id)
    try:
        return cloudfront.handle(
            event, lambda request: serve(request, context.get_remaining_time_in_millis(), request_id),
            on_error=_passed_to_origin)
    finally:
        figures.flush_if_due()  # inside the invocation: a frozen container runs nothing
