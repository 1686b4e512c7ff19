"""Who is behind a request on the public route, as far as shared scores are concerned.

Shared scores (trending, popularity, co-visitation, experiment counters) count shoppers, not
events or quantities (DESIGN 3.1, "One identity, one shopper's worth"); ``aggregate`` credits
each identity at most once per item, measure and window (``entities.credits``). This module
names the identity of a public request, and refuses one that sends more than a shopper could:

* signed in: the account (the verified ``rt_uid`` cookie), nothing to add here;
* anonymous: ``ip~<hash>``, a keyed hash of the viewer's network address (CloudFront's
  ``CloudFront-Viewer-Address``; an IPv6 address by its /64, what one subscriber is given at
  the least),
  under a key derived from the signing key and the current window (``ACTOR_WINDOW_MS``, the
  credit window): the same address is one identity within a window and an unrelated one in
  the next, and the address itself is never written anywhere;
* a first-party anonymous id the shopper consented to (``rt_aid`` cookie, signed by the
  shop's backend with ``identity.anonymous_cookie_value``) replaces the address: shoppers
  behind one NAT are then told apart. ``aid~<hash>``, keyed the same way;
* known bots, crawlers, headless browsers and HTTP libraries (``is_automated``, by
  User-Agent; no User-Agent at all counts as automated): accepted, counted for nothing shared.

``RateLimiter``: one identity beyond ``EVENTS_PER_S`` sustained (bursts of one full request,
``BURST_EVENTS``) gets 429 with ``Retry-After`` at collect. The buckets live in one collect
container; AWS WAF's rate rule per address bounds the fleet when deployed (template
``WebAcl``), and the credits bound what any rate can do to a shared score.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
import re
import threading
from collections import OrderedDict

from personalize.ingest.entities.tuning import DAY_MS

# The anonymous identity's key changes with this window: the credit window of shared scores
# (``entities.credits.CREDIT_WINDOW_MS``, a test keeps them equal).
ACTOR_WINDOW_MS = DAY_MS
ACTOR_CHARS = 22  # 132 bits of the HMAC, base64url
EVENTS_PER_S = 5.0      # 300 events a minute, sustained: no person clicks that fast for long
BURST_EVENTS = 500      # one full request (collect.MAX_EVENTS) is always allowed from a full bucket
# An address is not a person: a carrier's or an office's NAT puts hundreds of shoppers behind
# one. Address-keyed anonymous identities (``ip~``) get this rate instead (500 phones at one
# event every 10 s); what they move in shared scores is bounded by their credits all the same,
# and the WAF's per-address rule bounds the fleet.
ADDRESS_EVENTS_PER_S = 50.0
LIMITER_IDENTITIES = 50_000  # buckets kept per container (least recently seen dropped first)

# Crawlers and bots name themselves; headless browsers and HTTP libraries do too, by default.
_AUTOMATED = re.compile(
    r"(?<!cu)bot\b|bot/|crawl|spider|slurp|scrap|headless|phantomjs|puppeteer|playwright|selenium|webdriver|"
    r"lighthouse|pagespeed|python-|python/|aiohttp|httpx|requests/|urllib|curl/|wget|libwww|go-http-client|"
    r"okhttp|java/|apache-httpclient|node-fetch|axios|undici|postman|insomnia|facebookexternalhit|"
    r"whatsapp|preview|monitor|pingdom|uptime|datadog|newrelic|"
    # HTTP clients' defaults: Node's fetch ("node"), Deno, Bun, Java's, PHP's, Ruby's, Dart's, ...
    # (not Dart's "dart:io": Flutter apps send it, and a shop's own app counts as a browser does)
    r"^node$|^deno/|^bun/|java-http-client|guzzlehttp|^ruby$|faraday|^got\b|restsharp|reactornetty|"
    r"mechanize|httpie|powershell|libcurl", re.IGNORECASE)


def is_automated(user_agent: str | None) -> bool:
    """A known bot, crawler, headless browser or HTTP library (or no User-Agent at all)."""
    if not user_agent or not isinstance(user_agent, str) or not user_agent.strip():
        return True
    return _AUTOMATED.search(user_agent[:512]) is not None


# What one IPv6 subscriber is given at the least: a /64 (a mobile carrier gives each handset its
# own /64, neighbouring /64s are other subscribers: a wider key would merge real shoppers). A
# holder of a /56 or /48 is up to 256 or 65,536 identities, as a botnet is many.
IPV6_PREFIX = 64


def network_address(viewer_address: str | None) -> str | None:
    """The viewer's address as one identity: an IPv4 address (also as embedded in an IPv6
    one: mapped, or 6to4), or an IPv6 address's /64 (``CloudFront-Viewer-Address`` is
    ``<ip>:<port>``; None when absent or malformed)."""
    if not viewer_address or not isinstance(viewer_address, str) or len(viewer_address) > 64:
        return None
    text = viewer_address.strip()
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        text = host
    text = text.strip("[]")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6:
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return str(embedded)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


def _window_key(key: str, now_ms: int) -> bytes:
    window = now_ms // ACTOR_WINDOW_MS
    return hmac.new(key.encode(), b"actor\x00" + str(window).encode(), hashlib.sha256).digest()


def _actor(prefix: str, value: str, key: str, now_ms: int) -> str:
    digest = hmac.new(_window_key(key, now_ms), value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return prefix + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:ACTOR_CHARS]


def anonymous_actor(viewer_address: str | None, key: str | None, now_ms: int, consented_id: str | None = None
                    ) -> str | None:
    """The anonymous identity: the consented first-party id if any, else the network address;
    None without either (or without a key): the events then count for nothing shared."""
    if not key:
        return None
    if consented_id:
        return _actor("aid~", consented_id, key, now_ms)
    address = network_address(viewer_address)
    return _actor("ip~", address, key, now_ms) if address else None


# Consent is one click on the shop's page: without a bound one client could mint a shopper
# per click. A carrier's NAT puts hundreds of real shoppers behind one address, so the bound is
# on how fast an address presents consented first-party ids it has not presented before
# (``rt_aid``, or a shop's ``anon-`` ``rt_uid``), not on how many it has: a token bucket of new
# ids per address, refilled at ``CONSENTED_NEW_PER_MIN`` (a NAT's shoppers arrive over the
# day; a script's ids arrive at once).
CONSENTED_NEW_PER_MIN = 6.0
CONSENTED_BURST = 12
# What a container remembers of the ids it admitted, all addresses together (about 150 bytes
# each: ~30 MB); the least recently seen address's ids go first, and an id forgotten is new again.
CONSENTED_IDS_KEPT = 200_000


class ConsentedIds:
    """Which consented first-party ids count as identities of their own, per container as the
    rate limiter's buckets are: an id this address presented before (in the actor window), or
    a new one while the address's bucket of new ids (a ``RateLimiter`` keyed by address) has a
    token. Past it the address is the identity (``rt_aid``), or the events count for nothing
    shared (an ``anon-`` ``rt_uid``: its own row still learns). Without an address, all such ids
    share one bucket."""

    def __init__(self, new_per_min: float = CONSENTED_NEW_PER_MIN, burst: int = CONSENTED_BURST,
                 kept: int = CONSENTED_IDS_KEPT):
        self.new_ids = RateLimiter(new_per_min / 60, burst, max_identities=LIMITER_IDENTITIES)
        self.kept = kept
        self._seen: OrderedDict[tuple[str, int], set[str]] = OrderedDict()  # (address, window) -> ids
        self._size = 0
        self._lock = threading.Lock()

    @property
    def refused(self) -> int:
        return self.new_ids.refused

    def admit(self, viewer_address: str | None, consented_id: str, now_ms: int) -> bool:
        address = network_address(viewer_address) or "unknown"
        key = (address, now_ms // ACTOR_WINDOW_MS)
        with self._lock:
            ids = self._seen.pop(key, None) or set()
            self._seen[key] = ids
            if consented_id in ids:
                return True
            while len(self._seen) > LIMITER_IDENTITIES:  # addresses, as many as the buckets
                self._size -= len(self._seen.popitem(last=False)[1])
        if self.new_ids.take(f"consent~{address}", 1, now_ms / 1000):
            return False
        with self._lock:
            if consented_id not in ids:
                ids.add(consented_id)
                self._size += 1
            while self._size > self.kept and self._seen:
                self._size -= len(self._seen.popitem(last=False)[1])
            return True


class RateLimiter:
    """Token buckets per identity: ``take(identity, n, now_s)`` returns 0 when the n events
    may go, else the seconds to wait before the same request would be allowed."""

    def __init__(self, rate_per_s: float = EVENTS_PER_S, burst: int = BURST_EVENTS,
                 max_identities: int = LIMITER_IDENTITIES):
        self.rate, self.burst, self.max_identities = rate_per_s, burst, max_identities
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # identity -> (tokens, at)
        self._lock = threading.Lock()
        self.refused = 0

    def take(self, identity: str, n: int, now_s: float) -> int:
        if n <= 0:
            return 0
        with self._lock:
            rate = self.rate * (ADDRESS_EVENTS_PER_S / EVENTS_PER_S) if identity.startswith("ip~") else self.rate
            tokens, at = self._buckets.pop(identity, (float(self.burst), now_s))
            tokens = min(float(self.burst), tokens + max(0.0, now_s - at) * rate)
            if n <= tokens:
                self._buckets[identity] = (tokens - n, now_s)
                wait = 0
            else:
                self._buckets[identity] = (tokens, now_s)
                wait = max(1, math.ceil((min(n, self.burst) - tokens) / rate))
                self.refused += 1
            while len(self._buckets) > self.max_identities:
                self._buckets.popitem(last=False)
            return wait
