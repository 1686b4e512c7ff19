"""``POST /events`` and ``POST /server/events``: who may say what, then the stream.

Two routes (DESIGN 3.1, 3.2):

* ``public`` (browsers, through CloudFront): the shopper is the one in the verified
  ``rt_uid`` cookie. A body ``user_id`` must equal it (else that event is rejected); without
  a valid cookie the events are anonymous and written without ``user_id``, so they count
  only toward item-level aggregates. ``stock`` is refused here. The viewer's country comes
  from CloudFront, not from the body.
* ``server`` (the shop's backend, IAM-authorized when deployed): every type, ``user_id``
  from the body.

On both, the ``variant`` an event is attributed to is the one serving signed into its
``rec_id`` for that shopper (``identity.verify_rec_id``); a client's ``variant`` is never
written, and a rec_id that does not verify attributes to no variant.

The public route is a browser's, and a browser carries the shopper's cookie wherever the page
posting came from: it refuses a foreign ``Origin`` (403, ``origins``: the shop's
``AllowedOrigins``; a request without ``Origin`` is no browser page's) and takes only a JSON
body (415: a cross-site HTML form can send only ``text/plain``, ``multipart/form-data`` or
``application/x-www-form-urlencoded``, and a page's JSON needs a CORS preflight that only the
allowed origins pass).

Identity for shared scores (``actors``): the account when signed in; for anonymous traffic a
keyed hash of the viewer's address, valid for one window (``actor``), or of the consented
first-party id; automated clients are marked (``bot``) and count for nothing shared. One
identity beyond ``actors.EVENTS_PER_S`` gets 429 with ``Retry-After``.

Our own outage, never the input, answers 5xx: when the signing keys cannot be read, neither the
cookie nor a rec_id can be verified nor the anonymous identity keyed, and the request gets 503
with ``Retry-After`` (nothing accepted, nothing silently stripped).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from personalize.adapters.stream import EventStream
from personalize.identity import KeyRing, is_consented_anonymous, verify_decision, verify_rec_id
from personalize.ingest import actors
from personalize.ingest.catalogue import MembershipCache, artifacts_loader
from personalize.ingest.catalogue import refresh_s as catalogue_refresh_s
from personalize.ingest.coalesce import StockGate, newest_stock_events
from personalize.ingest.events import (
    ITEM_TYPES,
    PUBLIC_ROUTE,
    SERVER_ROUTE,
    EventError,
    country_code,
    loads,
    parse_event,
    partition_key,
)
from personalize.ingest.origins import OriginPolicy

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_048_576  # 1 MiB: 500 events of about 2 KB each
MAX_EVENTS = 500
PUBLIC = "public"
SERVER = "server"
PUBLIC_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "impression"})
RETRY_AFTER_S = 10  # our outage (keys unreadable): KeyRing retries a failed read this often
STREAM_RETRY_AFTER_S = 2  # our outage (Kinesis failing): soon, a client's retries back off
# Fields only collect writes on the public route: a browser's are dropped.
SERVER_SET_FIELDS = ("country", "actor", "bot")


class StreamUnavailableError(RuntimeError):
    """The stream stored none of a request's events: our outage (503, ``Retry-After``)."""


