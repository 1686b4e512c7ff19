"""Serving when AWS is unreachable or slow at cold start (DESIGN 4, "Degraded").

A cold serving instance needs the network to build its state (signing key, flags, the item
snapshot, the sold-out list). ``BackgroundBuild`` runs that build off the request path: a
request waits for it at most until its deadline (derived from the invocation's remaining
time), then answers from what the bundle carries (``BundledFallback``: the bundled champion's
name and a popular-items list baked at build time, low-stock items already left out). A
failed build is retried in the background with exponential backoff, not on every request.
Lambda gives the instance CPU only during invocations, so a retry happens during a later
request; none of them waits for it beyond its own deadline.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from personalize import keys

log = logging.getLogger(__name__)
T = TypeVar("T")

COLD_START_WAIT_S = 0.6   # a cold request waits this long for the build, at most
SAFETY_MARGIN_S = 0.3     # and leaves this much of the invocation's time to answer
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# From this many failures in a row (about 3 s of retrying), a failed build is logged at ERROR with
# its traceback: an outage's first blips are warnings, a build that cannot succeed (a service the
# bundle's SDK lacks, a model that does not load) is an error someone must fix.
PERSISTENT_FAILURES = 3
FALLBACK_REASON = "cold_start_unavailable"
OUTSIDE = "outside"  # the variant of an answer that is not part of any experiment


def deadline_s(remaining_ms: int | None, cap_s: float = COLD_START_WAIT_S) -> float:
    """How long a cold request may wait for the build: within its cap and the invocation's time."""
    if remaining_ms is None:
        return cap_s
    return max(0.0, min(cap_s, remaining_ms / 1000 - SAFETY_MARGIN_S))


class BackgroundBuild(Generic[T]):
    """A value built once on a background thread; ``get(wait_s)`` waits for it at most
    ``wait_s``. A failed attempt is retried after a backoff, on the next ``get`` past it."""

    def __init__(self, build: Callable[[], T], clock: Callable[[], float] = time.monotonic,
                 backoff_s: tuple[float, ...] = BACKOFF_S):
        self.build = build
        self.clock = clock
        self.backoff_s = backoff_s
        self.value: T | None = None
        self.failures = 0
        self.attempts = 0
        self.next_attempt_at = float("-inf")
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._done: threading.Event | None = None
        self._given_up: threading.Event | None = None

    def _run(self, done: threading.Event) -> None:
        try:
            value = self.build()
        except Exception as exc:
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            delay = self.backoff_s[min(self.failures, len(self.backoff_s)) - 1]
            self.next_attempt_at = self.clock() + delay
            persistent = self.failures >= PERSISTENT_FAILURES
            log.log(logging.ERROR if persistent else logging.WARNING,
                    "cold-start build failed (%s), %d in a row; next attempt in %.0f s", self.last_error,
                    self.failures, delay, exc_info=persistent)
        else:
            self.value = value
        finally:
            done.set()

    def get(self, wait_s: float | None = None) -> T | None:
        """The value, waiting up to ``wait_s`` (None: until the attempt ends) for an attempt
        in flight or started now; None when it is not there in time."""
        if self.value is not None:
            return self.value
        with self._lock:
            done = self._done
            if (done is None or done.is_set()) and self.value is None and self.clock() >= self.next_attempt_at:
                done = self._done = threading.Event()
                self.attempts += 1
                # The caller's context goes along (the local stack's per-function credentials).
                context = contextvars.copy_context()
                threading.Thread(target=context.run, args=(self._run, done), name="cold-start-build",
                                 daemon=True).start()
        if done is not None and done is not self._given_up:
            if not done.wait(wait_s):
                # This attempt outlived a request's deadline: later requests answer at once
                # instead of each waiting its full deadline for the same slow attempt.
                self._given_up = done
        return self.value


class BundledFallback:
    """What a cold instance can answer without AWS: the bundled champion's name and the
    popular items baked into the bundle at build time (``fallback_items.json``)."""

    def __init__(self, champion: str, items: list[str], built_at: str | None = None):
        self.champion = champion
        self.items = items
        self.built_at = built_at

    @classmethod
    def from_file(cls, path: Path, champion: str) -> BundledFallback:
        try:
            doc = json.loads(path.read_text())
            return cls(champion, [str(i) for i in doc["items"]], doc.get("built_at"))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("no usable bundled fallback list at %s: a cold outage answers an empty list", path)
            return cls(champion, [])

    def answer(self, k: int) -> dict:
        items = self.items[:k]
        return {"rec_id": f"{keys.NO_EXPERIMENT}{keys.REC_ID_SEPARATOR}{uuid.uuid4().hex[:16]}", "user_id": None,
                "variant": OUTSIDE, "model": self.champion,
                "items": [{"item_id": item, "score": round((len(items) - n) / len(items), 6)}
                          for n, item in enumerate(items)],
                "fallback": True, "fallback_reason": FALLBACK_REASON,
                "snapshot_version": f"bundled:{self.built_at}" if self.built_at else "bundled"}


def popular_list(snapshot, n: int = 100) -> list[str]:
    """The snapshot's popular items for a bundle: available, stock not low, best first."""
    keep = snapshot.available & ~snapshot.low_stock
    return [snapshot.items[i] for i in snapshot.popular.tolist() if keep[i]][:n]
