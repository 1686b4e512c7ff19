"""The shop's backend kit: the identity cookie, anonymous-to-account carry-over, and
server-side events (orders, stock, catalogue) signed with SigV4. docs/storefront.md.

Standalone on purpose: the Python standard library plus botocore (for SigV4 and, optionally,
Secrets Manager). A shop copies this one file; it never imports the ``personalize`` package.

Cookie (DESIGN 3.2): ``rt_uid=<user_id>.<signature>``, signature = base64url without padding
of HMAC-SHA256(key, user_id) over the UTF-8 bytes of the key's text and of the user id, set
``Secure; HttpOnly; SameSite=Lax`` with the shop's ``Domain``. Keys rotate: a cookie signed
with the current or the previous key verifies, and is re-minted with the current one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

COOKIE = "rt_uid"
ANON_PREFIX = "anon-"
MAX_USER_ID = 128
MAX_EVENTS_PER_POST = 500
COOKIE_MAX_AGE_S = 180 * 24 * 3600
CARRY_MAX_ITEMS = 50
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_COOKIE_SAFE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~:@/?=]+")  # RFC 6265 cookie-octets, minus , ; \ and "


class KitError(ValueError):
    """A value the kit refuses (a bad user id, a bad domain)."""


@dataclass(frozen=True)
class Keys:
    """The signing key's current value and, during a rotation, the previous one."""

    current: str
    previous: str | None = None

    def all(self) -> tuple[str, ...]:
        return tuple(k for k in (self.current, self.previous) if k)

    @classmethod
    def from_secrets_manager(cls, secret_id: str, client=None) -> Keys:
        """AWSCURRENT and AWSPREVIOUS of the stack's ``<stack>/cookie-signing-key`` secret."""
        if client is None:
            import botocore.session

            client = botocore.session.get_session().create_client("secretsmanager")
        current = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")["SecretString"]
        try:
            previous = client.get_secret_value(SecretId=secret_id, VersionStage="AWSPREVIOUS")["SecretString"]
        except client.exceptions.ResourceNotFoundException:
            previous = None
        return cls(current, previous)


def _check_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID or _FORBIDDEN.search(user_id):
        raise KitError("a user id is 1-128 characters of text without control characters")
    return user_id


