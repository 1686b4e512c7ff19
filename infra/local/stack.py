"""The whole pipeline on 127.0.0.1: embedded moto AWS (a moto server in its own process),
resources from template.yaml, the functions, the Kinesis poller, the schedules and the HTTP
front.

Two ways to run the functions:

- ``workers=N`` (``make serve``, ``make loadtest``): as Lambda does, each function in its own
  worker processes ("containers", ``pool.py``) that import the handler once, handle one
  invocation at a time, scale up to N per function and are frozen between invocations;
- ``workers=0`` (tests, the demo, the benches): every function in this process, one
  invocation at a time each, with its module at hand (``stack.functions[name].module``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from personalize import settings
from personalize.adapters import aws
from personalize.ingest.origins import ENV as ORIGINS_ENV

from . import cors, handlers, iam, pool, resources, sigv4, template, web
from .firehose import FirehoseArchive
from .lambda_events import context, http_api_event
from .poller import KinesisPoller
from .template import ROOT

log = logging.getLogger(__name__)
STATE_FILE = ROOT / "build" / "local-stack.json"
MAX_BODY = 8 * 1024 * 1024
# A simulator's stand-in for a browser's network address (see ``LocalStack.route``).
LOCAL_VIEWER_HEADER = "x-local-viewer-address"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LOG_FILE = ROOT / "build" / "local-stack.log"
_invoking = threading.local()


class _FunctionOutput(io.TextIOBase):
    """sys.stdout that sends what functions print (structured logs, EMF metrics) to the
    stack's log file, like CloudWatch Logs, and everything else to the terminal."""

    def __init__(self, terminal, sink):
        self.terminal = terminal
        self.sink = sink

    def write(self, text):
        return (self.sink if getattr(_invoking, "active", False) else self.terminal).write(text)

    def flush(self):
        self.terminal.flush()
        self.sink.flush()


