"""The local server checks SigV4 on the backend's route as API Gateway's IAM authorizer
does: what botocore signs verifies, anything changed after signing does not, nor an unknown
key, an old date, a missing session token, or a principal not allowed execute-api:Invoke."""

import datetime as dt
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.local import sigv4

ADMIN = sigv4.Principal("AKIDADMIN", "admin-secret", None, "arn:aws:iam::123456789012:user/local-admin",
                        ({"Effect": "Allow", "Action": "*", "Resource": "*"},))
ROLE = sigv4.Principal("ASIAROLE", "role-secret", "session-token", "arn:aws:sts::123456789012:assumed-role/r/edge",
                       ({"Effect": "Allow", "Action": ["dynamodb:GetItem"], "Resource": "*"},))
PRINCIPALS = {p.access_key_id: p for p in (ADMIN, ROLE)}
URL = "http://127.0.0.1:8080/server/events"


def signed(principal=ADMIN, body=b'{"events": []}', url=URL, method="POST"):
    headers = sigv4.sign(method, url, body, principal.access_key_id, principal.secret_access_key,
                         principal.session_token)
    return {k.lower(): v for k, v in headers.items()}


def check(headers, body=b'{"events": []}', url=URL, method="POST", now=None):
    parts = urlsplit(url)
    return sigv4.verify(method, parts.path, parts.query, headers, body, PRINCIPALS, "us-east-1", now)


def test_what_botocore_signs_verifies_and_names_its_principal():
    assert check(signed()) is ADMIN
    assert check(signed(ROLE)) is ROLE


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), path=st.sampled_from(["/server/events", "/a b/c", "/x%2Fy", "/caf\u00e9"]),
       query=st.sampled_from(["", "k=10", "b=2&a=1", "x=a%20b"]))
def test_any_body_path_and_query_signed_by_botocore_verifies(body, path, query):
    from urllib.parse import quote

    url = "http://127.0.0.1:8080" + quote(path, safe="/%") + (f"?{query}" if query else "")
    assert check(signed(body=body, url=url), body=body, url=url) is ADMIN


@pytest.mark.parametrize("change", [
    pytest.param(lambda h, b: (h, b + b" "), id="body-changed"),
    pytest.param(lambda h, b: ({**h, "content-type": "text/plain"}, b), id="signed-header-changed"),
    pytest.param(lambda h, b: ({**h, "x-amz-date": "20200101T000000Z"}, b), id="date-changed"),
    pytest.param(lambda h, b: ({k: v for k, v in h.items() if k != "authorization"}, b), id="unsigned"),
    pytest.param(lambda h, b: ({**h, "authorization": h["authorization"].replace("AKIDADMIN", "AKIDOTHER")}, b),
                 id="unknown-key"),
    pytest.param(lambda h, b: ({**h, "authorization": h["authorization"][:-4] + "0000"}, b), id="signature-changed"),
    pytest.param(lambda h, b: ({**h, "authorization": h["authorization"].replace("execute-api", "s3")}, b),
                 id="other-service"),
])
def test_a_request_changed_after_signing_is_refused(change):
    body = b'{"events": []}'
    headers, body2 = change(signed(body=body), body)
    with pytest.raises(sigv4.Refused):
        check(headers, body2)


def test_an_old_signature_expires_after_five_minutes():
    headers = signed()
    signed_at = dt.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    assert check(headers, now=signed_at + dt.timedelta(minutes=4)) is ADMIN
    with pytest.raises(sigv4.Refused, match="expired"):
        check(headers, now=signed_at + dt.timedelta(minutes=6))


def test_temporary_credentials_need_their_session_token():
    headers = signed(ROLE)
    headers.pop("x-amz-security-token")
    with pytest.raises(sigv4.Refused, match="security token"):
        check(headers)


def test_only_a_principal_allowed_to_invoke_the_route_may():
    arn = sigv4.route_arn("us-east-1", "123456789012", "local", "local", "POST", "/server/events")
    assert ADMIN.may_invoke(arn) and not ROLE.may_invoke(arn)
    scoped = sigv4.Principal("k", "s", None, "a", (
        {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "arn:aws:execute-api:*:*:*/*/POST/server/*"},
        {"Effect": "Deny", "Action": "execute-api:*", "Resource": "arn:aws:execute-api:*:*:*/*/GET/*"}))
    assert scoped.may_invoke(arn)
    assert not scoped.may_invoke(arn.replace("POST/server/events", "GET/features/users/x"))


def test_every_session_shares_one_data_loader_across_resets():
    """botocore's service models are parsed once per process, not once per identity and per
    fresh moto (about 1 s of every functional test's setup before)."""
    from personalize.adapters import aws

    first = aws._session(None).get_component("data_loader")
    role = aws.Credentials("AKIAEXAMPLE", "secret", name="a role")
    assert aws._session(role).get_component("data_loader") is first
    aws.reset()
    try:
        assert aws._session(role).get_component("data_loader") is first
        assert aws._session(role) is not aws._session(None)  # still one session per identity
    finally:
        aws.reset()


@pytest.mark.parametrize("response", [None, {}, {"Error": None}, {"Error": {"Code": 5}}, "text", {"Error": "x"}])
def test_an_error_without_aws_shape_has_no_code_and_never_raises(response):
    """Seen under a reviewer's run: an exception whose ``response`` was None made the sold-out
    refresh's classification raise AttributeError."""
    from personalize.adapters import appconfig, aws

    class Odd(Exception):
        pass

    exc = Odd("no AWS shape")
    exc.response = response
    assert aws.error_code(exc) == "" and aws.error_code(ValueError("plain")) == ""
    assert appconfig._problem(exc) == ""


def test_a_client_error_gives_its_code():
    from botocore.exceptions import ClientError

    from personalize.adapters import aws

    assert aws.error_code(ClientError({"Error": {"Code": "ConflictException", "Message": "m"}}, "Op")) == \
        "ConflictException"
