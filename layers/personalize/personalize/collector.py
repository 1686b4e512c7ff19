"""Python's cyclic garbage collector paused around work that allocates much and frees little
by cycles: a cold start's imports and build (hundreds of thousands of objects that live as long
as the instance: about 200 collections, 35-50 ms, scanned them over and over), an ingest batch
(containers freed by reference counting: the scans were about half of a batch's time).

Pauses are counted, under a lock: the collector resumes when the last running one ends, and only
if it was running when the first began. So overlapping pauses on threads (the local stack runs
every function in one process) and a pause someone else started (``gc.disable()`` outside this
module: theirs to end) both leave it as they found it. Import this module before what the pause
should cover: it imports nothing heavy."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0
_resume = False


def in_lambda() -> bool:
    """Whether this process is a Lambda execution environment. AWS_LAMBDA_FUNCTION_NAME is one of
    the runtime's reserved variables (not checked on a deployed Lambda@Edge: without it the edge
    resumes without freezing, and pays one longer collection later)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def pause() -> None:
    """Stop the collector until the matching ``resume``."""
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1


def resume() -> None:
    global _pauses
    with _lock:
        _pauses -= 1
        if _pauses == 0 and _resume:
            gc.enable()


@contextlib.contextmanager
def paused(freeze: bool = False) -> Iterator[None]:
    """The collector paused for the block. ``freeze``: when the block succeeds, what exists now
    is moved out of the collector's later scans for good (``gc.freeze``): for what lives as long
    as a Lambda instance. Only in Lambda: a local stack or a test that loads a handler again and
    again would pin every copy's objects for the life of the process; and never after a failure,
    whose objects are garbage."""
    pause()
    try:
        yield
        if freeze:
            gc.freeze()
    finally:
        resume()
