"""The test-read ledger: the test window is read once per candidate, and every read is kept.

Choices (hyper-parameters, early stopping, which learner, int8 or float) are made on the
validation window. ``make evaluate`` then opens the sealed test split through
``TestLedger.read``, which appends a line to ``models/test-reads.jsonl`` (committed with the
models: the record of how often the test set was looked at) and refuses a second read of
the same candidate (its name and content digest) on the same dataset: the report of the
first read is the result, re-printed from ``models/evaluations/``. A deliberate re-read
(e.g. after a bug in the evaluator) needs ``reason=`` and is recorded as such.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from .dataset import Dataset, Groups

LEDGER_FILE = Path(__file__).resolve().parent / "test-reads.jsonl"


class AlreadyReadError(RuntimeError):
    """This candidate's test read is already in the ledger."""


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=LEDGER_FILE.parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class TestLedger:
    __test__ = False  # not a pytest class

    def __init__(self, path: Path = LEDGER_FILE):
        self.path = path

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def reads_of(self, candidate: str, digest: str, dataset_id: str) -> list[dict]:
        return [e for e in self.entries()
                if (e["candidate"], e["digest"], e["dataset"]) == (candidate, digest, dataset_id)]

    def read(self, dataset: Dataset, candidate: str, digest: str, reason: str | None = None,
             command: str = "make evaluate") -> dict[str, Groups]:
        """The test split's decisions (by kind) for ``candidate`` (whose content digest is
        ``digest``), recorded; ``AlreadyReadError`` if it was read before (unless ``reason``)."""
        earlier = self.reads_of(candidate, digest, dataset.id)
        if earlier and not reason:
            raise AlreadyReadError(f"{candidate} ({digest[:12]}) was read on test {dataset.id} at "
                                   f"{earlier[0]['at']}: its report is the result (a re-read needs a reason)")
        entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "candidate": candidate, "digest": digest,
                 "dataset": dataset.id, "command": command, "commit": _commit()}
        if reason:
            entry["reread_reason"] = reason
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
        return {kind: dataset._unsealed("test", kind) for split, kind in dataset.groups if split == "test"}
