"""boto3 clients, created lazily (after moto starts in tests) and cached per process.

The endpoint comes from boto3's own ``AWS_ENDPOINT_URL`` setting, which is how the local
stack points every function at the embedded moto server.
"""

from __future__ import annotations

import functools
import threading

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 4}, max_pool_connections=32)
_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    # One session: its loader parses each service model once, so the second client of a
    # service costs a fraction of the first (cold start).
    return boto3.session.Session()


@functools.cache
def client(service: str, region: str | None = None, connect_timeout: float = 2.0, read_timeout: float = 5.0):
    config = _CONFIG.merge(Config(connect_timeout=connect_timeout, read_timeout=read_timeout))
    with _lock:  # creating clients from one session is not thread-safe
        return _session().client(service, region_name=region, config=config)


def boto3_client(service: str, region: str | None, config: Config):
    """An uncached client with its own config (serving's tight timeouts)."""
    with _lock:
        return _session().client(service, region_name=region, config=config)


def reset() -> None:
    """Forget cached clients and the session (tests that start a fresh moto)."""
    client.cache_clear()
    _session.cache_clear()


THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "Throttling", "TooManyRequestsException", "InternalServerError", "ServiceUnavailable",
})


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")
