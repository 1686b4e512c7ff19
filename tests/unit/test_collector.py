"""personalize.collector: pauses of the cyclic collector that overlap (threads, nesting) or
meet someone else's leave it as they found it; a freeze only for a block that succeeded."""

import gc
import threading

import pytest

from personalize import collector


@pytest.fixture(autouse=True)
def _collecting():
    assert gc.isenabled()
    yield
    gc.enable()


def test_overlapping_pauses_resume_only_when_the_last_ends():
    """The interleaving a save-and-restore pause got wrong (review, 2026-12-06): A pauses, B
    pauses, A ends, B ends: with each restoring what it saw, B saw 'paused' and left it so."""
    collector.pause()  # A
    collector.pause()  # B
    collector.resume()  # A ends
    assert not gc.isenabled()  # B still running
    collector.resume()  # B ends
    assert gc.isenabled()


def test_pauses_on_threads_leave_the_collector_running():
    start, errors = threading.Barrier(8), []

    def work():
        try:
            start.wait()
            for _ in range(200):
                with collector.paused():
                    assert not gc.isenabled()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and gc.isenabled()


def test_someone_elses_pause_is_theirs_to_end():
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_a_freeze_only_after_the_block_succeeds():
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError), collector.paused(freeze=True):
        raise RuntimeError("a failed build: garbage, never frozen")
    assert gc.get_freeze_count() == frozen and gc.isenabled()
    try:
        with collector.paused(freeze=True):
            kept = [object() for _ in range(10)]  # noqa: F841 - lives through the freeze
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
