"""The rollout, as a Powertools feature-flags document in AppConfig, and sticky assignment.

The document (see ``infra/flags/``) holds ``champion_model`` and ``challenger_model``
(``<name>/<version>``), ``experiment_id``, ``kill_switch`` and the rule ``challenger``: a
``MODULO_RANGE`` over the shopper's bucket (0..9999, so shares have 0.01% resolution).
The bucket is a salted hash of (experiment id, user id): the same shopper gets the same
variant on every request and at every edge location, a new experiment reshuffles, and
anonymous shoppers get the champion labelled ``outside`` (not part of the experiment, left
out of its analysis); so does everyone on an instance whose flags are older than
``FLAGS_MAX_AGE_S`` (it cannot have seen a kill).

Serving evaluates the real document with Powertools ``FeatureFlags``. The store keeps the
last good document when a fetch fails and counts the failure; before any document was
loaded, ``Rollout.assign`` serves the champion it was built with and says so
(``flags_loaded=False``), because Powertools alone would return defaults silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.feature_flags import FeatureFlags
from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider
from aws_lambda_powertools.utilities.feature_flags.exceptions import ConfigurationStoreError

log = logging.getLogger(__name__)

BUCKETS = 10_000
CHAMPION = "champion"
CHALLENGER = "challenger"
# Served the champion but not part of the experiment (anonymous, or flags too old to trust):
# labelled so, attributed to no experiment, left out of its analysis.
OUTSIDE = "outside"
FLAGS_MAX_AGE_S = 300.0  # flags not refreshed for longer than this serve only the champion


def bucket(user_id: str, experiment_id: str) -> int:
    digest = hashlib.sha256(f"{experiment_id}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


MODEL_PINS = "model_sha256"


def share_step(share: float) -> int:
    """A ramp step's id: the challenger's share in buckets (0.02 -> 200)."""
    return round(share * BUCKETS)


def analysis_id(experiment_id: str, step: int) -> str:
    """What a response's rec_id names as its experiment: the experiment at one ramp step, so
    counters of steps with different shares are never pooled (see experiments.decide)."""
    return f"{experiment_id}@{step}"


def rollout_document(champion: str, challenger: str | None, share: float, experiment_id: str,
                     kill_switch: bool = False, pins: dict[str, str] | None = None,
                     earlier_steps: tuple[int, ...] | list[int] = ()) -> dict:
    """A flags document; ``share`` is the challenger's fraction of shoppers (0..1).

    ``pins``: model key -> sha256 of its model.onnx, for models that serving loads from the
    artifacts bucket (not bundled with the deploy). Only a deployer writes this document, so
    a model object replaced in S3 does not match its pin and is refused before parsing.
    ``earlier_steps``: the shares (in buckets) this experiment ran at before: the guardrail
    analyses every step of the experiment, each apart."""
    end = round(share * BUCKETS) - 1
    steps = [int(s) for s in earlier_steps]
    if share > 0 and share_step(share) not in steps:
        steps.append(share_step(share))
    doc: dict[str, Any] = {
        "champion_model": {"default": champion, "boolean_type": False},
        "challenger_model": {"default": challenger or champion, "boolean_type": False},
        "experiment_id": {"default": experiment_id, "boolean_type": False},
        "kill_switch": {"default": kill_switch},
        "challenger": {"default": False},
        "ramp_steps": {"default": steps, "boolean_type": False},
    }
    if pins:
        doc[MODEL_PINS] = {"default": dict(sorted(pins.items())), "boolean_type": False}
    if challenger and end >= 0:
        doc["challenger"]["rules"] = {
            f"bucket below {end + 1} of {BUCKETS}": {
                "when_match": True,
                "conditions": [{"action": "MODULO_RANGE", "key": "bucket",
                                "value": {"BASE": BUCKETS, "START": 0, "END": end}}],
            }
        }
    return doc


def challenger_share(doc: dict) -> float:
    rules = doc.get("challenger", {}).get("rules") or {}
    share = 0
    for rule in rules.values():
        for condition in rule.get("conditions", []):
            if condition.get("action") == "MODULO_RANGE":
                value = condition["value"]
                share += (value["END"] - value["START"] + 1) / value["BASE"]
    return 0.0 if doc.get("kill_switch", {}).get("default") else share


def ramp_steps(doc: dict) -> list[int]:
    """Every ramp step of the document's experiment so far (in buckets)."""
    return [int(s) for s in (doc.get("ramp_steps", {}).get("default") or [])]


