"""Requests with a broken or hostile cookie or body (from test_serving.py and
test_trust_boundary.py), each answered as an anonymous shopper or refused whole, against one
shop built once for the module: the stack under moto and its catalogue through collect,
Kinesis and aggregate (about 3 s each time) are shared by these ten tests because none of
them changes what another reads: each only GETs recommendations or POSTs a body that is
refused before any event is taken (``tests/conftest.py`` ``module_stack``)."""

import pytest

from infra.local.lambda_events import context, http_api_event, response_json
from tests.conftest import use_stack
from tests.functional.test_serving import loaded_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    with loaded_shop(tmp_path_factory) as serving:
        yield serving


@pytest.fixture(autouse=True)
def _the_shops_environment(_no_real_aws, shop, monkeypatch):
    use_stack(shop.stack, monkeypatch)


@pytest.mark.parametrize("cookie", [
    pytest.param(None, id="no-cookie"),
    pytest.param("rt_uid=shopper-1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", id="forged-signature"),
    pytest.param("rt_uid=shopper-1", id="unsigned"),
    pytest.param("rt_uid=", id="empty"),
    pytest.param("other=1; rt_uid=%%%", id="garbage"),
])
def test_a_bad_cookie_is_an_anonymous_shopper(shop, cookie):
    _, body, _ = shop.get(cookie=cookie)
    assert body["user_id"] is None
    assert body["fallback_reason"] == "anonymous"


@pytest.mark.parametrize("signature", [
    pytest.param("é" * 43, id="non-ascii"),
    pytest.param("\udcff" * 43, id="lone-surrogates"),
    pytest.param("A" * 42 + "=", id="padding"),
])
def test_a_hostile_cookie_is_an_anonymous_shopper_on_both_paths(shop, signature):
    cookie = f"rt_uid=bg3.{signature}"
    status, body, _ = shop.get("k=5", cookie=cookie)
    assert (status, body["user_id"]) == (200, None)
    shop.recommend_app.recommender.warm()
    response = shop.recommend_app.lambda_handler(http_api_event(
        "GET", "/recommendations", headers={"cookie": cookie, "x-origin-verify": shop.stack.origin_token},
        query={"k": "5"}), context("recommend"))
    assert response["statusCode"] == 200
    assert response_json(response)["user_id"] is None


@pytest.mark.parametrize("body", [
    pytest.param('{"events": [' + "[" * 20_000 + "]" * 20_000 + "]}", id="nested-20000-deep"),
    pytest.param(b'{"event_id": "\xff"}', id="not-utf8"),
])
def test_hostile_bodies_get_a_4xx(shop, body):
    status, answer = shop.post_public(body, user="alice")
    assert status == 400 and "message" in answer
