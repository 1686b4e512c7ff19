"""Synthetic streams for the benchmarks: shaped like a flash sale, seeded, never used to
train or evaluate a model (those use the real Instacart sample)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import numpy as np

T0_MS = 1_790_000_000_000


@dataclass
class FlashSale:
    """50,000 shoppers in sessions, Zipf over 10,000 items, one item taking 30% of events.

    Sessions are bursts of ``session_mean`` events a few seconds apart; ``concurrent``
    sessions are interleaved at any moment, which at ``peak_events_per_s`` is what a
    1,000-record batch per shard sees. 20% of events come from a served recommendation
    and carry ``rec_id``/``variant`` (a 98/2 champion/challenger split).
    """

    shoppers: int = 50_000
    items: int = 10_000
    hot_share: float = 0.30
    zipf_a: float = 1.2
    session_mean: int = 20
    concurrent: int = 200
    recommended_share: float = 0.2
    peak_events_per_s: int = 5_000
    seed: int = 7

    def events(self, n: int) -> list[dict]:
        rng = random.Random(self.seed)
        nprng = np.random.default_rng(self.seed)
        ranks = nprng.zipf(self.zipf_a, size=n * 2)
        ranks = ranks[ranks <= self.items - 1]
        items_iter = iter(ranks.tolist())
        kinds = ["view"] * 60 + ["click"] * 25 + ["add_to_cart"] * 10 + ["purchase"] * 5
        countries = ["US", "FR", "DE", "GB", "JP"]
        sessions: list[list] = []
        out = []
        step_ms = 1000 / self.peak_events_per_s
        for k in range(n):
            while len(sessions) < self.concurrent:
                sessions.append([f"shopper-{rng.randrange(self.shoppers)}",
                                 max(1, int(rng.expovariate(1 / self.session_mean))), rng.choice(countries)])
            slot = rng.randrange(len(sessions))
            user, left, country = sessions[slot]
            item = "item-hot" if rng.random() < self.hot_share else f"item-{next(items_iter)}"
            event = {"event_id": f"ev-{self.seed}-{k}", "type": rng.choice(kinds), "user_id": user,
                     "item_id": item, "ts": T0_MS + int(k * step_ms), "country": country}
            if event["type"] == "purchase":
                event["price"] = round(rng.uniform(2, 80), 2)
            if rng.random() < self.recommended_share:
                event["rec_id"] = f"exp-bench~{rng.getrandbits(32):08x}"
                event["variant"] = "challenger" if rng.random() < 0.02 else "champion"
            out.append(event)
            if left <= 1:
                sessions.pop(slot)
            else:
                sessions[slot][1] = left - 1
        return out


def shard_of(partition_key: str, shards: int) -> str:
    """Kinesis maps the MD5 of the partition key onto the shards' hash ranges."""
    digest = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
    return f"shardId-{digest * shards >> 128:012d}"


def kinesis_batches(events: list[dict], shards: int = 4, batch_size: int = 1000,
                    stream_arn: str = "arn:aws:kinesis:us-east-1:123456789012:stream/bench") -> list[dict]:
    """Lambda Kinesis events, per shard in order, ``batch_size`` records each."""
    import base64

    per_shard: dict[str, list[dict]] = {}
    seq = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
    for event in events:
        key = event.get("user_id") or event["item_id"]
        shard = shard_of(key, shards)
        seq += 1
        per_shard.setdefault(shard, []).append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": key, "sequenceNumber": str(seq),
                        "data": base64.b64encode(json.dumps(event).encode()).decode(),
                        "approximateArrivalTimestamp": event["ts"] / 1000},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard}:{seq}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/bench",
            "awsRegion": "us-east-1", "eventSourceARN": stream_arn})
    batches = []
    # Interleave the shards' batches in stream order, as the pollers would deliver them.
    cursors = {shard: 0 for shard in per_shard}
    while cursors:
        for shard in sorted(list(cursors)):
            start = cursors[shard]
            records = per_shard[shard][start:start + batch_size]
            batches.append({"Records": records})
            if start + batch_size >= len(per_shard[shard]):
                del cursors[shard]
            else:
                cursors[shard] = start + batch_size
    return batches


def post_events(stack, events: list[dict], chunk: int = 500, attempts: int = 8) -> None:
    """POST events to a running local stack's front as the shop's backend (SigV4-signed with
    the stack's administrator keys, as the IAM route requires), at most ``chunk`` per request.
    A 429 or 503 (the stream throttled: the local Kinesis enforces a shard's 1,000 records/s)
    is retried as a backend would, after its ``Retry-After`` or a backoff (events are
    deduplicated by event_id, so a resend never counts twice)."""
    import time
    import urllib.error
    import urllib.request

    from infra.local import sigv4

    admin = stack.resources.identities.admin
    url = stack.endpoint + "/server/events"
    for start in range(0, len(events), chunk):
        body = json.dumps({"events": events[start:start + chunk]}).encode()
        for attempt in range(attempts):
            headers = sigv4.sign("POST", url, body, admin.access_key_id, admin.secret_access_key)
            request = urllib.request.Request(url, method="POST", data=body, headers=headers)
            try:
                urllib.request.urlopen(request, timeout=30).read()
                break
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503) or attempt == attempts - 1:
                    raise
                time.sleep(float(exc.headers.get("Retry-After") or 0.2 * 2 ** attempt))
