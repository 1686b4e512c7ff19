"""Edge metrics in the home region, where the rollback alarm looks.

Lambda@Edge writes its logs, and so its EMF metrics, to CloudWatch in whichever region ran
it: the AppConfig rollback alarm in us-east-1 would only see the edge's traffic served from
there. ``HomeMetrics`` sums the edge's per-variant request and fallback counts in memory and
sends them to the home region with one ``PutMetricData`` at most every ``flush_every_s``, off
the request path (Lambda runs it during a later invocation if the instance froze meanwhile).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from personalize.adapters import aws

log = logging.getLogger(__name__)


class HomeMetrics:
    def __init__(self, namespace: str, service: str, client_factory: Callable[[], object], submit: Callable,
                 flush_every_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.namespace = namespace
        self.service = service
        self.client_factory = client_factory
        self.submit = submit  # e.g. a thread pool's submit
        self.flush_every_s = flush_every_s
        self.clock = clock
        self.pending: dict[str, float] = {}
        self.flushed_at = clock()
        self.failures = 0
        self._lock = threading.Lock()

    def add(self, name: str, value: float = 1.0) -> None:
        with self._lock:
            self.pending[name] = self.pending.get(name, 0.0) + value
        if self.clock() - self.flushed_at >= self.flush_every_s:
            self.flushed_at = self.clock()
            self.submit(self.flush)

    def flush(self) -> None:
        with self._lock:
            pending, self.pending = self.pending, {}
        if not pending:
            return
        data = [{"MetricName": name, "Dimensions": [{"Name": "service", "Value": self.service}],
                 "Value": value, "Unit": "Count"} for name, value in sorted(pending.items())]
        try:
            client = self.client_factory()
            for start in range(0, len(data), 1000):
                client.put_metric_data(Namespace=self.namespace, MetricData=data[start:start + 1000])
        except Exception:
            self.failures += 1
            log.warning("edge metrics to the home region failed; kept for the next flush", exc_info=True)
            with self._lock:
                for name, value in pending.items():
                    self.pending[name] = self.pending.get(name, 0.0) + value


HOME_REGION = "us-east-1"


def home_metrics(namespace: str, service: str, submit: Callable) -> HomeMetrics:
    """Counts sent to CloudWatch in the home region with short timeouts (never a request's)."""
    return HomeMetrics(namespace, service,
                       lambda: aws.client("cloudwatch", HOME_REGION, connect_timeout=1.0, read_timeout=2.0),
                       submit=submit)
