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
  all);
* nothing else may name one: a ``rec_id`` loses its mac (computed over the shopper's id with
  the signing key, it would let whoever holds that key test candidate ids), keeping
  experiment, variant, expiry and nonce (joins of a list's events still work); one that is not
  a rec_id is dropped; ``event_id`` becomes a keyed hash under the archive key (dedupe still
  works; a client's free text does not survive); a browser's ``category`` is dropped (free
  text; the catalogue says an item's category);
* ``arrival_ms``: when the events stream received the record (Kinesis's approximate arrival
  time, from Firehose's record metadata), what aggregate counts windows and credits by;
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

from personalize import identity

PSEUDONYMISED = ("user_id", "actor")
_DOMAIN = b"archive\x00"
PSEUDONYM_CHARS = 24  # 144 bits of HMAC-SHA256: no collision among a shop's shoppers


def pseudonym(value: str, key: str) -> str:
    return "p:" + _keyed(b"", value, key)


def _keyed(domain: bytes, value: str, key: str) -> str:
    digest = hmac.new(key.encode(), _DOMAIN + domain + value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:PSEUDONYM_CHARS]


@dataclass(frozen=True)
class Archived:
    record_id: str
    result: str  # Firehose's: "Ok" or "ProcessingFailed"
    data: bytes  # Ok: one JSON line; ProcessingFailed: the record as it came
    partition: dict[str, str]  # dt, hour (Ok only)


def transform(record_id: str, data: bytes, key: str, arrival_ms: int | None = None) -> Archived:
    """One stream record as the archive keeps it (or refuses it, untouched): one odd record
    never fails the batch (Firehose would send the whole batch, raw, to errors/).
    ``arrival_ms``: when the events stream received it (Kinesis's approximate arrival time),
    kept as ``arrival_ms``: what aggregate's windows and credits count by, which a replay
    needs (an event's own ``ts`` is the client's word, up to 7 days old)."""
    try:
        return _transform(record_id, data, key, arrival_ms)
    except Exception:  # noqa: BLE001 - deep nesting (RecursionError), a lone surrogate...: this record only
        return Archived(record_id, "ProcessingFailed", data, {})


def _transform(record_id: str, data: bytes, key: str, arrival_ms: int | None = None) -> Archived:
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
    event_id = event.get("event_id")
    if type(event_id) is str:
        event["event_id"] = _keyed(b"event\x00", event_id, key)
    else:
        event.pop("event_id", None)
    rec_id = event.pop("rec_id", None)
    parts = rec_id.split("~") if type(rec_id) is str else []
    if len(parts) == 5 and all(parts[:4]):
        event["rec_id"] = "~".join(parts[:4])  # the mac names the shopper to the signing key's holder
    if event.get("route") != "server":
        event.pop("category", None)
    token = event.pop("decision", None)
    decided = identity.decision_of(token) if token is not None else None
    if decided is not None:  # collect verified it: expanded for the datasets
        event["decision"] = decided.to_dict()
    if type(arrival_ms) is int and arrival_ms > 0:
        event["arrival_ms"] = arrival_ms
    else:
        event.pop("arrival_ms", None)
    when = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
    line = json.dumps(event, separators=(",", ":")).encode() + b"\n"  # ASCII: any string encodes
    return Archived(record_id, "Ok", line, {"dt": when.strftime("%Y-%m-%d"), "hour": when.strftime("%H")})


def key_from_env():
    """The archive key's reader for a function (``ARCHIVE_KEY_SECRET``, validated here): read
    on the first batch, re-read only if that failed (Firehose retries a failed batch)."""
    from personalize import settings
    from personalize.adapters.secrets import SecretVersions

    secret = settings.load(settings.ARCHIVE_KEY_SECRET)[settings.ARCHIVE_KEY_SECRET]
    # A failed read is tried again a second later (not the default ten): every batch that finds
    # no key is retried by Firehose, then written raw under errors/.
    return identity.KeyRing(SecretVersions(secret, timeout_s=2.0).load, refresh_s=3600.0, retry_s=1.0,
                            background=False)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
