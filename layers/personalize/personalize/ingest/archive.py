"""The archive (issue 22): every event the stream carried, as the learning loop reads it.

Kinesis Data Firehose reads the events stream (a second consumer beside aggregate's event
source mapping), hands each batch to ``functions/archive`` (its data transformation), and
writes what comes back to the archive bucket, GZIP'd JSON lines under
``events/dt=<YYYY-MM-DD>/hour=<HH>/`` of the event's own time (dynamic partitioning, the
keys returned here). The local stack runs the same function behind an emulator of that
delivery (``infra/local/firehose.py``).

What the transformation does to each record:

* shopper ids are pseudonymised: ``user_id`` and ``actor`` become a keyed hash under the
  archive key (its own secret, never rotated: a shopper's pseudonym is stable across the
  archive's life, so datasets can join a shopper's events; destroying the key unlinks them
  all); nothing else names a shopper (a ``rec_id`` binds its user only through a mac);
* everything else collect wrote is kept as is, the verified ``decision`` of an impression
  included (what was shown, at which place, with which propensity);
* a record that is not a JSON object with an integer ``ts`` is ``ProcessingFailed``:
  Firehose writes it, untouched, under ``errors/`` (nothing is dropped silently).

Firehose delivers at least once (a retried batch is written again): readers dedupe by
``event_id``. An attributed impression's ``event_id`` names its list (collect), so the
flushes of one list share it while carrying different ``items``: readers union them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

PSEUDONYMISED = ("user_id", "actor")
_DOMAIN = b"archive\x00"
PSEUDONYM_CHARS = 24  # 144 bits of HMAC-SHA256: no collision among a shop's shoppers
PARTITION_KEYS = ("dt", "hour")


def pseudonym(value: str, key: str) -> str:
    digest = hmac.new(key.encode(), _DOMAIN + value.encode(), hashlib.sha256).digest()
    return "p:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:PSEUDONYM_CHARS]


@dataclass(frozen=True)
class Archived:
    record_id: str
    result: str  # Firehose's: "Ok" or "ProcessingFailed"
    data: bytes  # Ok: one JSON line; ProcessingFailed: the record as it came
    partition: dict[str, str]  # dt, hour (Ok only)


def transform(record_id: str, data: bytes, key: str) -> Archived:
    """One stream record as the archive keeps it (or refuses it, untouched)."""
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return Archived(record_id, "ProcessingFailed", data, {})
    ts = event.get("ts") if type(event) is dict else None
    if type(ts) is not int or not 0 <= ts < 32_503_680_000_000:
        return Archived(record_id, "ProcessingFailed", data, {})
    for field in PSEUDONYMISED:
        value = event.get(field)
        if type(value) is str:
            event[field] = pseudonym(value, key)
        elif value is not None:
            del event[field]  # never written by collect: nothing that could name someone is kept
    when = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
    line = json.dumps(event, separators=(",", ":")).encode() + b"\n"  # ASCII: any string encodes
    return Archived(record_id, "Ok", line, {"dt": when.strftime("%Y-%m-%d"), "hour": when.strftime("%H")})


def key_from_env():
    """The archive key's reader for a function (``ARCHIVE_KEY_SECRET``, validated here): read
    on the first batch, re-read only if that failed (Firehose retries a failed batch)."""
    from personalize import identity, settings
    from personalize.adapters.secrets import SecretVersions

    secret = settings.load(settings.ARCHIVE_KEY_SECRET)[settings.ARCHIVE_KEY_SECRET]
    return identity.KeyRing(SecretVersions(secret, timeout_s=2.0).load, refresh_s=3600.0, background=False)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
