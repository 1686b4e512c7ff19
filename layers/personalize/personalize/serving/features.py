"""Features as readers see them, computed from rows at a point in time.

Named ``<measure>_<window>`` (DESIGN 3.2): ``views_10m``, ``clicks_1h``, ... and
``click_rate_10m`` = clicks per view over the last 10 minutes (0 without views). Serving,
the operators' endpoint and training all call these functions, so a feature means the
same thing everywhere.
"""

from __future__ import annotations

import time

from personalize import settings
from personalize.adapters.userstore import DynamoUserStore, UserStore
from personalize.ingest import windows
from personalize.ingest.entities import AFFINITY_HALF_LIFE_MS, ITEM_STATS, O_BASKET_ITEMS, O_COUNT, UserRow
from personalize.ingest.events import MEASURES

WINDOWED_NAMES = tuple(f"{m}_{w}" for m in MEASURES for w in windows.WINDOWS)


def windowed(tiles, now_ms: int) -> dict[str, int]:
    sums = windows.window_sums(tiles, now_ms)
    out = {}
    for i, measure in enumerate(MEASURES):
        for name in windows.WINDOWS:
            out[f"{measure}_{name}"] = sums[name][i]
    return out


def click_rate(clicks: int, views: int) -> float:
    return clicks / views if views else 0.0


def user_features(row: UserRow, now_ms: int) -> dict:
    """The shopper's online features at ``now_ms`` (the operators' JSON view)."""
    out: dict = windowed(row.tiles, now_ms)
    out["click_rate_10m"] = click_rate(out["clicks_10m"], out["views_10m"])
    for i, measure in enumerate(MEASURES):
        out[f"{measure}_total"] = row.totals[i]
    out["last_event_ts"] = row.last_ts or None
    out["category_affinity"] = {
        category: round(windows.decay(weight, ts, now_ms, AFFINITY_HALF_LIFE_MS), 6)
        for category, (weight, ts) in sorted(row.affinity.items())
    }
    out["recent_items"] = [item for item, _, _ in reversed(row.recent)]
    out["items"] = {item: dict(zip(ITEM_STATS, stats)) for item, stats in row.items.items()}
    orders = row.orders[O_COUNT]
    out["orders_total"] = orders
    out["mean_basket_size"] = row.orders[O_BASKET_ITEMS] / orders if orders else 0.0
    return out


# Interaction weights for trending: a purchase says more than a view.
TRENDING_WEIGHTS = (1.0, 2.0, 4.0, 8.0)


def trending_velocity(tiles, now_ms: int) -> float:
    """Weighted events per minute over the last 10 minutes above the last hour's mean rate.

    Positive when the item is accelerating; it rises within seconds of a burst and decays
    as the burst ages into the hour's baseline.
    """
    sums = windows.window_sums(tiles, now_ms)
    short = sum(w * c for w, c in zip(TRENDING_WEIGHTS, sums["10m"]))
    long = sum(w * c for w, c in zip(TRENDING_WEIGHTS, sums["1h"]))
    return max(0.0, short / 10 - long / 60)


class FeatureReader:
    """``GET /features/users/{user_id}``: a shopper's online features now, or None."""

    def __init__(self, users: UserStore, clock=time.time):
        self.users = users
        self.clock = clock

    def read(self, user_id: str) -> dict | None:
        row = self.users.get(user_id)
        return None if row is None else user_features(row, int(self.clock() * 1000))


def build_reader() -> FeatureReader:
    """From the function's validated environment."""
    table = settings.load(settings.FEATURES_TABLE)[settings.FEATURES_TABLE]
    return FeatureReader(DynamoUserStore(table, UserRow.from_obj))
