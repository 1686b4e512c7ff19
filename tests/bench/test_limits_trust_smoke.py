"""The trust half of the ``limits`` bench runs, small, and measures what it says (timing is
never asserted here): a guard against a bench that silently stops measuring."""

import time

from personalize.rollout import flags
from tests.bench import limits_trust


def test_the_kill_is_issued_while_baking_and_reaches_every_container():
    figures = limits_trust.kill_to_zero(busy=10, idle_probes=26)
    assert figures["kill_issued_in_state"] == "BAKING"
    assert 0 < figures["kill_to_zero_s"] <= flags.FLAGS_MAX_AGE_S + 1


def test_one_client_moves_trending_as_one_shopper():
    figures = limits_trust.one_client_trending_gain(int(time.time() * 1000))
    assert figures["one_client_trending_gain_ratio"] == 1.0


def test_one_account_counts_once_through_serving_collect_and_aggregate():
    counted = limits_trust.one_account_delta(flags.CHALLENGER, click=True, requests=120)
    assert (counted.impressions, counted.clicks, counted.purchases) == (1, 1, 0)
    assert limits_trust.one_account_delta(flags.CHAMPION, click=False, requests=50).impressions == 1
