"""Simulated experiments for the guardrail's statistics (tests and bench share them)."""

import numpy as np

from personalize import experiments

SIMULATIONS = 1000
TICKS = 100                  # the guardrail looks after every tick
CHALLENGER_PER_TICK = 200    # a 2% challenger of 10,000 impressions per tick
CHAMPION_PER_TICK = 9_800
BASE_RATE = 0.05             # purchases per impression
MAX_CHALLENGER_IMPRESSIONS = TICKS * CHALLENGER_PER_TICK  # the documented horizon: 20,000


def simulate(challenger_rate: float, seed: int):
    """Cumulative conversions per arm at each tick: arrays [SIMULATIONS, TICKS]."""
    rng = np.random.default_rng(seed)
    conv_a = rng.binomial(CHAMPION_PER_TICK, BASE_RATE, size=(SIMULATIONS, TICKS)).cumsum(axis=1)
    conv_b = rng.binomial(CHALLENGER_PER_TICK, challenger_rate, size=(SIMULATIONS, TICKS)).cumsum(axis=1)
    n_a = CHAMPION_PER_TICK * np.arange(1, TICKS + 1)
    n_b = CHALLENGER_PER_TICK * np.arange(1, TICKS + 1)
    return conv_a, n_a, conv_b, n_b


def guardrail_kills(conv_a, n_a, conv_b, n_b):
    """First tick at which the guardrail kills (or -1), per simulation, as decide() would."""
    lam, d, _ = experiments.msprt(conv_a, n_a, conv_b, n_b)
    enough = np.minimum(n_a, n_b) >= experiments.MIN_IMPRESSIONS
    kill = (lam >= 1 / experiments.ALPHA) & (d < 0) & enough
    first = np.where(kill.any(axis=1), kill.argmax(axis=1), -1)
    return first


def naive_kills(conv_a, n_a, conv_b, n_b):
    p_a, p_b = conv_a / n_a, conv_b / n_b
    pooled = (conv_a + conv_b) / (n_a + n_b)
    z = (p_b - p_a) / np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    kill = z < -1.645  # a one-sided 5% test, repeated at every look
    return np.where(kill.any(axis=1), kill.argmax(axis=1), -1)
