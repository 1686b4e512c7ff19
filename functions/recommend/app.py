"""HTTP API ``GET /recommendations``: the regional twin of the edge function (CloudFront's
origin, and the API for server-side callers)."""

import os

# numpy's OpenBLAS starts a spinning worker thread per core as it is imported: its init took 571
# against 464 ms of CPU without it (0.81x; `python -m tests.bench.cold_ab OLD NEW --function
# recommend --runs 9`, 2026-12-07). Serving does no BLAS work a second thread would speed up.
# Before anything imports numpy; as the edge (functions/edge/app.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from personalize import collector  # noqa: E402 - after the variable above

# Cold start, as the edge's: the collector paused while the imports and the build allocate what
# lives as long as the instance, and that frozen out of its later scans in Lambda
# (personalize/collector.py). Its init 0.84x with it: 561 against 672 ms,
# `python -m tests.bench.cold_ab OLD NEW --function recommend --runs 11`, 2026-12-06.
with collector.paused(freeze=collector.in_lambda()):
    import json
    import time
    from pathlib import Path

    from aws_lambda_powertools import Logger, Tracer
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from personalize import identity, settings, telemetry
    from personalize.serving import recommendations, wiring

    logger = Logger()
    copy_config_to_registered_loggers(source_logger=logger, include={"personalize"})
    tracer = Tracer()
    figures = telemetry.Figures(settings.NAMESPACE, "recommend", flush_every_s=5.0)  # EMF, aggregated per container
    shopper_minutes = telemetry.ShopperMinutes()  # the rollback monitor's shoppers, once a minute here
    app = APIGatewayHttpResolver()
    MODELS_DIR = Path(os.environ.get("MODELS_DIR", "/opt/python/shipped_models"))
    config = wiring.ServingConfig.from_env()
    recommender, rollout, models = wiring.build(config, MODELS_DIR, os.environ.get("AWS_REGION"))
    origin = wiring.origin_keys(config)
    wiring.warm_up(recommender, rollout, models, config.default_champion, origin.refresh_now)

_counted: dict[str, int] = {}  # running totals as last counted (recommendations.count_increases)


@app.get("/recommendations")
@tracer.capture_method
def get_recommendations() -> Response:
    started = time.perf_counter()
    event = app.current_event
    if not origin.token_matches(event.headers.get(settings.ORIGIN_VERIFY_HEADER)):
        figures.count("RequestsBypassingCdn")
        return Response(status_code=403, content_type="application/json",
                        body=json.dumps({"message": "browsers reach this API only through the CDN"}))
    cookie = identity.cookie_from_headers([c for c in (event.cookies or [])] +
                                          [event.headers.get("cookie", "")])
    answer = recommender.recommend(event.query_string_parameters or {}, cookie,
                                   event.headers.get("cloudfront-viewer-country"))
    # A flags document that broke the schema (the last good one serves); the sold-out list unread.
    recommendations.count_increases({**recommender.degraded(), "FlagsDocumentRefused": rollout.store.refused},
                                    _counted, (figures.count,))
    recommendations.record((figures,), answer, started, recommender.snapshot.value, shopper_minutes)
    return Response(status_code=answer.status, body=json.dumps(answer.body),
                    headers={**answer.headers, "x-request-id": logger.get_correlation_id() or ""})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    # CloudFront's request id when it forwarded the request (the viewer's x-amz-cf-id), else API Gateway's.
    logger.set_correlation_id(telemetry.correlation_id(event))
    try:
        return app.resolve(event, context)
    finally:
        figures.flush_if_due()
