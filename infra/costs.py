"""What a million recommendation requests cost (and the events that come with them): a model
from the calls the system makes, at published us-east-1 list prices.

``model(measured)`` takes the figures ``make bench`` measured (network reads per request,
DynamoDB writes per event, the answer's size, the handler's time, the edge's log bytes) and
the assumptions below, and returns ``usd_per_million_requests`` with its parts. The tables
of prices and assumptions are also in docs/cost.md; change them there and here together.
Prices: the public price pages, read on 2026-12-04 (``PRICES[...]["source"]``); tiered
prices at their first tier; free tiers ignored.
"""

from __future__ import annotations

import math

from infra import environments

BENCH = environments.ROOT / "build" / "bench.json"
GB = 1024 ** 3

PRICES = {  # USD, us-east-1
    "cloudfront_https_request": {"usd": 0.0100 / 10_000, "source": "aws.amazon.com/cloudfront/pricing"},
    "cloudfront_gb_out": {"usd": 0.085, "source": "aws.amazon.com/cloudfront/pricing (first 10 TB, US/EU)"},
    "lambda_edge_request": {"usd": 0.60 / 1e6, "source": "aws.amazon.com/lambda/pricing (Lambda@Edge)"},
    "lambda_edge_gb_s": {"usd": 0.00005001, "source": "aws.amazon.com/lambda/pricing (Lambda@Edge)"},
    "lambda_request": {"usd": 0.20 / 1e6, "source": "aws.amazon.com/lambda/pricing (x86)"},
    "lambda_gb_s": {"usd": 0.0000166667, "source": "aws.amazon.com/lambda/pricing (x86, first tier)"},
    "http_api_request": {"usd": 1.00 / 1e6, "source": "aws.amazon.com/api-gateway/pricing (HTTP APIs)"},
    "dynamodb_rru": {"usd": 0.125 / 1e6, "source": "aws.amazon.com/dynamodb/pricing/on-demand"},
    "dynamodb_wru": {"usd": 0.625 / 1e6, "source": "aws.amazon.com/dynamodb/pricing/on-demand"},
    "dynamodb_rwru": {"usd": 0.625 / 1e6, "source": "aws.amazon.com/dynamodb/pricing/on-demand (global tables)"},
    "kinesis_gb_in": {"usd": 0.08, "source": "aws.amazon.com/kinesis/data-streams/pricing (on-demand)"},
    "kinesis_gb_out": {"usd": 0.04, "source": "aws.amazon.com/kinesis/data-streams/pricing (on-demand)"},
    "logs_gb_ingested": {"usd": 0.50, "source": "aws.amazon.com/cloudwatch/pricing (standard logs)"},
    "put_metric_data_request": {"usd": 0.01 / 1000, "source": "aws.amazon.com/cloudwatch/pricing"},
    "s3_get": {"usd": 0.0004 / 1000, "source": "aws.amazon.com/s3/pricing"},
    "appconfig_request": {"usd": 0.2 / 1e6, "source": "aws.amazon.com/systems-manager/pricing (AppConfig)"},
    "secrets_api_call": {"usd": 0.05 / 10_000, "source": "aws.amazon.com/secrets-manager/pricing"},
}

ASSUMPTIONS = {
    "environment": "prod",
    "requests_per_s": 1000.0,  # recommendation requests, the whole shop
    "events_per_request": 3.0,  # an impression and ~2 views, clicks or carts per recommendation request
    "events_per_post": 3.0,  # a storefront batches events: one POST /events per recommendation request
    "edge_containers": 26,  # warm edge containers: ~2 in each of the 13 execution regions
    "edge_memory_mb": 1024,
    "collect_ms_per_post": 6.0, "collect_memory_mb": 512,
    "aggregate_ms_per_event": 0.05, "aggregate_memory_mb": 1024,
    "event_bytes": 400,  # a record on the stream (billed in 1 KB units)
    "user_row_bytes": 2700, "item_row_bytes": 2000,
    "user_row_share_of_writes": 0.5,  # the rest: item and variant rows (regional table, never replicated)
    "soldout_parts": 16,  # one BatchGetItem of the sold-out set's parts a second per container
    "soldout_refresh_s": 1.0, "snapshot_pointer_s": 10.0, "flags_poll_s": 10.0, "keys_refresh_s": 60.0,
    "home_metrics_flush_s": 60.0, "platform_log_events_per_request": 3,
}


