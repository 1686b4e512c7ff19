"""How a serving function is wired: from environment variables (regional ``recommend``) or
from the config file baked into the edge bundle (no environment variables at the edge)."""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from personalize import identity, keys, regions, settings
from personalize.adapters import appconfig
from personalize.adapters.artifacts import S3Artifacts
from personalize.adapters.secrets import SecretVersions
from personalize.adapters.soldout import DynamoSoldOut
from personalize.adapters.userstore import DynamoUserStore
from personalize.ingest import entities
from personalize.rollout import flags
from personalize.serving.models import MANIFEST_FILE, MODEL_FILE, Manifest, ModelError, Ranker, artifact_digest
from personalize.serving.recommendations import WARM_LOADS, Recommender, Variant

log = logging.getLogger(__name__)

def nearest_replica(running_region: str | None, home: str, replicas: list[str]) -> str:
    """The replica an instance in ``running_region`` reads (the table the build bakes)."""
    return regions.choose(regions.replica_table(home, replicas), running_region, home, 0.05)[0]


def stack_of_function(function_name: str | None) -> str | None:
    """The stack an edge function belongs to, from its own name: the template names it
    ``<stack>-edge``; Lambda@Edge replicas prefix it with ``us-east-1.``."""
    if not function_name:
        return None
    name = function_name.split(".", 1)[1] if function_name.startswith("us-east-1.") else function_name
    return name[: -len("-edge")] if name.endswith("-edge") and len(name) > len("-edge") else None


