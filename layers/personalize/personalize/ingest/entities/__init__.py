"""Entity state kept in the feature store, and how one event changes it: one module per entity.

Three kinds of entity, each one DynamoDB item (see ``personalize.keys``):

* ``users``: a shopper's row: everything ranking needs about the shopper (tiles, category
  affinity, the items they touched, their recent items), msgpack, read by serving with one
  GetItem;
* ``items``: an item's per-shard row: its tiles overall and per country, totals, decayed
  popularity, stock and co-visitation neighbours, as seen on one Kinesis shard;
* ``variants``: an experiment variant's per-shard row: the shoppers exposed to it, and those
  who clicked, carted and bought, attributed through ``rec_id``/``variant``, and revenue;
* ``credits``: what one identity has moved in shared scores (one shopper's worth), kept by
  the row that decides whether its events count: the shopper's row, or an anonymous
  identity's ``ActorRow``.

``bookkeeping`` holds what makes writes exactly-once in effect (watermarks, progress, the
24 h ids of client events); ``tuning`` the half-lives, caps and horizons, in one place.

Items and variants are split by source shard so that each row has exactly one writer (the
shard's batch) and a hot item's write rate is bounded by the number of shards, not by its
traffic; readers merge the rows of one item (``merge_item_rows``).

Plain Python, no AWS: training replays history through the same functions. The rows are this
stage's public interface: serving, rollout and learning read them through this package.
"""

from __future__ import annotations

from .bookkeeping import (  # noqa: F401 - the package's interface
    COMPLETE,
    DUPLICATE,
    NEW,
    REDELIVERED,
    Aux,
    DedupeRow,
    Progress,
    id_hash,
    shrink_dedupe,
)
from .credits import (  # noqa: F401 - the package's interface
    COUNTER,
    CREDIT_WINDOW_MS,
    EXPERIMENT_CREDIT_TTL_MS,
    EXPOSED,
    ITEM,
    MAX_ITEM_CREDITS,
    VARIANT_COUNTER,
    ActorRow,
    Credits,
)
from .items import (  # noqa: F401 - the package's interface
    ItemRow,
    ItemView,
    add_covisits,
    apply_item_event,
    merge_item_rows,
    prune_item,
    shrink_item,
)
from .tuning import (  # noqa: F401 - the package's interface
    AFFINITY_HALF_LIFE_MS,
    COVISIT_HALF_LIFE_MS,
    COVISIT_WINDOW_MS,
    DAY_MS,
    DEDUPE_BUCKETS,
    DEDUPE_HORIZON_MS,
    DEDUPE_IDS,
    DEDUPE_IDS_PER_SHOPPER,
    HOUR_MS,
    INTERACTION_WEIGHTS,
    ITEM_COUNTRIES,
    MAX_HOLES,
    NEIGHBOURS,
    ORDER_GAP_MS,
    OTHER_COUNTRY,
    POPULARITY_HALF_LIFE_MS,
    PURCHASE_DECAY,
    RECENT_ITEMS,
    RECENT_KEY_MASK,
    SESSION_MS,
    USER_CATEGORIES,
    USER_ITEMS,
    WATERMARK_IDLE_MS,
)
from .users import (  # noqa: F401 - the package's interface
    DECAYED_SCALE,
    I_BUY_SPAN_H,
    I_CART_AGE_S,
    I_CARTS,
    I_CLICKS,
    I_DECAYED,
    I_FIRST_ORDER,
    I_LAST_BUY_S,
    I_LAST_ORDER,
    I_LAST_TS,
    I_ORDERS,
    I_PURCHASES,
    I_VIEWS,
    ITEM_STATS,
    O_BASKET_ITEMS,
    O_COUNT,
    O_FIRST_TS,
    O_LAST_BUY_TS,
    O_LAST_TS,
    O_REORDER_ITEMS,
    UserRow,
    apply_user_event,
    cart_time_s,
    covisit_sources,
    decayed_weight,
    first_purchase_s,
    in_cart,
    is_reorder,
    prune_user,
    shrink_user,
)
from .variants import (  # noqa: F401 - the package's interface
    VARIANT_COUNTERS,
    VariantRow,
    apply_variant_credit,
    moves_variant,
)


def shrink(row: object) -> None:
    """Last resort of the size guard (every row is bounded by construction; this only runs
    if a bound was set wrong): keep the strongest half of whatever a row holds most of."""
    if isinstance(row, DedupeRow):
        shrink_dedupe(row)
    elif isinstance(row, ItemRow):
        shrink_item(row)
    elif isinstance(row, UserRow):
        shrink_user(row)
