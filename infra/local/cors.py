"""CORS as the deployed stack answers it, for the local front: both rules are read from
template.yaml and driven by one list, the stack's AllowedOrigins.

* The HTTP API's ``CorsConfiguration`` (its routes: ``/events``, ``/server/events``,
  ``/features/...``): API Gateway answers every preflight itself (204, with the CORS headers
  only for an allowed origin) and adds ``Access-Control-Allow-Origin`` to an allowed
  origin's answers.
* CloudFront's ``RecommendationsCorsPolicy`` on ``/recommendations``: the edge's answer gets
  the CORS headers for an allowed origin (``OriginOverride``); the behaviour allows GET and
  HEAD only, so a preflight is CloudFront's 403 (the kit's GET needs none).

Without allowed origins the template sets neither (its ``HasAllowedOrigins`` condition), and
nothing here adds a header.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.local import template


@dataclass(frozen=True)
class Cors:
    origins: frozenset[str]
    credentials: bool
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    expose: tuple[str, ...]
    max_age_s: int

    def allows(self, origin: str | None) -> bool:
        return origin is not None and origin.lower() in self.origins

    def decorate(self, origin: str | None, answer: dict) -> dict:
        """``answer`` with the CORS headers an allowed ``origin`` gets (as is otherwise)."""
        if not self.allows(origin):
            return answer
        added = {"access-control-allow-origin": origin, "vary": "Origin"}
        if self.credentials:
            added["access-control-allow-credentials"] = "true"
        if self.expose:
            added["access-control-expose-headers"] = ",".join(self.expose)
        return {**answer, "headers": {**(answer.get("headers") or {}), **added}}

    def preflight(self, origin: str | None, method: str | None) -> dict:
        """API Gateway's answer to an OPTIONS preflight: 204, with headers only when both the
        origin and the requested method are allowed."""
        answer = {"statusCode": 204, "headers": {}, "body": ""}
        if not self.allows(origin) or (method or "").upper() not in self.methods:
            return answer
        answer = self.decorate(origin, answer)
        answer["headers"].update({"access-control-allow-methods": ",".join(self.methods),
                                  "access-control-allow-headers": ",".join(self.headers),
                                  "access-control-max-age": str(self.max_age_s)})
        return answer


def _origins(allowed: list[str]) -> frozenset[str]:
    return frozenset(o.lower().rstrip("/") for o in allowed if o)


def http_api(allowed: list[str]) -> Cors | None:
    """The HTTP API's CorsConfiguration with AllowOrigins = ``allowed`` (None without)."""
    rule = template.resources()["HttpApi"]["Properties"]["CorsConfiguration"]["Fn::If"]
    assert rule[0] == "HasAllowedOrigins" and rule[1]["AllowOrigins"] == {"Ref": "AllowedOrigins"}
    if not allowed:
        return None
    config = rule[1]
    return Cors(_origins(allowed), bool(config.get("AllowCredentials")), tuple(config["AllowMethods"]),
                tuple(config.get("AllowHeaders", ())), tuple(config.get("ExposeHeaders", ())),
                int(config.get("MaxAge", 0)))


def cloudfront_recommendations(allowed: list[str]) -> Cors | None:
    """CloudFront's RecommendationsCorsPolicy with its origins = ``allowed`` (None without)."""
    policy = template.resources()["RecommendationsCorsPolicy"]
    assert policy["Condition"] == "HasAllowedOrigins"
    config = policy["Properties"]["ResponseHeadersPolicyConfig"]["CorsConfig"]
    assert config["AccessControlAllowOrigins"] == {"Items": {"Ref": "AllowedOrigins"}}
    if not allowed:
        return None
    return Cors(_origins(allowed), bool(config["AccessControlAllowCredentials"]),
                tuple(config["AccessControlAllowMethods"]["Items"]),
                tuple(config["AccessControlAllowHeaders"]["Items"]),
                tuple(config.get("AccessControlExposeHeaders", {}).get("Items", ())),
                int(config.get("AccessControlMaxAgeSec", 0)))
