"""Who is asking, and what serving said: signed cookies, signed rec_ids, the origin token.

Cookie (DESIGN 3.2): ``rt_uid=<user_id>.<signature>``, signature = base64url without
padding of HMAC-SHA256(key, user_id) over the UTF-8 bytes of the key's text and of the user
id. A missing, malformed or forged cookie means an anonymous shopper, never another one.

rec_id: ``<experiment>~<variant>~<expires, epoch s, hex>~<nonce>~<mac>``, mac = the first
22 base64url characters (132 bits) of HMAC-SHA256(key, "rec_id" NUL payload NUL user_id).
Serving signs the variant it served, for whom and until when; attribution believes a
variant only from a rec_id that verifies for the event's shopper and has not expired. The
NUL-separated domain prefix keeps a cookie signature from ever passing as a rec_id mac.

Keys rotate (Secrets Manager ``AWSCURRENT`` / ``AWSPREVIOUS``): whatever verifies tries the
current key, then the previous one, so nobody is signed out by a rotation. ``KeyRing``
holds them, re-read with bounded staleness.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote

log = logging.getLogger(__name__)

COOKIE = "rt_uid"
# A first-party anonymous id the shopper consented to (set by the shop's backend, signed
# apart from rt_uid: ``anonymous_cookie_value``); it names an identity for shared scores only.
ANONYMOUS_COOKIE = "rt_aid"
_ANONYMOUS_DOMAIN = "anonymous\x00"
MAX_USER_ID = 128
SIGNATURE_CHARS = 43
VERIFIED_CACHE = 4096  # cookies remembered as verified, per serving instance
REC_ID_TTL_S = 7 * 24 * 3600  # events older than a week are rejected anyway (DESIGN 3.1)
REC_MAC_CHARS = 22
REC_SEPARATOR = "~"
_REC_DOMAIN = b"rec_id\x00"
# What a cookie's user id or a rec_id part may hold: no controls, no surrogates.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _mac(key: str, message: bytes) -> str:
    digest = hmac.digest(key.encode(), message, "sha256")  # one-shot (OpenSSL): the same bytes as hmac.new
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _equal(expected: str, given: str) -> bool:
    # compare_digest raises on non-ASCII str: callers pass only base64url text.
    return hmac.compare_digest(expected.encode(), given.encode())


def _keys(keys: str | Iterable[str] | None) -> tuple[str, ...]:
    if keys is None:
        return ()
    if isinstance(keys, str):
        return (keys,) if keys else ()
    return tuple(k for k in keys if k)


def sign(user_id: str, key: str) -> str:
    return _mac(key, user_id.encode())


def cookie_value(user_id: str, key: str) -> str:
    return f"{user_id}.{sign(user_id, key)}"


def cookie_from_headers(cookie_headers: list[str], cookie: str = COOKIE) -> str | None:
    """The rt_uid value (or ``cookie``'s) from one or more Cookie header values (CloudFront
    keeps them apart)."""
    for header in cookie_headers:
        if not isinstance(header, str):
            continue
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == cookie:
                return value.strip().strip('"')
    return None


COOKIE_MAX_AGE_S = 30 * 24 * 3600


def set_cookie(value: str, cookie: str = COOKIE, max_age_s: int = COOKIE_MAX_AGE_S) -> str:
    """The ``Set-Cookie`` header value the shop's backend sends at sign-in (DESIGN 3.2):
    ``Secure; HttpOnly; SameSite=Lax``. Lax: a cross-site POST (a form, a fetch) never
    carries it, so another site cannot post events as the shopper; a top-level GET does, and
    GET /recommendations changes nothing. HttpOnly: no script reads it. ``value``:
    ``cookie_value`` (or ``anonymous_cookie_value`` with ``cookie=ANONYMOUS_COOKIE``)."""
    return f"{cookie}={value}; Path=/; Max-Age={int(max_age_s)}; Secure; HttpOnly; SameSite=Lax"


def anonymous_cookie_value(anonymous_id: str, key: str) -> str:
    """The ``rt_aid`` cookie for a consented first-party anonymous id: its signature can
    never pass as an ``rt_uid`` one (a different message), so it signs nobody in."""
    return f"{anonymous_id}.{sign(_ANONYMOUS_DOMAIN + anonymous_id, key)}"


# A shop mints first-party anonymous ids for consenting visitors as ``rt_uid`` values with
# this prefix (the kit's ``new_anonymous_id``; kit/backend.py keeps the same constant, a test
# checks it): a row of their own, but no account. They are outside every experiment and, as
# anonymous identities, bounded per address (``ingest.actors.ConsentedIds``). Account ids never
# start with it.
CONSENTED_PREFIX = "anon-"


def is_consented_anonymous(user_id: str | None) -> bool:
    """A consenting visitor's first-party anonymous id (minted by the shop), not an account."""
    return type(user_id) is str and user_id.startswith(CONSENTED_PREFIX)