class Schedule:
    """An EventBridge schedule, locally: invoke a function every ``interval_s``."""

    def __init__(self, name: str, interval_s: float, function):
        self.name, self.interval_s, self.function = name, interval_s, function
        self._stop = threading.Event()
        self.runs = 0

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.interval_s):
                try:
                    self.function({"source": "aws.events", "detail-type": "Scheduled Event"})
                    self.runs += 1
                except Exception:
                    log.exception("schedule %s failed", self.name)

        threading.Thread(target=loop, name=f"schedule-{self.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def cloudfront_event(method: str, path: str, query: dict, headers: dict, request_id: str | None = None) -> dict:
    """The origin-request event CloudFront sends for a viewer request (the policy forwards
    the rt_uid cookie, CloudFront-Viewer-Country and the k/context_item query)."""
    from urllib.parse import urlencode

    cf_headers = {"host": [{"key": "Host", "value": "localhost"}]}
    if headers.get("cookie"):
        cf_headers["cookie"] = [{"key": "Cookie", "value": headers["cookie"]}]
    country = headers.get("cloudfront-viewer-country") or headers.get("x-country") or DEFAULT_COUNTRY
    cf_headers["cloudfront-viewer-country"] = [{"key": "CloudFront-Viewer-Country", "value": country}]
    return {"Records": [{"cf": {
        "config": {"distributionDomainName": "localhost", "distributionId": "LOCAL", "eventType": "origin-request",
                   "requestId": request_id or cloudfront_request_id()},
        "request": {"clientIp": "127.0.0.1", "method": method, "uri": path, "querystring": urlencode(query),
                    "headers": cf_headers,
                    "origin": {"custom": {"domainName": "regional.local", "port": 443, "protocol": "https",
                                          "path": "", "sslProtocols": ["TLSv1.2"], "readTimeout": 30,
                                          "keepaliveTimeout": 5, "customHeaders": {}}}}}}]}


DEFAULT_COUNTRY = "US"


def cloudfront_request_id() -> str:
    """An id shaped like CloudFront's (56 base64url characters)."""
    return secrets.token_urlsafe(42)


def _own_metrics_store(module) -> None:
    """Powertools' Metrics instances share one store per process; in Lambda each function has
    its own process. Here they share one, so one function's flush could empty another's set
    mid-invocation (SchemaValidationError, a 502 at the front): give each its own store."""
    from aws_lambda_powertools import Metrics

    metrics = getattr(module, "metrics", None)
    if isinstance(metrics, Metrics):
        own_metrics, own_dimensions, own_metadata = {}, {}, {}
        metrics.metric_set = metrics.provider.metric_set = own_metrics
        metrics.dimension_set = metrics.provider.dimension_set = own_dimensions
        metrics.metadata_set = metrics.provider.metadata_set = own_metadata


class Function:
    """One deployed function: a module, invoked one request at a time like a container.
    ``overrides`` set module attributes before the first invocation (the edge's baked
    config file and models folder)."""

    def __init__(self, name: str, **overrides):
        self.name = name
        os.environ["POWERTOOLS_SERVICE_NAME"] = name  # as the template sets per function
        self.module = handlers.load(name)
        self.durations_ms: list[float] = []  # handler time per invocation (what Lambda bills)
        for attribute, value in overrides.items():
            setattr(self.module, attribute, value)
        self.lock = threading.Lock()
        _own_metrics_store(self.module)
        logger = getattr(self.module, "logger", None)
        if logger is not None:  # Powertools bound its handler to the real stdout at import
            for handler in logger._logger.handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.stream = sys.stdout  # not setStream: it flushes the previous stack's closed sink

    def __call__(self, event: dict, ctx=None) -> dict:
        with self.lock:
            _invoking.active = True
            started = time.perf_counter()
            try:
                return self.module.lambda_handler(event, ctx or context(self.name))
            finally:
                ms = (time.perf_counter() - started) * 1000
                self.durations_ms.append(ms)
                pool._charge(ms)
                _invoking.active = False

    # The same statistics as a worker pool's (in-process: no containers, no dispatch).
    max_workers = workers = peak_busy = 1
    init_ms: list = []
    dispatch_ms: list = []
    wait_ms: list = []
    aws_ms: list = []

    @property
    def invocations(self) -> int:
        return len(self.durations_ms)

    def reset_stats(self) -> None:
        self.durations_ms = []

    def warm(self, n=None) -> None:
        pass

    def stop(self) -> None:
        pass


# Per function, at most this many containers when the stack runs workers: the stream's
# trigger invokes aggregate one batch per shard at a time, the schedules one run at a time.
SINGLE_CONCURRENCY = {"aggregate": 1, "snapshot": 1, "guardrail": 1}


class Faults:
    """Injected failures of the events routes (``POST /events``, ``/server/events``), for load
    tests of client retries: every ``every``-th new post fails, alternately before ``collect``
    runs (nothing lands) and after it answered (the events landed; the client sees a 503
    all the same, as when a response is lost on the way). A post that failed is let through
    when the client sends the same body again: with a global counter and concurrent clients,
    one post's retries could each land on a multiple of ``every`` and exhaust the client's
    attempts, a flaky test of the scheduler rather than of the retries. So ``every=1`` fails
    each body once, never always: a test of giving up needs another fault."""

    def __init__(self, every: int = 0):
        self.every = every
        self.posts = self.failed_before = self.failed_after = 0
        self.lock = threading.Lock()
        self._failed: set[bytes] = set()  # digests of the bodies made to fail (one entry per fault)

    def next(self, body: bytes = b"") -> str | None:
        """None (let it through), "before" or "after"."""
        digest = hashlib.blake2b(body, digest_size=16).digest()
        with self.lock:
            if not self.every or digest in self._failed:
                return None
            self.posts += 1
            if self.posts % self.every:
                return None
            self._failed.add(digest)
            if (self.posts // self.every) % 2:
                self.failed_before += 1
                return "before"
            self.failed_after += 1
            return "after"


class LocalStack:
    def __init__(self, port: int = 0, aws_port: int = 0, poll_interval_s: float = 0.2,
                 snapshot_interval_s: float = 5.0, guardrail_interval_s: float = 5.0, workers: int = 0,
                 freeze: bool = True, fault_every: int = 0, state_file: Path = STATE_FILE,
                 shop_seed_orders: int = 0, extra_origins: tuple[str, ...] = ()):
        self.state_file = state_file
        # AllowedOrigins beyond the front's own (a cross-origin shop page, as a test serves one):
        # collect's Origin check and the CORS answers (infra.local.cors) follow the one list.
        self.extra_origins = tuple(extra_origins)
        self._cors_api = self._cors_cdn = None
        # The demo storefront (/shop/) and the live console (/console/): built on first use;
        # with shop_seed_orders > 0 at start, the shop publishes its catalogue and that many
        # real orders of history through the backend kit (make serve).
        self.shop_seed_orders = shop_seed_orders
        self._shop = self._console = None
        self._web_lock = threading.Lock()
        self.served: dict[str, int] = {}  # recommendations answered, per variant (the console's share)
        self.console_admin_token = secrets.token_urlsafe(24)
        self.workers = workers  # 0: functions in-process; N: up to N worker processes per function
        self.freeze = freeze
        self.faults = Faults(fault_every)
        self.front_total_ms: list[float] = []
        self.front_overhead_ms: list[float] = []
        self.snapshot_interval_s = snapshot_interval_s
        self.guardrail_interval_s = guardrail_interval_s
        self._schedules: list = []
        self.port = port or free_port()
        self.aws_port = aws_port or free_port()
        self.poll_interval_s = poll_interval_s
        self.functions: dict[str, Function] = {}
        self._moto = None
        self._http: ThreadingHTTPServer | None = None
        self.poller: KinesisPoller | None = None
        self.archive: FirehoseArchive | None = None
        self.resources: resources.LocalResources | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    def start(self) -> LocalStack:
        self._saved = (dict(os.environ), sys.stdout, sys.getswitchinterval())
        os.environ.update({
            "AWS_ENDPOINT_URL": self.aws_endpoint, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1",
        })
        # Everything (moto, the poller, the functions, the front) shares one GIL here: switch
        # threads more often so a request is not stuck behind a batch for long.
        sys.setswitchinterval(0.001)
        self._moto = subprocess.Popen([sys.executable, "-m", "infra.local.moto_process", str(self.aws_port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      cwd=ROOT, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        if self._moto.stdout.readline().strip() != b"ready":
            raise RuntimeError("the embedded moto server did not start")
        LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        if not isinstance(sys.stdout, _FunctionOutput):
            sys.stdout = _FunctionOutput(sys.stdout, LOG_FILE.open("a", buffering=1))
            # Python logging (the domain's warnings, the poller's retries) goes there too.
            self._log_handler = logging.StreamHandler(sys.stdout.sink)
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
            logging.getLogger().addHandler(self._log_handler)
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        aws.reset()
        self.resources = resources.create_with_roles()
        # From here on the embedded AWS enforces IAM: the stack acts as the administrator,
        # each function as its own role (handlers.load), the poller as aggregate's.
        os.environ.update({**self.resources.env(), **self.resources.admin_env()})
        # The template's AllowedOrigins: the pages the front itself serves (the demo shop).
        os.environ[ORIGINS_ENV] = ",".join(self.allowed_origins)
        self._cors_api = cors.http_api(self.allowed_origins)
        self._cors_cdn = cors.cloudfront_recommendations(self.allowed_origins)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        aws.reset()
        handlers.use_identities(self.resources.identities.functions)
        self._enforcement = iam.Enforcement(self.aws_endpoint).__enter__()
        self.principals = self._principals()
        self.signing_key = self.resources.signing_key
        for name in ("collect", "aggregate", "features", "snapshot", "guardrail", "archive"):
            self.functions[name] = self._function(name)
        self.functions["snapshot"]({})  # a first snapshot before serving starts
        self.functions["recommend"] = self._function("recommend")
        # One file per stack (its port): two stacks at once (parallel test workers) must not
        # read each other's resource names at their edge's cold start.
        config_path = self.edge_config_path
        config_path.write_text(self.resources.serving_config().to_json())
        fallback_path = ROOT / "build" / f"fallback_items.local-{self.port}.json"
        fallback_path.write_text(json.dumps({"built_at": "local", "items": self.resources.fallback_items()}))
        # The local stack's functions share one process (and moto's GIL): a cold edge may
        # wait longer for its build here than deployed (degraded.COLD_START_WAIT_S).
        self.functions["edge"] = self._function("edge", CONFIG_PATH=config_path, MODELS_DIR=ROOT / "models",
                                                FALLBACK_PATH=fallback_path, COLD_START_WAIT_S=10.0)
        self.poller = KinesisPoller(
            self.resources.names[settings.EVENTS_STREAM.logical_id],
            self.resources.arns[settings.EVENTS_STREAM.logical_id],
            self.functions["aggregate"], self.resources.names[settings.STREAM_FAILURE_QUEUE.logical_id],
            identity=handlers.identity("aggregate"))
        self.poller.start(idle_sleep_s=self.poll_interval_s)
        # The archive (issue 22): the template's Firehose delivery stream, emulated, acting as its role.
        self.archive = FirehoseArchive(self.resources.names, self.resources.arns, self.functions["archive"],
                                       identity=self.resources.identities.functions.get("firehose-archive"))
        self.archive.start()
        self._schedules = [Schedule("snapshot", self.snapshot_interval_s, self.functions["snapshot"]),
                           Schedule("guardrail", self.guardrail_interval_s, self.functions["guardrail"])]
        for schedule in self._schedules:
            schedule.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", self.port), _front(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="http-front", daemon=True).start()
        if self.shop_seed_orders:
            shop = self.shop()
            shop.publish_catalogue()
            shop.seed_history(self.shop_seed_orders)
        self.write_state(self.state_file)
        return self

    def _principals(self) -> dict[str, sigv4.Principal]:
        """Who may sign requests to the IAM-authorized route: the administrator (every
        action) and each function's role (its template policies: none allows execute-api)."""
        identities = self.resources.identities
        admin = identities.admin
        out = {admin.access_key_id: sigv4.Principal(
            admin.access_key_id, admin.secret_access_key, None, f"arn:aws:iam::{iam.ACCOUNT}:user/{iam.ADMIN_USER}",
            ({"Effect": "Allow", "Action": "*", "Resource": "*"},))}
        for name, credentials in identities.functions.items():
            out[credentials.access_key_id] = sigv4.Principal(
                credentials.access_key_id, credentials.secret_access_key, credentials.session_token,
                f"arn:aws:sts::{iam.ACCOUNT}:assumed-role/{credentials.name}/{name}",
                tuple(identities.policies.get(name, ())))
        return out

    def authorize(self, method: str, raw_path: str, raw_query: str, headers: dict, body: bytes | None) -> dict | None:
        """None when the request may use the IAM route, else API Gateway's 403 answer."""
        try:
            principal = sigv4.verify(method, raw_path, raw_query, headers, body or b"", self.principals, iam.REGION)
        except sigv4.Refused as refused:
            return _forbidden(refused.message)
        resource = sigv4.route_arn(iam.REGION, iam.ACCOUNT, "local", "local", method, raw_path)
        if not principal.may_invoke(resource):
            return _forbidden(f"User: {principal.arn} is not authorized to perform: execute-api:Invoke on "
                              f"resource: {resource}")
        return None

    def advance_flags_clock(self) -> None:
        """15 s pass for the flags, at once (tests that would otherwise wait for serving's next
        AppConfig poll; in-process functions only): for the local AppConfig, whose clock is
        the process's (sessions, deployments in progress and their bakes move on too), and for
        the serving functions' flags stores, each on its own timer. Their next request finds
        the document 15 s older and refreshes it through the store's own age check, as
        deployed (the edge in the background): a store that polls less often is not rescued."""
        from personalize.adapters import appconfig, appconfig_fake

        if self.workers or "recommend" not in self.functions:
            raise RuntimeError("advance_flags_clock needs a started stack with its functions in this process "
                               "(workers=0)")
        stores = [self.functions["recommend"].module.rollout.store]
        edge = self.functions["edge"].module._state.get("rollout")
        if edge is not None:  # not before the edge's cold start (which fetches anyway)
            stores.append(edge.store)
        appconfig_fake.LOCAL_CLOCK.advance(appconfig.MIN_POLL_S)
        for store in stores:
            store.age(appconfig.MIN_POLL_S)

    @property
    def edge_config_path(self) -> Path:
        """The edge's config as this stack bakes it (build/edge_config.local-<port>.json)."""
        return ROOT / "build" / f"edge_config.local-{self.port}.json"

    @property
    def allowed_origins(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}", f"http://localhost:{self.port}", *self.extra_origins]

    @property
    def shop_url(self) -> str:
        return f"{self.endpoint}/shop/"

    @property
    def console_url(self) -> str:
        return f"{self.endpoint}/console/"

    def shop(self):
        """The demo storefront's backend (``infra.shop``), on the backend kit: it signs its
        server events with the administrator's keys as a shop's backend signs with its own."""
        with self._web_lock:
            if self._shop is None:
                import botocore.session
                from botocore.credentials import Credentials

                from infra.shop.app import CachedKeys, Shop, ShopConfig
                from kit.backend import Keys, ServerEvents

                admin = self.resources.identities.admin
                credentials = Credentials(admin.access_key_id, admin.secret_access_key)
                secrets_client = botocore.session.get_session().create_client(
                    "secretsmanager", region_name="us-east-1", endpoint_url=self.aws_endpoint,
                    aws_access_key_id=admin.access_key_id, aws_secret_access_key=admin.secret_access_key)
                secret = self.resources.names[settings.SIGNING_KEY_SECRET.logical_id]
                self._shop = Shop(ShopConfig(
                    events=ServerEvents(self.endpoint, "us-east-1", credentials),
                    keys=CachedKeys(lambda: Keys.from_secrets_manager(secret, secrets_client)),
                    cookie_domain=None, secure=False,  # plain http on 127.0.0.1: host-only, not Secure
                    recs_timeout_ms=5000))  # one process and one GIL here (800 ms deployed)
            return self._shop

    def console(self):
        with self._web_lock:
            if self._console is None:
                from infra.console import Console, LocalSources

                self._console = Console(LocalSources(self), admin_token=self.console_admin_token)
            return self._console

    def _function(self, name: str, **overrides):
        if not self.workers:
            return Function(name, **overrides)
        credentials = self.resources.identities.functions[name]
        # Deployed, Lambda gives a function its role's credentials in its environment: here too.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": credentials.access_key_id,
               "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
               "AWS_SESSION_TOKEN": credentials.session_token or "",
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "LOCAL_STACK_ROOT": str(ROOT)}
        return pool.FunctionPool(name, env, SINGLE_CONCURRENCY.get(name, self.workers), LOG_FILE,
                                 freeze=self.freeze, overrides=overrides)

    def publish_snapshot(self) -> None:
        """One snapshot run now; collect and aggregate hold its catalogue membership right
        after (in-process), or within their refresh (worker processes: CATALOGUE_REFRESH_S)."""
        self.functions["snapshot"]({})
        if not self.workers:
            self.functions["collect"].module.collector.catalogue.refresh_now()
            self.functions["aggregate"].module.processor.ingestor.catalogue.refresh_now()
        else:
            time.sleep(float(os.environ.get("CATALOGUE_REFRESH_S", "1")) + 0.5)

    def edge_recommender(self):
        """The edge function instance's in-memory serving state (in-process mode only)."""
        if self.workers:
            raise RuntimeError("the edge runs in worker processes (workers > 0): its state is not in this process")
        return self.functions["edge"].module.recommender()

    def warm(self, *names: str) -> None:
        """Start every container of these functions now (provisioned concurrency)."""
        for name in names:
            self.functions[name].warm()

    def stats(self) -> dict:
        """What the emulator itself costs, apart from the handlers: per function, its
        containers, cold starts and handler vs dispatch time; for the HTTP front, each
        request's time outside the handlers it invoked."""
        import numpy as np

        def p(values, q):
            return round(float(np.percentile(values, q)), 3) if values else None

        functions = {}
        for name, function in self.functions.items():
            functions[name] = {
                "max_workers": function.max_workers, "workers": function.workers, "peak_busy": function.peak_busy,
                "invocations": function.invocations, "cold_starts": len(function.init_ms),
                "init_p50_ms": p(function.init_ms, 50),
                "handler_p50_ms": p(function.durations_ms, 50), "handler_p99_ms": p(function.durations_ms, 99),
                "handler_aws_p50_ms": p(function.aws_ms, 50),
                "handler_own_p50_ms": p([d - a for d, a in zip(function.durations_ms, function.aws_ms)], 50),
                "handler_own_p99_ms": p([d - a for d, a in zip(function.durations_ms, function.aws_ms)], 99),
                "wait_p50_ms": p(function.wait_ms, 50), "wait_p99_ms": p(function.wait_ms, 99),
                "dispatch_p50_ms": p(function.dispatch_ms, 50), "dispatch_p99_ms": p(function.dispatch_ms, 99)}
        return {"mode": "workers" if self.workers else "in-process", "workers_per_function": self.workers,
                "freeze": bool(self.workers and self.freeze and pool.CAN_FREEZE), "functions": functions,
                "front": {"requests": len(self.front_total_ms),
                          "total_p50_ms": p(self.front_total_ms, 50), "total_p99_ms": p(self.front_total_ms, 99),
                          "overhead_p50_ms": p(self.front_overhead_ms, 50),
                          "overhead_p99_ms": p(self.front_overhead_ms, 99)},
                "faults": {"every": self.faults.every, "posts": self.faults.posts,
                           "failed_before": self.faults.failed_before, "failed_after": self.faults.failed_after}}

    def reset_stats(self) -> None:
        for function in self.functions.values():
            function.reset_stats()
        self.front_total_ms, self.front_overhead_ms = [], []
        self.faults = Faults(self.faults.every)

    def write_state(self, path: Path = STATE_FILE) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # keys inside: readable by this user only
        path.chmod(0o600)
        path.write_text(json.dumps({
            "endpoint": self.endpoint, "aws_endpoint": self.aws_endpoint, "signing_key": self.signing_key,
            "region": "us-east-1", "resources": self.resources.names,
            "aws_credentials": {"access_key_id": self.resources.identities.admin.access_key_id,
                                "secret_access_key": self.resources.identities.admin.secret_access_key},
            "shop_url": self.shop_url, "console_url": self.console_url,
            "console_admin_token": self.console_admin_token,
        }, indent=2))

    def stop(self) -> None:
        for schedule in self._schedules:
            schedule.stop()
        if self.poller:
            self.poller.stop()
        if self.archive:
            self.archive.stop()
        if self._http:
            self._http.shutdown()
        for function in self.functions.values():
            function.stop()
        for baked in (self.edge_config_path, ROOT / "build" / f"fallback_items.local-{self.port}.json"):
            baked.unlink(missing_ok=True)
        if self._moto:
            self._moto.stdin.close()
            try:
                self._moto.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._moto.kill()
        handlers.use_identities(None)
        if getattr(self, "_saved", None):  # leave the process as it was (tests run several stacks)
            environ, stdout, interval = self._saved
            os.environ.clear()
            os.environ.update(environ)
            if isinstance(sys.stdout, _FunctionOutput):
                logging.getLogger().removeHandler(self._log_handler)
                sys.stdout.sink.close()
            sys.stdout = stdout
            sys.setswitchinterval(interval)
            aws.reset()
            self._saved = None

    # --- routing ---
    def route(self, method: str, path: str, query: dict, headers: dict, body: bytes | None,
              client: str = "127.0.0.1:0", raw_path: str | None = None, raw_query: str = "") -> dict:
        # As CloudFront does for the browsers' routes: its origin-verify header replaces any
        # the client sent, and so does the viewer's address (CloudFront-Viewer-Address, the
        # anonymous identity's source); it adds its request id. A simulator standing in for many
        # browsers (demo, load test) names each one's address with x-local-viewer-address: the
        # local front only. /server/events is the backend's route: SigV4 against the local IAM,
        # as API Gateway's IAM authorizer checks it when deployed.
        if path.startswith("/local/"):
            return self._local_route(method, path, body)
        viewer = headers.pop(LOCAL_VIEWER_HEADER, None) or client
        # CORS as deployed (infra.local.cors): API Gateway answers preflights on its routes and
        # decorates an allowed origin's answers; CloudFront's policy decorates /recommendations.
        origin = headers.get("origin")
        api = path in ("/events", "/server/events", "/console/summary") or path.startswith("/features/")
        if method == "OPTIONS":
            if api and self._cors_api is not None:
                return self._cors_api.preflight(origin, headers.get("access-control-request-method"))
            return {"statusCode": 403 if path.startswith("/recommendations") else 404,
                    "headers": {"content-type": "application/json"}, "body": '{"message": "no preflight here"}'}
        # The browsers' routes come through CloudFront, which answers the viewer with its request
        # id (X-Amz-Cf-Id) and tells the origin; the backend's and operators' call API Gateway.
        through_cdn = path == "/events" or path == "/recommendations" or path.startswith("/recommendations/")
        cf_id = cloudfront_request_id() if through_cdn else None
        answer = self._route(method, path, query, headers, body, raw_path, raw_query, cf_id, viewer)
        if cf_id:
            answer["headers"] = {**(answer.get("headers") or {}), "x-amz-cf-id": cf_id}
        rule = self._cors_api if api else self._cors_cdn if path.startswith("/recommendations") else None
        return rule.decorate(origin, answer) if rule is not None else answer

    def _route(self, method, path, query, headers, body, raw_path, raw_query, cf_id, viewer) -> dict:
        via_cdn = {**headers, settings.ORIGIN_VERIFY_HEADER: self.resources.origin_token, "x-amz-cf-id": cf_id,
                   "cloudfront-viewer-address": viewer}
        if template.is_iam_route(method, path):  # the backend's and the operators' routes
            refused = self.authorize(method, raw_path or path, raw_query, headers, body)
            if refused is not None:
                return refused
        if method == "POST" and path in ("/events", "/server/events"):
            fault = self.faults.next(body or b"")
            if fault == "before":
                return _injected_failure("before")
            answer = self.functions["collect"](http_api_event("POST", path, body,
                                                              via_cdn if path == "/events" else headers, query))
            return _injected_failure("after") if fault == "after" else answer
        if path == "/recommendations" or path.startswith("/recommendations/"):
            event = cloudfront_event(method, path, query, headers, request_id=cf_id)
            answer = self.functions["edge"](event)
            if "status" in answer:  # generated at the edge
                answer = {"statusCode": int(answer["status"]), "body": answer.get("body", ""),
                          "headers": {k: v[0]["value"] for k, v in answer.get("headers", {}).items()}}
            else:  # passed through: CloudFront forwards it to the regional origin
                answer = self.functions["recommend"](http_api_event(method, path, None, via_cdn, query))
            self._count_served(answer)
            return answer
        if path == "/shop" or path.startswith("/shop/"):
            return web.call(self.shop(), method, path[len("/shop"):], query, headers, body, self.endpoint)
        if method == "GET" and path == "/console/summary":  # the deployed console's route (IAM)
            return self.functions["features"](http_api_event("GET", path, None, headers, query))
        if path == "/console" or path.startswith("/console/"):
            return web.call(web.console_app(self.console()), method, path[len("/console"):], query, headers, body,
                            self.endpoint)
        if method == "GET" and path == "/kit/recs.js":
            return web.static(ROOT / "kit" / "recs.js", "text/javascript")
        if method == "GET" and template.route_matches("/features/users/{user_id}", path) and \
                path.startswith("/features/users/"):
            user_id = path[len("/features/users/"):]
            return self.functions["features"](http_api_event("GET", path, None, headers, query,
                                                             {"user_id": user_id}))
        return {"statusCode": 404, "headers": {"content-type": "application/json"},
                "body": json.dumps({"message": f"no route for {method} {path}"})}

    def _count_served(self, answer: dict) -> None:
        if answer.get("statusCode") != 200:
            return
        try:
            variant = json.loads(answer.get("body") or "{}").get("variant") or "none"
        except ValueError:
            return
        self.served[variant] = self.served.get(variant, 0) + 1

    def _local_route(self, method: str, path: str, body: bytes | None) -> dict:
        """The emulator's own routes (not deployed): its statistics, and injected faults."""
        if method == "GET" and path == "/local/stats":
            return {"statusCode": 200, "body": json.dumps(self.stats())}
        if method == "POST" and path == "/local/stats/reset":
            self.reset_stats()
            return {"statusCode": 204, "body": ""}
        if method == "POST" and path == "/local/warm":
            names = json.loads(body or b"{}").get("functions") or []
            self.warm(*[n for n in names if n in self.functions])
            return {"statusCode": 200, "body": json.dumps({n: self.functions[n].workers for n in names
                                                           if n in self.functions})}
        if method == "POST" and path == "/local/faults":
            every = int(json.loads(body or b"{}").get("every", 0))
            self.faults = Faults(every)
            return {"statusCode": 200, "body": json.dumps({"every": every})}
        return {"statusCode": 404, "body": json.dumps({"message": f"no route for {method} {path}"})}


def _forbidden(message: str) -> dict:
    return {"statusCode": 403, "body": json.dumps({"message": message}),
            "headers": {"content-type": "application/json", "x-amzn-errortype": "AccessDeniedException"}}


def _injected_failure(when: str) -> dict:
    return {"statusCode": 503, "headers": {"content-type": "application/json", "x-local-fault": when},
            "body": json.dumps({"message": f"injected failure ({when} collect)"})}


def _front(stack: LocalStack):
    from urllib.parse import parse_qsl, unquote, urlsplit

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._send(413, {"content-type": "application/json"}, b'{"message": "body too large"}')
                return
            body = self.rfile.read(length) if length else None
            started = time.perf_counter()
            pool.begin_request()
            try:
                response = stack.route(method, unquote(url.path), dict(parse_qsl(url.query)),
                                       {k.lower(): v for k, v in self.headers.items()}, body,
                                       f"{self.client_address[0]}:{self.client_address[1]}",
                                       raw_path=url.path, raw_query=url.query)
            except Exception:
                log.exception("front: %s %s", method, self.path)
                self._send(502, {"content-type": "application/json"}, b'{"message": "function error"}')
                return
            raw = response.get("body") or ""
            if response.get("isBase64Encoded"):
                import base64
                data = base64.b64decode(raw)
            else:
                data = raw.encode() if isinstance(raw, str) else raw
            headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
            self._send(response.get("statusCode", 200), headers, data, response.get("cookies") or [])
            if not url.path.startswith("/local/"):
                total = (time.perf_counter() - started) * 1000
                stack.front_total_ms.append(total)
                stack.front_overhead_ms.append(total - pool.handler_ms_of_request())

        def _send(self, status: int, headers: dict, data: bytes, cookies: list[str] = ()) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key not in ("content-length", "connection"):
                    self.send_header(key, value)
            for cookie in cookies:  # as API Gateway's payload 2.0 "cookies": one Set-Cookie each
                self.send_header("set-cookie", cookie)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._handle("GET")

        def do_POST(self):  # noqa: N802
            self._handle("POST")

        def do_OPTIONS(self):  # noqa: N802 - a browser's CORS preflight
            self._handle("OPTIONS")

        def log_message(self, fmt, *args):  # quiet: the functions log structured lines
            pass

    return Front
