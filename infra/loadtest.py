"""``make loadtest``: a bounded load test that looks like a sale, against the local stack or a
deployed one, with exact reconciliation of every event it sent.

    make loadtest                                   # starts a local stack (worker processes) and drives it
    make loadtest TARGET=http://127.0.0.1:8080      # a local stack already running (make serve)
    make loadtest TARGET=https://dxxxx.cloudfront.net ENV=dev   # a deployed stack

The targets differ only in how they are set up (``Target``): where the browsers' routes
are, where the shop backend's route is, the operator's AWS credentials and the names of
the signing key, the features table and the quarantine queue. Everything else is shared:

- the shop publishes its catalogue first (the sample's products, ``catalogue`` events on
  the server route) and the run starts once the public route accepts them;
- shoppers follow the Instacart sample's baskets: they view and add to cart each product
  of a real order through the public route (``POST /events`` with their signed cookie),
  ask for recommendations on the way, and the shop's backend confirms the order's purchases
  through the server route (``POST /server/events``, SigV4-signed for ``execute-api``);
- a flash-sale burst: for a short window in the middle of the run, as many shoppers again
  all view, click, cart and buy one item (the sample's most ordered product);
- failed posts (5xx, 429, a dropped connection, or events collect asks to retry) are retried
  with the same ``event_id``s, as real clients do; a few events are invalid on purpose and
  must come back rejected with a reason;
- reconciliation is by event id, not by request: each shopper's row in the features table
  holds the ids of the events counted into it (the dedupe set), so every event sent is
  classed as counted, quarantined (with the reason), rejected at the front (with the
  reason), or lost. An event whose request errored but which did land is counted, never
  "negative loss"; an event counted twice shows as ``events_counted_twice``.

Bounded in time (``--seconds``) and in count (``--max-events``). The figures go to
``build/bench.json`` under ``load``; against the local stack they include the emulator's own
overhead (time in the front and dispatch, apart from the handlers) and its worker counts.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import tomllib
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from infra.local import lifecycle

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "build" / "bench.json"
SIGNING_SECRET_NAME = "{stack}/cookie-signing-key"  # infra/rotate.py, template.yaml
# A browser's User-Agent: the load test's shoppers stand in for people, so their events do the
# work real shoppers' do (an HTTP library's own User-Agent would mark them automated: counted
# for nothing shared, ingest.actors).
SHOPPER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rt-loadtest shopper) Gecko/20100101 Firefox/128.0"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
POST_ATTEMPTS = 5
FINISH_GRACE_S = 20.0  # after --seconds: baskets in progress may finish, nothing is sent past it
MAX_BATCH = 500  # the contract's limit per post


# --- targets: everything that differs between the local stack and a deployed one ----------

@dataclass
class Target:
    name: str  # "local", "dev", "prod"
    public_url: str  # the browsers' routes: POST /events, GET /recommendations (CloudFront when deployed)
    api_url: str  # the regional HTTP API: POST /server/events (IAM), GET /features/users/{id}
    region: str
    session: object  # boto3.Session with the operator's credentials
    signing_secret: str  # Secrets Manager id of the cookie signing key
    features_table: str
    quarantine_queue: str
    aws_endpoint: str | None = None  # the local stack's embedded AWS
    stats_url: str | None = None  # the local stack's own statistics (GET /local/stats)
    stack: str = "local"  # the CloudFormation stack (deployed)

    def client(self, service: str):
        from botocore.config import Config

        return self.session.client(service, region_name=self.region, endpoint_url=self.aws_endpoint,
                                   config=Config(retries={"mode": "standard", "total_max_attempts": 5}))

    def signing_key(self) -> str:
        """The current cookie signing key, read as the operator (secretsmanager:GetSecretValue)."""
        return self.client("secretsmanager").get_secret_value(
            SecretId=self.signing_secret, VersionStage="AWSCURRENT")["SecretString"]


def local_target(endpoint: str | None = None, state_file: Path = ROOT / "build" / "local-stack.json") -> Target:
    """A local stack from what it published (``build/local-stack.json``): its endpoint and
    the administrator's keys, used as an operator's."""
    import boto3

    state = json.loads(Path(state_file).read_text())
    if endpoint and not same_origin(endpoint, state["endpoint"]) and not is_loopback(endpoint):
        raise SystemExit(f"refusing --target {endpoint} for the local stack: it is neither loopback nor the "
                         f"local stack's endpoint ({state['endpoint']}); a deployed stack needs --env dev|prod")
    creds = state["aws_credentials"]
    session = boto3.Session(aws_access_key_id=creds["access_key_id"],
                            aws_secret_access_key=creds["secret_access_key"], region_name=state["region"])
    endpoint = (endpoint or state["endpoint"]).rstrip("/")
    names = state["resources"]
    return Target("local", endpoint, endpoint, state["region"], session, names["SigningKeySecret"],
                  names["FeaturesTable"], names["QuarantineQueue"], aws_endpoint=state["aws_endpoint"],
                  stats_url=endpoint + "/local/stats")


def deployed_target(env: str, url: str | None = None) -> Target:
    """A deployed stack: its names from the CloudFormation outputs of the stack that
    samconfig.toml names for ``env``, with the operator's AWS credentials (the default chain)."""
    import boto3

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())[env]
    stack = config["global"]["parameters"]["stack_name"]
    region = config["deploy"]["parameters"]["region"]
    session = boto3.Session(region_name=region)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in session.client("cloudformation").describe_stacks(
        StackName=stack)["Stacks"][0]["Outputs"]}
    distribution = f"https://{outputs['DistributionDomain']}"
    if url and not same_origin(url, distribution):
        # Every other route, the key and the reconciliation come from this stack: a URL of
        # another stack would split one run across two of them.
        raise SystemExit(f"refusing --target {url}: the {env} stack ({stack}) is served at {distribution}")
    public = (url or distribution).rstrip("/")
    return Target(env, public, outputs["ApiUrl"].rstrip("/"), region, session,
                  SIGNING_SECRET_NAME.format(stack=stack), outputs["FeaturesTableName"],
                  outputs["QuarantineQueueUrl"], stack=stack)