def _signed(value: str | None) -> tuple[str, str] | None:
    """(id, signature) of a well-formed signed cookie value ``<id>.<signature>``."""
    if not value or not isinstance(value, str) or "." not in value:
        return None
    signed_id, _, signature = value.rpartition(".")
    if not 0 < len(signed_id) <= MAX_USER_ID or len(signature) != SIGNATURE_CHARS:
        return None
    if not _B64URL.fullmatch(signature) or _FORBIDDEN.search(signed_id):
        return None
    return signed_id, signature


def verified_anonymous_id(value: str | None, keys: str | Iterable[str] | None) -> str | None:
    """The consented anonymous id of an ``rt_aid`` cookie value, when its signature verifies."""
    parsed = _signed(value)
    if parsed is None:
        return None
    anonymous_id, signature = parsed
    for key in _keys(keys):
        if _equal(sign(_ANONYMOUS_DOMAIN + anonymous_id, key), signature):
            return anonymous_id
    return None


def verified_user(value: str | None, keys: str | Iterable[str] | None) -> str | None:
    """The user id when the cookie value carries a valid signature by one of ``keys``."""
    parsed = _signed(value)
    if parsed is None:
        return None
    user_id, signature = parsed
    # Web frameworks percent-encode cookie values by default (alice%40shop.com); the
    # signature binds the decoded id, so trying it names nobody else.
    candidates = (user_id, unquote(user_id)) if "%" in user_id else (user_id,)
    for key in _keys(keys):
        for candidate in candidates:
            if candidate and not _FORBIDDEN.search(candidate) and _equal(sign(candidate, key), signature):
                return candidate
    return None


# ---------------------------------------------------------------- rec_id


@dataclass(frozen=True)
class Served:
    """What a verified rec_id says serving served."""

    experiment: str
    variant: str
    expires_s: int


def _rec_payload(experiment: str, variant: str, expires_s: int, nonce: str) -> str:
    return REC_SEPARATOR.join((experiment, variant, format(expires_s, "x"), nonce))


def _rec_mac(key: str, payload: str, user_id: str | None) -> str:
    return _mac(key, _REC_DOMAIN + payload.encode() + b"\x00" + (user_id or "").encode())[:REC_MAC_CHARS]


_LOG_DOMAIN = b"log\x00"
PSEUDONYM_CHARS = 16  # 96 bits: no collision among a shop's shoppers, and short in a log line


def pseudonym(user_id: str | None, key: str | None) -> str | None:
    """What logs carry instead of a user id (often an e-mail address): a keyed hash, the
    same for one shopper while the signing key lasts, useless without the key (a plain hash
    of an e-mail address is reversed by hashing a list of addresses). Domain-separated from
    cookie and rec_id macs. ``None`` for an anonymous shopper; ``"-"`` without a key."""
    if user_id is None:
        return None
    if not key:
        return "-"
    return "u:" + _mac(key, _LOG_DOMAIN + user_id.encode())[:PSEUDONYM_CHARS]


def issue_rec_id(key: str | None, experiment: str, variant: str, user_id: str | None, now_s: float,
                 ttl_s: int = REC_ID_TTL_S) -> str:
    """A rec_id binding (experiment, variant) to ``user_id`` (None: anonymous) until
    ``now_s + ttl_s``. Without a key (its secret unreadable) the rec_id carries no mac and
    attributes to no variant."""
    nonce = secrets.token_hex(6)
    expires = int(now_s) + ttl_s
    experiment = experiment.replace(REC_SEPARATOR, "-")
    variant = variant.replace(REC_SEPARATOR, "-")
    payload = _rec_payload(experiment, variant, expires, nonce)
    mac = _rec_mac(key, payload, user_id) if key else "unsigned"
    return f"{payload}{REC_SEPARATOR}{mac}"


