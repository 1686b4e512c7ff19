"""HTTP API ``GET /features/users/{user_id}``: a shopper's online features, for operators."""

import json

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from personalize import settings
from personalize.serving import features

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=settings.NAMESPACE)
app = APIGatewayHttpResolver()
reader = features.build_reader()


@app.get("/features/users/<user_id>")
@tracer.capture_method
def get_user_features(user_id: str) -> Response:
    found = reader.read(user_id)
    if found is None:
        body, status = {"message": f"no features for user {user_id!r}"}, 404
    else:
        body, status = {"user_id": user_id, **found}, 200
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body),
                    headers={"Cache-Control": "no-store"})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
