"""The rollout, as a Powertools feature-flags document in AppConfig, and sticky assignment.

The document (see ``infra/flags/``) holds ``champion_model`` and ``challenger_model``
(``<name>/<version>``), ``experiment_id``, ``kill_switch`` and the rule ``challenger``: a
``MODULO_RANGE`` over the shopper's bucket (0..9999, so shares have 0.01% resolution).
The bucket is a salted hash of (experiment id, user id): the same shopper gets the same
variant on every request and at every edge location, a new experiment reshuffles, and
anonymous shoppers get the champion labelled ``outside`` (not part of the experiment, left
out of its analysis); so does everyone on an instance whose flags AppConfig has not confirmed
for ``FLAGS_MAX_AGE_S`` (it cannot have seen a kill: an instance idle for longer, or cut off).

Serving evaluates the real document with Powertools ``FeatureFlags``. The store refreshes it
as often as AppConfig's data API allows (``adapters.appconfig.FlagSession``: 15 s) and keeps
the last good document when a fetch fails, and counts the failure. A document that breaks
the schema (``validate_document``: the same rules as the profile's JSON_SCHEMA validator,
``infra/flags/schema/rollout.schema.json``, plus Powertools' own) is refused: the last good one is kept (the
bundled one when there is none yet: the champion alone) and ``refused`` counts it (serving's
``FlagsDocumentRefused`` metric). Before any document was loaded, ``Rollout.assign`` serves
the champion it was built with and says so (``flags_loaded=False``), because Powertools alone
would return defaults silently.

End to end, a kill reaches every instance within ``FLAGS_MAX_AGE_S`` (30 s) of the moment
AppConfig serves it: a busy instance polls every 15 s; an instance that has not heard from
AppConfig for 30 s (idle, frozen, cut off) serves only the champion until it has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.feature_flags import FeatureFlags
from aws_lambda_powertools.utilities.feature_flags.base import StoreProvider
from aws_lambda_powertools.utilities.feature_flags.exceptions import ConfigurationStoreError
from aws_lambda_powertools.utilities.feature_flags.schema import SchemaValidator

from personalize.adapters.appconfig import PollTooEarly
from personalize.identity import is_consented_anonymous

log = logging.getLogger(__name__)

BUCKETS = 10_000
CHAMPION = "champion"
CHALLENGER = "challenger"
# Served the champion but not part of the experiment (anonymous, or flags too old to trust):
# labelled so, attributed to no experiment, left out of its analysis.
OUTSIDE = "outside"
# Flags AppConfig has not confirmed for longer than this serve only the champion: two of the
# data API's 15 s poll intervals (the end-to-end kill latency, see the module's docstring).
FLAGS_MAX_AGE_S = 30.0
# How often the store asks AppConfig (its data API refuses anything faster).
REFRESH_S = 15.0


def bucket(user_id: str, experiment_id: str) -> int:
    digest = hashlib.sha256(f"{experiment_id}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


MODEL_PINS = "model_sha256"
# A model is a plain <name>/<version>: never a path (a name with one escaped the sha256 pin).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}/[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_EXPERIMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
REQUIRED_FLAGS = ("champion_model", "challenger_model", "experiment_id", "kill_switch", "challenger")
# Exploration (issue 22): the last ``slots`` places of a ranked list are drawn at random from
# the ``pool`` candidates ranked just below the fixed places, in both arms alike, so that each
# shown item's propensity is known (1 for a fixed place, 1/pool for an explored one) and a new
# model's effect can be estimated from the logs before it serves anyone.
EXPLORATION = "exploration"
MAX_EXPLORED_SLOTS = 3
POOL_RANGE = (3, 50)  # at least MAX_EXPLORED_SLOTS: a pool always holds its slots
OPTIONAL_FLAGS = ("ramp_steps", MODEL_PINS, EXPLORATION)


class FlagsDocumentError(ValueError):
    """A flags document that breaks the schema: refused, the last good one kept."""


def is_model_name(key: object) -> bool:
    return isinstance(key, str) and MODEL_NAME.fullmatch(key) is not None


def _flag(doc: dict, name: str) -> dict:
    flag = doc.get(name)
    if not isinstance(flag, dict) or "default" not in flag:
        raise FlagsDocumentError(f"{name}: a flag object with a default is required")
    return flag


def _keys_within(flag: dict, name: str, allowed: tuple[str, ...]) -> None:
    extra = set(flag) - set(allowed)
    if extra:
        raise FlagsDocumentError(f"{name}: unknown fields {sorted(extra)}")


def validate_document(doc: object) -> None:
    """The profile's JSON_SCHEMA validator's rules (``infra/flags/schema/rollout.schema.json``; a test keeps
    them equal on generated documents), then Powertools' own schema. Raises FlagsDocumentError."""
    if not isinstance(doc, dict):
        raise FlagsDocumentError("the flags document is not a JSON object")
    unknown = set(doc) - set(REQUIRED_FLAGS) - set(OPTIONAL_FLAGS)
    if unknown:
        raise FlagsDocumentError(f"unknown flags {sorted(unknown)}")
    for name in ("champion_model", "challenger_model"):
        flag = _flag(doc, name)
        _keys_within(flag, name, ("default", "boolean_type"))
        if not is_model_name(flag["default"]) or flag.get("boolean_type", False) is not False:
            raise FlagsDocumentError(f"{name}: a plain <name>/<version> model (no path), boolean_type false")
    flag = _flag(doc, "experiment_id")
    _keys_within(flag, "experiment_id", ("default", "boolean_type"))
    if not (isinstance(flag["default"], str) and _EXPERIMENT_ID.fullmatch(flag["default"])) \
            or flag.get("boolean_type", False) is not False:
        raise FlagsDocumentError("experiment_id: 1-64 letters, digits, '.', '_' or '-'")
    for name in ("kill_switch", CHALLENGER):
        flag = _flag(doc, name)
        _keys_within(flag, name, ("default", "boolean_type", "rules"))
        if type(flag["default"]) is not bool or flag.get("boolean_type", True) is not True:
            raise FlagsDocumentError(f"{name}: a boolean flag")
        rules = flag.get("rules", {})
        if not isinstance(rules, dict) or len(rules) > 32:
            raise FlagsDocumentError(f"{name}: rules must be an object of at most 32 rules")
        for rule_name, rule in rules.items():
            if not isinstance(rule, dict) or set(rule) != {"when_match", "conditions"} \
                    or type(rule["when_match"]) is not bool or not isinstance(rule["conditions"], list) \
                    or not 1 <= len(rule["conditions"]) <= 16:
                raise FlagsDocumentError(f"{name}: rule {rule_name!r} must hold when_match and 1-16 conditions")
            for condition in rule["conditions"]:
                if not isinstance(condition, dict) or set(condition) != {"action", "key", "value"} \
                        or not isinstance(condition["key"], str) or not condition["key"]:
                    raise FlagsDocumentError(f"{name}: rule {rule_name!r}: conditions are action, key, value")
    if "ramp_steps" in doc:
        flag = _flag(doc, "ramp_steps")
        _keys_within(flag, "ramp_steps", ("default", "boolean_type"))
        steps = flag["default"]
        if flag.get("boolean_type") is not False or not isinstance(steps, list) or len(steps) > 100 \
                or not all(type(x) is int and 1 <= x <= BUCKETS for x in steps):
            raise FlagsDocumentError("ramp_steps: at most 100 shares in buckets (1-10000), boolean_type false")
    if MODEL_PINS in doc:
        flag = _flag(doc, MODEL_PINS)
        _keys_within(flag, MODEL_PINS, ("default", "boolean_type"))
        pins = flag["default"]
        if flag.get("boolean_type") is not False or not isinstance(pins, dict) or len(pins) > 16 or not all(
                is_model_name(k) and isinstance(v, str) and _SHA256.fullmatch(v) for k, v in pins.items()):
            raise FlagsDocumentError("model_sha256: plain model names to 64 hex digits, boolean_type false")
    if EXPLORATION in doc:
        flag = _flag(doc, EXPLORATION)
        _keys_within(flag, EXPLORATION, ("default", "boolean_type"))
        value = flag["default"]
        # JSON schema's integers include 1.0 (JSON has one number type): so do these.
        if flag.get("boolean_type") is not False or not isinstance(value, dict) or set(value) != {"slots", "pool"} \
                or not all(type(value[k]) in (int, float) and float(value[k]).is_integer() for k in value) \
                or not 0 <= value["slots"] <= MAX_EXPLORED_SLOTS \
                or not POOL_RANGE[0] <= value["pool"] <= POOL_RANGE[1]:
            raise FlagsDocumentError(f"exploration: slots 0-{MAX_EXPLORED_SLOTS} drawn from a pool of "
                                     f"{POOL_RANGE[0]}-{POOL_RANGE[1]}, boolean_type false")
    try:
        SchemaValidator(doc).validate()
    except Exception as exc:  # Powertools' SchemaValidationError, or whatever a bad rule makes it raise
        raise FlagsDocumentError(f"Powertools refuses the document: {exc}") from None


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


