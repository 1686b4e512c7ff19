"""``make console ENV=...``: the console of a deployed stack through its IAM-authorised
``GET /console/summary`` (the operators' function, read-only), signed on this machine with
the operator's own credentials (SigV4 for ``execute-api``; the default chain: AWS_PROFILE,
SSO, environment). The page and its history are served locally; the summary is fetched at
most every ``min_interval_s`` (CloudWatch's figures change once a minute anyway). The admin
controls (``--admin``) change the flags with the operator's credentials (``infra.ops``): the
deployed route never writes."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from infra.console import Controls

PERIOD_S = 60  # CloudWatch's standard resolution: the console cannot be fresher than this


class SummaryRouteError(RuntimeError):
    """The deployed route did not answer a summary (the message says what it answered;
    ``brief``, what a page may see: the status only)."""

    def __init__(self, message: str, brief: str = "the route failed"):
        super().__init__(message)
        self.brief = brief


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A signed request is never sent on: urllib would carry Authorization and the session
    token to whatever host a redirect names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def signed_get(url: str, region: str, credentials, timeout_s: float = 15.0) -> dict:
    """GET ``url`` signed with ``credentials`` (botocore's) for API Gateway's IAM authorizer."""
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    parts = urlsplit(url)
    if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost"):
        raise SummaryRouteError(f"refusing to sign for {url}: https only", "https only")
    request = AWSRequest(method="GET", url=url)
    SigV4Auth(credentials, "execute-api", region).add_auth(request)
    try:
        with _OPENER.open(urllib.request.Request(url, headers=dict(request.headers.items())),
                          timeout=timeout_s) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = (exc.read() if exc.fp else b"")[:300].decode("utf-8", "replace")
        raise SummaryRouteError(f"GET {url} answered {exc.code}: {detail}", f"the route answered {exc.code}") from exc


class RemoteConsole(Controls):
    """The console page's source for a deployed stack: the route's summary, cached."""

    def __init__(self, url: str, region: str, credentials: Callable[[], object], admin_token: str | None = None,
                 change: Callable | None = None, min_interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, get: Callable = signed_get):
        self.url, self.region, self.credentials = url, region, credentials
        self.admin_token = admin_token if change is not None else None
        self._change = change
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.get = get
        self._cached: dict | None = None
        self._error: Exception | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def summary(self) -> dict:
        """The route's summary, fetched at most every ``min_interval_s``; a failure is kept as
        long (every open tab polling a failing route must not multiply its calls)."""
        with self._lock:
            now = self.clock()
            if self._at == float("-inf") or now - self._at >= self.min_interval_s:
                self._at = now
                try:
                    self._cached, self._error = self.get(self.url, self.region, self.credentials()), None
                except Exception as exc:  # noqa: BLE001 - shown on the page as it is
                    self._error = exc
            if self._error is not None:
                raise self._error
            return self._cached

    def invalidate(self) -> None:
        with self._lock:
            self._at = float("-inf")

    def change(self, command: str, **kwargs):
        if self._change is None:
            from infra import ops

            raise ops.ChangeRefused("this console is read-only (make console ENV=... ADMIN=1 for controls)")
        return self._change(command, **kwargs)


def remote_console(env: str, admin: bool = False, admin_token: str | None = None) -> RemoteConsole:
    """The console of stack ``env`` (samconfig.toml), with the operator's credentials."""
    import boto3

    from infra import ops

    outputs = ops.stack_outputs(env)
    session = boto3.Session(region_name=outputs["_region"])
    change = None
    if admin:
        flag_admin, states, _ = ops.connect(env)

        def change(command, **kwargs):
            return ops.change(flag_admin, states, command, **kwargs)

    def credentials():
        found = session.get_credentials()
        if found is None:
            raise SummaryRouteError("no AWS credentials (set AWS_PROFILE or sign in with SSO)")
        return found.get_frozen_credentials()

    return RemoteConsole(outputs["ApiUrl"].rstrip("/") + "/console/summary", outputs["_region"], credentials,
                         admin_token, change)
