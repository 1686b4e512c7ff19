"""The items serving must not answer right now, between two snapshots: the snapshot's own
availability (as of its build) plus what the availability log (``adapters.soldout``) says
changed since.

Each refresh asks the log only for what was written since the last one (less
``soldout.OVERLAP_MS``, for writes that landed or replicated late; rows already seen are
skipped), and folds it into the state: the newest entry per item and topic wins (sold out /
in stock; delisted / listed). When the served snapshot changes, what was written more than
``SNAPSHOT_MARGIN_MS`` before it was built is forgotten: the snapshot has it; a snapshot
built earlier than the one before (a rollback, or a cold start's read made for the build time
the pointer announced) has the log read again from its own start. A refresh that changes
nothing returns the very same set (callers key what they derive on that).
"""

from __future__ import annotations

from collections.abc import Callable

from personalize.adapters import soldout as log_mod
from personalize.adapters.soldout import SoldOut

# Written this long before a snapshot's build started, a transition is in its item rows
# (the log is written just before them, by the same batch).
SNAPSHOT_MARGIN_MS = 60_000
# At most this much log is read (a snapshot older than that is stale: its alarm fires at 5
# minutes; transitions older than this are then not applied on top of it).
MAX_LOOKBACK_MS = 15 * 60_000


class Availability:
    def __init__(self, log: SoldOut, now_ms: Callable[[], int]):
        self.log = log
        self.now_ms = now_ms
        self.base_ms: int | None = None  # the served snapshot's build time
        self.read_to_ms: int | None = None
        self.read_from_ms: int | None = None  # the rows held cover [read_from_ms, read_to_ms]
        self.rows: dict[str, list[list]] = {}  # sort key (write ms first) -> entries
        self.state: dict[tuple[str, str], tuple[int, str]] = {}
        self.value: frozenset[str] = frozenset()
        self.rows_read = 0

    def load(self, snapshot_built_ms: int | None) -> frozenset[str]:
        """Read what changed; the unavailable items (the same object when nothing did)."""
        if snapshot_built_ms is None:  # nothing served yet: nothing to hide
            return self.value
        now = self.now_ms()
        start = max(snapshot_built_ms - SNAPSHOT_MARGIN_MS, now - MAX_LOOKBACK_MS)
        rebased = snapshot_built_ms != self.base_ms or (self.rows and int(min(self.rows)[:13]) < start)
        if self.read_to_ms is None or self.read_from_ms is None or start < self.read_from_ms:
            since = start  # nothing read yet, or not from this far back
        else:
            since = max(start, self.read_to_ms - log_mod.OVERLAP_MS)
        read = self.log.read_since(since, now)  # a failed read changes nothing: the next one redoes all this
        if rebased:
            self.base_ms = snapshot_built_ms
            self.rows = {sk: e for sk, e in self.rows.items() if int(sk[:13]) >= start}
        fresh = [(sk, entries) for sk, entries in read if sk not in self.rows]
        self.read_to_ms = now
        self.read_from_ms = start if since == start else max(self.read_from_ms, start)  # rows before start: dropped
        self.rows_read += len(fresh)
        if rebased:
            self.state = {}
            for sk in sorted(self.rows):
                log_mod.fold(self.rows[sk], self.state)
        for sk, entries in fresh:
            self.rows[sk] = entries
            log_mod.fold(entries, self.state)
        if rebased or fresh:
            unavailable = frozenset(log_mod.unavailable(self.state))
            if unavailable != self.value:
                self.value = unavailable
        return self.value
