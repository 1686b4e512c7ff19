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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from personalize.adapters.stream import EventStream
from personalize.identity import KeyRing, verify_rec_id
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

MAX_BODY_BYTES = 1_048_576  # 1 MiB: 500 events of about 2 KB each
MAX_EVENTS = 500
PUBLIC = "public"
SERVER = "server"
PUBLIC_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "impression"})


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
    out = dict(obj)
    if shopper is None:
        out.pop("user_id", None)
    else:
        out["user_id"] = shopper
    return out


def _attributable(event, public: bool) -> bool:
    """Which events may move the experiment counters the guardrail reads: a signed-in
    shopper's (anonymous shoppers are outside every experiment), and purchases only from the
    shop's backend (a browser's purchase is a claim, replayable with any price)."""
    if not event.rec_id or event.user_id is None:
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
            route: str = SERVER, shopper: str | None = None, keys: Iterable[str] = (),
            catalogue=None, gate: StockGate | None = None) -> CollectResult:
    """Validate each event for ``route``, attribute it through its rec_id, write the valid
    ones. ``shopper``: the verified cookie's user (public route); ``keys``: the signing
    keys that verify rec_ids (current, previous); ``catalogue``: the published items
    (``catalogue.Membership``; public route; None: unknown, aggregate checks); ``gate``:
    coalesces stock updates (server route, ``coalesce``)."""
    rejected: list[dict] = []
    valid: list[tuple[int, object]] = []
    keys = tuple(keys)
    country = country_code(viewer_country)
    public = route == PUBLIC
    attributed = 0
    for index, obj in enumerate(events):
        try:
            if public:
                obj = _as_public(obj, shopper)
            if type(obj) is dict and public:
                obj = {k: v for k, v in obj.items() if k != "country"}  # CloudFront's, never the body's
                if country:
                    obj["country"] = country
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
    coalesced = 0
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
                event.event_id = "imp~" + event.rec_id.rsplit("~", 2)[-2] + event.rec_id[-10:]
        records.append((partition_key(event), json.dumps(event.to_dict(), separators=(",", ":")).encode()))
        indexes.append(index)
    accepted = 0
    if records:
        result = stream.put(records)
        for index, error in zip(indexes, result.errors):
            if error is None:
                accepted += 1
            else:
                rejected.append({"index": index, "error": f"not stored ({error}); retry later"})
        rejected.sort(key=lambda r: r["index"])
    return CollectResult(accepted, rejected, attributed, coalesced)


@dataclass
class Request:
    """What the handler passes in: the route, the raw body and the headers that matter."""

    route: str
    body: str | bytes | None
    cookie: str | None = None
    viewer_country: str | None = None
    origin_token: str | None = None


class Collector:
    """Both routes' decisions, free of Lambda: origin check, identity, validation, stream."""

    def __init__(self, stream: EventStream, signing: KeyRing, origin: KeyRing | None,
                 clock: Callable[[], float] = time.time, catalogue: MembershipCache | None = None,
                 gate: StockGate | None = None):
        self.stream = stream
        self.signing = signing
        self.origin = origin  # None: no CDN in front (never in a deployed stack)
        self.clock = clock
        # The published items (None: not checked here; aggregate checks whatever it can).
        self.catalogue = catalogue
        self.gate = gate if gate is not None else StockGate()

    def handle(self, request: Request, now_ms: int | None = None) -> tuple[int, dict, CollectResult | None]:
        now_ms = int(self.clock() * 1000) if now_ms is None else now_ms
        if request.route == PUBLIC and self.origin is not None and not self.origin.token_matches(
                request.origin_token):
            if not self.origin.available:  # our outage, not the caller's fault: say so, retryable
                return 503, {"message": "origin verification unavailable (secret unreadable); retry"}, None
            return 403, {"message": "browsers reach this API only through the CDN"}, None
        try:
            events = parse_body(request.body)
        except BodyError as exc:
            return exc.status, {"message": str(exc)}, None
        shopper = self.signing.verified_user(request.cookie) if request.route == PUBLIC else None
        membership = self.catalogue.get() if self.catalogue is not None and request.route == PUBLIC else None
        result = collect(events, self.stream, now_ms, request.viewer_country, route=request.route,
                         shopper=shopper, keys=self.signing.keys(), catalogue=membership, gate=self.gate)
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
    return Collector(KinesisEventStream(config[settings.EVENTS_STREAM]), signing, origin, catalogue=catalogue)
