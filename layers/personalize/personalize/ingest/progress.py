"""Per source (stream and shard), what the trigger last attempted: recorded before any row
of a batch is written, so that a range it gave up on is known as a hole
(``entities.Progress``) and ``make replay-failures`` can apply exactly that."""

from __future__ import annotations

from personalize import keys
from personalize.adapters.rowstore import ITEMS, Change, RowStore
from personalize.adapters.stream import StreamReader
from personalize.ingest import entities


class SourceProgress:
    def __init__(self, store: RowStore, stream: StreamReader | None = None):
        self.store = store
        self.stream = stream  # to tell a skipped range from the next record
        self.previous_unfinished = False  # the source's last attempt never completed (this may retry it)

    def begin(self, source: str, shard: str, stream_arn: str | None, first: int, last: int, now_ms: int):
        """Read the source's progress; record this attempt (written before any row). Returns
        the claim to ``finish`` (None for a redelivery of older records) and the holes."""
        key = keys.progress_key(source)
        stored = self.store.get_many(ITEMS, [key]).get(key)
        progress = entities.Progress.from_obj(stored.row if stored else None)
        version = stored.version if stored else 0
        before = (progress.attempt, progress.end, progress.done, [list(h) for h in progress.holes])
        self.previous_unfinished = progress.attempt is not None and progress.done != entities.COMPLETE
        successor = None
        if self.stream is not None and stream_arn:
            def successor(seq: int) -> int | None:
                return self.stream.successor(stream_arn, shard, seq)
        if not progress.begin(first, last, now_ms, successor):
            return None, progress.ranges()
        if (progress.attempt, progress.end, progress.done, progress.holes) != before:
            self.store.put(ITEMS, progress_change(key, progress, version), expires_at_progress(now_ms))
            version += 1
        return (progress, key, version), progress.ranges()

    def finish(self, claim, failed_seqs: set[int], now_ms: int) -> None:
        """The attempt ended: complete, or up to its lowest failed record."""
        progress, key, version = claim
        before = progress.done
        progress.finish(min(failed_seqs) if failed_seqs else None)
        if progress.done == before:
            return
        try:
            self.store.put(ITEMS, progress_change(key, progress, version), expires_at_progress(now_ms))
        except Exception:  # noqa: BLE001, S110 - only costs a spurious hole, which replays ignore
            pass


def progress_change(key, progress, version: int) -> Change:
    return Change(ITEMS, key, "progress", progress.to_obj(), [], version, [], 0)


def expires_at_progress(now_ms: int) -> int:
    return (now_ms + entities.WATERMARK_IDLE_MS) // 1000
