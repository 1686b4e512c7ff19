"""The local front's web pages: WSGI applications (the demo shop, the console) and static
files, answered as the front's routes answer (statusCode, headers, body, cookies)."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlencode, urlsplit


def call(app, method: str, path: str, query: dict, headers: dict, body: bytes | None, endpoint: str) -> dict:
    """Run a WSGI application for one request of the front."""
    url = urlsplit(endpoint)
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path or "/", "QUERY_STRING": urlencode(query), "SCRIPT_NAME": "",
        "SERVER_NAME": url.hostname or "127.0.0.1", "SERVER_PORT": str(url.port or 80), "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": headers.get("content-type", ""), "CONTENT_LENGTH": str(len(body or b"")),
        "wsgi.input": io.BytesIO(body or b""), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": url.scheme or "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    for key, value in headers.items():
        if key not in ("content-type", "content-length"):
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = response_headers

    chunks = b"".join(app(environ, start_response))
    headers_out, cookies = {}, []
    for key, value in answer["headers"]:
        if key.lower() == "set-cookie":
            cookies.append(value)
        else:
            headers_out[key.lower()] = value
    return {"statusCode": answer["status"], "headers": headers_out, "body": chunks, "cookies": cookies}


def static(path: Path, kind: str) -> dict:
    return {"statusCode": 200, "body": path.read_bytes(),
            "headers": {"content-type": f"{kind}; charset=utf-8", "cache-control": "no-cache",
                        "x-content-type-options": "nosniff"}}


def console_app(console):
    from infra.console import wsgi

    if not hasattr(console, "_wsgi"):
        console._wsgi = wsgi(console)
    return console._wsgi