def verify_rec_id(rec_id: str | None, user_id: str | None, keys: str | Iterable[str] | None,
                  now_s: float) -> Served | None:
    """What serving signed into ``rec_id`` for ``user_id``, or None when it is forged, was
    issued to someone else, or has expired."""
    if not rec_id or not isinstance(rec_id, str):
        return None
    parts = rec_id.split(REC_SEPARATOR)
    if len(parts) != 5:
        return None
    experiment, variant, expires_hex, nonce, mac = parts
    if len(mac) != REC_MAC_CHARS or not _B64URL.fullmatch(mac) or _FORBIDDEN.search(rec_id):
        return None
    if user_id is not None and _FORBIDDEN.search(user_id):
        return None
    try:
        expires = int(expires_hex, 16)
    except ValueError:
        return None
    if expires < now_s or not experiment or not variant:
        return None
    payload = _rec_payload(experiment, variant, expires, nonce)
    if payload != REC_SEPARATOR.join(parts[:4]):  # e.g. "+1a" or "01a" as the expiry
        return None
    for key in _keys(keys):
        if _equal(_rec_mac(key, payload, user_id), mac):
            return Served(experiment, variant, expires)
    return None


# ---------------------------------------------------------------- decisions

# What serving decided for one answer, signed, returned with it: the kit echoes it in the
# list's impression events and collect verifies it before it goes on the stream, so the
# archive learns what a shopper saw without the edge writing anything across regions
# (issue 22). Bound to its rec_id (which binds the shopper): replayed with another rec_id
# or altered, it does not verify.
DECISION_VERSION = "d1"
MAX_DECISION_CHARS = 12_288  # 50 items of 128 characters fit; serving issues nothing longer
MAX_DECISION_ITEMS = 100
_DECISION_DOMAIN = b"decision\x00"


@dataclass(frozen=True)
class Decision:
    model: str                       # the ranker's key (name/version), or the fallback's name
    snapshot: str | None             # the item snapshot's version the answer was cut from
    items: tuple[str, ...]           # what was returned, in order: position n is items[n - 1]
    propensities: tuple[float, ...]  # the probability the serving policy shows each at its place
    candidates: str                  # content hash of the candidate set the ranker scored

    def to_dict(self) -> dict:
        return {"model": self.model, "snapshot": self.snapshot, "items": list(self.items),
                "propensities": list(self.propensities), "candidates": self.candidates}


def _decision_mac(key: str, rec_id: str, payload: str) -> str:
    return _mac(key, _DECISION_DOMAIN + rec_id.encode() + b"\x00" + payload.encode())[:REC_MAC_CHARS]


def issue_decision(key: str | None, rec_id: str, decision: Decision) -> str | None:
    """``d1.<payload>.<mac>``: the decision as compact base64url JSON, signed with its rec_id.
    None without a key (an unsigned decision would be believed by nobody)."""
    if not key:
        return None
    raw = json.dumps([decision.model, decision.snapshot, list(decision.items), list(decision.propensities),
                      decision.candidates], separators=(",", ":"), ensure_ascii=True).encode()
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    token = f"{DECISION_VERSION}.{payload}.{_decision_mac(key, rec_id, payload)}"
    return token if len(token) <= MAX_DECISION_CHARS else None  # never one collect would refuse


def verify_decision(token: object, rec_id: str | None, keys: str | Iterable[str] | None) -> Decision | None:
    """The decision serving signed with ``rec_id``, or None when the token is malformed,
    altered, over its bounds, or signed with another rec_id or key."""
    if type(token) is not str or not rec_id or type(rec_id) is not str or len(token) > MAX_DECISION_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != DECISION_VERSION:
        return None
    _, payload, mac = parts
    if len(mac) != REC_MAC_CHARS or not _B64URL.fullmatch(mac) or not _B64URL.fullmatch(payload):
        return None
    if _FORBIDDEN.search(rec_id) or not rec_id.isascii():
        return None
    if not any(_equal(_decision_mac(key, rec_id, payload), mac) for key in _keys(keys)):
        return None
    return _decision_payload(payload)


def decision_of(token: object) -> Decision | None:
    """What a token collect already verified says (the stream carries the verified token, a
    flat string aggregate's fast decoder reads; the archive expands it): no mac checked here."""
    if type(token) is not str or len(token) > MAX_DECISION_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != DECISION_VERSION or not _B64URL.fullmatch(parts[1]):
        return None
    return _decision_payload(parts[1])


def _decision_payload(payload: str) -> Decision | None:
    try:  # signed by serving: well-formed, but checked all the same
        model, snapshot, items, propensities, candidates = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return None
    if not (type(model) is str and (snapshot is None or type(snapshot) is str) and type(candidates) is str
            and type(items) is list and type(propensities) is list and len(items) == len(propensities)
            and len(items) <= MAX_DECISION_ITEMS and all(type(i) is str for i in items)
            and all(type(p) in (int, float) and 0 < p <= 1 for p in propensities)):
        return None
    return Decision(model, snapshot, tuple(items), tuple(float(p) for p in propensities), candidates)


