"""``make bench`` (ops): what operating the edge costs per request, in log bytes and dollars.

- ``edge_log_bytes_per_request``: every byte the edge's own code writes to its log at steady
  state (a warm container at ``PER_CONTAINER_RPS``): the EMF figures (aggregated, flushed at
  most every 5 s), the sampled scored-candidates records at the sample rate a deployed edge
  is built with, and the lines of a 0.1% error rate (an exception that passes the request to
  the origin, with its traceback). Budget: <= 100.
- ``edge_platform_log_bytes_per_request``: Lambda's own START/END/REPORT lines per
  invocation (their documented text format), apart: not ours to shrink in code.
- ``edge_metrics_lost_share``: the share of requests whose figures never reach CloudWatch
  because Lambda froze the container after its last request and then reclaimed it (nothing
  runs in a frozen container: the last window since the previous flush is lost), for a
  container serving Poisson traffic at a few rates for ``LIFETIME_S``; and the same for the
  home-region copy (flushed every 60 s).
- ``usd_per_million_requests``: ``infra.costs`` over the calls measured here and in the
  other sections (network reads per request, writes per event), at published prices.
"""

from __future__ import annotations

import io
import json
import logging
import random
import uuid

from infra import costs, edge_build
from infra.local.lambda_events import context
from personalize import telemetry

PER_CONTAINER_RPS = 100.0  # a warm edge container's steady rate (1,000 requests/s over ~10 containers)
ERROR_RATE = 0.001
LIFETIME_S = 1800.0
KEY = "ops-bench-key"


class Counter(io.TextIOBase):
    """A stream that keeps the lines written to it, by kind."""

    def __init__(self):
        self.kinds: dict[str, int] = {}
        self.lines = 0
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            kind = ("emf" if line.startswith('{"_aws"') else "scored" if '"scored_candidates"' in line[:40]
                    else "error" if '"level":"ERROR"' in line or '"level": "ERROR"' in line else "other")
            self.kinds[kind] = self.kinds.get(kind, 0) + len(line.encode()) + 1
            self.lines += 1
        return len(text)

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


def edge_log_bytes(requests: int = 20_000, rps: float = PER_CONTAINER_RPS, error_rate: float = ERROR_RATE) -> dict:
    import contextlib

    from tests.bench import profile_serving

    module, recommender, _, _, events = profile_serving.setup(500)
    recommender.log_sample_rate = edge_build.edge_config("prod")["log_sample_rate"]  # as a deployed edge has it
    counter = Counter()
    # Powertools copies the edge logger's handler to every "personalize" logger registered when
    # the handler module was imported (copy_config_to_registered_loggers): which ones depends on
    # what this process imported before, so every one of them is counted.
    loggers = [module.logger._logger, logging.getLogger("personalize")] + [
        logger for name, logger in list(logging.root.manager.loggerDict.items())
        if name.startswith("personalize.") and isinstance(logger, logging.Logger)]
    streams = list({id(h): h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)}.values())
    saved = [(h, h.stream) for h in streams]
    now = [0.0]
    module.figures.clock = lambda: now[0]
    module.figures.flushed_at = 0.0
    real_recommend = recommender.recommend
    failing = [False]

    def recommend(*args, **kwargs):
        if failing[0]:
            raise ConnectionResetError("injected: the edge's own failure (bench)")
        return real_recommend(*args, **kwargs)

    recommender.recommend = recommend
    every = round(1 / error_rate) if error_rate else 0
    ctx = context("edge")
    try:
        for handler in streams:
            handler.stream = counter
        with contextlib.redirect_stdout(counter):
            for n in range(requests):
                now[0] += 1.0 / rps
                failing[0] = bool(every) and n % every == every - 1
                module.lambda_handler(events[n % len(events)], ctx)
            module.figures.flush()  # the last window, as a container that keeps serving would
    finally:
        recommender.recommend = real_recommend
        for handler, stream in saved:
            handler.stream = stream
    per_request = {kind: round(b / requests, 2) for kind, b in sorted(counter.kinds.items())}
    return {"edge_log_bytes_per_request": round(counter.total / requests, 1),
            "edge_log_bytes_by_kind": per_request, "edge_log_lines_per_request": round(counter.lines / requests, 4),
            "edge_log_requests": requests, "edge_log_rps_per_container": rps,
            "edge_log_error_rate": error_rate, "edge_log_sample_rate": recommender.log_sample_rate,
            "edge_emf_flushes": module.figures.flushes}


def platform_lines(duration_ms: float = 1.4, memory_mb: int = 1024, used_mb: int = 212) -> list[str]:
    """Lambda's START/END/REPORT lines for one invocation, in its text format."""
    request_id = str(uuid.uuid4())
    billed = max(1, int(-(-duration_ms // 1)))
    return [f"START RequestId: {request_id} Version: 42",
            f"END RequestId: {request_id}",
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {billed} ms\t"
            f"Memory Size: {memory_mb} MB\tMax Memory Used: {used_mb} MB\t"]


def platform_log_bytes() -> dict:
    lines = platform_lines()
    return {"edge_platform_log_bytes_per_request": sum(len(line) + 1 for line in lines),
            "edge_platform_log_events_per_request": len(lines)}


def lost_share(rps: float, flush_every_s: float, lifetime_s: float = LIFETIME_S, seed: int = 5,
               containers: int = 20) -> float:
    """The share of requests whose figures a container never flushes: Poisson arrivals for
    ``lifetime_s``, a flush at the end of an invocation at most every ``flush_every_s``
    (telemetry.Figures' rule), then frozen and reclaimed."""
    rng = random.Random(seed)
    lost = total = 0
    now = [0.0]
    for _ in range(containers):
        now[0] = 0.0
        figures = telemetry.Figures("NS", "edge", flush_every_s=flush_every_s, clock=lambda: now[0],
                                    out=lambda line: None)
        t, served = 0.0, 0
        while True:
            t += rng.expovariate(rps)
            if t > lifetime_s:
                break
            now[0] = t
            figures.count("Requests")
            served += 1
            figures.flush_if_due()
        unflushed = sum(v for v in figures.pending.counts.values())
        lost += unflushed
        total += served
    return lost / total if total else 0.0


def run() -> dict:
    out = {}
    out.update(edge_log_bytes())
    out.update(platform_log_bytes())
    out["edge_metrics_lost_share_by_rps"] = {str(rps): round(lost_share(rps, 5.0), 5) for rps in (1.0, 10.0, 100.0)}
    out["edge_metrics_lost_share"] = out["edge_metrics_lost_share_by_rps"]["10.0"]
    out["home_metrics_lost_share_by_rps"] = {str(rps): round(lost_share(rps, 60.0), 5) for rps in (1.0, 10.0, 100.0)}
    out["metrics_lost_container_lifetime_s"] = LIFETIME_S
    try:
        measured = json.loads(costs.BENCH.read_text())
    except (OSError, ValueError):
        measured = {}
    model = costs.model({**measured, "ops": out})
    out["usd_per_million_requests"] = model["usd_per_million_requests"]
    out["usd_per_million_requests_by_part"] = model["by_part"]
    out["cost_assumptions"] = model["assumptions"]
    return out
