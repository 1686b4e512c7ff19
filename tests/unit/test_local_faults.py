"""The local stack's injected failures of events posts (``--fault-every``): every N-th new
post fails once, alternately before and after collect; a retry of the same body goes through,
however the posts of other clients interleave with it."""

import itertools

from infra.local.stack import Faults


def test_every_nth_new_post_fails_alternately_before_and_after():
    faults = Faults(3)
    outcomes = [faults.next(f"post-{n}".encode()) for n in range(12)]
    assert outcomes == [None, None, "before", None, None, "after", None, None, "before", None, None, "after"]
    assert (faults.failed_before, faults.failed_after, faults.posts) == (2, 2, 12)


def test_a_retried_post_is_never_failed_again_whatever_other_clients_send():
    faults = Faults(2)
    others = (f"other-{n}".encode() for n in itertools.count())
    mine = b'{"events": [{"event_id": "e-1"}]}'
    assert faults.next(next(others)) is None
    assert faults.next(mine) == "before"
    for _ in range(10):  # other clients' posts between each of my retries take the faults
        faults.next(next(others))
        assert faults.next(mine) is None


def test_no_faults_when_off():
    faults = Faults(0)
    assert all(faults.next(str(n).encode()) is None for n in range(20))
    assert faults.posts == 0
