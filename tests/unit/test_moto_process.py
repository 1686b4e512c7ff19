"""The local stack's moto server keeps connections open without letting one request's bytes
be read as the next request (infra/local/moto_process.py ``keep_alive_handler``)."""

import re
import socket
import time

import pytest

from infra.local import moto_process, moto_speed

AUTH = ("Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sqs/aws4_request, "
        "SignedHeaders=host, Signature=x\r\n")
NEXT = f"GET /?Action=ListQueues HTTP/1.1\r\nHost: x\r\n{AUTH}\r\n".encode()  # a second request, pipelined


@pytest.fixture(scope="module")
def port(monkeypatch_module):
    monkeypatch_module.setenv("AWS_LIMITS", "off")
    moto_speed.install()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    server = moto_process.limited_server(free)
    server.start()
    yield free
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as m:
        yield m


def _statuses(port, head: str, body: bytes, method="POST", wait=0.5) -> tuple[list[str], bool]:
    """The status codes answered on one connection, and whether it is still open."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        s.sendall(f"{method} /?Action=ListQueues HTTP/1.1\r\nHost: x\r\n{AUTH}{head}\r\n".encode() + body)
        data, started, open_ = b"", time.monotonic(), True
        try:
            while time.monotonic() - started < wait:
                chunk = s.recv(65536)
                if not chunk:
                    open_ = False
                    break
                data += chunk
        except TimeoutError:
            pass
    return [m.decode() for m in re.findall(rb"HTTP/1\.[01] (\d{3})", data)], open_


def test_two_requests_on_one_connection_get_two_answers_and_it_stays_open(port):
    assert _statuses(port, "Content-Length: 0\r\n", NEXT) == (["200", "200"], True)
    assert _statuses(port, "", NEXT, method="HEAD") == (["200", "200"], True)


@pytest.mark.parametrize("lengths", [f"-{len(NEXT)}", f"+{len(NEXT)}", "0_0", "abc", "0\r\nContent-Length: 3",
                                     "9" * 5000])
def test_a_length_that_could_smuggle_a_request_is_refused_and_the_connection_closed(port, lengths):
    assert _statuses(port, f"Content-Length: {lengths}\r\n", NEXT) == (["400"], False)


def test_expect_100_continue_is_answered_once(port):
    assert _statuses(port, "Expect: 100-continue\r\nContent-Length: 0\r\n", b"") == (["100", "200"], True)


def test_the_100_continue_comes_before_the_body_is_sent(port):
    """botocore sends an S3 body only after the 100 (or a second without it): a 100 left in
    the write buffer until the answer made every PutObject a second long."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5.0)
        s.sendall(f"PUT /?Action=ListQueues HTTP/1.1\r\nHost: x\r\n{AUTH}Expect: 100-continue\r\n"
                  f"Content-Length: 5\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 100"), "no 100 before the body"
        s.sendall(b"hello")
        assert re.search(rb"HTTP/1\.1 \d{3}", s.recv(65536))
