"""The event contract (DESIGN 3.1): validation of one shopper action.

Validation is hand-written rather than schema-driven because it sits on the ingest hot
path (tens of thousands of events per second per core); tests pin every rule.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "stock", "impression", "catalogue")
# Types about the item itself, from the shop's backend only: keyed by item on the stream
# (one writer per item: sold-out transitions and listing changes are decided in order).
ITEM_TYPES = ("stock", "catalogue")
# Which route an event came by, as ``collect`` writes it on the stream (never a client's word).
SERVER_ROUTE = "server"
PUBLIC_ROUTE = "public"
# Events that count as an interaction with an item, in the order of the measures kept in
# every tile: views, clicks, add-to-carts, purchases.
MEASURES = ("views", "clicks", "add_to_carts", "purchases")
MEASURE_INDEX = {"view": 0, "click": 1, "add_to_cart": 2, "purchase": 3}

MAX_ID_CHARS = 128
MAX_EVENT_ID_CHARS = 64
MAX_TAG_CHARS = 128
MAX_NAME_CHARS = 256
MAX_IMPRESSION_ITEMS = 100
MAX_POSITION = 1_000  # an impression's positions: 1-based places in the list the page showed
MAX_ACTOR_CHARS = 64
# Bounds of DESIGN 3.1, in one place: both HTTP routes and aggregate's record decoder use them.
MAX_QUANTITY = 1_000
MAX_PRICE = 1_000_000
MAX_STOCK = 1_000_000_000
# Event times before 2000-01-01 are almost always seconds sent where milliseconds belong.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 32_503_680_000_000  # 3000-01-01: beyond it, microseconds or garbage
# Clocks drift; an event further ahead of the receiver's clock than this is rejected.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
# Older than this (by the receiver's clock) is rejected: nothing it could change is kept longer.
MAX_AGE_MS = 7 * 24 * 3_600_000

# ISO 3166-1 alpha-2, the officially assigned codes.
COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW
BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI
FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN
IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF
PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE
YT ZA ZM ZW""".split())

# C0 and C1 control characters, and surrogates (a lone one cannot be encoded as UTF-8).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class EventError(ValueError):
    """An event that breaks the contract; the message says which rule."""


