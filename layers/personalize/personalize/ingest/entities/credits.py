"""One identity, one shopper's worth (DESIGN 3.1): what an identity has already moved.

Shared scores count shoppers, not events or quantities. The row that decides whether an
event counts (a shopper's row; for an anonymous identity, its actor row) also keeps a
*credit* per thing the identity may move once:

* an item's measure (view, click, add-to-cart, purchase) per window of server time
  (``CREDIT_WINDOW_MS``, by the record's arrival: a client's ``ts`` cannot open new windows):
  the item's tiles, totals, popularity and reorders count the credited event with quantity 1,
  and its co-visits only come with it. So however many events, units or replays one identity
  sends about an item in a window, the item moves as if one shopper had viewed, clicked,
  carted and bought it once.
* an experiment variant's counters, once per analysis (experiment at a ramp step) and not per
  window: the shopper was exposed, clicked, carted, bought (``EXPOSED`` comes with any
  attributed event). The guardrail's unit is the shopper.

A credit remembers the event it was granted to (32 bits of the key of the client's
``event_id``), so a redelivered or retried record, or a client's resend of the same event,
gets the same answer whether or not its deciding row already holds it, and the rows that
have not applied it yet apply exactly what was granted: exactly once holds for credits as
for counts. (Why the event and not the record: an anonymous event has two deciding rows, its
dedupe row and its identity's; if the trigger gives up on a record after only the identity's
row was written, the client's resend of that event must find the credit still its own.) A
record the deciding row already applied is never granted a credit it was not granted then.

Bounded: at most ``MAX_ITEM_CREDITS`` item credits per identity in a window and
``MAX_EXPERIMENT_CREDITS`` experiment credits; past them nothing more is granted (a person
does not touch thousands of items a day: a bot does). Item credits of windows before the
previous one, and an analysis's experiment credits when the shopper has sent no attributed
event of that variant for ``EXPERIMENT_CREDIT_TTL_MS``, are dropped (all its counters together,
so exposure and conversion expire alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from personalize.keys import id_hash

from .tuning import DAY_MS

CREDIT_WINDOW_MS = DAY_MS
MAX_ITEM_CREDITS = 2_000
MAX_EXPERIMENT_CREDITS = 256
EXPERIMENT_CREDIT_TTL_MS = 30 * DAY_MS
EVENT_KEY_MASK = 0xFFFFFFFF

# What a credit grants, as bits of the answer ``grant_*`` gives.
ITEM = 1
EXPOSED = 2
COUNTER = 4
# The variant counter an attributed event may credit (exposure is counter 0).
VARIANT_COUNTER = {"click": 1, "add_to_cart": 2, "purchase": 3}


def window_of(arrival_ms: int) -> int:
    return arrival_ms // CREDIT_WINDOW_MS


# A credit key is a 64-bit hash of what it is for, then the measure (or counter) and window
# mixed in with odd multipliers: one hash per item (or variant) per process, not per event
# (aggregate's hot path; remembered for the busiest ids, forgotten all at once past the bound).
_MASK = (1 << 64) - 1
_MEASURE_MIX = 0x9E3779B97F4A7C15
_WINDOW_MIX = 0xC2B2AE3D27D4EB4F
_BASES: dict[tuple[str, str], int] = {}
_MAX_BASES = 200_000


def _base(kind: str, name: str) -> int:
    key = (kind, name)
    base = _BASES.get(key)
    if base is None:
        if len(_BASES) >= _MAX_BASES:
            _BASES.clear()
        base = _BASES[key] = id_hash(f"{kind}\x1f{name}")
    return base


def item_credit_key(item_id: str, measure: int, window: int) -> int:
    return (_base("i", item_id) + (measure + 1) * _MEASURE_MIX + window * _WINDOW_MIX) & _MASK


def variant_credit_key(experiment: str, variant: str, counter: int) -> int:
    return (_base("x", f"{experiment}\x1f{variant}") + (counter + 1) * _MEASURE_MIX) & _MASK


@dataclass(slots=True)
class Credits:
    """``items``: credit key -> [event key (32 bits), window]; ``experiments``: credit key
    -> [event key (32 bits), day last touched]."""

    items: dict[int, list[int]] = field(default_factory=dict)
    experiments: dict[int, list[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.items or self.experiments)

    @staticmethod
    def _grant(given: dict[int, list[int]], key: int, event_key: int, stamp: int, new: bool, cap: int,
               expired_before: int = 0) -> bool:
        owner = event_key & EVENT_KEY_MASK
        current = given.get(key)
        if current is not None and new and current[1] < expired_before:
            del given[key]  # past its lifetime: as if pruned before this event
            current = None
        if current is not None:
            # Any event the deciding row applies keeps the credit alive (its owner unchanged; for
            # experiments, ``grant_variant`` also keeps the analysis's other counters alive): a
            # shopper seen every day of a long ramp step is never forgotten and counted again.
            if new and current[1] < stamp:
                current[1] = stamp
            return current[0] == owner
        if not new or len(given) >= cap:
            return False
        given[key] = [owner, stamp]
        return True

    def grant_item(self, item_id: str, measure: int, event_key: int, arrival_ms: int, new: bool) -> bool:
        """Whether this event moves the item's ``measure``: the identity's first in the
        window, or the event granted it earlier (redelivered, resent). ``new``: the deciding
        row applies the record now (else it already had, and only a recorded grant counts)."""
        window = window_of(arrival_ms)
        return self._grant(self.items, item_credit_key(item_id, measure, window), event_key, window, new,
                           MAX_ITEM_CREDITS)

    def grant_variant(self, experiment: str, variant: str, counter: int, event_key: int, arrival_ms: int,
                      new: bool) -> bool:
        if new:  # the shopper is active in this analysis: every counter's credit stays alive together
            day, expired = arrival_ms // DAY_MS, (arrival_ms - EXPERIMENT_CREDIT_TTL_MS) // DAY_MS
            for other in range(len(VARIANT_COUNTER) + 1):
                held = self.experiments.get(variant_credit_key(experiment, variant, other))
                if held is not None and expired <= held[1] < day:
                    held[1] = day
        return self._grant(self.experiments, variant_credit_key(experiment, variant, counter), event_key,
                           arrival_ms // DAY_MS, new, MAX_EXPERIMENT_CREDITS,
                           (arrival_ms - EXPERIMENT_CREDIT_TTL_MS) // DAY_MS)

    def prune(self, newest_arrival_ms: int) -> None:
        oldest_window = window_of(newest_arrival_ms) - 1
        if any(v[1] < oldest_window for v in self.items.values()):
            self.items = {k: v for k, v in self.items.items() if v[1] >= oldest_window}
        oldest_day = (newest_arrival_ms - EXPERIMENT_CREDIT_TTL_MS) // DAY_MS
        if any(v[1] < oldest_day for v in self.experiments.values()):
            self.experiments = {k: v for k, v in self.experiments.items() if v[1] >= oldest_day}

    def to_obj(self) -> list:
        return [self.items, self.experiments]

    @classmethod
    def from_obj(cls, obj: list | None) -> Credits:
        if not obj:
            return cls()
        return cls(obj[0], obj[1] if len(obj) > 1 else {})


@dataclass(slots=True)
class ActorRow:
    """An anonymous identity's credits (``actors``): never served, a deciding row."""

    credits: Credits = field(default_factory=Credits)

    def to_obj(self) -> dict:
        return {"c": self.credits.to_obj()}

    @classmethod
    def from_obj(cls, obj: dict | None) -> ActorRow:
        if not obj:
            return cls()
        return cls(Credits.from_obj(obj.get("c")))
