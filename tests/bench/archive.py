"""The archive's loss under faults, for build/bench.json (``loop.archive_loss_rate``, budget
<= 0.001) and, smaller, for ``tests/functional/test_archive.py``.

On a local stack whose events routes fail every third post (alternately before collect runs
and after it answered), signed-in shoppers ask for recommendations and post, as the kit does,
an impression per list echoing its signed decision, retrying a failed post with the same
event; the archive function fails every third batch (Firehose retries it). The reference is
what collect acknowledged (202, the event not rejected); the measure, what the archive bucket
holds once the stream is drained: ``lost`` counts accepted decisions missing from it. Half
of the lists end in a click, a cart and the backend's purchase: the archive's orders, which
``make bench`` retrains on (``loop.retrain_s``).
Beacons a browser never sent (a closed tab, a full queue) are not in the reference: they are
the kit's to count (docs/storefront.md).
"""

from __future__ import annotations

import gzip
import json
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.local import sigv4
from infra.local.firehose import read_archive
from personalize import identity

ITEMS = [f"sku-{n}" for n in range(30)]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


def seed_catalogue(stack) -> None:
    """Thirty published items with some views, in a snapshot the edge serves."""
    now = int(time.time() * 1000)
    catalogue = [{"event_id": f"cat-{i}", "type": "catalogue", "item_id": i, "listed": True, "ts": now} for i in ITEMS]
    # A browser's views come milliseconds apart: one shopper's events with the same ts are
    # ordered by aggregate by their event id, which the archive hashes (models/serving_view.py).
    views = [{"event_id": f"v-{n}", "type": "view", "user_id": "seed", "item_id": ITEMS[n % 30], "ts": now - 90 + n}
             for n in range(90)]
    post(stack, "/server/events", catalogue + views, signed=True)
    stack.poller.drain(60)
    stack.publish_snapshot()
    stack.edge_recommender().snapshot.refresh_now()


def post(stack, path: str, events: list[dict], cookie: str | None = None, signed: bool = False) -> None:
    """POST as a client that retries a failed post with the same events (their event_ids),
    as the kit does; raises unless collect acknowledged every event."""
    body = json.dumps({"events": events}).encode()
    url = stack.endpoint + path
    for _ in range(10):
        headers = {"Content-Type": "application/json", "User-Agent": BROWSER}
        if cookie:
            headers.update(Cookie=cookie, Origin=stack.endpoint)
        if signed:
            admin = stack.resources.identities.admin
            headers.update(sigv4.sign("POST", url, body, admin.access_key_id, admin.secret_access_key))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"),
                                        timeout=30) as answer:
                result = json.loads(answer.read())
        except urllib.error.HTTPError as failed:
            if failed.code not in (429, 503):
                raise AssertionError(f"{failed.code}: {failed.read()[:300]!r}") from None
            continue
        if result["rejected"]:
            raise AssertionError(f"collect rejected {result['rejected']}")
        return
    raise AssertionError("a post failed ten times")


class Flaky:
    """The archive function, failing every third invocation: Firehose retries the batch."""

    def __init__(self, function):
        self.function, self.calls, self.failures = function, 0, 0

    def __call__(self, event, context=None):
        self.calls += 1
        if self.calls % 3 == 0:
            self.failures += 1
            raise RuntimeError("injected: the archive function failed")
        return self.function(event, context)