def sign(user_id: str, key: str) -> str:
    digest = hmac.new(key.encode(), _check_user_id(user_id).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def cookie_value(user_id: str, keys: Keys) -> str:
    """The cookie's value, signed with the current key; a user id that is not cookie-safe
    text is percent-encoded (collect and serving try the decoded id too)."""
    signature = sign(user_id, keys.current)
    shown = user_id if _COOKIE_SAFE.fullmatch(user_id) else urllib.parse.quote(user_id, safe="")
    if len(shown) > MAX_USER_ID:  # serving reads at most 128 characters before the signature
        raise KitError("this user id is longer than 128 characters once percent-encoded for a cookie: "
                       "use a shorter id (an account number) as the shopper's id")
    return f"{shown}.{signature}"


def verify(value: str | None, keys: Keys) -> str | None:
    """The user id of a cookie value signed by the current or the previous key, else None."""
    if not isinstance(value, str) or "." not in value:
        return None
    shown, _, signature = value.strip().strip('"').rpartition(".")
    candidates = {shown, urllib.parse.unquote(shown)}
    for key in keys.all():
        for user_id in candidates:
            try:
                if hmac.compare_digest(sign(user_id, key).encode(), signature.encode()):
                    return user_id
            except (KitError, UnicodeEncodeError):
                continue
    return None


def needs_refresh(value: str | None, keys: Keys) -> bool:
    """True for a valid cookie signed with the previous key: mint it again with the current."""
    user_id = verify(value, keys)
    return user_id is not None and verify(value, Keys(keys.current)) is None


def _domain(domain: str | None) -> str | None:
    if domain is None:
        return None
    if not re.fullmatch(r"\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", domain):
        raise KitError(f"not a cookie domain: {domain!r}")
    return domain.lstrip(".")


def set_cookie(user_id: str, keys: Keys, domain: str | None, max_age_s: int = COOKIE_MAX_AGE_S,
               secure: bool = True) -> str:
    """A ``Set-Cookie`` header value for the shopper. ``domain``: the shop's registrable domain
    (``shop.example``), so the alternate domain serving the API gets the cookie too; None
    for a host-only cookie. ``secure=False`` only for a plain-http local stack."""
    parts = [f"{COOKIE}={cookie_value(user_id, keys)}", "Path=/", f"Max-Age={int(max_age_s)}"]
    if (d := _domain(domain)) is not None:
        parts.append(f"Domain={d}")
    if secure:
        parts.append("Secure")
    parts += ["HttpOnly", "SameSite=Lax"]
    return "; ".join(parts)


def clear_cookie(domain: str | None, secure: bool = True) -> str:
    parts = [f"{COOKIE}=", "Path=/", "Max-Age=0"]
    if (d := _domain(domain)) is not None:
        parts.append(f"Domain={d}")
    return "; ".join(parts + (["Secure"] if secure else []) + ["HttpOnly", "SameSite=Lax"])


def cookie_from_header(header: str | None, name: str = COOKIE) -> str | None:
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip()
    return None


def new_anonymous_id() -> str:
    """A first-party anonymous id: mint it only after the shopper consented (DESIGN 3.1)."""
    return ANON_PREFIX + secrets.token_urlsafe(16)


def is_anonymous(user_id: str | None) -> bool:
    return bool(user_id) and user_id.startswith(ANON_PREFIX)


def _digest(text: str, n: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# ---------------------------------------------------------------- server-side events


@dataclass
class SendResult:
    accepted: int = 0
    rejected: list[dict] = field(default_factory=list)  # {"index", "error", "event_id"}
    attempts: int = 0


class ServerEvents:
    """``POST /server/events`` (and the operators' ``GET /features/users/{id}``), signed with
    SigV4 for ``execute-api``. ``endpoint``: the API's base URL (the stack's ``ApiUrl``, or
    the local stack's endpoint). Retries a failed post (5xx, 429, a dropped connection) and
    the events the API could not store, with the same bodies and event ids, so a retry never
    counts twice (DESIGN 4: a retried event_id counts once within 24 h)."""

    def __init__(self, endpoint: str, region: str, credentials=None, attempts: int = 5, timeout_s: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        if credentials is None:
            import botocore.session

            credentials = botocore.session.get_session().get_credentials()
        self.credentials = credentials
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.sleep = sleep
        self.clock = clock

    def _signed(self, method: str, path: str, body: bytes | None) -> urllib.request.Request:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.endpoint + path
        headers = {"content-type": "application/json"} if body is not None else {}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self.credentials, "execute-api", self.region).add_auth(request)
        return urllib.request.Request(url, data=body, method=method, headers=dict(request.headers.items()))

    def _call(self, method: str, path: str, body: bytes | None) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self._signed(method, path, body), timeout=self.timeout_s) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
            return 0, {}

    def send(self, events: list[dict]) -> SendResult:
        """Post the events (batches of 500); each needs its ``event_id`` (kept on retries)."""
        result = SendResult()
        for event in events:
            if not isinstance(event.get("event_id"), str):
                raise KitError("every server event needs its event_id (the retry and dedupe key)")
        for start in range(0, len(events), MAX_EVENTS_PER_POST):
            pending = list(events[start:start + MAX_EVENTS_PER_POST])
            delay = 0.2
            for attempt in range(self.attempts):
                result.attempts += 1
                status, answer = self._call("POST", "/server/events", json.dumps({"events": pending}).encode())
                if status == 202:
                    retry = []
                    for rejected in answer.get("rejected", []):
                        event = pending[rejected["index"]]
                        if "retry" in rejected.get("error", "") and attempt + 1 < self.attempts:
                            retry.append(event)
                        else:
                            result.rejected.append({**rejected, "event_id": event["event_id"]})
                    result.accepted += answer.get("accepted", 0)
                    pending = retry
                elif status in (400, 401, 403, 404, 413):
                    result.rejected += [{"index": i, "error": f"HTTP {status}: {answer.get('message', '')}",
                                         "event_id": e["event_id"]} for i, e in enumerate(pending)]
                    pending = []
                if not pending:
                    break
                self.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                result.rejected += [{"index": i, "error": "gave up after retries", "event_id": e["event_id"]}
                                    for i, e in enumerate(pending)]
        return result

    def features(self, user_id: str) -> dict | None:
        """The shopper's online features (IAM-authorized operators' route); None when the
        shopper has none (404). A failed read (5xx, 429, no connection) is retried, then
        raised as ``KitError``: "no history" and "history unreadable" are not the same."""
        path = "/features/users/" + urllib.parse.quote(user_id, safe="")
        delay = 0.2
        for attempt in range(self.attempts):
            status, body = self._call("GET", path, None)
            if status == 200:
                return body
            if status == 404:
                return None
            if status not in (0, 429) and status < 500:
                break
            if attempt + 1 < self.attempts:
                self.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise KitError(f"the features of {user_id!r} are unreadable now (HTTP {status}): retry later")

    # -- what a shop's backend says -------------------------------------------------------

    def publish(self, items: Iterable[dict], listed: bool = True) -> SendResult:
        """The catalogue (DESIGN 3.1: the shop owns it): one ``catalogue`` event per item
        (``item_id`` and optional ``department``, ``name``, ``price``). Event ids are derived
        from the item and its fields, so publishing the same catalogue twice counts once."""
        now = int(self.clock() * 1000)
        events = []
        for item in items:
            fields = {k: item[k] for k in ("department", "name", "price") if item.get(k) is not None}
            key = json.dumps([item["item_id"], listed, fields], sort_keys=True)
            events.append({"event_id": f"cat-{_digest(key, 32)}", "type": "catalogue", "item_id": item["item_id"],
                           "listed": listed, "ts": now, **fields})
        return self.send(events)

    def stock(self, item_id: str, level: int, change_id: str | None = None) -> SendResult:
        now = int(self.clock() * 1000)
        return self.send([{"event_id": change_id or f"stk-{_digest(f'{item_id}/{level}/{now}', 32)}",
                           "type": "stock", "item_id": item_id, "stock": int(level), "ts": now}])

    def order(self, user_id: str, order_id: str, lines: list[dict], country: str | None = None) -> SendResult:
        """The purchases of one order: ``lines`` of ``{"item_id", "quantity", "price", "rec_id"}``
        (``rec_id``: what the storefront kit kept for the item, so the purchase counts for the
        variant that earned it). Event ids derive from the order: confirming it twice counts once."""
        now = int(self.clock() * 1000)
        events = []
        for n, line in enumerate(lines):
            event = {"event_id": f"ord-{_digest(order_id, 24)}-{n}", "type": "purchase",
                     "user_id": _check_user_id(user_id), "item_id": line["item_id"],
                     "quantity": int(line.get("quantity", 1)), "ts": now}
            for key in ("price", "rec_id", "category"):
                if line.get(key) is not None:
                    event[key] = line[key]
            if country:
                event["country"] = country
            events.append(event)
        return self.send(events)

    def carry_over(self, anonymous_id: str, user_id: str, history: dict | None = None) -> SendResult:
        """At sign-in: the anonymous visitor's recent history becomes the account's. Only for
        an anonymous id minted with consent (``new_anonymous_id``). Idempotent: the events'
        ids derive from (anonymous id, item, measure), so carrying the same id twice counts
        once (the 24 h dedupe); the shop clears the anonymous cookie once carried."""
        if not is_anonymous(anonymous_id):
            raise KitError("carry_over takes an anonymous id minted by new_anonymous_id")
        history = self.features(anonymous_id) if history is None else history  # KitError: retry later
        if not history:
            return SendResult()
        now = int(self.clock() * 1000)
        week_ago = now - 7 * 24 * 3600 * 1000 + 60_000
        anon = _digest(anonymous_id)
        recent = history.get("recent_items") or []
        stats = history.get("items") or {}
        events = []
        for item_id in list(dict.fromkeys(recent + list(stats)))[:CARRY_MAX_ITEMS]:
            s = stats.get(item_id, {"views": 1})
            ts = s.get("last_ts") or now
            ts = ts if week_ago <= ts <= now else now
            for measure, kind in (("views", "view"), ("clicks", "click"), ("add_to_carts", "add_to_cart")):
                if s.get(measure):
                    events.append({"event_id": f"carry-{anon}-{_digest(item_id, 12)}-{kind}", "type": kind,
                                   "user_id": _check_user_id(user_id), "item_id": item_id, "ts": ts})
        return self.send(events)
