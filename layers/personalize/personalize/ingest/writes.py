"""Durable writes of a batch's changed rows, and the quarantine.

A row that cannot be written for a reason that may pass (throttling, a timeout, a conflicting
writer, a service error) becomes a batch item failure for its records (Lambda retries from
them; rows that did get written skip them then). A row DynamoDB refuses as invalid sends its
records to the quarantine, as does anything the batch could not decode or apply; if the
quarantine itself fails, its records become batch item failures (retried, never dropped).
"""

from __future__ import annotations

import base64

from personalize.adapters.quarantine import Quarantine, QuarantineError
from personalize.adapters.rowstore import Change, RowRejectedError, RowStore
from personalize.ingest.aggregation import expires_at


def quarantine_entry(sequence_number: str, reason: str, raw: bytes, shard: str, arrival_ms: int,
                     stream_arn: str | None = None) -> dict:
    return {"id": sequence_number, "reason": reason, "raw": base64.b64encode(raw).decode(), "shard": shard,
            "stream_arn": stream_arn, "sequence_number": sequence_number, "arrival_ms": arrival_ms}


class RowWriter:
    """Writes changed rows and quarantines records, updating an ``IngestResult``."""

    def __init__(self, store: RowStore, quarantine: Quarantine):
        self.store = store
        self.quarantine = quarantine

    def write(self, changes: list[Change], live, shard, stream_arn, now_ms, result) -> set[int]:
        """Write rows; retryable failures become batch item failures, rejected rows send
        their records to the quarantine. Returns the records of the rows not written."""
        if not changes:
            return set()
        failures = self.store.put_many([(c.table, c, expires_at(c, now_ms)) for c in changes])
        result.writes += len(changes) - len(failures)
        by_seq = {r.seq: r for r in live}
        rejected_rows: list[dict] = []
        not_written: set[int] = set()
        for change, exc in failures:
            not_written.update(change.seqs)
            if isinstance(exc, RowRejectedError):  # will never succeed: quarantine its records
                result.rows_rejected += 1
                reason = f"row {change.key[0]}|{change.key[1]} rejected: {exc}"[:500]
                rejected_rows.extend(quarantine_entry(str(s), reason, by_seq[s].raw, shard, by_seq[s].arrival_ms,
                                                      stream_arn) for s in change.seqs if s in by_seq)
            else:
                result.write_failures += 1
                result.failed_seqs.update(change.seqs)
        if rejected_rows:
            self.send_to_quarantine(rejected_rows, result)
        return not_written

    def send_to_quarantine(self, entries: list[dict], result) -> None:
        if not entries:
            return
        try:
            self.quarantine.send(entries)
            result.quarantined += len(entries)
        except QuarantineError as exc:
            failed = {str(i) for i in exc.failed_ids}
            result.failed_seqs.update(int(i) for i in failed)
            result.quarantined += len(entries) - len(failed)
        except Exception:  # noqa: BLE001 - the queue is unreachable: retry them all
            result.failed_seqs.update(int(e["id"]) for e in entries if str(e["id"]).isdigit())