def _units(size: float, unit: float) -> int:
    return max(1, math.ceil(size / unit))


def model(measured: dict | None = None, assumptions: dict | None = None) -> dict:
    """USD per 1,000,000 recommendation requests and their events, by part."""
    measured = measured or {}
    a = {**ASSUMPTIONS, **(assumptions or {})}
    serving, ingest, ops = measured.get("serving", {}), measured.get("ingest", {}), measured.get("ops", {})
    replicas = len(environments.load(a["environment"]).replica_regions)
    p = {k: v["usd"] for k, v in PRICES.items()}
    n = 1_000_000
    events = n * a["events_per_request"]
    posts = events / a["events_per_post"]
    answer_bytes = serving.get("response_body_bytes", 1500)
    handler_ms = serving.get("handler_p50_ms", 1.5)
    reads = serving.get("network_reads_per_request", 1.02)
    writes_per_event = ingest.get("ddb_writes_per_event", 0.4)
    log_bytes = ops.get("edge_log_bytes_per_request", 100.0)
    platform_bytes = ops.get("edge_platform_log_bytes_per_request", 250)
    seconds = n / a["requests_per_s"]  # how long a million requests take: the fleet's background calls meanwhile
    fleet = a["edge_containers"] * seconds
    parts = {
        "cloudfront: requests and bytes out (recommendations and event posts)":
            (n + posts) * p["cloudfront_https_request"] + n * answer_bytes / GB * p["cloudfront_gb_out"],
        "lambda@edge: invocations and duration":
            n * (p["lambda_edge_request"] + math.ceil(handler_ms) / 1000 * a["edge_memory_mb"] / 1024
                 * p["lambda_edge_gb_s"]),
        "dynamodb: the shopper's row read (eventually consistent)":
            n * reads * 0.5 * _units(a["user_row_bytes"], 4096) * p["dynamodb_rru"],
        "edge background: sold-out list, snapshot pointer, flags, keys, home metrics":
            fleet * (a["soldout_parts"] * 0.5 / a["soldout_refresh_s"] * p["dynamodb_rru"]
                     + p["s3_get"] / a["snapshot_pointer_s"] + p["appconfig_request"] / a["flags_poll_s"]
                     + p["secrets_api_call"] / a["keys_refresh_s"]
                     + p["put_metric_data_request"] / a["home_metrics_flush_s"]),
        "logs: the edge's own lines (EMF, samples, errors)": n * log_bytes / GB * p["logs_gb_ingested"],
        "logs: Lambda's START/END/REPORT lines": n * platform_bytes / GB * p["logs_gb_ingested"],
        "collect: HTTP API and Lambda per POST /events":
            posts * (p["http_api_request"] + p["lambda_request"]
                     + a["collect_ms_per_post"] / 1000 * a["collect_memory_mb"] / 1024 * p["lambda_gb_s"]),
        "kinesis: records in (1 KB units) and read by aggregate":
            events * _units(a["event_bytes"], 1024) * 1024 / GB * p["kinesis_gb_in"]
            + events * a["event_bytes"] / GB * p["kinesis_gb_out"],
        "aggregate: Lambda duration":
            events * a["aggregate_ms_per_event"] / 1000 * a["aggregate_memory_mb"] / 1024 * p["lambda_gb_s"],
        "dynamodb: row writes (conditional puts)":
            events * writes_per_event * p["dynamodb_wru"] * (
                a["user_row_share_of_writes"] * _units(a["user_row_bytes"], 1024)
                + (1 - a["user_row_share_of_writes"]) * _units(a["item_row_bytes"], 1024)),
        f"dynamodb: replicated writes of shopper rows ({replicas} replicas)":
            events * writes_per_event * a["user_row_share_of_writes"] * replicas * _units(a["user_row_bytes"], 1024)
            * p["dynamodb_rwru"],
    }
    by_part = {k: round(v, 4) for k, v in parts.items()}
    return {"usd_per_million_requests": round(sum(parts.values()), 2), "by_part": by_part,
            "assumptions": {**a, "replicas": replicas, "response_body_bytes": answer_bytes,
                            "handler_p50_ms": handler_ms, "network_reads_per_request": reads,
                            "ddb_writes_per_event": writes_per_event, "edge_log_bytes_per_request": log_bytes,
                            "edge_platform_log_bytes_per_request": platform_bytes}}
