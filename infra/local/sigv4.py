"""SigV4 on the local server's IAM-authorized route, as API Gateway checks it when deployed.

``POST /server/events`` is the shop's backend route: deployed, API Gateway's IAM authorizer
refuses a request that is not signed (SigV4, service ``execute-api``) by a principal whose
policies allow ``execute-api:Invoke`` on the route. The local front does the same against
the local IAM: the signature is recomputed with the secret of the access key the request
names (the administrator's in ``build/local-stack.json``, or a function role's), the date
must be within 5 minutes, a session token must match, and the principal's statements must
allow the route's ARN. Each refusal answers 403 with API Gateway's message.

``sign`` is the client side (botocore's SigV4Auth): what the shop's backend, the demo, the
benches and ``make smoke`` use.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
MAX_SKEW = dt.timedelta(minutes=5)
_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$")


@dataclass(frozen=True)
class Principal:
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    arn: str
    statements: tuple[dict, ...]

    def may_invoke(self, resource: str) -> bool:
        allowed = False
        for statement in self.statements:
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            resources = statement.get("Resource", "*")
            resources = [resources] if isinstance(resources, str) else resources
            if not any(fnmatch.fnmatchcase("execute-api:Invoke", a) or a == "*" for a in actions):
                continue
            if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
                continue
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
        return allowed


class Refused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_query(raw_query: str) -> str:
    """As botocore signs a query that is part of the URL: the raw pairs, sorted."""
    if not raw_query:
        return ""
    pairs = [pair.partition("=")[::2] for pair in raw_query.split("&")]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _canonical_headers(headers: dict[str, str], signed: list[str]) -> str:
    lines = []
    for name in signed:
        value = headers.get(name)
        if value is None:
            raise Refused(f"signed header {name!r} is missing")
        lines.append(f"{name}:{' '.join(value.strip().split())}\n")
    return "".join(lines)


def verify(method: str, raw_path: str, raw_query: str, headers: dict[str, str], body: bytes,
           principals: dict[str, Principal], region: str, now: dt.datetime | None = None) -> Principal:
    """The principal who signed the request, or ``Refused``. ``headers`` lower-cased; the
    path and query as they came on the wire (still percent-encoded)."""
    now = now or dt.datetime.now(dt.UTC)
    authorization = headers.get("authorization")
    if not authorization:
        raise Refused("Forbidden")
    match = _AUTH.match(authorization.strip())
    if not match:
        raise Refused("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' (AWS4-HMAC-SHA256)")
    credential, signed_headers, signature = match.groups()
    try:
        key_id, date, scope_region, service, terminator = credential.split("/")
    except ValueError:
        raise Refused("Credential should be scoped to a valid region, service and date") from None
    if terminator != "aws4_request" or service != SERVICE or scope_region != region:
        raise Refused(f"Credential should be scoped to correct service: '{SERVICE}' and region '{region}'")
    principal = principals.get(key_id)
    if principal is None:
        raise Refused("The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise Refused("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header") from None
    if amz_date[:8] != date:
        raise Refused("Credential should be scoped to a valid date")
    if abs(now - signed_at) > MAX_SKEW:
        raise Refused("Signature expired: " + amz_date + " is now earlier than the allowed window")
    signed = signed_headers.split(";")
    if "host" not in signed or signed != sorted(signed):
        raise Refused("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    if principal.session_token and headers.get("x-amz-security-token") != principal.session_token:
        raise Refused("The security token included in the request is invalid.")
    payload_hash = hashlib.sha256(body or b"").hexdigest()
    claimed = headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != payload_hash:
        raise Refused("The request signature we calculated does not match the signature you provided.")
    canonical = "\n".join([method.upper(), quote(raw_path or "/", safe="/~"), _canonical_query(raw_query),
                           _canonical_headers(headers, signed), signed_headers, payload_hash])
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + principal.secret_access_key).encode(), date), region), SERVICE),
                "aws4_request")
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise Refused("The request signature we calculated does not match the signature you provided. Check your "
                      "AWS Secret Access Key and signing method.")
    return principal


def route_arn(region: str, account: str, api: str, stage: str, method: str, path: str) -> str:
    return f"arn:aws:execute-api:{region}:{account}:{api}/{stage}/{method.upper()}{path}"


def sign(method: str, url: str, body: bytes, access_key_id: str, secret_access_key: str,
         session_token: str | None = None, region: str = "us-east-1", headers: dict | None = None) -> dict:
    """Headers of a request signed as API Gateway's IAM authorizer expects (botocore SigV4)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    request.headers["Host"] = urlsplit(url).netloc
    SigV4Auth(Credentials(access_key_id, secret_access_key, session_token), SERVICE, region).add_auth(request)
    return dict(request.headers.items())


def main(argv: list[str] | None = None) -> int:
    """``python -m infra.local.sigv4 '<json body>' [path]``: POST to the running local stack's
    IAM route as its administrator (the keys in build/local-stack.json), as the shop's backend
    signs when deployed; ``python -m infra.local.sigv4 GET <path>``: GET an operators' route
    (``/features/users/u1``, ``/console/summary``) the same way."""
    import json
    import sys
    import urllib.error
    import urllib.request
    from pathlib import Path

    args = argv if argv is not None else sys.argv[1:]
    if not args or (args[0] == "GET" and len(args) < 2):
        print(main.__doc__, file=sys.stderr)
        return 2
    state = json.loads((Path(__file__).resolve().parents[2] / "build" / "local-stack.json").read_text())
    if args[0] == "GET":
        method, body, path = "GET", b"", args[1]
    else:
        method, body, path = "POST", args[0].encode(), (args[1] if len(args) > 1 else "/server/events")
    url = state["endpoint"] + path
    keys = state["aws_credentials"]
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=sign(
        method, url, body, keys["access_key_id"], keys["secret_access_key"], region=state["region"]))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(response.read().decode())
    except urllib.error.HTTPError as refused:
        print(f"{refused.code}: {refused.read().decode()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