# ---------------------------------------------------------------- keys


class KeyRing:
    """The current and previous values of a rotating secret, re-read with bounded staleness.

    ``load()`` returns ``(current, previous or None)``. A request never waits on a read
    while keys are known: once they are older than ``refresh_s`` the request that notices
    starts a re-read in a background thread and verifies with what it has (Lambda freezes
    the container between invocations, so the re-read runs during that request and the next
    ones, never in between; a key rotated in is known at most one re-read after the first
    request past ``refresh_s``). Only an instance with no key at all reads on the request
    path, at most once per ``retry_s`` (the loader's own timeouts bound it). A failed load
    keeps the last good keys; with none every cookie is anonymous (documented fallback).
    ``nudge()`` asks for an early re-read, e.g. when a well-formed cookie failed to verify
    (it may be signed with a key rotated in since), at most once per ``retry_s``.
    """

    def __init__(self, load: Callable[[], tuple[str, str | None]], refresh_s: float = 60.0,
                 retry_s: float = 10.0, clock: Callable[[], float] = time.monotonic, background: bool = True):
        self._load = load
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.clock = clock
        self.background = background
        self._keys: tuple[str, ...] = ()
        self.loaded_at = float("-inf")   # last successful load
        self.tried_at = float("-inf")    # last attempt, successful or not
        self.failures = 0
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None  # the last background re-read (tests join it)
        # cookie -> (the keys it verified with, its user id): a shopper's cookie is verified
        # once per key set, not on every request. Only cookies that verified are kept (a flood
        # of forged ones cannot fill it), at most VERIFIED_CACHE, then it starts over.
        self._verified: dict[str, tuple[tuple[str, ...], str]] = {}

    @classmethod
    def static(cls, *keys: str | None) -> KeyRing:
        fixed = _keys(keys)
        ring = cls(lambda: (fixed[0] if fixed else "", fixed[1] if len(fixed) > 1 else None),
                   refresh_s=float("inf"))
        ring._keys = fixed
        ring.loaded_at = ring.tried_at = 0.0
        return ring

    @property
    def current(self) -> str | None:
        return self.keys()[0] if self.keys() else None

    def refresh_now(self) -> bool:
        with self._lock:
            self.tried_at = self.clock()
            try:
                current, previous = self._load()
            except Exception:
                self.failures += 1
                log.warning("reading the keys failed; keeping %d known key(s)", len(self._keys), exc_info=True)
                return False
            if not current:
                self.failures += 1
                log.warning("the secret has no current value; keeping %d known key(s)", len(self._keys))
                return False
            self._keys = _keys((current, previous))
            self.loaded_at = self.clock()
            return True

    def keys(self) -> tuple[str, ...]:
        now = self.clock()
        age = now - self.loaded_at
        known = self._keys
        if age >= self.refresh_s and now - self.tried_at >= min(self.retry_s, self.refresh_s):
            if not known or not self.background:
                self.refresh_now()
                return self._keys
            self._refresh_in_background()
        return known

    @property
    def available(self) -> bool:
        return bool(self.keys())

    def nudge(self) -> None:
        if self.clock() - self.tried_at >= self.retry_s and self.refresh_s != float("inf"):
            self._refresh_in_background() if self.background else self.refresh_now()

    def _refresh_in_background(self) -> None:
        if self._lock.locked():
            return
        self.tried_at = self.clock()  # one refresh at a time, even before the thread runs
        self.thread = threading.Thread(target=self.refresh_now, name="keyring-refresh", daemon=True)
        self.thread.start()

    def verified_user(self, cookie: str | None) -> str | None:
        keys = self.keys()
        cached = self._verified.get(cookie) if isinstance(cookie, str) else None
        if cached is not None and cached[0] == keys:
            return cached[1]
        user = verified_user(cookie, keys)
        if user is None:
            if cookie and len(cookie.rpartition(".")[2]) == SIGNATURE_CHARS:
                self.nudge()
            return None
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()
        self._verified[cookie] = (keys, user)
        return user

    def verified_anonymous(self, cookie: str | None) -> str | None:
        return verified_anonymous_id(cookie, self.keys()) if cookie else None

    def token_matches(self, given: str | None) -> bool:
        """A shared-secret header (CloudFront's origin-verify token) equals a known key."""
        if not given or not isinstance(given, str) or not given.isascii():
            return False
        return any(_equal(key, given) for key in self.keys() if key.isascii())
