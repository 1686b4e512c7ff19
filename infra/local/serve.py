"""``make serve``: run the local stack until stopped (Ctrl-C or SIGTERM).

By default every function runs in its own worker processes, as Lambda runs them (up to
``--workers`` containers per function, frozen between invocations); ``--in-process`` runs
them all in this process instead (what the tests and the demo do).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from . import lifecycle
from .stack import STATE_FILE, LocalStack

DEFAULT_WORKERS = 4


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="HTTP front port on 127.0.0.1 (0: any free)")
    parser.add_argument("--aws-port", type=int, default=0, help="embedded moto port (default: any free)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="at most this many worker processes per function (its concurrency limit)")
    parser.add_argument("--in-process", action="store_true", help="run every function in this process")
    parser.add_argument("--no-freeze", action="store_true",
                        help="leave idle workers running (Lambda freezes them: SIGSTOP between invocations)")
    parser.add_argument("--fault-every", type=int, default=0,
                        help="fail every N-th events post (alternately before and after collect): client retries")
    parser.add_argument("--snapshot-interval", type=float, default=5.0, help="seconds between snapshot runs")
    parser.add_argument("--guardrail-interval", type=float, default=5.0, help="seconds between guardrail runs")
    parser.add_argument("--shop-seed-orders", type=int, default=300,
                        help="real Instacart orders the demo shop sends as its history at start (0: none)")
    parser.add_argument("--state-file", type=Path, default=STATE_FILE, help="where to publish endpoints and keys")
    parser.add_argument("--exit-with-parent", action="store_true",
                        help="stop (as on SIGTERM) when the process that started this one ends (the load test)")
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        lifecycle.die_with_parent(signal.SIGTERM)  # a killed load test does not leave its stack running
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stack = LocalStack(port=args.port, aws_port=args.aws_port, workers=0 if args.in_process else args.workers,
                       freeze=not args.no_freeze, fault_every=args.fault_every, state_file=args.state_file,
                       snapshot_interval_s=args.snapshot_interval,
                       guardrail_interval_s=args.guardrail_interval,
                       shop_seed_orders=args.shop_seed_orders).start()
    mode = "in-process" if args.in_process else f"up to {args.workers} worker processes per function"
    print(f"local stack up: {stack.endpoint} (AWS at {stack.aws_endpoint}; {mode}); state in {args.state_file}",
          flush=True)
    print(f"  curl '{stack.endpoint}/recommendations?k=5'   # an anonymous shopper's list")
    print("  events: click around the demo storefront (a browser posts them with its cookie), or "
          "make smoke (the backend's route, SigV4)")
    print(f"  curl {stack.endpoint}/local/stats   # the emulator's own overhead, per function")
    print(f"  demo storefront: {stack.shop_url}   live console: {stack.console_url} "
          "(admin token: console_admin_token in the state file)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    stack.stop()


if __name__ == "__main__":
    main()