def measure(stack, shoppers: int, lists: int = 3, seed: int = 7, archive_to: Path | None = None) -> dict:
    """Run the scenario on ``stack`` (started with fault_every=3, catalogue seeded): each
    shopper is served ``lists`` lists and sees three items of each; after half of the lists
    they click the first item seen, put it in the cart, and the shop's backend reports its
    purchase (the orders a dataset from the archive is made of). ``archive_to``: a folder
    the archive's records are copied to, as ``aws s3 sync`` would (GZIP'd JSON lines)."""
    rng = random.Random(seed)
    flaky = stack.archive.transform = Flaky(stack.archive.transform)
    users = [f"shopper-{n}@mail.example" for n in range(shoppers)]
    # Each shopper bought twice before, three and two hours ago: a row, so serving ranks with
    # its model (a shopper without one gets the trending fallback, which logs no model
    # decision), and a second order that is a training decision in a dataset of the archive.
    hour = 3_600_000
    earlier = int(time.time() * 1000) - 3 * hour
    history = [{"event_id": f"hist-{n}-{k}", "type": "purchase", "user_id": u, "item_id": ITEMS[(n + 7 * k) % 30],
                "ts": earlier + k + (hour if k == 2 else 0)} for n, u in enumerate(users) for k in range(3)]
    for start in range(0, len(history), 500):
        post(stack, "/server/events", history[start:start + 500], signed=True)
    stack.poller.drain(300)
    shown: dict[str, list[str]] = {}  # rec_id -> the items serving returned (the reference)
    purchases = 0
    # Answers the model decided (a row read that outlasts serving's 50 ms timeout, on a loaded
    # machine, gets the trending fallback instead, which logs no model decision)
    model_decided = 0
    for user in users:
        cookie = "rt_uid=" + identity.cookie_value(user, stack.signing_key)
        for _ in range(lists):
            request = urllib.request.Request(stack.endpoint + "/recommendations?k=6", headers={"Cookie": cookie})
            with urllib.request.urlopen(request, timeout=30) as answer:
                served = json.loads(answer.read())
            model_decided += not served["fallback"]
            seen = rng.sample(range(len(served["items"])), min(3, len(served["items"])))
            post(stack, "/events", [{
                "event_id": f"imp-{served['rec_id'][-12:]}", "type": "impression", "ts": int(time.time() * 1000),
                "rec_id": served["rec_id"], "decision": served["decision"],
                "items": [served["items"][p]["item_id"] for p in seen], "positions": [p + 1 for p in seen]}],
                cookie=cookie)
            shown[served["rec_id"]] = [i["item_id"] for i in served["items"]]
            if seen and rng.random() < 0.5:
                bought, now = served["items"][seen[0]]["item_id"], int(time.time() * 1000)
                tag = served["rec_id"][-12:]
                post(stack, "/events", [
                    {"event_id": f"clk-{tag}", "type": "click", "item_id": bought, "rec_id": served["rec_id"],
                     "ts": now},
                    {"event_id": f"add-{tag}", "type": "add_to_cart", "item_id": bought, "rec_id": served["rec_id"],
                     "ts": now + 1}], cookie=cookie)
                post(stack, "/server/events", [
                    {"event_id": f"buy-{tag}", "type": "purchase", "user_id": user, "item_id": bought,
                     "rec_id": served["rec_id"], "ts": now + 2}], signed=True)
                purchases += 1
    stack.poller.drain(300)
    stack.archive.drain(300)
    everything = read_archive(stack.resources.names["ArchiveBucket"])
    if archive_to is not None:
        archive_to.mkdir(parents=True, exist_ok=True)
        (archive_to / "events.gz").write_bytes(gzip.compress(b"".join(json.dumps(e).encode() + b"\n"
                                                                      for e in everything)))
    # The archive keeps a rec_id without its mac (experiment~variant~expiry~nonce).
    shown = {"~".join(rec_id.split("~")[:4]): items for rec_id, items in shown.items()}
    decided = {e["rec_id"]: e["decision"] for e in everything if e["type"] == "impression" and "decision" in e}
    lost = set(shown) - set(decided)
    raw = json.dumps(everything)
    return {
        "decisions_accepted": len(shown), "decisions_lost": len(lost),
        "archive_loss_rate": round(len(lost) / len(shown), 6) if shown else None,
        "decisions_altered": sum(1 for r in shown if r in decided and decided[r]["items"] != shown[r]),
        "shopper_ids_in_clear": sum(1 for u in users if u in raw),
        "rec_id_macs_kept": sum(1 for e in everything if str(e.get("rec_id", "")).count("~") > 3),
        "pseudonyms": len({e["user_id"] for e in everything if e["type"] == "impression"}),
        "posts_failed_before_collect": stack.faults.failed_before,
        "posts_failed_after_collect": stack.faults.failed_after,
        "transformations_failed": flaky.failures, "archive_objects": stack.archive.objects,
        "purchases_sent": purchases,
        # once each: a post that failed after collect answered was sent again (at least once)
        "purchases_archived": len({e["event_id"] for e in everything if e["type"] == "purchase" and e.get("rec_id")}),
        "model_decisions_archived": len({e["event_id"] for e in everything if e["type"] == "impression"
                                         and e.get("decision", {}).get("model") not in (None, "trending")}),
        "model_decisions_served": model_decided,
    }


def run(shoppers: int = 200, archive_to: Path | None = None) -> dict:
    import tempfile

    from infra.local.stack import LocalStack

    started = time.perf_counter()
    stack = LocalStack(fault_every=3, state_file=Path(tempfile.mkdtemp()) / "local-stack.json").start()
    try:
        seed_catalogue(stack)
        figures = measure(stack, shoppers, archive_to=archive_to)
    finally:
        stack.stop()
    return {**figures, "seconds": round(time.perf_counter() - started, 1)}
