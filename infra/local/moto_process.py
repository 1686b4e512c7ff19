"""The embedded AWS of the local stack: a moto server in its own process (so its work runs
on the other core, not on the functions' GIL), with AWS's throughput limits in front of it
(``aws_limits``), a fix for a moto Kinesis race and a faster Query (``moto_speed``).

    python -m infra.local.moto_process PORT
"""

from __future__ import annotations

import logging
import os
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


def limited_server(port: int):
    """moto's threaded server with AWS's limits in front of it (``aws_limits``), unless
    ``AWS_LIMITS=off``."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    from infra.local import aws_limits

    class Limited(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = DomainDispatcherApplication(create_backend_app)
            if os.environ.get("AWS_LIMITS", "on") != "off":
                app = aws_limits.wsgi(app, aws_limits.AwsLimitsFront())
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
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