def same_origin(a: str, b: str) -> bool:
    from urllib.parse import urlsplit

    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


def is_loopback(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalProcess:
    """``make serve`` in a child process (the load generator keeps its own GIL), on free
    ports, publishing its state to its own file; stopped with SIGTERM."""

    def __init__(self, workers: int = 4, fault_every: int = 0, state_file: Path | None = None,
                 timeout_s: float = 180.0):
        self.state_file = state_file or ROOT / "build" / f"loadtest-stack-{os.getpid()}.json"
        self.args = ["--port", "0", *(["--workers", str(workers)] if workers else ["--in-process"]),
                     "--fault-every", str(fault_every),
                     "--state-file", str(self.state_file), "--snapshot-interval", "2", "--guardrail-interval", "60"]
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LocalProcess:
        self.state_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # Its errors go to a file (a pipe nobody reads would fill and block the stack); it
        # ends with this process, even a killed one.
        self.log = open(self.state_file.with_suffix(".log"), "wb")  # noqa: SIM115 - closed in __exit__
        self.process = lifecycle.spawn([sys.executable, "-m", "infra.local.serve", *self.args, "--exit-with-parent"],
                                       env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + self.timeout_s
        while not self.state_file.exists():
            if self.process.poll() is not None:
                log = self.state_file.with_suffix(".log").read_text(errors="replace")
                raise RuntimeError(f"the local stack exited: {log[-2000:]}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError("the local stack did not start in time")
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written whole, but give the writer a moment to close it
        return self

    def target(self) -> Target:
        return local_target(state_file=self.state_file)

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.state_file.unlink(missing_ok=True)
        if getattr(self, "log", None) is not None:
            self.log.close()
            if self.process is not None and self.process.returncode in (0, -signal.SIGTERM):
                self.state_file.with_suffix(".log").unlink(missing_ok=True)  # kept when the stack failed


def _is_fallback(raw: bytes) -> bool:
    try:
        return json.loads(raw).get("fallback") is True
    except (ValueError, AttributeError):
        return False


# --- HTTP: keep-alive connections per shopper, SigV4 for the server route ----------------

class Http:
    """One shopper's connections (keep-alive, as a browser keeps them)."""

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self.connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self.last_headers: dict[str, str] = {}  # the last response's, lower-cased names

    def request(self, method: str, url: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        """(status, body); status 0 for a connection that failed."""
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in range(2):  # a keep-alive connection the server closed: reconnect once
            connection = self.connections.get(key)
            if connection is None:
                kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                connection = self.connections[key] = kind(parts.netloc, timeout=self.timeout_s)
            try:
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                self.last_headers = {k.lower(): v for k, v in response.getheaders()}
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                del self.connections[key]
                if attempt:
                    return 0, b""
        return 0, b""

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()


def sigv4_headers(target: Target, method: str, url: str, body: bytes) -> dict:
    """Headers of a request signed for API Gateway's IAM authorizer (service execute-api)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(target.session.get_credentials().get_frozen_credentials(), "execute-api",
              target.region).add_auth(request)
    return dict(request.headers.items())


# --- what shoppers do -----------------------------------------------------------------

@dataclass
class Ledger:
    """Every event sent, by id: whose row it belongs in and what the API said about it."""

    user_of: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)  # event id -> reason
    invalid_sent: set[str] = field(default_factory=set)  # meant to be rejected
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"events": [], "recommendations": []})
    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, event_id: str, user: str) -> None:
        with self.lock:
            self.user_of[event_id] = user

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def timed(self, kind: str, ms: float, ok: bool) -> None:
        with self.lock:
            self.latencies[kind].append(ms)
            self.counts["requests"] += 1
            if not ok:
                self.counts["errors"] += 1


class Load:
    """The shoppers of one run (ids prefixed with the run's id: runs never mix)."""

    def __init__(self, target: Target, ledger: Ledger, run_id: str, max_events: int, seed: int = 7,
                 invalid_every: int = 97):
        self.target = target
        self.ledger = ledger
        self.run_id = run_id
        self.stop_at = 0.0  # set by ``start``
        self.hard_stop_at = float("inf")
        self.max_events = max_events
        self.invalid_every = invalid_every
        self.key = target.signing_key()
        self.orders = list(_orders())
        random.Random(seed).shuffle(self.orders)
        self._orders = itertools.cycle(enumerate(self.orders))
        self._lock = threading.Lock()
        self._sequence = itertools.count()
        self.hot_item = Counter(p for o in self.orders for p in o.products).most_common(1)[0][0]

    def start(self, seconds: float) -> float:
        started = time.monotonic()
        self.stop_at = started + seconds
        # Baskets in progress finish after ``seconds``, but nothing is sent past this.
        self.hard_stop_at = self.stop_at + FINISH_GRACE_S
        return started

    def running(self) -> bool:
        return time.monotonic() < self.stop_at and len(self.ledger.user_of) < self.max_events

    def cookie(self, user: str) -> str:
        from personalize import identity

        return "rt_uid=" + identity.cookie_value(user, self.key)

    def next_order(self):
        with self._lock:
            return next(self._orders)

    # the routes
    def recommend(self, http_: Http, cookie: str, context_item: str | None = None) -> None:
        query = {"k": "10", **({"context_item": context_item} if context_item else {})}
        started = time.perf_counter()
        if time.monotonic() > self.hard_stop_at:
            return
        status, raw = http_.request("GET", f"{self.target.public_url}/recommendations?{urllib.parse.urlencode(query)}",
                                    headers={"Cookie": cookie, "CloudFront-Viewer-Country": "US",
                                             "User-Agent": SHOPPER_AGENT})
        self.ledger.timed("recommendations", (time.perf_counter() - started) * 1000, status == 200)
        if status == 200 and _is_fallback(raw):
            self.ledger.count("recommendations_fallback")  # answered, but degraded: reported apart

    def post(self, http_: Http, user: str, events: list[dict], cookie: str | None) -> None:
        """Post events (the public route with a cookie, else the server route signed with
        SigV4), retrying what failed with the same event ids."""
        ledger = self.ledger
        for event in events:
            ledger.sent(event["event_id"], user)
        pending = events
        for attempt in range(POST_ATTEMPTS):
            if not pending:
                return
            if attempt and time.monotonic() > self.hard_stop_at:
                break  # bounded in time: what is still pending is given up on, and reported
            if attempt:
                ledger.count("retries")
                time.sleep(min(1.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
            body = json.dumps({"events": pending}).encode()
            if cookie is not None:
                url, headers = f"{self.target.public_url}/events", {"Cookie": cookie, "User-Agent": SHOPPER_AGENT,
                                                                     "Content-Type": "application/json"}
            else:
                url = f"{self.target.api_url}/server/events"
                headers = sigv4_headers(self.target, "POST", url, body)
            started = time.perf_counter()
            status, raw = http_.request("POST", url, body, headers)
            ledger.timed("events", (time.perf_counter() - started) * 1000, status == 202)
            if status in RETRY_STATUSES or status == 0:
                continue
            if status != 202:  # a 4xx: the client would not retry; every event in it is rejected
                with ledger.lock:
                    for event in pending:
                        ledger.rejected[event["event_id"]] = f"HTTP {status}: {raw[:200].decode(errors='replace')}"
                return
            answer = json.loads(raw)
            retry, by_index = [], {r["index"]: r["error"] for r in answer.get("rejected", [])}
            with ledger.lock:
                for index, event in enumerate(pending):
                    error = by_index.get(index)
                    if error is None:
                        ledger.accepted.add(event["event_id"])
                    elif "retry later" in error:  # collect could not store it: the client retries
                        retry.append(event)
                    else:
                        ledger.rejected[event["event_id"]] = error
            pending = retry
        ledger.count("posts_given_up")

    # the shoppers
    def event(self, kind: str, item: str, user: str | None = None, **extra) -> dict:
        n = next(self._sequence)
        event = {"event_id": f"{self.run_id}-{n}", "type": kind, "item_id": item, "ts": int(time.time() * 1000),
                 **extra}
        if user is not None:
            event["user_id"] = user
        if self.invalid_every and n % self.invalid_every == self.invalid_every - 1 and kind != "purchase":
            event["quantity"] = 0  # out of bounds: must come back rejected, with the reason
            with self.ledger.lock:
                self.ledger.invalid_sent.add(event["event_id"])
        return event

    def basket_shopper(self, worker: int) -> None:
        """Real Instacart orders, one after the other: browse and cart each product (the
        browser, with the shopper's cookie), then checkout (the shop's backend)."""
        http_ = Http()
        rng = random.Random(worker)
        try:
            while self.running():
                cycle, order = self.next_order()
                user = f"{self.run_id}-{order.user_id}"
                cookie = self.cookie(user)
                self.recommend(http_, cookie)
                for k, product in enumerate(order.products[:12]):
                    if not self.running():
                        return
                    events = [self.event("view", product)]
                    if rng.random() < 0.3:
                        events.append(self.event("click", product))
                    events.append(self.event("add_to_cart", product))
                    self.post(http_, user, events, cookie)
                    if k % 3 == 2:
                        self.recommend(http_, cookie, context_item=product)
                self.post(http_, user, [self.event("purchase", p, user) for p in order.products[:12]], None)
        finally:
            http_.close()

    def publish_catalogue(self, timeout_s: float = 240.0, orders: int | None = None) -> int:
        """The shop publishes its catalogue first (``catalogue`` events on the server route:
        public events about any other item are refused), then waits until the public route
        accepts them all: one snapshot interval, and collect's next look at the membership. The
        probes are anonymous impressions of every item: they count toward nothing."""
        from personalize.ingest.events import MAX_IMPRESSION_ITEMS

        # ``orders``: only the products of the first orders the shoppers will take (a short run's:
        # the whole sample's 14,190 products take minutes to publish on a loaded machine).
        chosen = self.orders if orders is None else self.orders[:orders]
        products = sorted({str(p) for o in chosen for p in o.products} | {str(self.hot_item)})
        http_ = Http()
        try:
            for start in range(0, len(products), 500):
                chunk = enumerate(products[start:start + 500], start)
                body = json.dumps({"events": [
                    {"event_id": f"{self.run_id}-cat-{n}", "type": "catalogue", "item_id": p, "listed": True,
                     "ts": int(time.time() * 1000)} for n, p in chunk]}).encode()
                url = f"{self.target.api_url}/server/events"
                for _ in range(POST_ATTEMPTS):
                    status, raw = http_.request("POST", url, body, sigv4_headers(self.target, "POST", url, body))
                    if status == 202 and not json.loads(raw)["rejected"]:
                        break
                    time.sleep(1.0)
                else:
                    raise RuntimeError(f"the catalogue was not accepted: {status} {raw[:200]!r}")
            # Every item is probed, not a few: the snapshot that publishes the membership can be
            # built while one shard's share of the catalogue is still on its way through aggregate.
            waiting, rounds = list(products), 0
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                rounds += 1
                probes = [{"event_id": f"{self.run_id}-probe-{rounds}-{n}", "type": "impression",
                           "items": waiting[start:start + MAX_IMPRESSION_ITEMS], "ts": int(time.time() * 1000)}
                          for n, start in enumerate(range(0, len(waiting), MAX_IMPRESSION_ITEMS))]
                status, raw = http_.request("POST", f"{self.target.public_url}/events",
                                            json.dumps({"events": probes}).encode(),
                                            {"Content-Type": "application/json"})
                if status == 202:
                    refused = {r["index"] for r in json.loads(raw)["rejected"]}
                    waiting = [i for n, probe in enumerate(probes) if n in refused for i in probe["items"]]
                    if not waiting:
                        return len(products)
                time.sleep(1.0)
            raise RuntimeError(f"the catalogue ({len(products)} items) was not published within {timeout_s:.0f} s")
        finally:
            http_.close()

    def flash_sale_shopper(self, worker: int, start_at: float, end_at: float) -> None:
        """Many shoppers on one item over a short window: see it, click it, cart it, buy it."""
        http_ = Http()
        try:
            time.sleep(max(0.0, start_at - time.monotonic()))
            visit = 0
            while self.running() and time.monotonic() < end_at:
                visit += 1
                user = f"{self.run_id}-fs{worker}-{visit}"
                cookie = self.cookie(user)
                self.recommend(http_, cookie, context_item=self.hot_item)
                self.post(http_, user, [self.event("view", self.hot_item), self.event("click", self.hot_item),
                                        self.event("add_to_cart", self.hot_item)], cookie)
                self.post(http_, user, [self.event("purchase", self.hot_item, user)], None)
        finally:
            http_.close()


@functools.cache
def _orders():
    from models.instacart import load_orders

    return tuple(load_orders())


# --- reconciliation: by event id, in the feature store ----------------------------------

def read_rows(target: Target, users: list[str]) -> dict[str, tuple[set[int], int]]:
    """Per shopper: the event-id keys counted into their row, and the sum of their totals
    (one per event counted: the load sends no quantity), read as the operator
    (dynamodb:BatchGetItem on the features table)."""
    from personalize import codec, keys
    from personalize.ingest import entities

    dynamodb = target.client("dynamodb")
    out: dict[str, tuple[set[int], int]] = {}
    for start in range(0, len(users), 100):
        request = {target.features_table: {
            "Keys": [{"pk": {"S": keys.user_key(u)[0]}, "sk": {"S": keys.user_key(u)[1]}}
                     for u in users[start:start + 100]],
            "ConsistentRead": True, "ProjectionExpression": "pk, #r, aux",
            "ExpressionAttributeNames": {"#r": "row"}}}
        while request:
            response = dynamodb.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(target.features_table, []):
                user = item["pk"]["S"][2:]
                aux = entities.Aux.from_obj(codec.unpack(item["aux"]["B"])) if "aux" in item else entities.Aux()
                row = entities.UserRow.from_obj(codec.unpack(item["row"]["B"])) if "row" in item else None
                out[user] = (set(aux.seen), int(sum(row.totals)) if row else 0)
            request = response.get("UnprocessedKeys") or {}
    return out


def quarantined(target: Target, run_id: str) -> dict[str, str]:
    """Event ids of this run in the quarantine queue, with the reason. A peek: messages are
    hidden for a minute while they are read, never deleted (the operator's to handle)."""
    import base64

    sqs = target.client("sqs")
    out: dict[str, str] = {}
    for _ in range(1000):
        messages = sqs.receive_message(QueueUrl=target.quarantine_queue, MaxNumberOfMessages=10,
                                       VisibilityTimeout=60, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        for message in messages:
            entry = json.loads(message["Body"])
            try:
                event_id = json.loads(base64.b64decode(entry.get("raw") or "")).get("event_id", "")
            except (ValueError, AttributeError):
                continue
            if isinstance(event_id, str) and event_id.startswith(run_id + "-"):
                out[event_id] = entry.get("reason", "")
    return out


def reconcile(target: Target, ledger: Ledger, run_id: str, settle_s: float = 60.0) -> dict:
    """Wait until every acknowledged event is in its shopper's row (or the stream has been
    quiet for a while), then class every event sent."""
    from personalize.ingest import entities

    users = sorted(set(ledger.user_of.values()))
    key_of = {event_id: entities.id_hash(event_id) for event_id in ledger.user_of}
    deadline, last_change, last_found = time.monotonic() + settle_s, time.monotonic(), -1
    while True:
        rows = read_rows(target, users)
        counted = {e for e, u in ledger.user_of.items() if key_of[e] in rows.get(u, (set(), 0))[0]}
        if ledger.accepted <= counted:
            break
        if len(counted) != last_found:
            last_found, last_change = len(counted), time.monotonic()
        if time.monotonic() > deadline or time.monotonic() - last_change > min(20.0, settle_s):
            break
        time.sleep(0.5)
    in_quarantine = quarantined(target, run_id)
    acknowledged = ledger.accepted
    unacknowledged = set(ledger.user_of) - acknowledged - set(ledger.rejected)
    lost = acknowledged - counted - set(in_quarantine)
    totals = sum(total for _, total in rows.values())
    ids_in_rows = sum(len(seen) for seen, _ in rows.values())
    wrongly_rejected = {e for e in ledger.rejected if e not in ledger.invalid_sent}
    return {
        "events_sent": len(ledger.user_of), "events_accepted": len(acknowledged),
        "events_rejected": len(ledger.rejected), "events_rejected_valid": len(wrongly_rejected),
        "rejection_reasons": dict(Counter(r.split(":")[0][:80] for r in ledger.rejected.values()).most_common(5)),
        "events_unacknowledged": len(unacknowledged),
        "events_unacknowledged_landed": len(unacknowledged & counted),
        "events_counted_in_features": len(counted), "events_quarantined": len(in_quarantine),
        "quarantine_reasons": dict(Counter(in_quarantine.values()).most_common(5)),
        "events_counted_twice": totals - ids_in_rows,
        "events_lost": len(lost), "lost_examples": sorted(lost)[:5],
        "events_not_sent_but_counted": len(counted - set(ledger.user_of)),
    }


# --- the run ------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 2) if values else None


def local_stats(target: Target, reset: bool = False) -> dict | None:
    """The local stack's own statistics (None for a deployed target)."""
    if not target.stats_url:
        return None
    http_ = Http(timeout_s=300)
    try:
        if reset:
            http_.request("POST", target.stats_url + "/reset")
            return None
        status, body = http_.request("GET", target.stats_url)
        return json.loads(body) if status == 200 else None
    finally:
        http_.close()


def provision(target: Target, functions=("edge", "collect")) -> None:
    """Local stack: start every container of the request-path functions before the run, as
    provisioned concurrency would (a deployed stack has its own; nothing to do there)."""
    if target.stats_url:
        http_ = Http(timeout_s=300)
        try:
            http_.request("POST", target.stats_url.rsplit("/", 1)[0] + "/warm",
                          json.dumps({"functions": list(functions)}).encode())
        finally:
            http_.close()


def run(target: Target, seconds: float = 30.0, shoppers: int = 8, flash_shoppers: int | None = None,
        max_events: int = 200_000, warmup_s: float = 5.0, settle_s: float = 60.0, invalid_every: int = 97,
        catalogue_orders: int | None = None) -> dict:
    """Drive ``target`` for ``seconds`` (after ``warmup_s`` of the same load, not measured),
    then reconcile every event. Returns the report (``bench.json`` "load")."""
    run_id = f"lt{uuid.uuid4().hex[:8]}"
    flash_shoppers = shoppers if flash_shoppers is None else flash_shoppers
    provision(target)
    Load(target, Ledger(), run_id + "c", max_events).publish_catalogue(orders=catalogue_orders)
    if warmup_s > 0:  # the same load, not measured: containers started, caches and snapshot filled
        warm = Load(target, Ledger(), run_id + "w", max_events)
        warm.start(warmup_s)
        _drive(warm, shoppers, 0)
    ledger = Ledger()
    load = Load(target, ledger, run_id, max_events, invalid_every=invalid_every)
    local_stats(target, reset=True)
    started = load.start(seconds)
    # The flash sale: the middle fifth of the run.
    _drive(load, shoppers, flash_shoppers, (started + 0.4 * seconds, started + 0.6 * seconds))
    elapsed = time.monotonic() - started
    report = reconcile(target, ledger, run_id, settle_s)
    emulator = local_stats(target)  # after the stream is drained: aggregate's figures too
    everything = ledger.latencies["events"] + ledger.latencies["recommendations"]
    out = {
        "target": target.name, "duration_s": round(elapsed, 1), "concurrent_shoppers": shoppers,
        "flash_sale_shoppers": flash_shoppers, "flash_sale_item": load.hot_item,
        "requests": ledger.counts["requests"], "requests_per_s": round(ledger.counts["requests"] / elapsed, 1),
        "p50_ms": round(statistics.median(everything), 2) if everything else None,
        "p99_ms": percentile(everything, 99),
        "recommendations_p50_ms": percentile(ledger.latencies["recommendations"], 50),
        "recommendations_p99_ms": percentile(ledger.latencies["recommendations"], 99),
        "events_p50_ms": percentile(ledger.latencies["events"], 50),
        "events_p99_ms": percentile(ledger.latencies["events"], 99),
        "errors": ledger.counts["errors"], "retries": ledger.counts["retries"],
        "posts_given_up": ledger.counts["posts_given_up"],
        "recommendations_fallback": ledger.counts["recommendations_fallback"], **report,
    }
    if emulator:
        out.update(emulator_figures(emulator))
    return out


def emulator_figures(stats: dict) -> dict:
    """The local stack's own cost, apart from what the handlers take."""
    functions = stats["functions"]
    return {
        "emulator_mode": stats["mode"], "emulator_freeze": stats["freeze"],
        "workers_per_function": stats["workers_per_function"],
        "workers": {name: f["workers"] for name, f in functions.items()},
        "cold_starts": {name: f["cold_starts"] for name, f in functions.items() if f["cold_starts"]},
        "emulator_overhead_p50_ms": stats["front"]["overhead_p50_ms"],
        "emulator_overhead_p99_ms": stats["front"]["overhead_p99_ms"],
        "handler_p50_ms": {name: f["handler_p50_ms"] for name, f in functions.items() if f["invocations"]},
        "handler_p99_ms": {name: f["handler_p99_ms"] for name, f in functions.items() if f["invocations"]},
        # Of the handler's time, what it spent waiting on AWS (moto, one process, here) and its own.
        "handler_aws_p50_ms": {name: f["handler_aws_p50_ms"] for name, f in functions.items() if f["invocations"]},
        "handler_own_p50_ms": {name: f["handler_own_p50_ms"] for name, f in functions.items() if f["invocations"]},
        "handler_own_p99_ms": {name: f["handler_own_p99_ms"] for name, f in functions.items() if f["invocations"]},
        "wait_for_container_p50_ms": {name: f["wait_p50_ms"] for name, f in functions.items() if f["invocations"]},
        "wait_for_container_p99_ms": {name: f["wait_p99_ms"] for name, f in functions.items() if f["invocations"]},
        "dispatch_p50_ms": {name: f["dispatch_p50_ms"] for name, f in functions.items() if f["invocations"]},
        "dispatch_p99_ms": {name: f["dispatch_p99_ms"] for name, f in functions.items() if f["invocations"]},
        "faults_injected": stats["faults"]["failed_before"] + stats["faults"]["failed_after"],
    }


def _drive(load: Load, shoppers: int, flash_shoppers: int, window: tuple[float, float] | None = None) -> None:
    threads = [threading.Thread(target=load.basket_shopper, args=(w,), daemon=True) for w in range(shoppers)]
    if window:
        threads += [threading.Thread(target=load.flash_sale_shopper, args=(w, *window), daemon=True)
                    for w in range(flash_shoppers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def passed(figures: dict) -> bool:
    """Exact: every event sent is accounted for, once; nothing was given up on."""
    return (figures["events_lost"] == 0 and figures["events_counted_twice"] == 0
            and figures["events_rejected_valid"] == 0 and figures["events_unacknowledged"] == 0
            and figures["posts_given_up"] == 0 and figures["events_accepted"] > 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Never from the environment: an exported ENV=prod must not turn a local run into a sale on prod.
    parser.add_argument("--target", default=None,
                        help="base URL (deployed: the stack's CloudFront URL; default: start a local stack)")
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    parser.add_argument("--confirm", default=None,
                        help="deployed: the stack's name, to confirm the run writes synthetic traffic into it")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--shoppers", type=int, default=8, help="concurrent basket shoppers")
    parser.add_argument("--flash-shoppers", type=int, default=None, help="extra shoppers in the flash sale")
    parser.add_argument("--max-events", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=4,
                        help="local stack: worker processes per function (0: every function in one process)")
    parser.add_argument("--fault-every", type=int, default=0, help="local stack: fail every N-th events post")
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(f"load test: {args.shoppers} shoppers (+ a flash sale) for {args.seconds:.0f}s on "
          f"{args.target or 'a new local stack'} ({args.env}) ...", flush=True)
    kwargs = dict(seconds=args.seconds, shoppers=args.shoppers, flash_shoppers=args.flash_shoppers,
                  max_events=args.max_events)
    if args.env != "local":
        target = deployed_target(args.env, args.target)
        print(f"deployed stack {target.stack} ({target.region}): browsers {target.public_url}, "
              f"server route {target.api_url}, features table {target.features_table}", flush=True)
        if args.confirm != target.stack:
            print(f"this writes synthetic shoppers, purchases and a flash sale into {target.stack}; "
                  f"run again with CONFIRM={target.stack} (make) or --confirm {target.stack}", file=sys.stderr)
            return 2
        figures = run(target, **kwargs)
    elif args.target:
        figures = run(local_target(args.target), **kwargs)
    else:
        with LocalProcess(workers=args.workers, fault_every=args.fault_every) as stack:
            figures = run(stack.target(), **kwargs)
    figures["measured_at"] = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())
    figures["cpus"] = os.cpu_count()
    results = json.loads(BENCH.read_text()) if BENCH.exists() else {}
    results["load"] = figures
    BENCH.parent.mkdir(parents=True, exist_ok=True)
    BENCH.write_text(json.dumps(results, indent=2, sort_keys=True))
    print(json.dumps(figures, indent=2))
    ok = passed(figures)
    print(f"load test {'passed' if ok else 'FAILED'}: {figures['events_accepted']} events accepted, "
          f"{figures['events_counted_in_features']} counted, {figures['events_quarantined']} quarantined, "
          f"{figures['events_lost']} lost, {figures['events_counted_twice']} counted twice; "
          f"{figures['errors']} failed requests ({figures['retries']} retries); wrote {BENCH}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
