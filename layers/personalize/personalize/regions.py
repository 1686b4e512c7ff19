"""Which replica of the features table each Lambda@Edge execution region reads, and with
what timeout: a table computed at build time (``replica_table``) and baked into the edge
bundle, so a replica is never "nearest" by a guess made at run time.

Lambda@Edge runs origin-request functions in the AWS region of the CloudFront regional edge
cache that serves the viewer. The figures below are typical round-trip times between AWS
regions in milliseconds (public inter-region measurements, rounded); the table picks, per
execution region, the replica with the smallest round trip and a read timeout of 1.5 x that
round trip + 20 ms, at least 50 ms (one GetItem's own work) and at most 250 ms. A read that
would need more than the budget should get a replica instead: that is what choosing the
replica set is about (docs/deploy.md, "Regions").
"""

from __future__ import annotations

# Regions hosting CloudFront regional edge caches, where origin-request functions execute.
EDGE_EXECUTION_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "sa-east-1", "eu-west-1", "eu-west-2", "eu-central-1",
    "ap-south-1", "ap-northeast-1", "ap-northeast-2", "ap-southeast-1", "ap-southeast-2",
)
MIN_TIMEOUT_MS = 50
MAX_TIMEOUT_MS = 250
UNKNOWN_RTT_MS = 250

_RTT_MS = {
    ("us-east-1", "us-east-2"): 12, ("us-east-1", "us-west-1"): 62, ("us-east-1", "us-west-2"): 67,
    ("us-east-1", "sa-east-1"): 115, ("us-east-1", "eu-west-1"): 68, ("us-east-1", "eu-west-2"): 75,
    ("us-east-1", "eu-central-1"): 90, ("us-east-1", "ap-south-1"): 185, ("us-east-1", "ap-northeast-1"): 145,
    ("us-east-1", "ap-northeast-2"): 175, ("us-east-1", "ap-southeast-1"): 215, ("us-east-1", "ap-southeast-2"): 200,
    ("us-east-2", "us-west-2"): 50, ("us-east-2", "us-west-1"): 52, ("us-west-1", "us-west-2"): 22,
    ("us-west-2", "sa-east-1"): 175, ("us-west-2", "ap-northeast-1"): 100, ("us-west-2", "ap-southeast-2"): 140,
    ("us-west-2", "ap-northeast-2"): 125, ("us-west-2", "ap-southeast-1"): 165, ("us-west-2", "eu-west-1"): 125,
    ("sa-east-1", "eu-west-1"): 180, ("eu-west-1", "eu-west-2"): 12, ("eu-west-1", "eu-central-1"): 25,
    ("eu-west-2", "eu-central-1"): 15, ("eu-west-1", "ap-south-1"): 120, ("eu-central-1", "ap-south-1"): 110,
    ("eu-west-1", "ap-southeast-1"): 165, ("eu-west-1", "ap-northeast-1"): 205,
    ("ap-south-1", "ap-southeast-1"): 60, ("ap-southeast-1", "ap-southeast-2"): 92,
    ("ap-southeast-1", "ap-northeast-1"): 70, ("ap-southeast-1", "ap-northeast-2"): 75,
    ("ap-northeast-1", "ap-northeast-2"): 33, ("ap-northeast-1", "ap-southeast-2"): 105,
}


# Every region the table above has figures for (a replica must be one of them).
KNOWN_REGIONS = frozenset(region for pair in _RTT_MS for region in pair)


def rtt_ms(a: str, b: str) -> int:
    if a == b:
        return 2
    return _RTT_MS.get((a, b)) or _RTT_MS.get((b, a)) or UNKNOWN_RTT_MS


def timeout_ms(rtt: int) -> int:
    return int(min(MAX_TIMEOUT_MS, max(MIN_TIMEOUT_MS, 1.5 * rtt + 20)))


def replica_table(home: str, replicas: list[str]) -> dict[str, dict]:
    """Per execution region: {"replica": region to read, "timeout_s": its read timeout, "rtt_ms"}."""
    available = [home, *[r for r in replicas if r and r != home]]
    table = {}
    for region in EDGE_EXECUTION_REGIONS:
        best = min(available, key=lambda r: (rtt_ms(region, r), r != home))
        rtt = rtt_ms(region, best)
        table[region] = {"replica": best, "timeout_s": timeout_ms(rtt) / 1000, "rtt_ms": rtt}
    return table


def choose(table: dict[str, dict], running_region: str | None, home: str,
           default_timeout_s: float) -> tuple[str, float]:
    """(replica, timeout) for this instance: from the baked table, else the home region."""
    entry = table.get(running_region or "")
    if entry:
        return entry["replica"], float(entry["timeout_s"])
    if running_region == home:
        return home, default_timeout_s
    return home, MAX_TIMEOUT_MS / 1000
