"""The shopper's identity from the signed cookie (DESIGN 3.2).

``rt_uid=<user_id>.<signature>``, signature = base64url without padding of
HMAC-SHA256(key, user_id) over the UTF-8 bytes of the key's text and of the user id. A
missing, malformed or forged cookie means an anonymous shopper, never another one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

COOKIE = "rt_uid"
MAX_USER_ID = 128


def sign(user_id: str, key: str) -> str:
    digest = hmac.new(key.encode(), user_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def cookie_value(user_id: str, key: str) -> str:
    return f"{user_id}.{sign(user_id, key)}"


def cookie_from_headers(cookie_headers: list[str]) -> str | None:
    """The rt_uid value from one or more Cookie header values (CloudFront keeps them apart)."""
    for header in cookie_headers:
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value.strip().strip('"')
    return None


def verified_user(value: str | None, key: str | None) -> str | None:
    """The user id when the cookie value carries a valid signature, else None."""
    if not value or not key or "." not in value:
        return None
    user_id, _, signature = value.rpartition(".")
    if not 0 < len(user_id) <= MAX_USER_ID or len(signature) != 43:
        return None
    if not hmac.compare_digest(sign(user_id, key), signature):
        return None
    return user_id
