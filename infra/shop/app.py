"""The demo storefront's backend: a plain WSGI application (PEP 3333, the interface every
Python web framework speaks; ``wsgiref`` serves it alone), built on the backend kit exactly as
a shop's own backend would use it: it mints the identity cookie at sign-in, carries an
anonymous visitor's history into the account, and sends orders, stock and its catalogue to
``POST /server/events`` signed with SigV4. The pages use the storefront kit (``/kit/recs.js``).

Routes (under ``/shop``): ``/`` home (rails "for you" and "trending", the product grid),
``/item?id=`` a product page ("bought together"), ``/cart`` the cart and checkout; JSON
``POST /api/signin``, ``/api/signout``, ``/api/consent``, ``/api/checkout``.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from kit import backend
from kit.backend import Keys, ServerEvents

from . import catalogue

STATIC = Path(__file__).resolve().parent / "static"
CONSENT = "shop_consent"
GRID = 48
SAMPLE_SHOPPERS = ("ic1", "ic2", "ic3", "ic7", "ic13")
KEYS_REFRESH_S = 60.0
PAGE = """<!doctype html><html lang="en"><meta charset="utf-8"><title>{title} - demo shop</title>
<meta name="viewport" content="width=device-width"><link rel="stylesheet" href="/shop/static/shop.css">
<header><a href="/shop/">Demo shop</a> <a href="/shop/cart">Cart (<span id="count">0</span>)</a>
<span class="who">{who}</span></header>{banner}<main>{main}</main>
<script type="application/json" id="shop-config">{data}</script>
<script type="module" src="/shop/static/shop.js"></script></html>"""
HOME = """<section><h2 id="for-you">For you</h2><div data-slot="personal" aria-labelledby="for-you"></div></section>
<section><h2 id="trending">Trending near you</h2><div data-slot="trending" aria-labelledby="trending"></div></section>
<section><h2 id="all">All products</h2><ul class="grid" aria-labelledby="all">{grid}</ul></section>"""
CARD = """<li class="card" data-product="{id}"><a href="/shop/item?id={id}">{label}</a>
<button type="button" data-add="{id}">Add to cart</button></li>"""
ITEM = """<article data-item="{id}"><h2>{label}</h2><button type="button" data-add="{id}">Add to cart</button></article>
<section><h2 id="together">Bought together</h2><div data-slot="context" data-context="{id}"
aria-labelledby="together"></div></section>"""


@dataclass
class ShopConfig:
    events: ServerEvents                 # the kit's SigV4 client for /server/events
    keys: Callable[[], Keys]             # the signing key's current/previous values
    cookie_domain: str | None = None     # the shop's registrable domain (None: host-only, local)
    secure: bool = True                  # False only for the plain-http local stack
    # How long a page waits for recommendations before showing the shop's own list. The
    # local stack runs every function, moto and the front in one process: it sets more.
    recs_timeout_ms: int = 800


class CachedKeys:
    """Keys re-read from their source at most every ``refresh_s`` (a rotation reaches the
    shop within a minute; the previous key keeps verifying meanwhile)."""

    def __init__(self, load: Callable[[], Keys], refresh_s: float = KEYS_REFRESH_S):
        self.load, self.refresh_s = load, refresh_s
        self._keys: Keys | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> Keys:
        with self._lock:
            if self._keys is None or time.monotonic() - self._at >= self.refresh_s:
                try:
                    self._keys, self._at = self.load(), time.monotonic()
                except Exception:
                    if self._keys is None:
                        raise
            return self._keys


class Shop:
    def __init__(self, config: ShopConfig):
        self.config = config
        self.products = catalogue.products()
        self.labels = {p.item_id: p.label for p in self.products}

    # -- what the backend says to the pipeline --------------------------------------------
    def publish_catalogue(self) -> backend.SendResult:
        return self.config.events.publish([{"item_id": p.item_id, "department": p.department}
                                           for p in self.products])

    def seed_history(self, n_orders: int, span_ms: int = 50 * 60_000) -> int:
        """Real Instacart orders of the listed products, re-timed into the last ``span_ms``,
        sent as the shop's order history (add-to-carts and purchases by the backend): every
        order of the sample shoppers one signs in as, and the first ``n_orders`` others."""
        from models.instacart import order_events

        listed = set(self.labels)
        orders = [o for o in catalogue.orders() if sum(p in listed for p in o.products) >= 2]
        orders = [o for o in orders if o.user_id in SAMPLE_SHOPPERS] + \
            [o for o in orders if o.user_id not in SAMPLE_SHOPPERS][:n_orders]
        orders.sort(key=lambda o: (o.placed_ms, o.order_id))
        if not orders:
            return 0
        now = int(time.time() * 1000)
        first, last = orders[0].placed_ms, orders[-1].checkout_ms
        events = []
        for order in orders:
            for e in order_events(order):
                if e["item_id"] in listed:
                    e["ts"] = now - span_ms + int((e["ts"] - first) / max(1, last - first) * (span_ms - 60_000))
                    events.append(e)
        return self.config.events.send(events).accepted

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "") or "/"
        query = parse_qs(environ.get("QUERY_STRING", ""))
        cookies = environ.get("HTTP_COOKIE", "")
        try:
            if method == "GET":
                status, headers, body = self.page(path, query, cookies)
            elif method == "POST" and path.startswith("/api/"):
                status, headers, body = self.api(path[5:], environ, cookies)
            else:
                status, headers, body = _json(405, {"message": f"no {method} on {path}"})
        except backend.KitError as exc:
            status, headers, body = _json(400, {"message": str(exc)})
        start_response(status, headers)
        return [body]

    def shopper(self, cookies: str) -> str | None:
        return backend.verify(backend.cookie_from_header(cookies), self.config.keys())

    def page(self, path: str, query: dict, cookies: str):
        if path.startswith("/static/") and "/" not in path[8:]:
            target = STATIC / path[8:]
            if target.suffix in (".js", ".css") and target.is_file():
                kind = "text/javascript" if target.suffix == ".js" else "text/css"
                return "200 OK", [("content-type", f"{kind}; charset=utf-8"),
                                  ("cache-control", "no-cache")], target.read_bytes()
            return _json(404, {"message": "not found"})
        user = self.shopper(cookies)
        consent = backend.cookie_from_header(cookies, CONSENT) == "1"
        signed_in = user if user and not backend.is_anonymous(user) else None
        status, headers, body = self._page(path, query, signed_in, consent)
        keys = self.config.keys()
        if user and backend.needs_refresh(backend.cookie_from_header(cookies), keys):
            # Signed with the previous key (a rotation): the same shopper, with the current key.
            headers = headers + [("set-cookie", backend.set_cookie(user, keys, self.config.cookie_domain,
                                                                    secure=self.config.secure))]
        return status, headers, body

    def _page(self, path: str, query: dict, signed_in: str | None, consent: bool):
        if path in ("/", ""):
            grid = "".join(CARD.format(id=html.escape(p.item_id), label=html.escape(p.label))
                           for p in self.products[:GRID])
            return self._html("Shop", HOME.format(grid=grid), signed_in, consent)
        if path == "/item":
            item = (query.get("id") or [""])[0]
            if item not in self.labels:
                return _json(404, {"message": "no such product"})
            main = ITEM.format(id=html.escape(item), label=html.escape(self.labels[item]))
            return self._html(self.labels[item], main, signed_in, consent, item=item)
        if path == "/cart":
            main = ('<section><h2>Your cart</h2><ul id="cart-lines"></ul>'
                    '<button type="button" id="checkout">Check out</button><p id="order" role="status"></p></section>')
            return self._html("Cart", main, signed_in, consent)
        return _json(404, {"message": "not found"})

    def _html(self, title: str, main: str, user: str | None, consent: bool, item: str | None = None):
        config = {"labels": self.labels, "fallback": [p.item_id for p in self.products[:12]], "user": user,
                  "timeoutMs": self.config.recs_timeout_ms,
                  "consent": consent, "item": item, "shoppers": list(SAMPLE_SHOPPERS)}
        # JSON in a script element: "<" escaped so no value can close the element.
        data = json.dumps(config).replace("<", "\\u003c")
        who = (f'Signed in as <strong id="who">{html.escape(user)}</strong> '
               '<button type="button" id="signout">Sign out</button>') if user else (
            '<label>Sample shopper <select id="shopper">' + "".join(
                f"<option>{html.escape(s)}</option>" for s in SAMPLE_SHOPPERS) +
            '</select></label> <button type="button" id="signin">Sign in</button>')
        banner = "" if consent else (
            '<div id="consent" role="dialog" aria-label="Cookies">Personalised recommendations use a first-party '
            'cookie. <button type="button" id="accept">Accept</button></div>')
        body = PAGE.format(title=html.escape(title), who=who, banner=banner, main=main, data=data)
        return "200 OK", [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")], body.encode()

    def api(self, name: str, environ, cookies: str):
        if not (environ.get("CONTENT_TYPE") or "").startswith("application/json"):
            return _json(415, {"message": "send JSON"})
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin != f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}":
            return _json(403, {"message": "foreign origin"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}") if 0 <= length <= 65536 else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _json(400, {"message": "body must be a JSON object"})
        keys, c = self.config.keys(), self.config
        current = self.shopper(cookies)
        if name == "signin":
            user = body.get("user_id")
            if user not in SAMPLE_SHOPPERS:
                return _json(403, {"message": "unknown shopper"})
            carried = 0
            if backend.is_anonymous(current):  # only minted with consent: carry its history, once
                try:
                    carried = c.events.carry_over(current, user).accepted
                except backend.KitError:  # unreadable now: sign in all the same (the history stays behind)
                    carried = -1
            return _json(200, {"user_id": user, "carried": carried},
                         [backend.set_cookie(user, keys, c.cookie_domain, secure=c.secure)])
        if name == "signout":
            return _json(200, {"user_id": None}, [backend.clear_cookie(c.cookie_domain, secure=c.secure)])
        if name == "consent":
            given = body.get("consent") is True
            cookies_out = [f"{CONSENT}={'1' if given else '0'}; Path=/; Max-Age=31536000; SameSite=Lax"
                           + ("; Secure" if c.secure else "")]
            if given and current is None:
                cookies_out.append(backend.set_cookie(backend.new_anonymous_id(), keys, c.cookie_domain,
                                                      secure=c.secure))
            elif not given and backend.is_anonymous(current):
                cookies_out.append(backend.clear_cookie(c.cookie_domain, secure=c.secure))
            return _json(200, {"consent": given}, cookies_out)
        if name == "checkout":
            if current is None or backend.is_anonymous(current):
                return _json(401, {"message": "sign in to check out"})
            lines = body.get("lines")
            if not isinstance(lines, list) or not 0 < len(lines) <= 100:
                return _json(400, {"message": "lines: 1-100 cart lines"})
            clean = []
            for line in lines:
                if not isinstance(line, dict) or line.get("item_id") not in self.labels:
                    return _json(400, {"message": "each line names a listed product"})
                quantity = line.get("quantity", 1)
                if not isinstance(quantity, int) or not 1 <= quantity <= 99:
                    return _json(400, {"message": "quantity: 1-99"})
                rec_id = line.get("rec_id") if isinstance(line.get("rec_id"), str) else None
                clean.append({"item_id": line["item_id"], "quantity": quantity, "rec_id": rec_id})
            order_id = "o-" + secrets.token_hex(8)
            result = c.events.order(current, order_id, clean)
            return _json(200, {"order_id": order_id, "accepted": result.accepted, "rejected": result.rejected})
        return _json(404, {"message": "no such call"})


def _json(status: int, body: dict, cookies: list[str] | None = None):
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              405: "Method Not Allowed", 415: "Unsupported Media Type"}[status]
    headers = [("content-type", "application/json"), ("cache-control", "no-store")]
    headers += [("set-cookie", value) for value in cookies or []]
    return f"{status} {reason}", headers, json.dumps(body).encode()
