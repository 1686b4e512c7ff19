"""Which web origins may post the shopper's events (``POST /events``), and the CORS answer
for them: one list, the template's ``AllowedOrigins`` parameter (``ALLOWED_ORIGINS``,
comma-separated), drives both.

A browser sends ``Origin`` with every POST, same-origin or not, and no page can forge it:
a request whose Origin is not listed is refused before its body is read, so another site
(another host, or another port of the same host: the same "site" to SameSite cookies) cannot
post events as the shopper with the shopper's cookie. A request without ``Origin`` is not a
browser's cross-site request (a server, a test client) and goes through. ``Origin: null``
(sandboxed frames, privacy redirects) is refused.
"""

from __future__ import annotations

import os
import re

ENV = "ALLOWED_ORIGINS"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class OriginError(ValueError):
    """A configured origin that is not ``scheme://host[:port]``."""


class OriginPolicy:
    def __init__(self, allowed: list[str] | tuple[str, ...]):
        cleaned = []
        for origin in allowed:
            origin = origin.strip().rstrip("/")
            if not origin:
                continue
            if not _ORIGIN.fullmatch(origin):
                raise OriginError(f"not an origin (scheme://host[:port]): {origin!r}")
            cleaned.append(origin.lower())
        self.allowed = frozenset(cleaned)

    @classmethod
    def from_env(cls) -> OriginPolicy:
        return cls((os.environ.get(ENV) or "").split(","))

    def permits(self, origin: str | None) -> bool:
        return origin is None or (isinstance(origin, str) and origin.lower() in self.allowed)

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """What a listed cross-origin page needs to read the answer (with its cookie)."""
        if origin is None or not self.permits(origin):
            return {}
        return {"access-control-allow-origin": origin, "access-control-allow-credentials": "true", "vary": "Origin"}
