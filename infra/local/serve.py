"""``make serve``: run the local stack until stopped (Ctrl-C)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .stack import STATE_FILE, LocalStack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="HTTP front port on 127.0.0.1")
    parser.add_argument("--aws-port", type=int, default=0, help="embedded moto port (default: any free)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    stack = LocalStack(port=args.port, aws_port=args.aws_port).start()
    print(f"local stack up: {stack.endpoint} (AWS at {stack.aws_endpoint}); state in {STATE_FILE}")
    print(f"  curl -X POST {stack.endpoint}/events -d '{{\"event_id\":\"e1\",\"type\":\"click\","
          f"\"user_id\":\"u1\",\"item_id\":\"sku-1\",\"ts\":'$(date +%s000)'}}'")
    print(f"  curl {stack.endpoint}/features/users/u1")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    stack.stop()


if __name__ == "__main__":
    main()
