"""Keys of the two tables.

``features`` (a global table: the edge reads its nearest replica) holds one row per
shopper. ``items`` (regional: only the snapshot builder and the guardrail read it) holds
item and variant rows split by source shard, and experiment state. Keeping hot item
writes out of the global table means they are not replicated to every region.
"""

from __future__ import annotations

import hashlib

USER_SK = "row"
EXPERIMENT_SK = "state"

# Synthetic traffic (``make smoke``'s shopper and test item): ids starting with this are
# aggregated into their own rows only, never into a shared figure (trending, popularity,
# co-visitation, experiment counters) and never into a snapshot, so a smoke check of a live
# shop moves nothing a shopper sees. Offline learning leaves them out too.
SYNTHETIC_PREFIX = "__rt_synthetic__"


def is_synthetic(*ids: str | None) -> bool:
    for i in ids:  # a loop, not any(<generator>): called about ten times per event by aggregate
        if i is not None and i.startswith(SYNTHETIC_PREFIX):
            return True
    return False


def user_key(user_id: str) -> tuple[str, str]:
    return f"u#{user_id}", USER_SK


def item_key(item_id: str, shard: str) -> tuple[str, str]:
    return f"i#{item_id}", f"s#{shard}"


def variant_pk(experiment: str, variant: str) -> str:
    """Counters in shoppers (``entities.credits``): ``xs#``; the ``x#`` rows of earlier
    releases counted events and are never mixed in."""
    return f"xs#{experiment}#{variant}"


def variant_key(experiment: str, variant: str, shard: str) -> tuple[str, str]:
    return variant_pk(experiment, variant), f"s#{shard}"


ACTOR_SK = "row"


def actor_key(actor: str) -> tuple[str, str]:
    """An anonymous identity's credits (items table: regional, never served)."""
    return f"a#{actor}", ACTOR_SK


def experiment_key(experiment: str) -> tuple[str, str]:
    return f"e#{experiment}", EXPERIMENT_SK


def item_id_of(pk: str) -> str:
    return pk[2:]


# rec_id = "<experiment id>~<random hex>": attribution needs the experiment, and events
# carry only rec_id and variant back.
REC_ID_SEPARATOR = "~"
NO_EXPERIMENT = "none"


def experiment_of(rec_id: str | None) -> str:
    if rec_id and REC_ID_SEPARATOR in rec_id:
        return rec_id.split(REC_ID_SEPARATOR, 1)[0] or NO_EXPERIMENT
    return NO_EXPERIMENT


# --- exactly-once bookkeeping (items table: regional, never served) ------------------

def source_key(stream_arn: str | None, shard: str) -> str:
    """Where records come from, for watermarks and record identity: the stream (a short
    hash of its ARN: a recreated stream restarts its shards' sequence numbers) and the shard."""
    if not stream_arn:
        return shard
    import hashlib

    return f"{hashlib.blake2b(stream_arn.encode(), digest_size=4).hexdigest()}:{shard}"


def anonymous_dedupe_key(source: str, minute: int, bucket: int) -> tuple[str, str]:
    """Event ids without a shopper, by event minute and id bucket, one writer (the source
    shard): a resend carries the same ``ts`` and partition key, so it lands on this row."""
    return f"d#{minute}#{bucket}", f"s#{source}"


def progress_key(source: str) -> tuple[str, str]:
    """What the trigger last attempted on a source, and the ranges it gave up on."""
    return f"p#{source}", "progress"


def id_hash(text: str, _blake2b=hashlib.blake2b, _from_bytes=int.from_bytes) -> int:
    """A 64-bit key of an id (the contract's ids are valid UTF-8; ``surrogatepass`` keeps
    anything else hashable instead of raising)."""
    return _from_bytes(_blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
