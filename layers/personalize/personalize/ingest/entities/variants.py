"""An experiment variant's per-shard row: impressions, clicks, add-to-carts, purchases and
revenue attributed through ``rec_id``/``variant``."""

from __future__ import annotations

from dataclasses import dataclass, field

from personalize.ingest.events import Event

VARIANT_COUNTERS = ("impressions", "clicks", "add_to_carts", "purchases")


@dataclass(slots=True)
class VariantRow:
    """Counters attributed to one experiment variant on one shard."""

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


def apply_variant_event(row: VariantRow, event: Event) -> None:
    if event.type == "impression":
        row.counts[0] += 1
    elif event.type == "click":
        row.counts[1] += 1
    elif event.type == "add_to_cart":
        row.counts[2] += 1
    elif event.type == "purchase":
        row.counts[3] += 1
        if event.price is not None:
            row.revenue += event.price * event.quantity
    if event.ts > row.last_ts:
        row.last_ts = event.ts
