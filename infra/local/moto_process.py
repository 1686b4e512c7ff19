"""The embedded AWS of the local stack: a moto server in its own process (so its work runs
on the other core, not on the functions' GIL), with AWS's throughput limits in front of it
(``aws_limits``), a fix for a moto Kinesis race and a faster Query (``moto_speed``).

    python -m infra.local.moto_process PORT
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import sys
import threading

from infra.local import moto_speed


def serialize_kinesis_shards() -> None:
    """moto's Kinesis shard iterates its records while another request appends to them
    ('OrderedDict mutated during iteration'); one lock around both keeps the server sane."""
    from moto.kinesis import models

    lock = threading.RLock()
    for name in ("get_records", "put_record"):
        original = getattr(models.Shard, name)

        def locked(self, *args, __original=original, **kwargs):
            with lock:
                return __original(self, *args, **kwargs)

        setattr(models.Shard, name, locked)


_DIGITS = re.compile(r"[0-9]{1,18}")  # more than 18 digits: past int64, and int() refuses 4,300


def _call(app, environ, method: str, path: str) -> tuple[str, list, bytes]:
    """A WSGI app's whole answer: status, headers, body (moto's own bug: a 500, as werkzeug
    would answer, and the server lives)."""
    answer: list = []
    chunks: list[bytes] = []

    def start_response(status, headers, exc_info=None):
        answer[:] = [status, headers]
        return chunks.append

    try:
        result = app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return answer[0], answer[1], b"".join(chunks)
    except Exception:  # noqa: BLE001
        logging.getLogger(__name__).exception("moto failed on %s %s", method, path)
        return "500 Internal Server Error", [("Content-Type", "text/plain")], b"moto failed"


def keep_alive_handler():
    """werkzeug's development server closes every connection after one answer, so each call
    from botocore paid a new TCP connection on both sides and a new server thread (about a
    third of the demo's client-side time, profiled 2026-12-07). This handler keeps HTTP/1.1
    connections open: it reads the whole request body before calling moto (nothing is left
    on the socket to be taken for the next request line), and answers with the body's length
    instead of werkzeug's ``Connection: close`` and its drain of the socket."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class KeepAlive(MotoRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 300  # an idle kept-alive connection's thread ends (botocore opens another)
        wbufsize = -1  # headers and body leave in one write at the end of the request...

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # ...and at once

        def _chunked(self) -> bool:
            return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

        def handle_expect_100(self) -> bool:
            # sent now, not left in the write buffer: botocore waits a second for it before
            # sending an S3 body (every PutObject took 1 s when it waited in the buffer)
            if not self._chunked():  # werkzeug's own path (below) sends its own
                self.send_response_only(100)
                self.end_headers()
                self.wfile.flush()
            return True

        def run_wsgi(self) -> None:
            if self._chunked():
                self.close_connection = True  # werkzeug's own path: it reads chunks and closes
                return super().run_wsgi()
            # (http.server's parse_request has answered an HTTP/1.1 "Expect: 100-continue")
            lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
            if len(lengths) > 1 or any(not _DIGITS.fullmatch(v) for v in lengths):
                # a length that lies would leave bytes to be read as the next request: refused
                self.close_connection = True
                self.send_error(400, "Bad Content-Length")
                return
            environ = self.make_environ()
            environ["wsgi.input"] = io.BytesIO(self.rfile.read(int(lengths.pop())) if lengths else b"")
            status, headers, body = _call(self.server.app, environ, self.command, self.path)
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            declared = None
            for name, value in headers:
                lowered = name.lower()
                if lowered == "content-length":
                    declared = value
                elif lowered not in ("connection", "transfer-encoding", "keep-alive"):
                    self.send_header(name, value)
            # HEAD: the length a GET would answer (S3's head_object), and no body
            self.send_header("Content-Length", declared if self.command == "HEAD" and declared else str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

    return KeepAlive


def limited_server(port: int):
    """moto's threaded server with AWS's limits in front of it (``aws_limits``), unless
    ``AWS_LIMITS=off``."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from infra.local import aws_limits

    class Limited(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            if os.environ.get("AWS_LIMITS", "on") != "off":
                app = aws_limits.wsgi(app, aws_limits.AwsLimitsFront())
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=keep_alive_handler())
            self._server_ready_event.set()
            self._server.serve_forever()

    return Limited(ip_address="127.0.0.1", port=port, verbose=False)


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    serialize_kinesis_shards()
    moto_speed.install()
    server = limited_server(int(sys.argv[1]))
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    main()
