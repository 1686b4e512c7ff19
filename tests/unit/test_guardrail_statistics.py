"""The guardrail's statistics, by simulation: A/A experiments checked at every schedule
tick must be killed at most alpha of the time; a 20% worse challenger must be killed in at
least 90% of experiments; and a naive repeated z-test must fail the A/A check, so these
simulations can tell a valid guardrail from an invalid one."""

import numpy as np
import pytest

from personalize.rollout import experiments
from tests.bench.simulation import (
    BASE_RATE,
    CHALLENGER_PER_TICK,
    MAX_CHALLENGER_IMPRESSIONS,
    guardrail_kills,
    naive_kills,
    ramp_kills,
    simulate,
    simulate_ramps,
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


# A gradual rollout (2% -> 10% -> 25%) while both arms' conversion drifts from 6% to 4%.


@pytest.fixture(scope="module")
def aa_ramps():
    return simulate_ramps(1.0, seed=3)


def test_under_ramps_each_step_apart_keeps_false_kills_at_most_alpha(aa_ramps):
    assert (ramp_kills(*aa_ramps) >= 0).mean() <= experiments.ALPHA


def test_pooling_counters_across_ramp_steps_falsely_kills(aa_ramps):
    """The pooled challenger saw mostly the later, lower-converting minutes: a biased test."""
    assert (ramp_kills(*aa_ramps, stratified=False) >= 0).mean() > experiments.ALPHA * 2


def test_under_ramps_a_20_percent_worse_challenger_is_killed_in_90_percent():
    assert (ramp_kills(*simulate_ramps(0.8, seed=4)) >= 0).mean() >= 0.90


def test_decide_steps_agrees_with_the_simulation_on_one_experiment():
    C = experiments.Counters
    same = [(C(9_800, purchases=590), C(200, purchases=12)), (C(7_500, purchases=300), C(2_500, purchases=100))]
    assert experiments.decide_steps(same).action == "continue"
    worse = [(C(98_000, purchases=5_900), C(2_000, purchases=96)), (C(75_000, purchases=3_000),
                                                                     C(25_000, purchases=800))]
    assert experiments.decide_steps(worse).action == "kill"
