"""Tests that need a stack nothing else ran on: the files that share one loaded shop per
module (``tests/conftest.py`` ``module_stack``) cannot hold them, one moto state per process."""

import pytest

from tests.functional.test_serving import Serving


@pytest.fixture
def serving(stack, tmp_path):
    return Serving(stack, tmp_path)


def test_no_snapshot_yet_is_a_200_from_the_bundle(serving):
    """Before the first snapshot the edge cannot build its state: it answers what its bundle
    carries (here no baked list) and retries later; the regional function answers empty."""
    status, body, _ = serving.get()
    assert (status, body["items"], body["fallback_reason"]) == (200, [], "cold_start_unavailable")


def test_a_second_signing_key_rotation_within_a_week_is_refused(stack, capsys):
    """It would drop the key that cookies and rec_ids of the last week were signed with."""
    import datetime as dt

    from infra import rotate

    secret = stack.names["SigningKeySecret"]
    now = dt.datetime.now(dt.UTC)
    assert rotate.refusal("local", "signing-key", secret, "us-east-1", now) is None   # never rotated
    rotate.rotate(secret, "us-east-1")
    assert "rotating again drops the previous key" in rotate.refusal("local", "signing-key", secret, "us-east-1", now)
    later = now + dt.timedelta(days=8)
    assert rotate.refusal("local", "signing-key", secret, "us-east-1", later) is None
