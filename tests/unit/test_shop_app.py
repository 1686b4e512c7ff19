"""The demo shop's backend (infra/shop/app.py) as WSGI, with the kit's client faked."""

from __future__ import annotations

import io
import json

import pytest

from infra.shop.app import Shop, ShopConfig
from kit import backend
from kit.backend import Keys, SendResult

KEYS = Keys("shop-key")


class FakeEvents:
    def __init__(self):
        self.orders, self.carried = [], []

    def order(self, user, order_id, lines):
        self.orders.append((user, lines))
        return SendResult(accepted=len(lines))

    def carry_over(self, anonymous, user):
        self.carried.append((anonymous, user))
        return SendResult(accepted=3)


@pytest.fixture(scope="module")
def shop():
    return Shop(ShopConfig(events=FakeEvents(), keys=lambda: KEYS, cookie_domain="shop.example"))


def call(shop, method, path, body=None, cookie="", kind="application/json", origin=None, query=""):
    data = json.dumps(body).encode() if body is not None else b""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "HTTP_COOKIE": cookie,
               "CONTENT_TYPE": kind, "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data),
               "wsgi.url_scheme": "https", "HTTP_HOST": "www.shop.example"}
    if origin:
        environ["HTTP_ORIGIN"] = origin
    out = {}
    payload = b"".join(shop(environ, lambda status, headers: out.update(status=int(status[:3]), headers=headers)))
    return out["status"], [v for k, v in out["headers"] if k == "set-cookie"], payload


def test_sign_in_sets_the_documented_cookie_and_carries_a_consented_history(shop):
    anonymous = backend.new_anonymous_id()
    status, cookies, _ = call(shop, "POST", "/api/signin", {"user_id": "ic1"},
                              cookie=f"rt_uid={backend.cookie_value(anonymous, KEYS)}")
    assert status == 200 and shop.config.events.carried == [(anonymous, "ic1")]
    assert cookies[0].startswith("rt_uid=ic1.") and "Domain=shop.example" in cookies[0]
    assert {"Secure", "HttpOnly", "SameSite=Lax"} <= set(cookies[0].split("; "))
    assert call(shop, "POST", "/api/signin", {"user_id": "someone-else"})[0] == 403


def test_consent_mints_an_anonymous_id_and_withdrawing_it_clears_it(shop):
    status, cookies, _ = call(shop, "POST", "/api/consent", {"consent": True})
    anonymous = backend.verify(backend.cookie_from_header(cookies[1].split(";")[0]), KEYS)
    assert status == 200 and backend.is_anonymous(anonymous)
    _, cookies, _ = call(shop, "POST", "/api/consent", {"consent": False},
                         cookie=f"rt_uid={backend.cookie_value(anonymous, KEYS)}")
    assert any("Max-Age=0" in c for c in cookies)


def test_checkout_needs_an_account_and_sends_the_rec_ids(shop):
    lines = [{"item_id": shop.products[0].item_id, "quantity": 2, "rec_id": "exp~champion~1~n~m"}]
    assert call(shop, "POST", "/api/checkout", {"lines": lines})[0] == 401
    anonymous = f"rt_uid={backend.cookie_value(backend.new_anonymous_id(), KEYS)}"
    assert call(shop, "POST", "/api/checkout", {"lines": lines}, cookie=anonymous)[0] == 401
    signed = f"rt_uid={backend.cookie_value('ic2', KEYS)}"
    assert call(shop, "POST", "/api/checkout", {"lines": [{"item_id": "not-listed"}]}, cookie=signed)[0] == 400
    assert call(shop, "POST", "/api/checkout", {"lines": [{**lines[0], "quantity": 0}]}, cookie=signed)[0] == 400
    status, _, body = call(shop, "POST", "/api/checkout", {"lines": lines}, cookie=signed)
    assert status == 200 and json.loads(body)["accepted"] == 1
    assert shop.config.events.orders[-1] == ("ic2", lines)


def test_its_api_takes_only_same_origin_json(shop):
    assert call(shop, "POST", "/api/consent", {"consent": True}, kind="text/plain")[0] == 415
    assert call(shop, "POST", "/api/consent", {"consent": True}, origin="https://evil.example")[0] == 403
    assert call(shop, "POST", "/api/consent", {"consent": True}, origin="https://www.shop.example")[0] == 200


def test_pages_escape_what_they_show_and_refuse_unknown_products(shop):
    assert call(shop, "GET", "/item", query="id=%3Cscript%3E")[0] == 404
    status, _, page = call(shop, "GET", "/")
    assert status == 200 and b"<script type=\"application/json\" id=\"shop-config\">" in page
    config = page.split(b'id="shop-config">')[1].split(b"</script>")[0]
    assert b"<" not in config and json.loads(config)["labels"][shop.products[0].item_id].startswith("Product ")


def test_a_cookie_signed_with_the_previous_key_is_minted_again_with_the_current(shop):
    old = backend.cookie_value("ic3", Keys("old-key"))
    rotated = Shop(ShopConfig(events=FakeEvents(), keys=lambda: Keys("shop-key", "old-key")))
    status, cookies, _ = call(rotated, "GET", "/", cookie=f"rt_uid={old}")
    assert status == 200 and backend.verify(cookies[0].split(";")[0][len("rt_uid="):], Keys("shop-key")) == "ic3"
