"""An experiment variant's per-shard row: the shoppers exposed to it and those who clicked,
carted and bought, attributed through ``rec_id``/``variant``, and revenue.

The unit is the shopper (``credits``): however many lists, impressions, clicks or replays one
shopper sends, they count once per counter in an analysis (experiment at a ramp step). The
counters keep their names: ``impressions`` counts shoppers exposed, ``clicks`` shoppers who
clicked, and so on; ``revenue`` sums every attributed purchase's price (the shop's backend
reports them: real money, read in reports, not in the guardrail's decision)."""

from __future__ import annotations

from dataclasses import dataclass, field

from personalize.ingest.events import Event

from .credits import COUNTER, EXPOSED, VARIANT_COUNTER

VARIANT_COUNTERS = ("impressions", "clicks", "add_to_carts", "purchases")


@dataclass(slots=True)
class VariantRow:
    """Shoppers counted for one experiment variant on one shard (see the module)."""

    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    revenue: float = 0.0
    last_ts: int = 0

    def to_obj(self) -> dict:
        return {"n": self.counts, "rev": self.revenue, "l": self.last_ts}

    @classmethod
    def from_obj(cls, obj: dict | None) -> VariantRow:
        if not obj:
            return cls()
        return cls(obj["n"], obj["rev"], obj["l"])


def moves_variant(event: Event, credit: int) -> bool:
    """Whether an attributed event changes its variant's row (a credit, or revenue)."""
    return bool(credit & (EXPOSED | COUNTER)) or (event.type == "purchase" and event.price is not None)


def apply_variant_credit(row: VariantRow, event: Event, credit: int) -> None:
    """Count what the shopper's deciding row credited this event with (``credits``)."""
    counts = row.counts
    if credit & EXPOSED:
        counts[0] += 1
    if credit & COUNTER:
        counts[VARIANT_COUNTER[event.type]] += 1
    if event.type == "purchase" and event.price is not None:
        row.revenue += event.price * event.quantity
    if event.ts > row.last_ts:
        row.last_ts = event.ts
