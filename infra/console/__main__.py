"""``make console ENV=dev|prod [ADMIN=1]``: the live console of a deployed stack, served on
127.0.0.1 and read with the operator's own credentials (nothing is exposed beyond loopback;
every AWS call is signed on this machine)."""

from __future__ import annotations

import argparse
import secrets
from wsgiref.simple_server import WSGIRequestHandler, make_server

from infra.console import Console, wsgi
from infra.console.aws import PERIOD_S, AwsSources


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", required=True, choices=["dev", "prod"])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--admin", action="store_true", help="offer start/ramp/kill (token printed here)")
    args = parser.parse_args(argv)
    token = secrets.token_urlsafe(24) if args.admin else None
    console = Console(AwsSources(args.env, admin=args.admin), admin_token=token, min_interval_s=10.0)
    app = wsgi(console, read_only=not args.admin)
    server = make_server("127.0.0.1", args.port, lambda e, s: app({**e, "PATH_INFO": e["PATH_INFO"][8:]}, s)
                         if e["PATH_INFO"].startswith("/console") else app(e, s), handler_class=_Quiet)
    print(f"console of {args.env}: http://127.0.0.1:{args.port}/console/ (CloudWatch figures every {PERIOD_S} s)")
    if token:
        print(f"admin token: {token}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
