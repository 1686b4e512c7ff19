"""Durable writes of a batch's changed rows, and the quarantine.

A row that cannot be written for a reason that may pass (throttling, a timeout, a conflicting
writer, a service error, the invocation's deadline) becomes a batch item failure for its
records (Lambda retries from them; rows that did get written skip them then). A row DynamoDB
refuses as invalid:

* a deciding row (a shopper's, an identity's, a dedupe row): its records were applied
  nowhere, so they go to the quarantine, and the batch is aggregated again without them (the
  pipeline), so its neighbours still count;
* any other row (an item's, a variant's): its records already count in their deciding rows,
  so they are not quarantined as if unapplied; the quarantine gets one entry for the row
  (``kind: row``: which row, why, which records it could not hold), for an operator.

Anything the batch could not decode or apply goes to the quarantine; if the quarantine itself
fails, its records become batch item failures (retried, never dropped).
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

    def write(self, changes: list[Change], live, shard, stream_arn, now_ms, result,
              deciding: bool = True) -> tuple[set[int], set[int]]:
        """Write rows; retryable failures become batch item failures. A rejected row's records
        go to the quarantine when the rows are ``deciding`` (applied nowhere), else the row is
        reported (``kind: row``). Returns the records of the rows not written for a reason
        that may pass, and those of the rows rejected."""
        if not changes:
            return set(), set()
        failures = self.store.put_many([(c.table, c, expires_at(c, now_ms)) for c in changes])
        result.writes += len(changes) - len(failures)
        by_seq = {r.seq: r for r in live}
        entries: list[dict] = []
        retry: set[int] = set()
        rejected: set[int] = set()
        for change, exc in failures:
            if isinstance(exc, RowRejectedError):  # will never succeed
                result.rows_rejected += 1
                rejected.update(change.seqs)
                reason = f"row {change.key[0]}|{change.key[1]} rejected: {exc}"[:500]
                if deciding:
                    entries.extend(quarantine_entry(str(s), reason, by_seq[s].raw, shard, by_seq[s].arrival_ms,
                                                    stream_arn) for s in change.seqs if s in by_seq)
                else:
                    entries.append(row_entry(change, reason, shard, stream_arn))
            else:
                result.write_failures += 1
                result.failed_seqs.update(change.seqs)
                retry.update(change.seqs)
        if entries:
            self.send_to_quarantine(entries, result)
        return retry, rejected

    def send_to_quarantine(self, entries: list[dict], result) -> None:
        if not entries:
            return
        try:
            self.quarantine.send(entries)
            result.quarantined += sum(1 for e in entries if e.get("kind") != "row")
        except QuarantineError as exc:
            failed = {str(i) for i in exc.failed_ids}
            result.failed_seqs.update(_record_seqs(e for e in entries if str(e["id"]) in failed))
            result.quarantined += sum(1 for e in entries if e.get("kind") != "row" and str(e["id"]) not in failed)
        except Exception:  # noqa: BLE001 - the queue is unreachable: retry them all
            result.failed_seqs.update(_record_seqs(entries))


def row_entry(change: Change, reason: str, shard: str, stream_arn: str | None) -> dict:
    """A row DynamoDB refused whose records count elsewhere: one quarantine entry for the row."""
    return {"id": f"row:{change.key[0]}|{change.key[1]}"[:80], "kind": "row", "reason": reason, "shard": shard,
            "stream_arn": stream_arn, "row": list(change.key), "records": [str(s) for s in change.seqs]}


def _record_seqs(entries) -> set[int]:
    """The records to retry for entries that did not reach the quarantine (a row's entry: the
    records it could not hold)."""
    out: set[int] = set()
    for e in entries:
        if e.get("kind") == "row":
            out.update(int(s) for s in e.get("records", []) if str(s).isdigit())
        elif str(e["id"]).isdigit():
            out.add(int(e["id"]))
    return out

