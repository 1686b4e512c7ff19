"""Names shared by template, code and tests, and configuration validated at cold start.

Every AWS resource a function uses is named here once: its logical id in ``template.yaml``
and the environment variable that carries its physical name. A test checks that the
template passes each function exactly these variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

NAMESPACE = "RealtimePersonalization"


@dataclass(frozen=True)
class Resource:
    logical_id: str
    env: str


FEATURES_TABLE = Resource("FeaturesTable", "FEATURES_TABLE")
ITEMS_TABLE = Resource("ItemsTable", "ITEMS_TABLE")
EVENTS_STREAM = Resource("EventsStream", "EVENTS_STREAM")
QUARANTINE_QUEUE = Resource("QuarantineQueue", "QUARANTINE_QUEUE_URL")
STREAM_FAILURE_QUEUE = Resource("StreamFailureQueue", "STREAM_FAILURE_QUEUE_URL")
ARTIFACTS_BUCKET = Resource("ArtifactsBucket", "ARTIFACTS_BUCKET")
SIGNING_KEY_SECRET = Resource("SigningKeySecret", "SIGNING_KEY_SECRET")
# The token CloudFront adds to every origin request (x-origin-verify): the regional API
# answers browsers' routes only when it matches, so the execute-api URL cannot bypass the CDN.
ORIGIN_VERIFY_SECRET = Resource("OriginVerifySecret", "ORIGIN_VERIFY_SECRET")
ORIGIN_VERIFY_HEADER = "x-origin-verify"
# The archive (personalize/ingest/archive.py): Firehose writes the stream there, and the key
# that pseudonymises shopper ids in it (never rotated: pseudonyms stay stable).
ARCHIVE_BUCKET = Resource("ArchiveBucket", "ARCHIVE_BUCKET")
ARCHIVE_KEY_SECRET = Resource("ArchiveKeySecret", "ARCHIVE_KEY_SECRET")

# What an edge reads near itself: each has a copy in every replica region the operator
# chose (samconfig.toml, ReplicaRegion1..4), and the edge reads the copy in the replica
# ``regions.replica_table`` maps its execution region to (tests/unit/test_regions.py).
NEAR_EDGE = (FEATURES_TABLE, SIGNING_KEY_SECRET)

# The model served before any flags document was loaded.
DEFAULT_CHAMPION = "ranker-mlp/v3"

# Which variables each function receives (template Environment), by function logical id.
# What the console's summary reads (personalize.rollout.summary.DeployedSources).
CONSOLE_RESOURCES = (FEATURES_TABLE, ITEMS_TABLE, QUARANTINE_QUEUE, ARTIFACTS_BUCKET)
FUNCTION_RESOURCES = {
    "CollectFunction": (EVENTS_STREAM, SIGNING_KEY_SECRET, ORIGIN_VERIFY_SECRET, ARTIFACTS_BUCKET),
    "AggregateFunction": (FEATURES_TABLE, ITEMS_TABLE, QUARANTINE_QUEUE, ARTIFACTS_BUCKET),
    # A shopper's features, and the console's summary (CONSOLE_RESOURCES).
    "FeaturesFunction": (FEATURES_TABLE, ITEMS_TABLE, QUARANTINE_QUEUE, ARTIFACTS_BUCKET),
    "SnapshotFunction": (ITEMS_TABLE, ARTIFACTS_BUCKET),
    "RecommendFunction": (FEATURES_TABLE, ARTIFACTS_BUCKET, SIGNING_KEY_SECRET, ORIGIN_VERIFY_SECRET),
    "GuardrailFunction": (ITEMS_TABLE,),
    "ArchiveFunction": (ARCHIVE_KEY_SECRET,),
}


class ConfigError(RuntimeError):
    """The function's environment is missing something it needs."""


def load(*resources: Resource) -> dict[Resource, str]:
    """Read the physical names of ``resources`` from the environment, all or nothing."""
    missing = [r.env for r in resources if not os.environ.get(r.env)]
    if missing:
        raise ConfigError(f"missing environment variables: {', '.join(missing)}")
    return {r: os.environ[r.env] for r in resources}


def int_setting(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be within {low}..{high}, got {value}")
    return value
