"""Signed cookies and rec_ids, and the key ring that lets keys rotate without signing anyone
out: a controllable clock stands in for time and a plain function for Secrets Manager."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from personalize import identity


class Secret:
    """What Secrets Manager holds: AWSCURRENT and AWSPREVIOUS, or an outage."""

    def __init__(self, current: str):
        self.current, self.previous, self.down, self.reads = current, None, False, 0

    def rotate(self, new: str) -> None:
        self.current, self.previous = new, self.current

    def load(self):
        self.reads += 1
        if self.down:
            raise ConnectionError("secrets manager unreachable")
        return self.current, self.previous


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def ring():
    secret, clock = Secret("key-1"), Clock()
    keyring = identity.KeyRing(secret.load, refresh_s=60, retry_s=10, clock=clock, background=False)
    keyring.refresh_now()
    return keyring, secret, clock


def test_a_shopper_signed_before_a_rotation_is_still_recognised_after_it(ring):
    keyring, secret, clock = ring
    before = identity.cookie_value("alice", "key-1")
    secret.rotate("key-2")
    clock.now += 61  # the next read: after the refresh interval
    assert keyring.verified_user(before) == "alice"                       # previous key
    assert keyring.verified_user(identity.cookie_value("bob", "key-2")) == "bob"   # current key
    assert keyring.verified_user(identity.cookie_value("eve", "key-0")) is None    # never a key
    assert keyring.verified_user("alice." + "A" * 43) is None


def test_a_cookie_remembered_as_verified_is_refused_once_its_key_has_rotated_out(ring):
    keyring, secret, clock = ring
    alice = identity.cookie_value("alice", "key-1")
    assert keyring.verified_user(alice) == "alice"
    assert keyring.verified_user(alice) == "alice"  # remembered: not signed again
    secret.rotate("key-2")
    secret.rotate("key-3")  # key-1 is neither current nor previous any more
    clock.now += 61
    assert keyring.verified_user(alice) is None
    assert keyring.verified_user(alice[:-1] + ("A" if alice[-1] != "A" else "B")) is None  # forged


def test_the_verified_cookies_kept_are_bounded(ring):
    keyring, _, _ = ring
    for i in range(identity.VERIFIED_CACHE + 10):
        assert keyring.verified_user(identity.cookie_value(f"u{i}", "key-1")) == f"u{i}"
    assert len(keyring._verified) <= identity.VERIFIED_CACHE
    assert keyring.verified_user(identity.cookie_value("u1", "key-1")) == "u1"


def test_a_cookie_signed_with_a_key_rotated_in_since_the_last_read_verifies_within_seconds(ring):
    keyring, secret, clock = ring
    secret.rotate("key-2")
    fresh = identity.cookie_value("carol", "key-2")
    clock.now += 11
    assert keyring.verified_user(fresh) is None   # unknown key: nudges a re-read
    assert keyring.verified_user(fresh) == "carol"
    reads = secret.reads
    for _ in range(20):                            # forged cookies cannot make it hammer the secret
        keyring.verified_user("mallory." + "B" * 43)
    assert secret.reads == reads


def test_after_an_idle_gap_the_first_request_never_waits_and_starts_the_re_read(ring):
    keyring, secret, clock = ring
    keyring.background = True
    secret.rotate("key-2")
    secret.rotate("key-3")
    clock.now += 10 * 60  # a frozen container wakes up after ten idle minutes
    assert keyring.keys() == ("key-1",)      # served with what it has, at once
    keyring.thread.join(5)                   # the re-read runs during that request
    assert keyring.keys() == ("key-3", "key-2")


def test_an_outage_keeps_the_last_good_keys_and_retries_later(ring):
    keyring, secret, clock = ring
    secret.down = True
    clock.now += 400
    assert keyring.keys() == ("key-1",)
    reads = secret.reads
    keyring.keys()
    assert secret.reads == reads  # not on every request: after retry_s
    clock.now += 11
    secret.down = False
    assert keyring.keys() == ("key-1",) and secret.reads == reads + 1


def test_without_any_key_every_shopper_is_anonymous():
    secret = Secret("k")
    secret.down = True
    keyring = identity.KeyRing(secret.load, clock=Clock(), background=False)
    assert keyring.verified_user(identity.cookie_value("alice", "k")) is None
    assert keyring.current is None
    rec_id = identity.issue_rec_id(keyring.current, "exp", "challenger", "alice", 0)
    assert identity.verify_rec_id(rec_id, "alice", "k", 0) is None  # unsigned: attributes to nothing


@pytest.mark.parametrize("token", [
    pytest.param(None, id="missing"), pytest.param("", id="empty"), pytest.param("wrong", id="wrong"),
    pytest.param("tøken", id="non-ascii"), pytest.param("\udcff", id="surrogate"),
])
def test_the_origin_token_matches_only_its_current_or_previous_value(token):
    keyring = identity.KeyRing.static("token-new", "token-old")
    assert keyring.token_matches(token) is False
    assert keyring.token_matches("token-new") and keyring.token_matches("token-old")


def test_a_rec_id_names_what_was_served_and_nothing_else():
    rec_id = identity.issue_rec_id("k", "exp-1", "challenger", "alice", 1_800_000_000)
    served = identity.verify_rec_id(rec_id, "alice", ("k2", "k"), 1_800_000_100)
    assert (served.experiment, served.variant) == ("exp-1", "challenger")
    experiment, variant, expires, nonce, mac = rec_id.split("~")
    for forged in (f"{experiment}~champion~{expires}~{nonce}~{mac}",          # another variant
                   f"{experiment}~{variant}~{int(expires, 16) + 1:x}~{nonce}~{mac}",  # a later expiry
                   f"exp-2~{variant}~{expires}~{nonce}~{mac}"):                 # another experiment
        assert identity.verify_rec_id(forged, "alice", "k", 1_800_000_100) is None
    assert identity.verify_rec_id(rec_id, "bob", "k", 1_800_000_100) is None
    assert identity.verify_rec_id(rec_id, "alice", "k", 1_800_000_000 + identity.REC_ID_TTL_S + 1) is None
    # A cookie's signature never passes as a rec_id mac (domain-separated messages).
    assert identity.sign("alice", "k")[:22] != mac


def test_a_percent_encoded_cookie_names_the_decoded_shopper_only():
    signed = identity.cookie_value("alice@shop.com", "k")
    encoded = "alice%40shop.com." + signed.rpartition(".")[2]
    assert identity.verified_user(encoded, "k") == "alice@shop.com"
    assert identity.verified_user("bob%40shop.com." + signed.rpartition(".")[2], "k") is None


def _decision(**overrides):
    values = {"model": "ranker-mlp/v3", "snapshot": "s42", "items": ("a", "b", "c"),
              "propensities": (1.0, 1.0, 0.25), "candidates": "0123456789abcdef"}
    return identity.Decision(**{**values, **overrides})


def test_a_decision_verifies_only_with_its_rec_id_and_key_and_unaltered():
    rec = identity.issue_rec_id("k", "exp", "champion", "alice", 1_790_000_000)
    other = identity.issue_rec_id("k", "exp", "champion", "alice", 1_790_000_000)
    token = identity.issue_decision("k", rec, _decision())
    assert identity.verify_decision(token, rec, ["old", "k"]) == _decision()
    assert identity.verify_decision(token, other, "k") is None  # replayed with another list
    assert identity.verify_decision(token, rec, "other-key") is None
    version, payload, mac = token.split(".")
    forged = identity.issue_decision("attacker", rec, _decision(items=("x", "y", "z")))
    assert identity.verify_decision(f"{version}.{forged.split('.')[1]}.{mac}", rec, "k") is None
    assert identity.verify_decision(f"d2.{payload}.{mac}", rec, "k") is None
    assert identity.verify_decision(token + "A" * identity.MAX_DECISION_CHARS, rec, "k") is None
    assert identity.issue_decision(None, rec, _decision()) is None  # no key: nothing anyone would believe


def test_a_signed_decision_outside_its_bounds_is_still_refused():
    rec = identity.issue_rec_id("k", "exp", "champion", None, 1_790_000_000)
    for bad in (_decision(propensities=(1.0, 0.0, 1.0)), _decision(propensities=(1.0,)),
                _decision(items=tuple(str(n) for n in range(101)), propensities=(1.0,) * 101)):
        assert identity.verify_decision(identity.issue_decision("k", rec, bad), rec, "k") is None


@given(st.one_of(st.text(max_size=300), st.binary(max_size=50), st.integers(), st.none(),
                 st.lists(st.text(max_size=5), max_size=3),
                 st.builds(lambda p, m: f"d1.{p}.{m}", st.text(max_size=60), st.text(max_size=30))),
       st.one_of(st.text(max_size=40), st.none()))
def test_any_echoed_decision_is_a_decision_or_none_never_an_error(token, rec_id):
    assert identity.verify_decision(token, rec_id, "k") is None


def test_serving_never_issues_a_decision_collect_would_refuse():
    rec = identity.issue_rec_id("k", "exp", "champion", None, 1_790_000_000)
    longest = _decision(items=tuple("x" * 128 for _ in range(50)), propensities=(1.0,) * 50)
    token = identity.issue_decision("k", rec, longest)  # the longest answer: k 50, ids of 128 characters
    assert token is not None and identity.verify_decision(token, rec, "k") == longest
    too_long = _decision(items=tuple("x" * 128 for _ in range(100)), propensities=(1.0,) * 100)
    assert identity.issue_decision("k", rec, too_long) is None