class BodyError(ValueError):
    """The request body as a whole is unusable; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class CollectResult:
    accepted: int
    rejected: list[dict]
    attributed: int = 0
    coalesced: int = 0  # stock updates superseded before the stream (``coalesce``): not to be retried
    decisions: int = 0  # impressions whose echoed decision verified (on the stream with it)
    decisions_refused: int = 0  # echoed decisions that did not (the impression kept, the decision dropped)

    def to_body(self) -> dict:
        body = {"accepted": self.accepted, "rejected": self.rejected}
        if self.coalesced:
            body["coalesced"] = self.coalesced
        return body


def parse_body(body: str | bytes | None) -> list:
    """The events of a request body: one object, or ``{"events": [...]}``."""
    if body is None or body == "" or body == b"":
        raise BodyError(400, "body must be a JSON event or {\"events\": [...]}")
    if isinstance(body, str):
        try:
            raw = body.encode()
        except UnicodeEncodeError:  # a lone surrogate cannot have come from UTF-8 bytes
            raise BodyError(400, "body is not valid JSON: not UTF-8") from None
    else:
        raw = body
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        obj = loads(raw)
    except EventError as exc:
        raise BodyError(400, f"body is {exc}") from None
    if isinstance(obj, dict) and "events" in obj:
        events = obj["events"]
        if not isinstance(events, list):
            raise BodyError(400, "events must be a list")
        if len(events) > MAX_EVENTS:
            raise BodyError(413, f"at most {MAX_EVENTS} events per request")
        return events
    return [obj]


def _as_public(obj: object, shopper: str | None) -> object:
    """The event as the public route lets it through: the cookie's shopper, no stock, no
    catalogue."""
    if type(obj) is not dict:
        return obj
    kind = obj.get("type")
    if kind in ITEM_TYPES:
        raise EventError(f"{kind} events come only from the shop's backend (POST /server/events)")
    if isinstance(kind, str) and kind not in PUBLIC_TYPES:
        return obj  # parse_event names the allowed types
    claimed = obj.get("user_id")
    if claimed is not None and claimed != shopper:
        raise EventError("user_id must be the signed-in shopper's (rt_uid cookie)" if shopper else
                         "user_id needs a signed-in shopper (rt_uid cookie); leave it out when anonymous")
    out = {k: v for k, v in obj.items() if k not in SERVER_SET_FIELDS}
    if shopper is None:
        out.pop("user_id", None)
    else:
        out["user_id"] = shopper
    return out


def _attributable(event, public: bool) -> bool:
    """Which events may move the experiment counters the guardrail reads: a signed-in
    shopper's (anonymous shoppers are outside every experiment), and purchases only from the
    shop's backend (a browser's purchase is a claim, replayable with any price)."""
    if not event.rec_id or event.user_id is None or is_consented_anonymous(event.user_id):
        return False
    return not (public and event.type == "purchase")


UNPUBLISHED = "is not in the shop's catalogue (unknown or delisted): the shop publishes its items"


def _check_published(event, catalogue) -> None:
    """Public events only about items the shop has published (DESIGN 3.1)."""
    if event.item_id is not None and event.item_id not in catalogue:
        raise EventError(f"item_id {UNPUBLISHED}")
    for item in event.items:
        if item not in catalogue:
            raise EventError(f"items holds an item that {UNPUBLISHED}")


def collect(events: list, stream: EventStream, now_ms: int, viewer_country: str | None = None, *,
            route: str = SERVER, shopper: str | None = None, keys: Iterable[str] = (), actor: str | None = None,
            automated: bool = False, catalogue=None, gate: StockGate | None = None) -> CollectResult:
    """Validate each event for ``route``, attribute it through its rec_id, write the valid
    ones. ``shopper``: the verified cookie's user (public route); ``keys``: the signing
    keys that verify rec_ids (current, previous); ``actor``: the anonymous identity (public
    route, no shopper); ``automated``: a bot's request (counts for nothing shared);
    ``catalogue``: the published items (``catalogue.Membership``; public route; None:
    unknown, aggregate checks); ``gate``: coalesces stock updates (server route, ``coalesce``)."""
    rejected: list[dict] = []
    valid: list[tuple[int, object]] = []
    keys = tuple(keys)
    country = country_code(viewer_country)
    public = route == PUBLIC
    attributed = 0
    decisions: dict[int, object] = {}  # index -> the decision string a client echoed
    for index, obj in enumerate(events):
        try:
            if public:
                obj = _as_public(obj, shopper)
            if type(obj) is dict and obj.get("decision") is not None:
                decisions[index] = obj["decision"]
            if type(obj) is dict and public:
                obj = {k: v for k, v in obj.items() if k not in SERVER_SET_FIELDS}  # ours, never the body's
                if country:
                    obj["country"] = country
                if actor and shopper is None:
                    obj["actor"] = actor
                if automated:
                    obj["bot"] = True
            elif country and type(obj) is dict and obj.get("country") is None:
                obj = {**obj, "country": country}
            event = parse_event(obj, now_ms, anonymous_ok=public)
            if public and catalogue is not None:
                _check_published(event, catalogue)
        except EventError as exc:
            rejected.append({"index": index, "error": str(exc)})
            continue
        event.route = PUBLIC_ROUTE if public else SERVER_ROUTE  # the route's word, never the body's
        valid.append((index, event))
    superseded = set() if public else newest_stock_events(
        [{"type": e.type, "item_id": e.item_id, "ts": e.ts, "event_id": e.event_id} for _, e in valid])
    records: list[tuple[str, bytes]] = []
    indexes: list[int] = []
    coalesced = verified = refused = 0
    for position, (index, event) in enumerate(valid):
        if event.type == "stock" and (position in superseded or (
                gate is not None and not gate.admit(event.item_id, event.stock, now_ms))):
            coalesced += 1
            continue
        served = verify_rec_id(event.rec_id, event.user_id, keys, now_ms / 1000) if _attributable(event, public) \
            else None
        event.variant = served.variant if served else None
        if served is not None:
            attributed += 1
            if event.type == "impression":
                # One served list is one impression, however often it is sent: a replayed
                # rec_id cannot pile impressions onto a variant (client dedupe, 24 h).
                event.event_id = _list_event_id(event.rec_id)
        if index in decisions:
            decision = _echoed_decision(event, decisions[index], served, keys, now_ms)
            if decision is None:
                refused += 1
            else:
                event.decision = decisions[index]  # the verified token: a flat string on the stream
                # Anonymous lists too: a replayed decision is the same list, once.
                event.event_id = _list_event_id(event.rec_id)
                verified += 1
        records.append((partition_key(event), json.dumps(event.to_dict(), separators=(",", ":")).encode()))
        indexes.append(index)
    accepted = 0
    if records:
        try:
            result = stream.put(records)
        except Exception as exc:  # noqa: BLE001 - the stream failed (not a throttle): our outage
            raise StreamUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        if all(error is not None for error in result.errors):  # nothing stored: the same, retryable
            raise StreamUnavailableError(f"no record stored ({result.errors[0]})")
        for index, error in zip(indexes, result.errors):
            if error is None:
                accepted += 1
            else:
                rejected.append({"index": index, "error": f"not stored ({error}); retry later"})
        rejected.sort(key=lambda r: r["index"])
    return CollectResult(accepted, rejected, attributed, coalesced, verified, refused)


def _list_event_id(rec_id: str) -> str:
    """The event id of a served list's impression: its nonce and the end of its mac."""
    return "imp~" + rec_id.rsplit("~", 2)[-2] + rec_id[-10:]


