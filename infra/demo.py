"""``make demo``: a scripted session against the embedded local stack, through the real
HTTP front and the real handlers, printing what happened. Exits non-zero if a claim fails."""

from __future__ import annotations

import json
import sys
import time
import urllib.request

from infra.local.stack import LocalStack


class Client:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.endpoint + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


class Story:
    def __init__(self):
        self.failures: list[str] = []

    def claim(self, ok: bool, text: str) -> None:
        print(f"  [{'ok' if ok else 'FAILED'}] {text}", flush=True)
        if not ok:
            self.failures.append(text)


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return None


def main() -> int:
    story = Story()
    print("starting the local stack (embedded moto AWS, poller, HTTP front) ...", flush=True)
    stack = LocalStack().start()
    client = Client(stack.endpoint)
    try:
        print(f"stack up at {stack.endpoint}\n\n1. a shopper clicks and views", flush=True)
        now = int(time.time() * 1000)
        events = [{"event_id": f"demo-{n}", "type": kind, "user_id": "shopper-1", "item_id": f"sku-{n % 3}",
                   "ts": now, "category": "shoes"} for n, kind in enumerate(["view"] * 5 + ["click"] * 2)]
        status, answer = client.request("POST", "/events", {"events": events + [{"event_id": "bad"}]},
                                        {"CloudFront-Viewer-Country": "FR"})
        story.claim(status == 202 and answer["accepted"] == 7 and len(answer["rejected"]) == 1,
                    f"POST /events -> {status} {answer}")
        started = time.monotonic()
        features = wait_for(lambda: (lambda s, f: f if s == 200 and f.get("clicks_10m") == 2 else None)(
            *client.request("GET", "/features/users/shopper-1")))
        story.claim(features is not None, f"features updated within one batch "
                    f"({time.monotonic() - started:.2f}s after the POST)")
        if features:
            story.claim(features["views_10m"] == 5 and abs(features["click_rate_10m"] - 0.4) < 1e-9,
                        f"views_10m={features['views_10m']} clicks_10m={features['clicks_10m']} "
                        f"click_rate_10m={features['click_rate_10m']}")
        print("\n2. the same events resent (a client retry)", flush=True)
        client.request("POST", "/events", {"events": events})
        time.sleep(1.0)
        stack.poller.drain()
        _, again = client.request("GET", "/features/users/shopper-1")
        story.claim(again.get("clicks_10m") == 2 and again.get("views_10m") == 5,
                    "resent event_ids counted once")
    finally:
        stack.stop()
    print()
    if story.failures:
        print(f"demo FAILED: {len(story.failures)} claim(s) did not hold")
        return 1
    print("demo passed: every claim held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
