"""Metrics that stay cheap at 1,000 requests a second: aggregated in the container.

One namespace (``settings.NAMESPACE``), Powertools' conventions (a ``service`` dimension, the
variant, reason or route as dimensions, never in the metric's name).

``Aggregate`` holds what requests recorded since the last flush: counts, histograms (the
values in 10% log buckets with their counts, so percentiles survive aggregation) and
maxima, per metric name and dimension set. Two sinks read it:

- ``Figures`` prints it as CloudWatch embedded metric format (EMF) to stdout, one document
  per dimension set, at most every ``flush_every_s`` and only inside an invocation: Lambda
  freezes a container between invocations, so nothing runs in the background; what a
  container recorded after its last flush is lost when Lambda reclaims it (``make bench``:
  ``ops.edge_metrics_lost_share``). A histogram is an EMF histogram value (``Values``,
  ``Counts``, ``Max``, ``Min``, ``Count``, ``Sum``; at most 100 buckets, coarsened if more).
- ``HomeMetrics`` sends the same figures to the home region with ``PutMetricData`` (values
  and counts too) at most every minute, off the request path: Lambda@Edge writes its logs,
  and so its EMF, in whichever region ran it, but the alarms (rollback monitors, SLOs) look
  in us-east-1. The home copy carries the dimension ``scope=global`` so that it never adds
  to the us-east-1 edge's own EMF figures.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from personalize.adapters import aws

log = logging.getLogger(__name__)

HOME_REGION = "us-east-1"
# Shoppers (each a variant and an identity) an instance remembers per minute for the rollback
# monitor's per-shopper counts (``ShopperMinutes``; about 5 MB at the full count): an instance
# answers at most about 1,000 a second.
SHOPPERS_REMEMBERED = 65_536
MAX_BUCKETS = 100  # EMF drops a histogram with more (and PutMetricData takes at most 150 values)
BUCKET_WIDTH = math.log(1.1)  # 10% relative error on any percentile
GLOBAL = (("scope", "global"),)

Dims = tuple[tuple[str, str], ...]


def _dims(dims: dict[str, str]) -> Dims:
    return tuple(sorted((k, str(v)) for k, v in dims.items()))


@dataclass
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)  # log-bucket index -> count; None-like index for <= 0
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    width: float = BUCKET_WIDTH

    def add(self, value: float, n: int = 1) -> None:
        index = math.floor(math.log(value) / self.width) if value > 0 else -(1 << 30)
        self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += n
        self.total += value * n
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: Histogram) -> None:
        if other.width != self.width:
            for value, n in zip(*other.values_counts()):
                self.buckets[self._index(value)] = self.buckets.get(self._index(value), 0) + n
        else:
            for index, n in other.buckets.items():
                self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def _index(self, value: float) -> int:
        return math.floor(math.log(value) / self.width) if value > 0 else -(1 << 30)

    def coarsened(self, limit: int = MAX_BUCKETS) -> Histogram:
        """The same values in at most ``limit`` buckets (each doubling of the width halves them)."""
        out = self
        while len(out.buckets) > limit:
            wider = Histogram(width=out.width * 2, count=out.count, total=out.total, low=out.low, high=out.high)
            for index, n in out.buckets.items():
                key = index // 2 if index > -(1 << 29) else index
                wider.buckets[key] = wider.buckets.get(key, 0) + n
            out = wider
        return out

    def values_counts(self) -> tuple[list[float], list[int]]:
        values, counts = [], []
        for index in sorted(self.buckets):
            value = 0.0 if index <= -(1 << 29) else math.exp((index + 0.5) * self.width)
            values.append(round(min(max(value, self.low), self.high), 4))  # never outside what was seen
            counts.append(self.buckets[index])
        return values, counts


class Aggregate:
    """Counts, histograms and maxima per (metric, dimensions), thread-safe."""

    def __init__(self):
        self.counts: dict[tuple[str, Dims], float] = {}
        self.histograms: dict[tuple[str, Dims], tuple[str, Histogram]] = {}
        self.maxima: dict[tuple[str, Dims], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def count(self, name: str, value: float = 1, **dims: str) -> None:
        key = (name, _dims(dims))
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + value

    def observe(self, name: str, value: float, unit: str = "Milliseconds", **dims: str) -> None:
        key = (name, _dims(dims))
        with self._lock:
            entry = self.histograms.get(key)
            if entry is None:
                entry = self.histograms[key] = (unit, Histogram())
            entry[1].add(value)

    def maximum(self, name: str, value: float, unit: str = "None", **dims: str) -> None:
        key = (name, _dims(dims))
        with self._lock:
            old = self.maxima.get(key)
            self.maxima[key] = (unit, value if old is None else max(old[1], value))

    def answer(self, variant: str, fallback_reason: str | None, latency_ms: float, snapshot_age_s: float | None,
               model_fault: bool, shopper: tuple[bool, bool, bool] | None = None) -> None:
        """``record_answer``'s figures for one answer, in one lock, from keys made once;
        ``shopper``: what ``ShopperMinutes.note`` said of its shopper (None: no shopper)."""
        keys = _ANSWER_KEYS.get(variant)
        if keys is None:
            if len(_ANSWER_KEYS) >= 1024:  # variants are few; never grow without bound
                _ANSWER_KEYS.clear()
            keys = _ANSWER_KEYS[variant] = (("Requests", _dims({"variant": variant})),
                                            ("LatencyMs", _dims({"variant": variant})),
                                            ("Fallbacks", _dims({"variant": variant})),
                                            ("ModelFallbacks", _dims({"variant": variant})),
                                            ("Shoppers", _dims({"variant": variant})),
                                            ("ModelFallbackShoppers", _dims({"variant": variant})))
        requests, latency, fallbacks, model_fallbacks, shoppers, faulted_shoppers = keys
        with self._lock:
            counts = self.counts  # under the lock: take() swaps it
            counts[_ANSWERS] = counts.get(_ANSWERS, 0) + 1
            counts[requests] = counts.get(requests, 0) + 1
            entry = self.histograms.get(latency)
            if entry is None:
                entry = self.histograms[latency] = ("Milliseconds", Histogram())
            entry[1].add(latency_ms)
            if latency_ms > LATENCY_OBJECTIVE_MS:
                counts[_SLOW] = counts.get(_SLOW, 0) + 1
            if fallback_reason is not None:
                counts[fallbacks] = counts.get(fallbacks, 0) + 1
                reason = ("FallbackReasons", _dims({"reason": fallback_reason}))
                counts[reason] = counts.get(reason, 0) + 1
                if fallback_reason not in PLANNED_FALLBACKS:
                    counts[_DEGRADED] = counts.get(_DEGRADED, 0) + 1
                if model_fault:
                    counts[model_fallbacks] = counts.get(model_fallbacks, 0) + 1
            if shopper is not None:  # the rollback monitor's: a shopper once a minute (ShopperMinutes)
                new, new_fault, past_memory = shopper
                if new:
                    counts[shoppers] = counts.get(shoppers, 0) + 1
                if new_fault:
                    counts[faulted_shoppers] = counts.get(faulted_shoppers, 0) + 1
                if past_memory:
                    counts[_PAST_MEMORY] = counts.get(_PAST_MEMORY, 0) + 1
            if snapshot_age_s is not None:
                age = round(snapshot_age_s, 1)
                old = self.maxima.get(_SNAPSHOT_AGE)
                self.maxima[_SNAPSHOT_AGE] = ("Seconds", age if old is None else max(old[1], age))

    def empty(self) -> bool:
        return not (self.counts or self.histograms or self.maxima)

    def take(self) -> Aggregate:
        """Everything recorded so far, leaving this one empty."""
        taken = Aggregate()
        with self._lock:
            taken.counts, self.counts = self.counts, {}
            taken.histograms, self.histograms = self.histograms, {}
            taken.maxima, self.maxima = self.maxima, {}
        return taken

    def merge(self, other: Aggregate) -> None:
        """Put back what a failed send took."""
        with self._lock:
            for key, value in other.counts.items():
                self.counts[key] = self.counts.get(key, 0) + value
            for key, (unit, histogram) in other.histograms.items():
                entry = self.histograms.get(key)
                if entry is None:
                    self.histograms[key] = (unit, histogram)
                else:
                    entry[1].merge(histogram)
            for key, (unit, value) in other.maxima.items():
                old = self.maxima.get(key)
                self.maxima[key] = (unit, value if old is None else max(old[1], value))

    def by_dimensions(self) -> dict[Dims, list[tuple[str, str, object]]]:
        """dims -> [(metric, unit, value)], value a float or a Histogram."""
        out: dict[Dims, list] = {}
        for (name, dims), value in sorted(self.counts.items()):
            out.setdefault(dims, []).append((name, "Count", value))
        for (name, dims), (unit, histogram) in sorted(self.histograms.items(), key=lambda kv: kv[0]):
            out.setdefault(dims, []).append((name, unit, histogram))
        for (name, dims), (unit, value) in sorted(self.maxima.items()):
            out.setdefault(dims, []).append((name, unit, value))
        return out


def emf_documents(aggregate: Aggregate, namespace: str, service: str, timestamp_ms: int,
                  extra: dict | None = None) -> list[dict]:
    """One EMF document per dimension set (the service is always one of the dimensions)."""
    documents = []
    for dims, metrics in aggregate.by_dimensions().items():
        names = ["service", *[k for k, _ in dims if k != "service"]]
        doc: dict = {"_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": namespace, "Dimensions": [names],
            "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in metrics]}]},
            "service": service, **dict(dims), **(extra or {})}
        for name, _, value in metrics:
            if isinstance(value, Histogram):
                small = value.coarsened()
                values, counts = small.values_counts()
                doc[name] = {"Values": values, "Counts": counts, "Max": round(small.high, 4),
                             "Min": round(small.low, 4), "Count": small.count, "Sum": round(small.total, 4)}
            else:
                doc[name] = value
        documents.append(doc)
    return documents


def metric_data(aggregate: Aggregate, service: str, extra_dims: Dims = ()) -> list[dict]:
    """``PutMetricData`` datums (histograms as values and counts)."""
    data = []
    for dims, metrics in aggregate.by_dimensions().items():
        dimensions = [{"Name": "service", "Value": service}] + [
            {"Name": k, "Value": v} for k, v in (*dims, *extra_dims) if k != "service"]
        for name, unit, value in metrics:
            datum = {"MetricName": name, "Dimensions": dimensions, "Unit": unit}
            if isinstance(value, Histogram):
                values, counts = value.coarsened(MAX_BUCKETS).values_counts()
                datum.update(Values=values, Counts=[float(c) for c in counts])
            else:
                datum["Value"] = float(value)
            data.append(datum)
    return data


class RepeatedErrors:
    """A log line per kind of failure at most once every ``interval_s``: a corrupt row read
    on each of a shopper's requests, or a challenger that fails on its 2% of 1,000 requests a
    second, would otherwise log 20 tracebacks a second (the answers are counted anyway, by
    fallback reason). The ones left out are counted, and the next line of that kind says how
    many (also as the line's ``left_out`` field, for a Logs Insights ``stats sum(left_out)``). Call
    ``exception`` inside the ``except`` block, as ``logging.exception``."""

    MAX_KINDS = 64  # kinds are few (a reason, a model key); past this, all share one budget

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (last line at, left out since)
        self._lock = threading.Lock()

    def _admit(self, kind: str) -> int | None:
        """None: left out (counted); else how many were left out before this one."""
        now = self.clock()
        with self._lock:
            if kind not in self._last and len(self._last) >= self.MAX_KINDS:
                kind = "other"
            last, left_out = self._last.get(kind, (float("-inf"), 0))
            if now - last < self.interval_s:
                self._last[kind] = (last, left_out + 1)
                return None
            self._last[kind] = (now, 0)
            return left_out

    def _say(self, left_out: int, message: str) -> str:
        if left_out:
            message += f" ({left_out} more of these since the last one logged, at least {self.interval_s:.0f} s apart)"
        return message

    def exception(self, kind: str, message: str, *args) -> bool:
        """Log ``message`` with the current traceback unless this kind was logged within
        ``interval_s``; True when it was logged."""
        left_out = self._admit(kind)
        if left_out is None:
            return False
        self.logger.exception(self._say(left_out, message), *args, extra={"left_out": left_out})
        return True

    def warning(self, kind: str, message: str, *args) -> bool:
        """The same, at WARNING without a traceback."""
        left_out = self._admit(kind)
        if left_out is None:
            return False
        self.logger.warning(self._say(left_out, message), *args, extra={"left_out": left_out})
        return True


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Figures:
    """An ``Aggregate`` printed as EMF at most every ``flush_every_s``, inside an invocation
    (call ``flush_if_due`` at the end of each one). ``bytes_written`` counts what it printed."""

    def __init__(self, namespace: str, service: str, flush_every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 out: Callable[[str], None] = _print_line):
        self.namespace = namespace
        self.service = service
        self.flush_every_s = flush_every_s
        self.clock = clock
        self.wall = wall
        self.out = out
        self.pending = Aggregate()
        self.flushed_at = clock()
        self.bytes_written = 0
        self.flushes = 0

    def count(self, name: str, value: float = 1, **dims: str) -> None:
        self.pending.count(name, value, **dims)

    def observe(self, name: str, value: float, unit: str = "Milliseconds", **dims: str) -> None:
        self.pending.observe(name, value, unit, **dims)

    def maximum(self, name: str, value: float, unit: str = "None", **dims: str) -> None:
        self.pending.maximum(name, value, unit, **dims)

    def answer(self, *figures) -> None:
        """One answer's figures (``record_answer``)."""
        self.pending.answer(*figures)

    def flush_if_due(self) -> bool:
        if self.clock() - self.flushed_at < self.flush_every_s:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        self.flushed_at = self.clock()
        taken = self.pending.take()
        if taken.empty():
            return
        for doc in emf_documents(taken, self.namespace, self.service, int(self.wall() * 1000)):
            line = json.dumps(doc, separators=(",", ":"))
            self.bytes_written += len(line) + 1
            self.out(line)
        self.flushes += 1


class HomeMetrics:
    """An ``Aggregate`` sent to the home region with ``PutMetricData`` at most every
    ``flush_every_s``, off the request path (``submit``: a thread pool's; Lambda runs it
    during a later invocation if the instance froze meanwhile). A failed send keeps its
    figures for the next one."""

    def __init__(self, namespace: str, service: str, client_factory: Callable[[], object], submit: Callable,
                 flush_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 extra_dims: Dims = GLOBAL):
        self.namespace = namespace
        self.service = service
        self.client_factory = client_factory
        self.submit = submit
        self.flush_every_s = flush_every_s
        self.clock = clock
        self.extra_dims = extra_dims
        self.pending = Aggregate()
        self.flushed_at = clock()
        self.failures = 0

    def add(self, name: str, value: float = 1.0, **dims: str) -> None:
        self.pending.count(name, value, **dims)
        self._maybe_flush()

    def observe(self, name: str, value: float, unit: str = "Milliseconds", **dims: str) -> None:
        self.pending.observe(name, value, unit, **dims)
        self._maybe_flush()

    def maximum(self, name: str, value: float, unit: str = "None", **dims: str) -> None:
        self.pending.maximum(name, value, unit, **dims)
        self._maybe_flush()

    def answer(self, *figures) -> None:
        """One answer's figures (``record_answer``)."""
        self.pending.answer(*figures)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self.clock() - self.flushed_at >= self.flush_every_s:
            self.flushed_at = self.clock()
            self.submit(self.flush)

    def flush(self) -> None:
        taken = self.pending.take()
        if taken.empty():
            return
        try:
            data = metric_data(taken, self.service, self.extra_dims)
            client = self.client_factory()
            for start in range(0, len(data), 1000):
                client.put_metric_data(Namespace=self.namespace, MetricData=data[start:start + 1000])
        except Exception:
            self.failures += 1
            log.warning("edge metrics to the home region failed; kept for the next flush", exc_info=True)
            self.pending.merge(taken)


def home_metrics(namespace: str, service: str, submit: Callable) -> HomeMetrics:
    """Figures sent to CloudWatch in the home region with short timeouts (never a request's)."""
    return HomeMetrics(namespace, service,
                       lambda: aws.client("cloudwatch", HOME_REGION, connect_timeout=1.0, read_timeout=2.0),
                       submit=submit)


# --- what serving records per answer (edge and regional alike) -------------------------

# Fallbacks that are part of the design (a shopper without history gets trending items);
# every other reason is a degraded answer and counts against the availability SLO.
PLANNED_FALLBACKS = frozenset({"anonymous", "no_user_row"})
_ANSWERS, _SLOW, _DEGRADED = ("Answers", ()), ("SlowAnswers", ()), ("DegradedAnswers", ())
_SNAPSHOT_AGE = ("SnapshotAgeSeconds", ())
# Answers whose shopper was counted without being remembered (an instance's minute past
# SHOPPERS_REMEMBERED shoppers): the rollback monitor's counts are answers for them.
_PAST_MEMORY = ("ShoppersPastMemory", ())
_ANSWER_KEYS: dict[str, tuple] = {}
LATENCY_OBJECTIVE_MS = 100.0  # the latency SLO: 99% of answers computed within this (docs/operations.md)


class ShopperMinutes:
    """An instance's memory for the rollback monitor's per-shopper counts: the (variant,
    shopper) pairs it answered in the current wall-clock minute, each with whether one of their
    answers was a model fault; at most ``remembered`` of them (past that, each answer counts)."""

    def __init__(self, remembered: int = SHOPPERS_REMEMBERED):
        self._minute = -1
        self._answered: dict[int, bool] = {}
        self._remember = remembered
        self._lock = threading.Lock()

    def note(self, variant: str, shopper: str, faulted: bool, now_s: float) -> tuple[bool, bool, bool] | None:
        """(a shopper new this minute, a faulted shopper new this minute, counted past the
        memory) for one answer; None when ``now_s`` is no time (nothing counted)."""
        if not math.isfinite(now_s):
            return None
        minute = int(now_s // 60)
        key = hash((variant, shopper))
        with self._lock:
            # A clock stepping back by less than a minute keeps the minute it is in; further back,
            # the earlier reading was the wrong one (a forward step undone) and the minute restarts.
            if minute > self._minute or minute < self._minute - 1:
                self._minute = minute
                self._answered = {}
            answered = self._answered
            before = answered.get(key)
            if before is None:  # new this minute, or past the memory: counted (never fewer than there were)
                remembered = len(answered) < self._remember
                if remembered:
                    answered[key] = faulted
                return True, faulted, not remembered
            if faulted and not before:  # a remembered shopper's first fault this minute
                answered[key] = True
                return False, True, False
            return False, False, False

    def __len__(self) -> int:
        return len(self._answered)


def record_answer(sinks, variant: str, fallback_reason: str | None, latency_ms: float,
                  snapshot_age_s: float | None = None, model_fault: bool = False, shopper: str | None = None,
                  minutes: ShopperMinutes | None = None, now_s: float | None = None) -> None:
    """One answer's figures into each sink (``Figures`` and/or ``HomeMetrics``).
    ``model_fault``: the variant's model caused the fallback (``ModelFallbacks``). ``shopper``:
    the verified identity answered (None: anonymous, or in no experiment), noted in the
    instance's ``minutes``: ``Shoppers`` counts it once per variant and wall-clock minute
    (``now_s``; None: now), ``ModelFallbackShoppers`` once if any of its answers in that minute
    was a model fault: what the rollback alarm compares, so one identity's requests weigh one
    shopper per instance they reach in a minute, not one each. Each sink takes them in one lock
    (``Aggregate.answer``)."""
    noted = None
    if shopper is not None and minutes is not None:
        noted = minutes.note(variant, shopper, fallback_reason is not None and model_fault,
                             time.time() if now_s is None else now_s)
    for sink in sinks:
        sink.answer(variant, fallback_reason, latency_ms, snapshot_age_s, model_fault, noted)


def correlation_id(event: object) -> str | None:
    """An API Gateway (HTTP API) event's correlation id: CloudFront's request id when the
    request came through it (the ``x-amz-cf-id`` request header it adds; the viewer got the
    same id back), else API Gateway's own request id."""
    if not isinstance(event, dict):
        return None
    headers = event.get("headers") or {}
    candidates = [headers.get("x-amz-cf-id") if isinstance(headers, dict) else None,
                  (event.get("requestContext") or {}).get("requestId")]
    for value in candidates:
        if isinstance(value, str) and 0 < len(value) <= 128 and value.isascii() and value.isprintable():
            return value
    return None


# --- the edge's log groups in every execution region -----------------------------------

def keep_edge_logs(function_name: str, days: int, log_groups=None,
                   execution_regions: tuple[str, ...] | None = None) -> dict[str, str]:
    """Every region where the edge may run gets its log group with ``days`` of retention,
    before the edge writes its first line there (``functions/edgelogs``, on a schedule).
    Region -> "created", "set" or the error (one region failing never stops the others)."""
    from personalize import regions
    from personalize.adapters.logs import LogGroups, edge_log_group

    log_groups = log_groups or LogGroups()
    group = edge_log_group(function_name)
    report = {}
    for region in execution_regions or regions.EDGE_EXECUTION_REGIONS:
        try:
            report[region] = log_groups.keep(group, region, days)
        except Exception as exc:  # noqa: BLE001 - a region opted out or throttled: the others still get theirs
            log.warning("retention of %s in %s failed", group, region, exc_info=True)
            report[region] = f"{type(exc).__name__}: {exc}"[:200]
    return report
