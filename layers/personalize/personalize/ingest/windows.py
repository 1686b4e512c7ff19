"""Time-bucketed windows: one-minute tiles keyed by event time.

A tile is ``[views, clicks, add_to_carts, purchases]`` for one minute (``ts // 60_000``).
Tiles live inside the entity's state, sparse (only minutes with activity), and are pruned
past the longest window, so a row stays small however long the entity lives.

A window of W minutes ending at ``now`` covers the tiles of the current minute and of the
W-1 minutes before it: tile minutes in ``(now_minute - W, now_minute]``. So ``views_10m``
counts between 9 and 10 minutes of event time, ``views_1m`` the current minute so far.
Tiles dated after ``now`` (small clock skew) are not counted until their minute comes.

Plain Python with no AWS, because training replays history through this same code.
"""

from __future__ import annotations

from collections.abc import Mapping

MINUTE_MS = 60_000
WINDOWS = {"1m": 1, "10m": 10, "1h": 60}
LONGEST_WINDOW_MINUTES = max(WINDOWS.values())
N_MEASURES = 4

Tiles = dict[int, list[int]]


def minute_of(ts_ms: int) -> int:
    return ts_ms // MINUTE_MS


def is_late(ts_ms: int, now_ms: int) -> bool:
    """True for an event older than the longest window: it can change no window."""
    return minute_of(ts_ms) <= minute_of(now_ms) - LONGEST_WINDOW_MINUTES


def add(tiles: Tiles, ts_ms: int, measure: int, amount: int = 1) -> None:
    minute = ts_ms // MINUTE_MS
    tile = tiles.get(minute)
    if tile is None:
        tile = tiles[minute] = [0] * N_MEASURES
    tile[measure] += amount


def prune(tiles: Tiles, now_ms: int) -> None:
    """Drop tiles that no window ending at ``now_ms`` or later can count."""
    oldest = minute_of(now_ms) - LONGEST_WINDOW_MINUTES
    for minute in [m for m in tiles if m <= oldest]:
        del tiles[minute]


def window_sums(tiles: Mapping[int, list[int]], now_ms: int) -> dict[str, list[int]]:
    """Per window name, the summed tile over that window."""
    now_minute = now_ms // MINUTE_MS
    sums = {name: [0] * N_MEASURES for name in WINDOWS}
    for minute, tile in tiles.items():
        age = now_minute - minute
        if age < 0:
            continue
        for name, width in WINDOWS.items():
            if age < width:
                acc = sums[name]
                for i in range(N_MEASURES):
                    acc[i] += tile[i]
    return sums


def merge_into(target: Tiles, source: Mapping[int, list[int]]) -> None:
    """Add ``source`` tiles into ``target`` (for merging per-shard rows of one item)."""
    for minute, tile in source.items():
        acc = target.get(minute)
        if acc is None:
            target[minute] = list(tile)
        else:
            for i in range(N_MEASURES):
                acc[i] += tile[i]


def decay(value: float, from_ms: int, to_ms: int, half_life_ms: float) -> float:
    """Exponential decay of ``value`` from one time to a later one (never grows)."""
    if to_ms <= from_ms:
        return value
    return value * 0.5 ** ((to_ms - from_ms) / half_life_ms)
