"""The embedded AWS of the local stack: a moto server in its own process (so its work runs
on the other core, not on the functions' GIL), with a fix for a moto Kinesis race.

    python -m infra.local.moto_process PORT
"""

from __future__ import annotations

import logging
import sys
import threading


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


def main() -> None:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    serialize_kinesis_shards()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()


if __name__ == "__main__":
    main()
