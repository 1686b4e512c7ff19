"""Pure helpers for Lambda@Edge origin-request events: read the request, build responses.

``handle`` never raises: the recommendations path gets a generated answer, any other
request passes through unchanged, and an internal failure passes the request on to the
origin (the regional function, which serves the same API) instead of an error page.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs

from personalize import telemetry

log = logging.getLogger(__name__)
PATH = "/recommendations"
HSTS = "max-age=63072000; includeSubDomains"
# CloudFront's id of the request (what it answers the viewer with as X-Amz-Cf-Id, a header a
# function may not set): the edge returns it in this header and logs it on every line.
REQUEST_ID_HEADER = "x-request-id"
# A failure on every request (a bad deploy, an outage the handler does not expect) would log a
# traceback per request, 1,000 a second on a sale: one a minute per exception type and the line
# that raised it instead (a flood of one cause does not hide a rarer one of the same type), the
# next saying how many were left out (each is counted: EdgeErrors, EdgeErrorsAlarm).
errors = telemetry.RepeatedErrors(log)


def _raised_at(exc: BaseException) -> str:
    """``file:line`` of the frame that raised ``exc`` (its traceback's innermost)."""
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"


def request_of(event: object) -> dict | None:
    try:
        request = event["Records"][0]["cf"]["request"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    return request if isinstance(request, dict) else None


def request_id(event: object) -> str | None:
    """CloudFront's request id (``config.requestId``), the viewer's ``x-amz-cf-id``."""
    try:
        value = event["Records"][0]["cf"]["config"]["requestId"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    return value if isinstance(value, str) and 0 < len(value) <= 128 and value.isascii() else None


def header_values(request: dict, name: str) -> list[str]:
    entries = (request.get("headers") or {}).get(name.lower()) or []
    return [e.get("value", "") for e in entries if isinstance(e, dict)]


_QUERIES: dict[str, dict[str, str]] = {}  # query string -> parsed: most requests repeat a few
_QUERIES_KEPT = 1024
_QUERY_CHARS = 256  # longer ones are parsed every time, never kept


def query(request: dict) -> dict[str, str]:
    raw = request.get("querystring") or ""
    parsed = _QUERIES.get(raw) if isinstance(raw, str) else None
    if parsed is None:
        parsed = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        if isinstance(raw, str) and len(raw) <= _QUERY_CHARS:
            if len(_QUERIES) >= _QUERIES_KEPT:
                _QUERIES.clear()
            _QUERIES[raw] = parsed
    return dict(parsed)  # the caller's own copy


# Generated at the edge, so the distribution's response headers policy never sees them:
# HSTS and nosniff are set here.
_HEADERS = {"content-type": "application/json", "cache-control": "private, no-store",
            "strict-transport-security": HSTS, "x-content-type-options": "nosniff"}
_STATUS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed"}
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # what json.dumps(separators=...) builds per call


def generated(status: int, body: dict, headers: dict[str, str] | None = None) -> dict:
    """A CloudFront generated response: lower-case header map of {key, value} lists."""
    all_headers = {**_HEADERS, **({k.lower(): v for k, v in headers.items()} if headers else {})}
    return {
        "status": str(status),
        "statusDescription": _STATUS.get(status, "Error"),
        "headers": {k: [{"key": _title(k), "value": v}] for k, v in all_headers.items()},
        "body": _ENCODER.encode(body),
    }


@functools.lru_cache(maxsize=256)
def _title(header: str) -> str:
    return "-".join(part.capitalize() for part in header.split("-"))


def handle(event: object, serve: Callable[[dict], tuple[int, dict, dict]],
           on_error: Callable[[], None] | None = None) -> dict:
    """The origin-request decision. ``serve(request)`` answers (status, body, headers);
    ``on_error()`` is told when a failure passes the request on to the origin."""
    request = request_of(event)
    if request is None:
        return generated(400, {"message": "not a CloudFront origin-request event"})
    try:
        path = (request.get("uri") or "").rstrip("/") or "/"
        if path != PATH:
            return request
        if request.get("method", "GET") not in ("GET", "HEAD"):
            return generated(405, {"message": "use GET /recommendations"}, {"allow": "GET, HEAD"})
        status, body, headers = serve(request)
        return generated(status, body, headers)
    except Exception as exc:  # the regional origin serves the same API: let it answer
        errors.exception(f"edge:{type(exc).__name__}:{_raised_at(exc)}",
                         "edge failed; passing the request to the origin")
        if on_error is not None:
            on_error()
        return request