def _echoed_decision(event, token: object, served, keys: tuple[str, ...], now_ms: int):
    """The decision serving signed for this impression's list, or None: only an impression
    carries one; its rec_id must verify for this shopper (anonymous: for nobody) and the
    decision for its rec_id; every item shown must be the decision's item at that place."""
    if event.type != "impression":
        return None
    if served is None and verify_rec_id(event.rec_id, event.user_id, keys, now_ms / 1000) is None:
        return None
    decision = verify_decision(token, event.rec_id, keys)
    if decision is None:
        return None
    if event.positions:
        if any(p > len(decision.items) or decision.items[p - 1] != item
               for item, p in zip(event.items, event.positions)):
            return None
    elif not set(event.items) <= set(decision.items):
        return None
    return decision


@dataclass(frozen=True)
class Refused:
    """Why a request was refused as a whole (its metric's name)."""

    metric: str


BYPASS = Refused("RequestsBypassingCdn")
ORIGIN_KEYS = Refused("OriginKeysUnavailable")
NOT_JSON = Refused("RequestsNotJson")
FOREIGN_ORIGIN = Refused("RequestsForeignOrigin")
BAD_BODY = Refused("RequestsBadBody")
IDENTITY_KEYS = Refused("IdentityKeysUnavailable")
OVER_RATE = Refused("RequestsOverRate")
STREAM_DOWN = Refused("EventsStreamUnavailable")


@dataclass
class Request:
    """What the handler passes in: the route, the raw body and the headers that matter."""

    route: str
    body: str | bytes | None
    cookie: str | None = None
    viewer_country: str | None = None
    origin_token: str | None = None
    content_type: str | None = None
    origin: str | None = None           # the browser's Origin header (public route)
    user_agent: str | None = None
    viewer_address: str | None = None   # CloudFront-Viewer-Address: "<ip>:<port>"
    anonymous_cookie: str | None = None  # rt_aid: a consented first-party anonymous id


def is_json(content_type: str | None) -> bool:
    """``application/json`` (parameters such as charset allowed), or a ``+json`` type."""
    if not content_type or not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _carries_rec_id(events: list) -> bool:
    return any(type(e) is dict and e.get("rec_id") is not None for e in events)


