"""The local front's CORS answers follow template.yaml (infra.local.cors)."""

from infra.local import cors

SHOP = "https://www.shop.example"


def test_without_allowed_origins_no_cors_rule_exists():
    assert cors.http_api([]) is None and cors.cloudfront_recommendations([]) is None


def test_only_an_allowed_origin_gets_the_headers_and_its_cookie_may_go():
    rule = cors.cloudfront_recommendations([SHOP])
    answer = {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": "{}"}
    decorated = rule.decorate(SHOP, answer)["headers"]
    assert decorated["access-control-allow-origin"] == SHOP and decorated["access-control-allow-credentials"] == "true"
    assert decorated["vary"] == "Origin" and decorated["content-type"] == "application/json"
    for other in ("https://evil.example", "https://www.shop.example.evil", None, "null"):
        assert rule.decorate(other, answer) == answer


def test_the_apis_preflight_answers_an_allowed_origin_and_method_only():
    rule = cors.http_api([SHOP])
    ok = rule.preflight(SHOP, "POST")
    assert ok["statusCode"] == 204 and "POST" in ok["headers"]["access-control-allow-methods"]
    assert "content-type" in ok["headers"]["access-control-allow-headers"]
    assert rule.preflight("https://evil.example", "POST")["headers"] == {}
    assert rule.preflight(SHOP, "DELETE")["headers"] == {}
