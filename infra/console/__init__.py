"""The live console: what the pipeline is doing, at a glance (docs/console.md).

One summary, whatever the stack: events per second, ingest lag, quarantined records,
snapshot age, stock-outs, and per variant the impressions, clicks and conversions with the
guardrail's state, kept over time (a sample at most every ``min_interval_s``, the last
``HISTORY`` of them). ``Sources`` says where each figure comes from: ``LocalSources`` reads
the local stack (its poller, its front, the embedded AWS), ``infra.console.aws`` a deployed
stack (CloudWatch, SQS, S3, DynamoDB, AppConfig) with an operator's read-only credentials.

Admin controls (start, ramp, kill a challenger) go through ``infra.ops.change``, the same
path as ``make experiment-*``; only a caller presenting the console's admin token may use
them, and a deployed console (``make console ENV=...``) offers them only with ``--admin``.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
HISTORY = 600
VARIANTS = ("champion", "challenger")


class Sources:
    """Where the console's figures come from. Each returns None when it cannot say."""

    def events_total(self) -> int | None: ...
    def ingest_lag_ms(self) -> float | None: ...
    def quarantined(self) -> int | None: ...
    def snapshot_built_at_ms(self) -> int | None: ...
    def stockouts(self) -> int | None: ...
    def served(self) -> dict[str, int] | None: ...
    def events_per_s(self) -> float | None: return None  # noqa: E704 - a source with a rate of its own
    def served_share(self) -> float | None: return None  # noqa: E704
    # The flags, the experiment's counters and state, and changes: through ``infra.ops`` with
    # the (flag admin, experiment states, row store) a subclass sets as admin, states, store.
    admin = states = store = None

    def flags(self) -> dict:
        return self.admin.current()

    def experiment(self, doc: dict) -> tuple[dict | None, object | None, dict | None]:
        from infra import ops

        counters, decision = ops.experiment_counters(self.store, doc)
        state = self.states.get(doc["experiment_id"]["default"]) if counters is not None else None
        return counters, decision, state

    def change(self, command: str, **kwargs) -> tuple[str, int, dict]:
        from infra import ops

        return ops.change(self.admin, self.states, command, **kwargs)


class LocalSources(Sources):
    def __init__(self, stack):
        from infra import ops
        from personalize.adapters.soldout import DynamoSoldOut

        self.stack = stack
        names = stack.resources.names
        self.admin, self.states, self.store = ops.connect_local(names)
        self.soldout = DynamoSoldOut(names["FeaturesTable"])
        self.quarantine_url = names["QuarantineQueue"]
        self.bucket = names["ArtifactsBucket"]

    def events_total(self):
        return self.stack.poller.stats.records

    def ingest_lag_ms(self):
        return self.stack.poller.stats.last_lag_ms

    def quarantined(self):
        from personalize.adapters import aws

        attributes = aws.client("sqs").get_queue_attributes(
            QueueUrl=self.quarantine_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attributes.values())

    def snapshot_built_at_ms(self):
        from personalize.adapters.artifacts import S3Artifacts

        pointer = S3Artifacts(self.bucket).pointer_if_changed(None)
        return pointer.doc.get("built_at_ms") if pointer else None

    def stockouts(self):
        return len(self.soldout.read())

    def served(self):
        return dict(self.stack.served)


def _safe(read: Callable, default=None):
    try:
        return read()
    except Exception:  # a figure that cannot be read shows as unknown, never breaks the page
        return default


class Console:
    def __init__(self, sources: Sources, admin_token: str | None = None, min_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time):
        self.sources = sources
        self.admin_token = admin_token
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self._last: dict | None = None
        self._lock = threading.Lock()

    def sample(self) -> dict:
        """The figures now (at most one read of the sources per ``min_interval_s``)."""
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last["t"] < self.min_interval_s:
                return self._last
            s = self.sources
            doc = _safe(s.flags, {}) or {}
            experiment = (doc.get("experiment_id") or {}).get("default", "none")
            counters, decision, state = _safe(lambda: s.experiment(doc), (None, None, None)) if doc else (
                None, None, None)
            built = _safe(s.snapshot_built_at_ms)
            sample = {
                "t": now, "events_total": _safe(s.events_total), "ingest_lag_ms": _safe(s.ingest_lag_ms),
                "quarantined": _safe(s.quarantined), "stockouts": _safe(s.stockouts),
                "snapshot_age_s": round(now - built / 1000, 1) if built else None,
                "served": _safe(s.served) or {},
                "experiment": experiment,
                "champion": (doc.get("champion_model") or {}).get("default"),
                "challenger": (doc.get("challenger_model") or {}).get("default") if experiment != "none" else None,
                "share": _share(doc), "kill_switch": bool((doc.get("kill_switch") or {}).get("default")),
                "state": (state or {}).get("status") or ("running" if counters is not None else "none"),
                "reason": (state or {}).get("reason"),
                "variants": {v: _counters(counters[v]) for v in VARIANTS} if counters else {},
                "decision": {"action": decision.action, "reason": decision.reason} if decision is not None else None,
            }
            rate, share = _safe(s.events_per_s), _safe(s.served_share)
            if rate is not None or share is not None:  # a deployed stack: CloudWatch's own rates
                sample["events_per_s"], sample["served_challenger_share"] = rate, share
            previous = self._last
            if previous is not None and rate is None:
                dt = max(1e-6, now - previous["t"])
                if sample["events_total"] is not None and previous["events_total"] is not None:
                    sample["events_per_s"] = round((sample["events_total"] - previous["events_total"]) / dt, 1)
                served = {v: sample["served"].get(v, 0) - previous["served"].get(v, 0) for v in VARIANTS}
                total = sum(served.values())
                sample["served_challenger_share"] = round(served["challenger"] / total, 4) if total else None
            self.history.append(sample)
            self._last = sample
            return sample

    def summary(self) -> dict:
        current = self.sample()
        return {"now": current, "history": list(self.history)}

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
            note, version, _ = self.sources.change(command, share=share, challenger=challenger)
        except ChangeRefused as exc:
            return 409, {"message": str(exc)}
        except SystemExit as exc:  # registry_pins: a model this checkout does not have
            return 409, {"message": str(exc)}
        with self._lock:
            self._last = None  # the next summary reads the new flags
        return 200, {"message": f"{note}: flags version {version}"}


def _share(doc: dict) -> float | None:
    if not doc:
        return None
    from personalize.rollout import flags

    return round(flags.challenger_share(doc), 4)


def _counters(c) -> dict:
    return {"impressions": c.impressions, "clicks": c.clicks, "add_to_carts": c.add_to_carts,
            "purchases": c.purchases, "conversion": round(c.conversion, 4), "click_through": round(c.click_through, 4)}


def wsgi(console: Console, read_only: bool = False):
    """The console's pages and JSON routes under ``/console`` (PATH_INFO below it)."""

    def app(environ, start_response):
        path, method = environ.get("PATH_INFO") or "/", environ["REQUEST_METHOD"]
        if method == "GET" and path in ("/", ""):
            status, kind, body = "200 OK", "text/html; charset=utf-8", (STATIC / "index.html").read_bytes()
        elif method == "GET" and path in ("/static/console.js", "/static/console.css"):
            kind = "text/javascript" if path.endswith(".js") else "text/css"
            status, body = "200 OK", (STATIC / path[8:]).read_bytes()
        elif method == "GET" and path == "/api/summary":
            summary = console.summary()
            summary["controls"] = not read_only and console.admin_token is not None
            status, kind, body = "200 OK", "application/json", json.dumps(summary).encode()
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