def with_exploration(doc: dict, slots: int, pool: int) -> dict:
    """``doc`` exploring ``slots`` places from a ``pool`` (slots 0: none), validated."""
    out = {k: v for k, v in doc.items() if k != EXPLORATION}
    if slots:
        out[EXPLORATION] = {"default": {"slots": slots, "pool": pool}, "boolean_type": False}
    validate_document(out)
    return out


def keep_exploration(old: dict, new: dict) -> dict:
    """``new`` (a start, ramp, kill or promotion composed from scratch) with ``old``'s
    exploration: a change of arms never switches exploration on or off."""
    if EXPLORATION in old:
        new = {**new, EXPLORATION: old[EXPLORATION]}
    return new


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
    fetch failures (counted, logged) and refused documents (``refused``: ``validate_document``);
    before the first success, fetches raise, unless a refused document arrives first: then the
    ``bundled`` one (the champion alone) is served. ``fetch`` may raise ``PollTooEarly``: no
    failure, asked again when it says."""

    def __init__(self, fetch: Callable[[], dict], max_age_s: float = REFRESH_S, clock=time.monotonic,
                 executor=None, bundled: dict | None = None):
        self.fetch = fetch
        self.max_age_s = max_age_s
        self.clock = clock
        # With an executor, a stale document is refreshed in the background and the current
        # one answers meanwhile: serving never waits on AppConfig once it has a document.
        self.executor = executor
        self.bundled = bundled
        self.document: dict | None = None
        self.fetched_at = float("-inf")
        self.succeeded_at = float("-inf")  # the last fetch that worked (fetched_at counts failures too)
        self.failures = 0
        self.refused = 0      # documents that broke the schema (the last good one kept)
        self.refusal: str | None = None  # why the last one was refused
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

    def age(self, seconds: float) -> None:
        """As if ``seconds`` more had passed since the last fetch: the next request refreshes
        the document if it is then older than ``max_age_s``, the way it would (the local stack's
        tests, instead of waiting for the poll interval)."""
        with self._lock:
            self.fetched_at -= seconds

    def _fetch(self, now: float) -> dict[str, Any]:
        with self._lock:
            try:
                document = self.fetch()
                try:
                    validate_document(document)
                except FlagsDocumentError as refusal:
                    self.refused += 1
                    self.refusal = str(refusal)
                    log.error("flags document refused (%s); keeping the %s document", refusal,
                              "last good" if self.document is not None else "bundled")
                    if self.document is None and self.bundled is not None:
                        self.document = self.bundled
                else:
                    if document != self.document:
                        self.document = document
                    self.refusal = None
                self.loads += 1
                self.succeeded_at = now
            except PollTooEarly as wait:
                if self.document is None:
                    raise ConfigurationStoreError(f"flags unavailable: {wait}") from wait
                self.fetched_at = now - self.max_age_s + wait.retry_in_s  # asked again when allowed
                return self.document
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
    # The champion's model beside a challenger's (empty otherwise): what serving compares a
    # challenger's failure with (recommendations.Variant.champion).
    champion: str = ""


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

    def exploration(self) -> tuple[int, int]:
        """(slots, pool) of the deployed document's exploration; (0, 0): none (no document yet,
        none configured)."""
        if self.store.document is None:
            return 0, 0
        value = self._flag(EXPLORATION, None)
        return (int(value["slots"]), int(value["pool"])) if isinstance(value, dict) else (0, 0)

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
        if user_id is None or is_consented_anonymous(user_id):  # anonymous: not part of the experiment
            return Assignment(OUTSIDE, champion, self.default_experiment, True)
        step = self._step()
        analysed = analysis_id(experiment, step) if step else experiment
        if self._flag("kill_switch", False):
            return Assignment(CHAMPION, champion, analysed, True)
        if self._flag(CHALLENGER, False, bucket(user_id, experiment)):
            return Assignment(CHALLENGER, self._flag("challenger_model", champion), analysed, True, champion)
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
