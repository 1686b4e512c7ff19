"""The guardrail's statistics, by simulation: A/A experiments checked at every schedule
tick must be killed at most alpha of the time; a 20% worse challenger must be killed in at
least 90% of experiments; and a naive repeated z-test must fail the A/A check, so these
simulations can tell a valid guardrail from an invalid one."""

import numpy as np
import pytest

from personalize import experiments
from tests.bench.simulation import (
    BASE_RATE,
    CHALLENGER_PER_TICK,
    MAX_CHALLENGER_IMPRESSIONS,
    guardrail_kills,
    naive_kills,
    simulate,
)


@pytest.fixture(scope="module")
def aa():
    return simulate(BASE_RATE, seed=1)


@pytest.fixture(scope="module")
def worse():
    return simulate(BASE_RATE * 0.8, seed=2)


def test_aa_false_kill_rate_is_at_most_alpha(aa):
    rate = (guardrail_kills(*aa) >= 0).mean()
    assert rate <= experiments.ALPHA


def test_a_20_percent_worse_challenger_is_killed_in_90_percent(worse):
    first = guardrail_kills(*worse)
    assert (first >= 0).mean() >= 0.90
    killed = first[first >= 0]
    median_impressions = float(np.median((killed + 1) * CHALLENGER_PER_TICK))
    assert median_impressions <= MAX_CHALLENGER_IMPRESSIONS


def test_the_naive_repeated_test_fails_the_aa_check(aa):
    assert (naive_kills(*aa) >= 0).mean() > experiments.ALPHA * 2


def test_decide_agrees_with_the_vectorised_test():
    a = experiments.Counters(impressions=50_000, purchases=2_500)
    b = experiments.Counters(impressions=10_000, purchases=350)
    decision = experiments.decide(a, b)
    assert decision.action == "kill" and decision.difference < 0
    assert experiments.decide(a, experiments.Counters(impressions=100, purchases=1)).action == "insufficient_data"
    assert experiments.decide(a, experiments.Counters(impressions=10_000, purchases=800)).action == "winning"
    assert experiments.decide(a, experiments.Counters(impressions=10_000, purchases=500)).action == "continue"


def test_lift_interval_contains_the_estimate():
    mid, low, high = experiments.lift(experiments.Counters(10_000, 0, 0, 500), experiments.Counters(2_000, 0, 0, 80))
    assert low < mid < high
    assert mid == pytest.approx(0.04 / 0.05 - 1)