class Collector:
    """Both routes' decisions, free of Lambda: origin check, identity, validation, stream."""

    def __init__(self, stream: EventStream, signing: KeyRing, origin: KeyRing | None,
                 clock: Callable[[], float] = time.time, origins: OriginPolicy | None = None,
                 limiter: actors.RateLimiter | None = None, catalogue: MembershipCache | None = None,
                 gate: StockGate | None = None, consented: actors.ConsentedIds | None = None):
        self.stream = stream
        self.signing = signing
        self.origin = origin  # None: no CDN in front (never in a deployed stack)
        self.clock = clock
        self.origins = origins  # None: no Origin check (unit tests of other rules)
        self.limiter = limiter if limiter is not None else actors.RateLimiter()
        # The published items (None: not checked here; aggregate checks whatever it can).
        self.catalogue = catalogue
        self.gate = gate if gate is not None else StockGate()
        self.consented = consented if consented is not None else actors.ConsentedIds()

    def handle(self, request: Request, now_ms: int | None = None) -> tuple[int, dict, CollectResult | Refused]:
        """(status, body, what was collected, or why the request was refused as a whole)."""
        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        if request.route == PUBLIC and self.origin is not None and not self.origin.token_matches(
                request.origin_token):
            if not self.origin.available:  # our outage, not the caller's fault: say so, retryable
                return 503, {"message": "origin verification unavailable (secret unreadable); retry",
                             "retry_after_s": RETRY_AFTER_S}, ORIGIN_KEYS
            return 403, {"message": "browsers reach this API only through the CDN"}, BYPASS
        public = request.route == PUBLIC
        if public and self.origins is not None and not self.origins.permits(request.origin):
            return 403, {"message": "this origin may not post events (AllowedOrigins)"}, FOREIGN_ORIGIN
        if public and not is_json(request.content_type):
            return 415, {"message": "POST /events takes a JSON body (Content-Type: application/json)"}, NOT_JSON
        try:
            events = parse_body(request.body)
        except BodyError as exc:
            return exc.status, {"message": str(exc)}, BAD_BODY
        keys = self.signing.keys()
        if not keys and (public or _carries_rec_id(events)):
            # Without the keys no cookie, rec_id or anonymous identity can be verified: our
            # outage, so retryable, and nothing accepted in a lesser form.
            return 503, {"message": "identity cannot be verified now (signing keys unreadable); retry",
                         "retry_after_s": RETRY_AFTER_S}, IDENTITY_KEYS
        shopper = actor = None
        automated = False
        if public:
            shopper = self.signing.verified_user(request.cookie)
            automated = actors.is_automated(request.user_agent)
            if shopper is None:
                consented = self.signing.verified_anonymous(request.anonymous_cookie)
                if consented and (automated or not self.consented.admit(request.viewer_address, consented,
                                                                         now_ms)):
                    consented = None  # one address's consented ids past its bound: the address
                actor = actors.anonymous_actor(request.viewer_address, keys[0], now_ms, consented)
            elif is_consented_anonymous(shopper) and not automated and not self.consented.admit(
                    request.viewer_address, shopper, now_ms):
                automated = True  # its own row learns; nothing shared moves
            wait = self.limiter.take(shopper or actor or "unknown", len(events), now_ms / 1000)
            if wait:
                return 429, {"message": "more events than one shopper (or one address) sends; "
                                        f"retry after {wait} s", "retry_after_s": wait}, OVER_RATE
        membership = self.catalogue.get() if self.catalogue is not None and public else None
        try:
            result = collect(events, self.stream, now_ms, request.viewer_country, route=request.route,
                             shopper=shopper, keys=keys, actor=actor, automated=automated,
                             catalogue=membership, gate=self.gate)
        except StreamUnavailableError as exc:
            log.error("events stream unavailable: %s", exc)
            return 503, {"message": "the events stream is unavailable; retry (events are deduplicated by event_id)",
                         "retry_after_s": STREAM_RETRY_AFTER_S}, STREAM_DOWN
        return 202, result.to_body(), result


def build_collector() -> Collector:
    """The production wiring, from the function's validated environment."""
    import os

    from personalize import settings
    from personalize.adapters.artifacts import S3Artifacts
    from personalize.adapters.secrets import SecretVersions
    from personalize.adapters.stream import KinesisEventStream

    config = settings.load(settings.EVENTS_STREAM, settings.SIGNING_KEY_SECRET, settings.ORIGIN_VERIFY_SECRET,
                           settings.ARTIFACTS_BUCKET)
    region = os.environ.get("AWS_REGION")
    signing = KeyRing(SecretVersions(config[settings.SIGNING_KEY_SECRET], region).load)
    origin = KeyRing(SecretVersions(config[settings.ORIGIN_VERIFY_SECRET], region).load)
    catalogue = MembershipCache(artifacts_loader(S3Artifacts(config[settings.ARTIFACTS_BUCKET], region)),
                                refresh_s=catalogue_refresh_s())
    return Collector(KinesisEventStream(config[settings.EVENTS_STREAM]), signing, origin,
                     origins=OriginPolicy.from_env(), catalogue=catalogue)
