"""How the entities count: half-lives, caps and horizons, in one place (event time)."""

from __future__ import annotations

# Tuning, in one place. Half-lives are in event time.
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
INTERACTION_WEIGHTS = (1.0, 2.0, 4.0, 8.0)  # view, click, add_to_cart, purchase
AFFINITY_HALF_LIFE_MS = DAY_MS
POPULARITY_HALF_LIFE_MS = 7 * DAY_MS
COVISIT_WINDOW_MS = 30 * 60_000
COVISIT_HALF_LIFE_MS = 7 * DAY_MS
RECENT_ITEMS = 20
USER_ITEMS = 64
# A shopper's purchases belong to one order until this long passes without a purchase.
ORDER_GAP_MS = 60 * 60_000
# ``recent`` orders same-millisecond events by 32 bits of their id hash: enough for a stable
# order, and the serving row stays within one 4 KB read unit (dedupe keeps all 64 elsewhere).
RECENT_KEY_MASK = 0xFFFFFFFF
# What the shopper touched this recently is their current session: never evicted from the row.
SESSION_MS = 60 * 60_000
# Per-order decay of an item's purchase weight: sum of PURCHASE_DECAY ** orders_ago over the
# orders that held the item (TIFU-KNN's personal part). Chosen on each shopper's penultimate
# order of the Instacart sample (``make train`` reports the grid and refuses a stale value).
PURCHASE_DECAY = 0.85
USER_CATEGORIES = 16
NEIGHBOURS = 20
# An item row keeps per-country tiles for its ``ITEM_COUNTRIES`` busiest countries; the rest
# are folded into ``OTHER_COUNTRY`` (a user-assigned ISO code, never a real country).
ITEM_COUNTRIES = 24
OTHER_COUNTRY = "ZZ"
# Client retries of an ``event_id`` are recognised for this long after its first arrival
# (DESIGN 4): by the shopper's row (its aux, written with it: no extra write), and for
# events without a shopper by a dedupe row per shard, event minute and id bucket. A shopper
# row holds at most ``DEDUPE_IDS_PER_SHOPPER`` ids (about 25 bytes each): past that (more
# than one event every 22 s around the clock, i.e. a bot), the oldest are forgotten first.
DEDUPE_HORIZON_MS = DAY_MS
DEDUPE_IDS_PER_SHOPPER = 4_000
DEDUPE_IDS = 8_000
DEDUPE_BUCKETS = 16
# Watermarks of sources (stream and shard) not seen for this long are dropped: longer than
# the stream's retention, so no record of theirs can be delivered again.
WATERMARK_IDLE_MS = 8 * DAY_MS
MAX_HOLES = 64