@dataclass
class ServingConfig:
    home_region: str
    features_table: str
    artifacts_bucket: str
    signing_secret: str
    flags: dict
    default_champion: str
    replica_regions: list[str] = field(default_factory=list)
    log_sample_rate: float = 0.01
    user_read_timeout_s: float = 0.05
    flags_max_age_s: float = flags.REFRESH_S  # how often the flags are asked for (AppConfig's floor: 15 s)
    snapshot_refresh_s: float = 10.0
    soldout_refresh_s: float = 1.0
    # Regional only: the secret whose value CloudFront adds as x-origin-verify ("" at the edge).
    origin_secret: str = ""
    stack: str | None = None  # the stack the names above belong to (the edge checks its own)
    replica_table: dict = field(default_factory=dict)  # execution region -> {"replica", "timeout_s"}

    def for_stack(self, stack: str | None) -> ServingConfig:
        """This config for the stack the running function belongs to. A bundle built for
        another stack (a dev build deployed to prod) is renamed to it, and its replica table,
        which describes the other stack's replicas, is dropped (reads go to the home region)."""
        if not stack or not self.stack or stack == self.stack:
            return self
        log.error("edge bundle built for stack %s runs in %s: using %s's names, home-region reads",
                  self.stack, stack, stack)
        old, new = self.stack, stack
        rename = lambda value: value.replace(old, new, 1) if isinstance(value, str) else value  # noqa: E731
        return replace(self, stack=new, features_table=rename(self.features_table),
                       artifacts_bucket=rename(self.artifacts_bucket), signing_secret=rename(self.signing_secret),
                       flags={k: rename(v) for k, v in self.flags.items()}, replica_regions=[], replica_table={})

    @classmethod
    def from_file(cls, path: Path) -> ServingConfig:
        return cls(**json.loads(path.read_text()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_env(cls) -> ServingConfig:
        config = settings.load(settings.FEATURES_TABLE, settings.ARTIFACTS_BUCKET, settings.SIGNING_KEY_SECRET,
                               settings.ORIGIN_VERIFY_SECRET)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if os.environ.get("FLAGS_SOURCE") == "local":
            source = {"source": "local", "bucket": config[settings.ARTIFACTS_BUCKET],
                      "application_id": os.environ["APPCONFIG_APPLICATION"],
                      "profile_id": os.environ["APPCONFIG_PROFILE"]}
        else:
            source = {"source": "appconfig", "application": os.environ.get("APPCONFIG_APPLICATION", ""),
                      "environment": os.environ.get("APPCONFIG_ENVIRONMENT", ""),
                      "profile": os.environ.get("APPCONFIG_PROFILE", "")}
        return cls(home_region=region, features_table=config[settings.FEATURES_TABLE],
                   artifacts_bucket=config[settings.ARTIFACTS_BUCKET],
                   signing_secret=config[settings.SIGNING_KEY_SECRET], flags=source,
                   origin_secret=config[settings.ORIGIN_VERIFY_SECRET],
                   default_champion=os.environ.get("DEFAULT_CHAMPION", settings.DEFAULT_CHAMPION),
                   log_sample_rate=float(os.environ.get("SCORED_LOG_SAMPLE_RATE", "0.01")))


class ModelUnavailableError(ModelError):
    """A model that failed to load (and is not retried before its backoff ends)."""


class ModelCache:
    """Rankers by ``<name>/<version>``: from the bundled folder when shipped there (the deploy
    wrote it), else from the artifacts bucket, and then only when ``pins()`` (the flags
    document, which only a deployer writes) names the model's sha256 and the object matches
    it: checked before onnxruntime parses a byte. Refusals are counted in ``refused``. A model
    that fails to load is remembered as failed for ``retry_after_s``: requests meanwhile fail
    fast instead of trying it again on the request path."""

    def __init__(self, bundled: Path, artifacts: S3Artifacts, pins: Callable[[], dict[str, str]] | None = None,
                 retry_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.bundled = bundled
        self.artifacts = artifacts
        self.pins = pins or dict
        self.rankers: dict[str, Ranker] = {}
        self.refused = 0
        self.failed: dict[str, tuple[float, str]] = {}  # key -> (when, why): a refusal is not re-fetched
        self.retry_after_s = retry_after_s
        self.clock = clock

    def get(self, key: str) -> Ranker:
        ranker = self.rankers.get(key)
        if ranker is None:
            if not flags.is_model_name(key):  # a path would name a file outside the bundle, unpinned
                raise ModelUnavailableError(f"{key!r} is not a plain <name>/<version> model name; refused")
            failed = self.failed.get(key)
            if failed is not None and self.clock() - failed[0] < self.retry_after_s:
                raise ModelUnavailableError(f"{key} failed to load: {failed[1]}")
            try:
                ranker = self._load(key)
            except Exception as exc:
                self.failed[key] = (self.clock(), f"{type(exc).__name__}: {exc}")
                raise ModelUnavailableError(f"{key} failed to load: {exc}") from exc
            self.failed.pop(key, None)
        return ranker

    def loaded(self, key: str) -> Ranker | None:
        """The model if this instance has loaded it, else None: never a read (a request's
        fallback path compares with a champion only when it costs no network call)."""
        return self.rankers.get(key)

    def _load(self, key: str) -> Ranker:
        ranker = self.rankers.get(key)
        if ranker is None:
            folder = self.bundled / key
            if (folder / MODEL_FILE).exists():
                manifest, blob = json.loads((folder / MANIFEST_FILE).read_text()), (folder / MODEL_FILE).read_bytes()
            else:
                manifest, blob = self._from_bucket(key)
            ranker = self.rankers[key] = Ranker(Manifest.from_dict(manifest), blob)
        return ranker

    def _from_bucket(self, key: str) -> tuple[dict, bytes]:
        pinned = self.pins().get(key)
        try:
            return self._fetch_pinned(key, pinned)
        except ModelError as exc:
            self.refused += 1
            log.error("model refused", extra={"model": key, "pinned": pinned, "reason": str(exc)})
            raise

    def _fetch_pinned(self, key: str, pinned: object) -> tuple[dict, bytes]:
        if not isinstance(pinned, str) or len(pinned) != 64 or not pinned.isascii():
            raise ModelError(f"{key} is not bundled and the flags document pins no sha256 for it")
        blob = self.artifacts.get(f"models/{key}/{MODEL_FILE}")
        manifest_bytes = self.artifacts.get(f"models/{key}/{MANIFEST_FILE}")
        digest = artifact_digest(blob, manifest_bytes)
        if not hmac.compare_digest(digest, pinned):
            raise ModelError(f"{key}: the bucket's model and manifest (digest {digest[:12]}...) are not the "
                             f"pinned {pinned[:12]}...; refused")
        manifest = json.loads(manifest_bytes)
        if f"{manifest.get('name')}/{manifest.get('version')}" != key:
            raise ModelError(f"{key}: the bucket's manifest names another model; refused")
        return manifest, blob


def signing_keys(secret_id: str, region: str) -> identity.KeyRing:
    """The cookie/rec_id keys (current and previous), read from Secrets Manager, never from
    the bundle or the repository; re-read in the background every minute."""
    return identity.KeyRing(SecretVersions(secret_id, region).load, refresh_s=60.0)


def origin_keys(config: ServingConfig) -> identity.KeyRing:
    """The CloudFront origin-verify token's current and previous values (regional function)."""
    return identity.KeyRing(SecretVersions(config.origin_secret, config.home_region).load)


def chooser(rollout: flags.Rollout, models: ModelCache, champion: Ranker | str) -> Callable[[str | None], Variant]:
    """What serves a shopper: their variant from the flags, and that variant's model.
    ``champion``: the model served when a variant's is unavailable (or its name in
    ``models``, loaded by ``warm_up`` at cold start)."""

    def choose(user_id: str | None) -> Variant:
        assignment = rollout.assign(user_id)
        explore = rollout.exploration()  # the same for every variant
        try:
            ranker = models.get(assignment.model)
        except ModelUnavailableError as exc:
            # Served by the bundled champion, still counted as this variant's (a fallback of
            # the challenger's, which the rollback alarm watches), never as the champion's.
            log.warning("%s; serving the default champion", exc)
            default = models.get(champion) if isinstance(champion, str) else champion
            return Variant(assignment.variant, default, assignment.experiment, f"{assignment.variant}_unavailable",
                           explore)
        if assignment.champion and assignment.champion != assignment.model:  # a challenger: its champion if loaded
            return Variant(assignment.variant, ranker, assignment.experiment, exploration=explore,
                           champion=models.loaded(assignment.champion))
        return Variant(assignment.variant, ranker, assignment.experiment, exploration=explore)

    return choose


def warm_up(recommender: Recommender, rollout: flags.Rollout, models: ModelCache, champion: str,
            *more: Callable[[], object]) -> None:
    """Cold start's loads (``Recommender.warm``: snapshot, sold-out list, keys, the flags and
    ``more``) on the pool while this thread loads the champion's model (onnxruntime's import
    and session) meanwhile. Raises when the champion cannot be loaded: an instance that cannot
    serve its default model is not built (it fails at cold start, not on a request)."""
    recommender.warm(rollout.store.refresh_now, *more, meanwhile=lambda: models.get(champion))


class _ContextPool(ThreadPoolExecutor):
    """Runs each task in a copy of its submitter's context: a client a load makes lazily on a
    pool thread signs as the function that asked (the local stack runs every function in one
    process, each as its own role: ``aws.as_identity``), not as whoever the process is."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def build(config: ServingConfig, models_dir: Path, running_region: str | None, on_scored=None):
    """(recommender, rollout, models) for this function instance."""
    artifacts = S3Artifacts(config.artifacts_bucket, config.home_region)
    source = config.flags
    if source["source"] == "local":
        fetch = appconfig.local_fetcher(source["bucket"], source["application_id"], source["profile_id"])
    else:
        fetch = appconfig.appconfig_fetcher(source["application"], source["environment"], source["profile"],
                                        config.home_region)
    pool = _ContextPool(WARM_LOADS, thread_name_prefix="refresh")  # cold start's loads, then refreshes
    # A refused document (it breaks the schema) keeps the last good one; when there is none yet,
    # this one: the bundled champion alone.
    bundled = flags.rollout_document(config.default_champion, None, 0.0, keys.NO_EXPERIMENT)
    rollout = flags.Rollout(flags.CachedDocumentStore(fetch, config.flags_max_age_s, executor=pool, bundled=bundled),
                            config.default_champion)
    models = ModelCache(models_dir, artifacts, rollout.pins)
    choose = chooser(rollout, models, config.default_champion)  # loaded by warm_up: it fails at cold start
    table = config.replica_table or regions.replica_table(config.home_region, config.replica_regions)
    replica, timeout_s = regions.choose(table, running_region, config.home_region, config.user_read_timeout_s)
    users = DynamoUserStore(config.features_table, entities.UserRow.from_obj, region=replica, timeout_s=timeout_s)
    _ = artifacts.client  # clients are made here, on one thread, before the warm-up fans out
    soldout = DynamoSoldOut(config.features_table, region=replica, client=users.client)
    # The edge names the secret; it is replicated beside the table, so read it from there too.
    keyring = signing_keys(config.signing_secret, replica if not config.signing_secret.startswith("arn:")
                           else config.home_region)
    recommender = Recommender(users, artifacts, soldout, keyring, choose,
                              log_sample_rate=config.log_sample_rate, on_scored=on_scored,
                              snapshot_refresh_s=config.snapshot_refresh_s, soldout_refresh_s=config.soldout_refresh_s,
                              pool=pool)
    return recommender, rollout, models
