"""The console's summary: what the pipeline is doing, at a glance (docs/console.md).

One summary, whatever the stack: events per second, ingest lag, quarantined records,
snapshot age, stock-outs, and per variant the impressions, clicks and conversions with the
guardrail's state. ``Sources`` says where each figure comes from: the local stack's own
(``infra.console.LocalSources``), or a deployed stack's services (``DeployedSources``, behind
the IAM-authorised ``GET /console/summary`` of the operators' function), read-only.

``Summary`` reads its sources at most once per ``min_interval_s`` and keeps the last
``HISTORY`` samples; a source with a history of its own (CloudWatch's series, on a deployed
stack, where an instance lives too briefly to keep one) supplies it instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from personalize import settings
from personalize.rollout import experiments, flags

HISTORY = 600
VARIANTS = (flags.CHAMPION, flags.CHALLENGER)
HISTORY_MINUTES = 60  # a deployed stack's charts: the last hour, a point a minute
EMF_DELAY_S = 60.0  # how long after its minute an EMF metric is surely in CloudWatch


def experiment_counters(store, doc: dict):
    """(per-variant counters over every ramp step, the guardrail's decision) of the flags
    document's experiment; (None, None) when none runs."""
    experiment = doc["experiment_id"]["default"]
    if experiment == "none":
        return None, None
    steps = [flags.analysis_id(experiment, s) for s in flags.ramp_steps(doc)] or [experiment]
    per_step = [experiments.read_counters(store, analysed) for analysed in steps]
    counters = {v: experiments.merge_counters([c[v] for c in per_step]) for v in VARIANTS}
    decision = experiments.decide_steps([(c[flags.CHAMPION], c[flags.CHALLENGER]) for c in per_step])
    return counters, decision


class Sources:
    """Where the summary's figures come from. Each returns None when it cannot say."""

    def events_total(self) -> int | None: ...
    def ingest_lag_ms(self) -> float | None: ...
    def served(self) -> dict[str, int] | None: ...
    def events_per_s(self) -> float | None: return None  # noqa: E704 - a source with a rate of its own
    def served_share(self) -> float | None: return None  # noqa: E704
    def history(self) -> list[dict] | None: return None  # noqa: E704 - a source with a series of its own
    # The flags document, the experiment's counters and state: from the (flags reader,
    # experiment states, row store) a subclass sets as admin, states, store.
    admin = states = store = None

    # The quarantine's depth, the snapshot's age and the recent stock-outs: from the
    # (quarantine, artifacts, sold-out log) adapters a subclass sets.
    quarantine = artifacts = soldout = None

    def quarantined(self) -> int | None:
        return self.quarantine.depth() if self.quarantine is not None else None

    def snapshot_built_at_ms(self) -> int | None:
        pointer = self.artifacts.pointer_if_changed(None) if self.artifacts is not None else None
        return pointer.doc.get("built_at_ms") if pointer else None

    def stockouts(self) -> int | None:
        """Items the availability log made unavailable in the last 10 minutes."""
        return len(self.soldout.read()) if self.soldout is not None else None

    def flags(self) -> dict:
        return self.admin.current()

    def experiment(self, doc: dict) -> tuple[dict | None, object | None, dict | None]:
        counters, decision = experiment_counters(self.store, doc)
        state = self.states.get(doc["experiment_id"]["default"]) if counters is not None else None
        return counters, decision, state


def _safe(read: Callable, default=None):
    try:
        return read()
    except Exception:  # noqa: BLE001 - a figure that cannot be read shows as unknown, never breaks the page
        return default


class Summary:
    """``deadline_s``: the sources are read side by side and a figure not read by then shows
    as unknown (a slow or throttled service never holds the whole summary: the deployed route
    answers within its Lambda timeout whatever AWS does)."""

    def __init__(self, sources: Sources, min_interval_s: float = 1.0, clock: Callable[[], float] = time.time,
                 deadline_s: float | None = None):
        self.sources = sources
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.deadline_s = deadline_s
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self._last: dict | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(6, thread_name_prefix="summary") if deadline_s is not None else None

    def _read(self, reads: dict[str, Callable]) -> dict:
        """Each read's value (None when it failed or was late: unknown, never zero)."""
        if self._pool is None:
            return {name: _safe(read) for name, read in reads.items()}
        futures = {name: self._pool.submit(_safe, read) for name, read in reads.items()}
        done, _ = wait(futures.values(), timeout=self.deadline_s)
        return {name: f.result() if f in done else None for name, f in futures.items()}

    def sample(self) -> dict:
        """The figures now (at most one read of the sources per ``min_interval_s``)."""
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last["t"] < self.min_interval_s:
                return self._last
            s = self.sources

            def experiment():
                doc = s.flags()  # raises when unreadable: unknown, never "no experiment"
                counters, decision, state = s.experiment(doc)
                return doc, counters, decision, state

            got = self._read({"experiment": experiment, "events_total": s.events_total,
                              "ingest_lag_ms": s.ingest_lag_ms, "quarantined": s.quarantined,
                              "stockouts": s.stockouts, "built": s.snapshot_built_at_ms, "served": s.served,
                              "rate": s.events_per_s, "share": s.served_share})
            doc, counters, decision, state = got["experiment"] or (None, None, None, None)
            built = got["built"]
            sample = {
                "t": now, "events_total": got["events_total"], "ingest_lag_ms": got["ingest_lag_ms"],
                "quarantined": got["quarantined"], "stockouts": got["stockouts"],
                "snapshot_age_s": round(now - built / 1000, 1) if built else None,
                "served": got["served"] or {},
            }
            if doc is None:  # the flags could not be read in time: say so, claim nothing
                sample.update(experiment=None, champion=None, challenger=None, share=None, kill_switch=None,
                              state=None, reason="flags unreadable", variants={}, decision=None,
                              flags_error=True)
            else:
                experiment_id = (doc.get("experiment_id") or {}).get("default", "none")
                sample.update(
                    experiment=experiment_id, champion=(doc.get("champion_model") or {}).get("default"),
                    challenger=(doc.get("challenger_model") or {}).get("default") if experiment_id != "none" else None,
                    share=_share(doc), kill_switch=bool((doc.get("kill_switch") or {}).get("default")),
                    state=(state or {}).get("status") or ("running" if counters is not None else "none"),
                    reason=(state or {}).get("reason"),
                    variants={v: _counters(counters[v]) for v in VARIANTS} if counters else {},
                    decision={"action": decision.action, "reason": decision.reason} if decision is not None else None)
            rate, share = got["rate"], got["share"]
            if rate is not None or share is not None:  # a deployed stack: CloudWatch's own rates
                sample["events_per_s"], sample["served_challenger_share"] = rate, share
            previous = self._last
            if previous is not None and rate is None and sample["events_total"] is not None:
                dt = max(1e-6, now - previous["t"])
                if previous["events_total"] is not None:
                    sample["events_per_s"] = round((sample["events_total"] - previous["events_total"]) / dt, 1)
                served = {v: sample["served"].get(v, 0) - previous["served"].get(v, 0) for v in VARIANTS}
                total = sum(served.values())
                sample["served_challenger_share"] = round(served["challenger"] / total, 4) if total else None
            self.history.append(sample)
            self._last = sample
            return sample

    def invalidate(self) -> None:
        """The next sample reads the sources again (after a change of the flags)."""
        with self._lock:
            self._last = None

    def summary(self) -> dict:
        current = self.sample()
        own = _safe(self.sources.history)
        return {"now": current, "history": own if own is not None else list(self.history)}


def _share(doc: dict) -> float | None:
    return round(flags.challenger_share(doc), 4) if doc else None


def _counters(c) -> dict:
    return {"impressions": c.impressions, "clicks": c.clicks, "add_to_carts": c.add_to_carts,
            "purchases": c.purchases, "conversion": round(c.conversion, 4), "click_through": round(c.click_through, 4)}


# ---------------------------------------------------------------- a deployed stack


class _FlagsReader:
    """The deployed flags document, read-only, through the AppConfig data API (at most one
    poll per its minimum interval; the last good document between polls)."""

    def __init__(self, fetch):
        self.store = flags.CachedDocumentStore(fetch, max_age_s=30.0)

    def current(self) -> dict:
        return self.store.get_configuration()


class DeployedSources(Sources):
    """A deployed stack's figures, read with the operators' function's own role: CloudWatch
    (events in, the aggregate's iterator age, answers per variant: one GetMetricData for the
    last hour), SQS (the quarantine's depth), S3 (the snapshot pointer), DynamoDB (recent
    stock-outs, the experiment's counters and state) and AppConfig's data API (the flags)."""

    def __init__(self, metrics, quarantine, artifacts, soldout, admin, states, store, aggregate_function: str,
                 clock: Callable[[], float] = time.time):
        self.metrics, self.quarantine, self.artifacts, self.soldout = metrics, quarantine, artifacts, soldout
        self.admin, self.states, self.store = admin, states, store
        self.aggregate_function = aggregate_function
        self.clock = clock
        self._series: dict | None = None
        self._series_at = float("-inf")
        self._complete_before = float("-inf")
        self._series_lock = threading.Lock()

    @classmethod
    def from_env(cls) -> DeployedSources:
        from personalize.adapters import appconfig, aws
        from personalize.adapters.artifacts import S3Artifacts
        from personalize.adapters.experiment_states import ExperimentStates
        from personalize.adapters.metrics import CloudWatchReader
        from personalize.adapters.quarantine import SqsQuarantine
        from personalize.adapters.rowstore import ITEMS, DynamoRowStore
        from personalize.adapters.soldout import DynamoSoldOut

        config = settings.load(*settings.CONSOLE_RESOURCES)
        items = config[settings.ITEMS_TABLE]
        application, profile = os.environ["APPCONFIG_APPLICATION"], os.environ["APPCONFIG_PROFILE"]
        if os.environ.get("FLAGS_SOURCE") == "local":
            fetch = appconfig.local_fetcher(config[settings.ARTIFACTS_BUCKET], application, profile)
        else:
            fetch = appconfig.appconfig_fetcher(application, os.environ["APPCONFIG_ENVIRONMENT"], profile)
        def quick(service):  # the console waits for nobody: one attempt, short timeouts
            return aws.client(service, connect_timeout=1.0, read_timeout=2.0, attempts=1)

        return cls(CloudWatchReader(client=quick("cloudwatch")),
                   SqsQuarantine(config[settings.QUARANTINE_QUEUE], client=quick("sqs")),
                   S3Artifacts(config[settings.ARTIFACTS_BUCKET], client=quick("s3")),
                   DynamoSoldOut(config[settings.FEATURES_TABLE], client=quick("dynamodb")),
                   _FlagsReader(fetch), ExperimentStates(items),
                   DynamoRowStore({ITEMS: items}, client=quick("dynamodb"), max_attempts=1),
                   os.environ["AGGREGATE_FUNCTION"])

    def _queries(self):
        from personalize.adapters.metrics import MetricQuery

        ns = settings.NAMESPACE
        out = [MetricQuery("events", ns, "EventsIn", (("service", "aggregate"),), "Sum"),
               MetricQuery("lag", "AWS/Lambda", "IteratorAge", (("FunctionName", self.aggregate_function),),
                           "Maximum")]
        for variant in VARIANTS:  # the edge's (all regions, as sent to the home region) and the region's
            out.append(MetricQuery(f"{variant}_edge", ns, "Requests",
                                   (("service", "edge"), ("scope", "global"), ("variant", variant)), "Sum"))
            out.append(MetricQuery(f"{variant}_region", ns, "Requests",
                                   (("service", "recommend"), ("variant", variant)), "Sum"))
        return out

    def _minutes(self) -> list[dict]:
        """One point a minute over the last hour: (t, events_per_s, ingest_lag_ms,
        served_challenger_share), read at most once a minute (CloudWatch's resolution; a
        failed read is not tried again for a minute either: the figures show as unknown).
        Only complete minutes: those that ended ``EMF_DELAY_S`` before the read (EMF lines
        become metrics within about a minute), so a minute still filling never reads as a drop."""
        from personalize.adapters.metrics import PERIOD_S

        with self._series_lock:  # the summary reads its figures side by side: one read for all
            now = self.clock()
            if now - self._series_at >= PERIOD_S:
                self._series_at = now
                try:
                    self._series = self.metrics.series(self._queries(), HISTORY_MINUTES)
                except Exception:
                    self._series = None
                    raise
                self._complete_before = now - PERIOD_S - EMF_DELAY_S
        if self._series is None:
            raise RuntimeError("CloudWatch unreadable (tried less than a minute ago)")
        by_minute: dict[float, dict[str, float]] = {}
        for key, points in self._series.items():
            for t, value in points:
                if t <= self._complete_before:
                    by_minute.setdefault(t, {})[key] = value
        newest = (self._complete_before // PERIOD_S) * PERIOD_S  # the newest complete minute
        out = []
        for t in sorted(set(by_minute) | {newest}):
            m = by_minute.get(t, {})
            champion = m.get("champion_edge", 0.0) + m.get("champion_region", 0.0)
            challenger = m.get("challenger_edge", 0.0) + m.get("challenger_region", 0.0)
            # No EventsIn point in a complete minute: aggregate counted no event (EMF writes none).
            out.append({"t": t, "events_per_s": round(m.get("events", 0.0) / PERIOD_S, 1),
                        "ingest_lag_ms": m.get("lag"),
                        "served_challenger_share": round(challenger / (champion + challenger), 4)
                        if champion + challenger else None})
        return out

    def _latest(self, key: str):
        """The newest complete minute's figure (None: unknown, e.g. no answer served)."""
        return self._minutes()[-1][key]

    def history(self):
        return self._minutes()

    def events_total(self):
        return None  # deployed, a rate comes straight from CloudWatch (events_per_s)

    def events_per_s(self):
        return self._latest("events_per_s")

    def ingest_lag_ms(self):
        return self._latest("ingest_lag_ms")

    def served_share(self):
        return self._latest("served_challenger_share")

    def served(self):
        return None
