"""``make console ENV=dev|prod [ADMIN=1]``: the live console of a deployed stack, served on
127.0.0.1: the page here, its figures from the stack's IAM-authorised ``GET /console/summary``
signed with the operator's own credentials (nothing is exposed beyond loopback; every AWS call
is signed on this machine)."""

from __future__ import annotations

import argparse
import secrets

from infra.console import local_server
from infra.console.aws import PERIOD_S, remote_console


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", required=True, choices=["dev", "prod"])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--admin", action="store_true", help="offer start/ramp/kill (token printed here)")
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(24) if args.admin else None
    console = remote_console(args.env, admin=args.admin, admin_token=token)
    server = local_server(console, args.port, read_only=not args.admin)
    print(f"console of {args.env}: http://127.0.0.1:{args.port}/console/ (from {console.url}; "
          f"CloudWatch figures every {PERIOD_S} s)")
    if token:
        print(f"admin token: {token}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