@dataclass(slots=True)
class Event:
    event_id: str
    type: str
    ts: int
    user_id: str | None = None
    item_id: str | None = None
    category: str | None = None
    country: str | None = None
    price: float | None = None
    quantity: int = 1
    stock: int | None = None
    rec_id: str | None = None
    variant: str | None = None
    items: tuple[str, ...] = ()
    positions: tuple[int, ...] = ()  # impression: each shown item's 1-based place, aligned with items
    # impression: what serving decided for the list (identity's signed decision token), set by
    # collect once the kit's echo verified; never read from a body (parse_event ignores the
    # field); a flat string, so aggregate's fast decoder reads the record (the archive expands it).
    decision: str | None = None
    # Set by collect on the public route (a browser's are dropped): the anonymous identity
    # shared scores count (``ingest.actors``), and an automated client's mark.
    actor: str | None = None
    bot: bool = False
    route: str | None = None  # SERVER_ROUTE or PUBLIC_ROUTE: set by collect, read from the stream
    listed: bool | None = None  # catalogue: published (True) or delisted (False)
    department: str | None = None  # catalogue
    name: str | None = None  # catalogue

    @property
    def from_server(self) -> bool:
        """Came by the shop's backend (``POST /server/events``): speaks for the catalogue."""
        return self.route == SERVER_ROUTE

    def to_dict(self) -> dict:
        """The contract form, without fields that are unset."""
        out = {"event_id": self.event_id, "type": self.type, "ts": self.ts}
        for name in ("user_id", "item_id", "category", "country", "price", "stock", "rec_id", "variant", "route",
                     "listed", "department", "name"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.quantity != 1:
            out["quantity"] = self.quantity
        if self.items:
            out["items"] = list(self.items)
        if self.positions:
            out["positions"] = list(self.positions)
        if self.decision is not None:
            out["decision"] = self.decision
        if self.actor is not None:
            out["actor"] = self.actor
        if self.bot:
            out["bot"] = True
        return out


def _bounded_int(digits: str) -> int | float:
    # Python refuses to convert more than 4,300 digits, which would fail the whole body: such
    # a number parses as infinity instead, and only the field holding it is rejected.
    return int(digits) if len(digits) <= 4000 else float("inf")


# ``json.loads`` with ``parse_int`` builds a decoder per call; this one is built once.
_DECODER = json.JSONDecoder(parse_int=_bounded_int)


def loads(raw: bytes | str) -> object:
    """JSON from a client: UTF-8 only, bounded nesting; raises EventError. NaN and Infinity
    parse (as Python's json does) so that only the event holding one is rejected, by its
    field's bounds, and the valid events beside it are kept. (``json.loads(raw,
    parse_int=...)`` exactly, with its input handling, on a decoder built once.)"""
    try:
        if isinstance(raw, str):
            if raw.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        else:
            raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return _DECODER.decode(raw)
    except RecursionError:
        raise EventError("not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise EventError(f"not valid JSON: {exc}") from None


def clean_text(value: object, name: str, max_chars: int) -> str:
    """A string field: 1..max_chars characters of valid UTF-8 text without control characters."""
    if type(value) is not str:
        raise EventError(f"{name} must be a string")
    if not 0 < len(value) <= max_chars:
        raise EventError(f"{name} must be 1-{max_chars} characters")
    if _FORBIDDEN.search(value):
        raise EventError(f"{name} must be UTF-8 text without control characters")
    return value


def _string(obj: dict, name: str, max_chars: int, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise EventError(f"{name} is required")
        return None
    return clean_text(value, name, max_chars)


def _integer(obj: dict, name: str, low: int, high: int) -> int | None:
    """An integer field within low..high (an integral float is accepted; bool is not)."""
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is float:
        if not (math.isfinite(value) and value.is_integer()):
            raise EventError(f"{name} must be an integer")
        # Compare as float before converting: a huge float is out of bounds, not an error.
        if not low <= value <= high:
            raise EventError(f"{name} must be an integer from {low} to {high}")
        return int(value)
    if type(value) is not int:
        raise EventError(f"{name} must be an integer")
    if not low <= value <= high:
        raise EventError(f"{name} must be an integer from {low} to {high}")
    return value


def country_code(value: object) -> str | None:
    """The ISO 3166-1 alpha-2 code, upper case, or None when ``value`` is not one."""
    if type(value) is not str or len(value) != 2 or not value.isascii():
        return None
    code = value.upper()
    return code if code in COUNTRIES else None


def _plain_text(value: object, max_chars: int) -> bool:
    """The common case of ``clean_text``, decided fast: printable ASCII of 1..max_chars (for
    ASCII, ``isprintable`` is exactly "no C0 control character and no DEL")."""
    return type(value) is str and 0 < len(value) <= max_chars and value.isascii() and value.isprintable()


def parse_event(obj: object, now_ms: int | None = None, anonymous_ok: bool = False) -> Event:
    """Validate a decoded JSON value against the contract and return the event.

    ``now_ms`` is the receiver's clock (for a stream record: its arrival time); when given,
    ``ts`` must lie within the last ``MAX_AGE_MS`` and at most ``MAX_FUTURE_SKEW_MS`` ahead.
    ``anonymous_ok``: a shopper event may come without ``user_id`` (the public route's
    anonymous shoppers, as ``collect`` writes them to the stream). Unknown fields are ignored.

    On the ingest hot path: each rule's common case is decided inline (``_plain_text``, spelt
    out for the ids), and anything else goes through the rule's own check (``clean_text``,
    ``_integer``), which says what is wrong. The rules are checked in the same order either
    way, so the first broken one is reported.
    """
    if type(obj) is not dict:
        raise EventError("event must be a JSON object")
    get = obj.get
    event_id = get("event_id")
    if not (type(event_id) is str and 0 < len(event_id) <= MAX_EVENT_ID_CHARS
            and event_id.isascii() and event_id.isprintable()):
        event_id = _string(obj, "event_id", MAX_EVENT_ID_CHARS, True)
    kind = get("type")
    if type(kind) is not str or (kind not in MEASURE_INDEX and kind not in ("stock", "impression", "catalogue")):
        raise EventError(f"type must be one of {', '.join(EVENT_TYPES)}")
    ts = get("ts")
    if type(ts) is not int or not MIN_TS_MS <= ts <= MAX_TS_MS:
        if ts is None:
            raise EventError("ts is required")
        ts = _integer(obj, "ts", -(2**63), 2**63 - 1)
        if ts is None or not MIN_TS_MS <= ts <= MAX_TS_MS:
            raise EventError("ts must be epoch milliseconds (from 2000 to 3000)")
    if now_ms is not None:
        if ts > now_ms + MAX_FUTURE_SKEW_MS:
            raise EventError("ts is more than 5 minutes in the future")
        if ts < now_ms - MAX_AGE_MS:
            raise EventError("ts is more than 7 days in the past")
    user_id = get("user_id")
    if not (type(user_id) is str and 0 < len(user_id) <= MAX_ID_CHARS
            and user_id.isascii() and user_id.isprintable()):
        user_id = _string(obj, "user_id", MAX_ID_CHARS, kind not in ITEM_TYPES and not anonymous_ok)
    item_id = get("item_id")
    if not (type(item_id) is str and 0 < len(item_id) <= MAX_ID_CHARS
            and item_id.isascii() and item_id.isprintable()):
        item_id = _string(obj, "item_id", MAX_ID_CHARS, kind != "impression")
    event = Event(event_id, kind, ts, user_id, item_id)

    category = get("category")
    if category is not None:
        event.category = category if _plain_text(category, MAX_TAG_CHARS) else clean_text(
            category, "category", MAX_TAG_CHARS)
    country = get("country")
    if country is not None:
        event.country = country if type(country) is str and country in COUNTRIES else country_code(country)
        if event.country is None:
            raise EventError("country must be an ISO 3166-1 alpha-2 code")
    price = get("price")
    if price is not None:
        if type(price) not in (int, float) or not 0 <= price <= MAX_PRICE:  # NaN fails the comparison
            raise EventError(f"price must be a number from 0 to {MAX_PRICE:,}")
        event.price = float(price)
    if get("quantity") is not None:
        event.quantity = _integer(obj, "quantity", 1, MAX_QUANTITY)
    if kind == "stock":
        stock = _integer(obj, "stock", 0, MAX_STOCK)
        if stock is None:
            raise EventError("stock is required for stock events")
        event.stock = stock
    rec_id = get("rec_id")
    if rec_id is not None:
        event.rec_id = rec_id if _plain_text(rec_id, MAX_TAG_CHARS) else clean_text(rec_id, "rec_id", MAX_TAG_CHARS)
    variant = get("variant")
    if variant is not None:
        event.variant = variant if _plain_text(variant, MAX_TAG_CHARS) else clean_text(
            variant, "variant", MAX_TAG_CHARS)
    if kind == "catalogue":
        listed = get("listed")
        if type(listed) is not bool:
            raise EventError("listed (true or false) is required for catalogue events")
        event.listed = listed
        event.department = _string(obj, "department", MAX_TAG_CHARS, False)
        event.name = _string(obj, "name", MAX_NAME_CHARS, False)
    route = get("route")
    if route is not None:
        event.route = route if route in (SERVER_ROUTE, PUBLIC_ROUTE) else None
    if kind == "impression":
        items = get("items")
        if type(items) is not list or not items:
            raise EventError("items must be a non-empty list of item ids for impression events")
        if len(items) > MAX_IMPRESSION_ITEMS:
            raise EventError(f"items holds at most {MAX_IMPRESSION_ITEMS} item ids")
        for item in items:
            if not _plain_text(item, MAX_ID_CHARS):
                clean_text(item, "items", MAX_ID_CHARS)
        event.items = tuple(items)
        positions = get("positions")
        if positions is not None:
            if type(positions) is not list or len(positions) != len(items) or not all(
                    type(p) is int and 1 <= p <= MAX_POSITION for p in positions) or len(set(positions)) != len(
                    positions):
                raise EventError(f"positions must be a list of distinct integers from 1 to {MAX_POSITION}, "
                                 "one for each of items")
            event.positions = tuple(positions)
    actor = get("actor")
    if actor is not None:
        event.actor = actor if _plain_text(actor, MAX_ACTOR_CHARS) else clean_text(actor, "actor", MAX_ACTOR_CHARS)
    bot = get("bot")
    if bot is not None:
        if type(bot) is not bool:
            raise EventError("bot must be true or false")
        event.bot = bot
    return event


def partition_key(event: Event) -> str:
    """Kinesis partition key (a shard takes 1,000 records/s):

    * a shopper's events: the shopper, so that they stay in order on one shard;
    * ``stock`` and ``catalogue``: the item, so that one shard decides its sold-out and
      listing transitions in order (stock updates are coalesced before, ``collect``);
    * anonymous events: the anonymous identity (``actor``): its credits have one writer, a
      client's resend reaches the same shard and dedupe row as the original, and a viral
      item's flash sale spreads over the shards with its many shoppers (one identity's own
      rate is bounded by collect's 429); without an actor (the server route), the event id.
    """
    if event.type in ITEM_TYPES:
        return event.item_id or event.event_id
    if event.user_id is not None:
        return event.user_id
    if event.actor is not None:
        return event.actor
    return event.event_id