class CachedDocumentStore(StoreProvider):
    """A flags document fetched at most every ``max_age_s``; the last good one survives
    fetch failures (counted, logged); before the first success, fetches raise."""

    def __init__(self, fetch: Callable[[], dict], max_age_s: float = 10.0, clock=time.monotonic,
                 executor=None):
        self.fetch = fetch
        self.max_age_s = max_age_s
        self.clock = clock
        # With an executor, a stale document is refreshed in the background and the current
        # one answers meanwhile: serving never waits on AppConfig once it has a document.
        self.executor = executor
        self.document: dict | None = None
        self.fetched_at = float("-inf")
        self.succeeded_at = float("-inf")  # the last fetch that worked (fetched_at counts failures too)
        self.failures = 0
        self.loads = 0
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.document is not None

    def get_configuration(self) -> dict[str, Any]:
        now = self.clock()
        if now - self.fetched_at < self.max_age_s and self.document is not None:
            return self.document
        if self.executor is not None and self.document is not None:
            if self._refreshing.acquire(blocking=False):
                def refresh():
                    try:
                        self._fetch(self.clock())
                    except ConfigurationStoreError:
                        pass
                    finally:
                        self._refreshing.release()
                self.executor.submit(refresh)
            return self.document
        return self._fetch(now)

    def refresh_now(self) -> dict[str, Any]:
        """Fetch now, on this thread (cold start, tests)."""
        return self._fetch(self.clock())

    def _fetch(self, now: float) -> dict[str, Any]:
        with self._lock:
            try:
                document = self.fetch()
                if not isinstance(document, dict):
                    raise ValueError("flags document is not a JSON object")
                if document != self.document:
                    self.document = document
                self.loads += 1
                self.succeeded_at = now
            except Exception as exc:
                self.failures += 1
                log.warning("flag store fetch failed (%s); %s", exc,
                            "keeping the last good document" if self.document else "no document yet")
                if self.document is None:
                    self.fetched_at = now - self.max_age_s + 1.0  # retry in a second, not every request
                    raise ConfigurationStoreError(f"flags unavailable: {exc}") from exc
            self.fetched_at = now
            return self.document

    @property
    def get_raw_configuration(self) -> dict[str, Any]:
        return self.get_configuration()


@dataclass(frozen=True)
class Assignment:
    variant: str
    model: str
    experiment: str
    flags_loaded: bool


class Rollout:
    def __init__(self, store: CachedDocumentStore, default_champion: str, default_experiment: str = "none",
                 max_age_s: float = FLAGS_MAX_AGE_S):
        self.store = store
        self.max_age_s = max_age_s
        self._seen: dict | None = None
        self._seen_step = 0
        self._evaluated_for: dict | None = None
        self._evaluated: dict = {}
        self._timeless = True  # the current document has no time-based rules
        self.flags = FeatureFlags(store=store)
        self.default_champion = default_champion
        self.default_experiment = default_experiment

    def pins(self) -> dict[str, str]:
        """The deployer's sha256 per model key (empty when the document pins none)."""
        pinned = self.flags.evaluate(name=MODEL_PINS, default={})
        return pinned if isinstance(pinned, dict) else {}

    def assign(self, user_id: str | None) -> Assignment:
        try:
            self.store.get_configuration()
        except ConfigurationStoreError:
            return Assignment(CHAMPION, self.default_champion, self.default_experiment, False)
        champion = self._flag("champion_model", self.default_champion)
        experiment = self._flag("experiment_id", self.default_experiment)
        if self.store.clock() - self.store.succeeded_at > self.max_age_s:
            # An instance that cannot reach AppConfig must not keep a challenger live: the
            # guardrail's kill would never reach it. Champion only, outside the experiment.
            return Assignment(OUTSIDE, champion, self.default_experiment, True)
        if user_id is None:  # anonymous: no sticky bucket, not part of the experiment
            return Assignment(OUTSIDE, champion, self.default_experiment, True)
        step = self._step()
        analysed = analysis_id(experiment, step) if step else experiment
        if self._flag("kill_switch", False):
            return Assignment(CHAMPION, champion, analysed, True)
        if self._flag(CHALLENGER, False, bucket(user_id, experiment)):
            return Assignment(CHALLENGER, self._flag("challenger_model", champion), analysed, True)
        return Assignment(CHAMPION, champion, analysed, True)

    def _flag(self, name: str, default, shopper_bucket: int | None = None):
        """``FeatureFlags.evaluate`` of one flag (with the shopper's bucket as its context),
        remembered per document: its answer depends only on the document and the context, so
        a request re-evaluates nothing it has seen (at most BUCKETS + a few per document).
        A document with time-based rules (Powertools' ``SCHEDULE_*`` actions) also depends on
        the clock: its answers are never remembered."""
        document = self.store.document
        if document is not self._evaluated_for:  # held here: identity cannot alias a new document
            self._evaluated_for, self._evaluated = document, {}
            self._timeless = "SCHEDULE_" not in json.dumps(document, default=str)
        context = {} if shopper_bucket is None else {"bucket": shopper_bucket}
        if not self._timeless:
            return self.flags.evaluate(name=name, context=context, default=default)
        key = (name, default, shopper_bucket)
        try:
            return self._evaluated[key]
        except KeyError:
            pass
        value = self._evaluated[key] = self.flags.evaluate(name=name, context=context, default=default)
        return value

    def _step(self) -> int:
        """The current document's ramp step, recomputed only when the document changes (it is
        held here, so the comparison by identity cannot alias a new document)."""
        document = self.store.document
        if document is not self._seen:
            self._seen, self._seen_step = document, share_step(challenger_share(document or {}))
        return self._seen_step
