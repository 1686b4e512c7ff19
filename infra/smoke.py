"""``make smoke ENV=local|dev|prod``: is a deployed stack (or the local one) answering as a shop needs?

The same checks against the local stack and a deployed one (``infra.loadtest``'s targets:
only where the routes are and whose credentials differ). They act as a storefront (the
browsers' routes through CloudFront, with a signed ``rt_uid`` cookie) and as the shop's
backend (the IAM route, SigV4-signed with the operator's credentials), with a synthetic
shopper and a test item whose ids carry ``keys.SYNTHETIC_PREFIX``: aggregation counts them
in the shopper's own row only, never in trending, popularity, co-visitation or an
experiment, and no snapshot holds the test item. Each check says what passed or why not;
the exit code is 1 if any failed.

``ENV=local`` uses the running ``make serve`` (``build/local-stack.json``) or starts one for
the run. Deployed, it also reports an alarm subscription still waiting for the on-call to
confirm it (an unconfirmed e-mail subscription receives nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from infra import loadtest
from personalize import identity, keys

SHOPPER = keys.SYNTHETIC_PREFIX + "shopper"
TEST_ITEM = keys.SYNTHETIC_PREFIX + "item"
FRESHNESS_S = 15.0
PUBLISHED_S = 130.0  # a new item reaches collect's membership: the next snapshot (1/min) + its refresh
COLD_BUILD_S = 30.0  # a cold edge's build (degraded.BackgroundBuild) has ended well before this


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class Smoke:
    target: loadtest.Target
    http: loadtest.Http = field(default_factory=loadtest.Http)
    checks: list[Check] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    alarm_topic: str | None = None  # deployed: the AlarmTopicArn output

    def check(self, name: str, run: Callable[[], str]) -> bool:
        started = self.clock()
        try:
            detail, ok = run(), True
        except AssertionError as exc:
            detail, ok = str(exc) or "failed", False
        except Exception as exc:  # noqa: BLE001 - a check that breaks is a failed check, with its reason
            detail, ok = f"{type(exc).__name__}: {exc}", False
        self.checks.append(Check(name, ok, detail, self.clock() - started))
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)
        return ok

    # --- helpers
    def _json(self, status: int, raw: bytes, expected: int) -> dict:
        assert status == expected, f"answered {status}, not {expected}: {raw[:300]!r}"
        return json.loads(raw or b"{}")

    def _get(self, url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
        status, raw = self.http.request("GET", url, headers=headers or {})
        return status, raw, dict(self.http.last_headers)

    def _signed(self, method: str, url: str, body: bytes = b"") -> dict:
        return loadtest.sigv4_headers(self.target, method, url, body)

    def _events(self, *events: dict) -> bytes:
        return json.dumps({"events": list(events)}).encode()

    def _event(self, kind: str, user: str | None = SHOPPER, item: str = TEST_ITEM) -> dict:
        event = {"event_id": f"smoke-{uuid.uuid4().hex}", "type": kind, "item_id": item, "ts": int(time.time() * 1000)}
        if user is not None:
            event["user_id"] = user
        return event

    # --- the checks
    def anonymous_recommendations(self) -> str:
        # A cold edge answers its bundled list while it builds (cold_start_unavailable); one that
        # still does after COLD_BUILD_S cannot build its state, and every shopper gets that list.
        deadline = self.clock() + COLD_BUILD_S
        for _ in range(int(COLD_BUILD_S / 2) + 1):  # bounded even by a clock that does not move
            status, raw, headers = self._get(f"{self.target.public_url}/recommendations?k=5")
            body = self._json(status, raw, 200)
            if body.get("fallback_reason") != "cold_start_unavailable" or self.clock() >= deadline:
                break
            self.sleep(2.0)
        assert body.get("fallback_reason") != "cold_start_unavailable", (
            f"the edge still answers its bundled fallback after {COLD_BUILD_S:.0f} s: its cold start cannot "
            "build (ColdStartBuildFailures; docs/operations.md, cold_start_unavailable)")
        missing = {"rec_id", "user_id", "variant", "model", "items", "fallback", "snapshot_version"} - set(body)
        assert not missing, f"answer lacks {sorted(missing)}"
        assert "no-store" in headers.get("cache-control", ""), f"Cache-Control is {headers.get('cache-control')!r}"
        request_id, cf_id = headers.get("x-request-id"), headers.get("x-amz-cf-id")
        assert request_id, "no x-request-id header (CloudFront's request id, in every log line of the request)"
        assert cf_id in (None, request_id), f"x-request-id {request_id} is not CloudFront's {cf_id}"
        return (f"200, {len(body['items'])} items, variant {body['variant']}, fallback "
                f"{body.get('fallback_reason') or 'none'}, request id {request_id[:16]}...")

    def backend_refuses_unsigned(self) -> str:
        url = f"{self.target.api_url}/server/events"
        status, raw = self.http.request("POST", url, self._events(self._event("view")),
                                        {"Content-Type": "application/json"})
        assert status == 403, f"an unsigned request answered {status}: {raw[:200]!r}"
        return "403 without a signature"

    def backend_signed(self) -> str:
        url = f"{self.target.api_url}/server/events"
        body = self._events(self._event("view"), self._event("view", item=TEST_ITEM + "-2"))
        status, raw = self.http.request("POST", url, body, self._signed("POST", url, body))
        answer = self._json(status, raw, 202)
        assert answer.get("accepted") == 2 and not answer.get("rejected"), f"answered {answer}"
        return "202, 2 events accepted (SigV4, the operator's credentials)"

    def storefront_events(self) -> str:
        cookie = "rt_uid=" + identity.cookie_value(SHOPPER, self.target.signing_key())
        body = self._events({k: v for k, v in self._event("click").items() if k != "user_id"})
        # The backend's events published the test item; the public route accepts it once the next
        # snapshot has published it (a minute when deployed, plus collect's refresh).
        deadline = self.clock() + PUBLISHED_S
        while True:
            status, raw = self.http.request("POST", f"{self.target.public_url}/events", body,
                                            {"Content-Type": "application/json", "Cookie": cookie})
            answer = self._json(status, raw, 202)
            if answer.get("accepted") == 1:
                return "202, the shopper's click accepted (identity from the signed cookie)"
            unpublished = any("catalogue" in r.get("error", "") for r in answer.get("rejected", []))
            assert unpublished and self.clock() < deadline, f"answered {answer}"
            self.sleep(1.0)

    def freshness(self) -> str:
        url = f"{self.target.api_url}/features/users/{SHOPPER}"
        deadline = self.clock() + FRESHNESS_S
        last = None
        while True:
            status, raw = self.http.request("GET", url, headers=self._signed("GET", url))
            if status == 200:
                last = json.loads(raw)
                if last.get("clicks_10m", 0) >= 1 and last.get("views_10m", 0) >= 1:
                    return f"the shopper's row counts its view and click (views_10m {last['views_10m']}, " \
                           f"clicks_10m {last['clicks_10m']})"
            elif status < 500 and status not in (0, 404, 429):
                raise AssertionError(f"GET /features/users answered {status}: {raw[:200]!r}")
            else:  # not there yet, or a passing error of ours: asked again until the deadline
                last = last or f"{status} {raw[:120]!r}"
            assert self.clock() < deadline, f"not counted within {FRESHNESS_S:.0f} s (last: {last or status})"
            self.sleep(0.5)

    def shopper_recommendations(self) -> str:
        cookie = "rt_uid=" + identity.cookie_value(SHOPPER, self.target.signing_key())
        status, raw, _ = self._get(f"{self.target.public_url}/recommendations?k=10", {"Cookie": cookie})
        body = self._json(status, raw, 200)
        assert body["user_id"] == SHOPPER, f"served as {body['user_id']!r}, not the signed-in shopper"
        served = [i["item_id"] for i in body["items"]]
        assert not any(keys.is_synthetic(i) for i in served), f"a synthetic item was recommended: {served}"
        return f"200 for the signed-in shopper, {len(served)} items, no test item among them"

    def alarm_subscriptions(self) -> str:
        sns = self.target.client("sns")
        subscriptions = sns.list_subscriptions_by_topic(TopicArn=self.alarm_topic).get("Subscriptions", [])
        pending = [s["Endpoint"] for s in subscriptions if s["SubscriptionArn"] == "PendingConfirmation"]
        confirmed = [s["Endpoint"] for s in subscriptions if s["SubscriptionArn"] != "PendingConfirmation"]
        assert not pending, (f"{len(pending)} subscription(s) not confirmed: {', '.join(pending)} (confirm the "
                             f"e-mail AWS sent; until then the alarms reach no one)")
        assert confirmed, "no one is subscribed to the alarm topic: deploy with AlarmEmail=... or subscribe a pager"
        return f"{len(confirmed)} confirmed subscription(s)"

    def run(self) -> bool:
        self.check("public route: recommendations, anonymous", self.anonymous_recommendations)
        self.check("backend route: refuses an unsigned request", self.backend_refuses_unsigned)
        self.check("backend route: events signed with SigV4", self.backend_signed)
        self.check("public route: the shopper's events (signed cookie)", self.storefront_events)
        self.check("freshness: the events reach the shopper's row", self.freshness)
        self.check("public route: recommendations for the shopper", self.shopper_recommendations)
        if self.alarm_topic:
            self.check("alarms: the on-call is subscribed and confirmed", self.alarm_subscriptions)
        failed = [c for c in self.checks if not c.ok]
        print(f"\n{len(self.checks) - len(failed)} passed, {len(failed)} failed ({self.target.name}: "
              f"{self.target.public_url})")
        return not failed


def deployed(env: str) -> tuple[loadtest.Target, str | None]:
    target = loadtest.deployed_target(env)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in target.client("cloudformation").describe_stacks(
        StackName=target.stack)["Stacks"][0].get("Outputs", [])}
    return target, outputs.get("AlarmTopicArn")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="local", choices=["local", "dev", "prod"])
    parser.add_argument("--state-file", type=Path, default=loadtest.ROOT / "build" / "local-stack.json")
    args = parser.parse_args(argv)
    if args.env != "local":
        target, topic = deployed(args.env)
        return 0 if Smoke(target, alarm_topic=topic).run() else 1
    if args.state_file.exists() and _answers(json.loads(args.state_file.read_text())["endpoint"]):
        return 0 if Smoke(loadtest.local_target(state_file=args.state_file)).run() else 1
    print("no local stack running: starting one for this check (make serve keeps one running)")
    with loadtest.LocalProcess(workers=0) as stack:
        return 0 if Smoke(stack.target()).run() else 1


def _answers(endpoint: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{endpoint}/local/stats", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
