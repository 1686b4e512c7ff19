"""The live console: what the pipeline is doing, at a glance (docs/console.md).

The summary itself (its figures, their sources, the history) is the domain's
(``personalize.rollout.summary``): the deployed operators' function answers it at
``GET /console/summary``. Here: the local stack's sources (``LocalSources``: its poller, its
front, the embedded AWS), the page and its JSON routes (``wsgi``), the admin controls, and
for a deployed stack the local signing proxy (``infra.console.aws``).

Admin controls (start, ramp, kill a challenger) go through ``infra.ops.change``, the same
path as ``make experiment-*``; only a caller presenting the console's admin token may use
them, and a deployed console (``make console ENV=...``) offers them only with ``--admin``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from personalize.rollout import summary
from personalize.rollout.summary import HISTORY, VARIANTS  # noqa: F401 - the console's constants

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)


class Sources(summary.Sources):
    """The summary's sources, and changes through ``infra.ops`` with the (flag admin,
    experiment states, row store) a subclass sets as admin, states, store."""

    def change(self, command: str, **kwargs) -> tuple[str, int, dict]:
        from infra import ops

        return ops.change(self.admin, self.states, command, **kwargs)


class LocalSources(Sources):
    def __init__(self, stack):
        from infra import ops
        from personalize.adapters.artifacts import S3Artifacts
        from personalize.adapters.quarantine import SqsQuarantine
        from personalize.adapters.soldout import DynamoSoldOut

        self.stack = stack
        names = stack.resources.names
        self.admin, self.states, self.store = ops.connect_local(names)
        self.quarantine = SqsQuarantine(names["QuarantineQueue"])
        self.artifacts = S3Artifacts(names["ArtifactsBucket"])
        self.soldout = DynamoSoldOut(names["FeaturesTable"])

    def events_total(self):
        return self.stack.poller.stats.records

    def ingest_lag_ms(self):
        return self.stack.poller.stats.last_lag_ms

    def served(self):
        return dict(self.stack.served)


class Controls:
    """The admin controls of a console: ``change`` applies a command, ``invalidate`` makes the
    next summary read the new flags."""

    admin_token: str | None = None

    def change(self, command: str, **kwargs) -> tuple[str, int, dict]:
        raise NotImplementedError

    def invalidate(self) -> None: ...

    def is_admin(self, token: str | None) -> bool:
        return bool(self.admin_token and token and hmac.compare_digest(self.admin_token.encode(), token.encode()))

    def act(self, token: str | None, body: dict) -> tuple[int, dict]:
        """An admin control: {"command": "start"|"ramp"|"kill", "share", "challenger"}."""
        from infra.ops import ChangeRefused

        if not self.is_admin(token):
            return 403, {"message": "admin token required"}
        command = body.get("command")
        if command not in ("start", "ramp", "kill"):
            return 400, {"message": "command: start, ramp or kill"}
        share = body.get("share")
        if command in ("start", "ramp") and (not isinstance(share, (int, float)) or isinstance(share, bool)):
            return 400, {"message": "share: a number within 0..1"}
        challenger = body.get("challenger")
        if command == "start" and not isinstance(challenger, str):
            return 400, {"message": "challenger: <model name>/<version>"}
        try:
            note, version, _ = self.change(command, share=share, challenger=challenger)
        except ChangeRefused as exc:
            return 409, {"message": str(exc)}
        except SystemExit as exc:  # registry_pins: a model this checkout does not have
            return 409, {"message": str(exc)}
        self.invalidate()
        return 200, {"message": f"{note}: flags version {version}"}


class Console(summary.Summary, Controls):
    """The summary of ``sources`` with their admin controls (the local stack's console)."""

    def __init__(self, sources: Sources, admin_token: str | None = None, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time):
        super().__init__(sources, min_interval_s, clock)
        self.admin_token = admin_token

    def change(self, command: str, **kwargs) -> tuple[str, int, dict]:
        return self.sources.change(command, **kwargs)


def wsgi(console, read_only: bool = False):
    """The console's pages and JSON routes under ``/console`` (PATH_INFO below it), for a
    ``Console`` or a ``RemoteConsole`` (anything with ``summary``, ``admin_token``, ``act``)."""

    def app(environ, start_response):
        path, method = environ.get("PATH_INFO") or "/", environ["REQUEST_METHOD"]
        if method == "GET" and path in ("/", ""):
            status, kind, body = "200 OK", "text/html; charset=utf-8", (STATIC / "index.html").read_bytes()
        elif method == "GET" and path in ("/static/console.js", "/static/console.css"):
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            status, body = "200 OK", (STATIC / path[8:]).read_bytes()
        elif method == "GET" and path == "/api/summary":
            kind = "application/json"
            try:
                answer = {**console.summary(), "controls": not read_only and console.admin_token is not None}
                status, body = "200 OK", json.dumps(answer).encode()
            except Exception as exc:  # noqa: BLE001 - a deployed route unreachable: the page says so
                # The page gets the kind of failure; the terminal the whole answer (an AWS 403
                # names the operator's role and account: not for a page).
                log.warning("console summary unavailable: %s", exc)
                status = "502 Bad Gateway"
                body = json.dumps({"message": f"summary unavailable: {getattr(exc, 'brief', type(exc).__name__)}"}
                                  ).encode()
        elif method == "POST" and path == "/api/experiment" and not read_only:
            origin = environ.get("HTTP_ORIGIN")
            if origin and origin != f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}":
                code, answer = 403, {"message": "foreign origin"}
            elif not (environ.get("CONTENT_TYPE") or "").startswith("application/json"):
                code, answer = 415, {"message": "send JSON"}
            else:
                try:
                    length = int(environ.get("CONTENT_LENGTH") or 0)
                    request = json.loads(environ["wsgi.input"].read(min(length, 4096)) or b"{}")
                except ValueError:
                    request = None
                code, answer = (400, {"message": "a JSON object"}) if not isinstance(request, dict) else \
                    console.act(environ.get("HTTP_X_CONSOLE_TOKEN"), request)
            status = f"{code} {'OK' if code == 200 else 'Refused'}"
            kind, body = "application/json", json.dumps(answer).encode()
        else:
            status, kind, body = "404 Not Found", "application/json", b'{"message": "not found"}'
        start_response(status, [("content-type", kind), ("cache-control", "no-store"),
                                ("x-content-type-options", "nosniff")])
        return [body]

    return app


def local_server(console, port: int = 0, read_only: bool = True):
    """The console's page and routes on 127.0.0.1 under ``/console/`` (``make console``): a
    wsgiref server, not yet serving (``serve_forever``)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    app = wsgi(console, read_only=read_only)
    hosts: set[str] = set()

    def under_console(environ, start_response):
        # Loopback names only: a page whose domain re-points to 127.0.0.1 (DNS rebinding)
        # sends its own Host, and must not read what this proxy signs for the operator.
        if environ.get("HTTP_HOST") not in hosts:
            start_response("421 Misdirected Request", [("content-type", "application/json")])
            return [b'{"message": "the console answers 127.0.0.1 and localhost only"}']
        path = environ.get("PATH_INFO") or "/"
        if path != "/console" and not path.startswith("/console/"):
            start_response("404 Not Found", [("content-type", "application/json")])
            return [b'{"message": "the console is at /console/"}']
        return app({**environ, "PATH_INFO": path[len("/console"):]}, start_response)

    server = make_server("127.0.0.1", port, under_console, handler_class=Quiet)
    hosts.update({f"127.0.0.1:{server.server_port}", f"localhost:{server.server_port}"})
    return server
