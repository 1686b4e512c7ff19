"""Simulated experiments for the guardrail's statistics (tests and bench share them).

The unit is the shopper (issue 19): "impressions" here are newly exposed shoppers, and a
conversion is one of them buying (independent Bernoulli trials, as the guardrail counts
them); the figures keep their historical names."""

import numpy as np

from personalize.rollout import experiments

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


# --- a gradual rollout: the challenger's share ramps while conversion drifts over time ----

IMPRESSIONS_PER_TICK = 10_000
RAMP = ((0, 0.02), (30, 0.10), (60, 0.25))   # (first tick, challenger share) of each ramp step
DRIFT = (0.06, 0.04)                         # both arms' conversion falls from 6% to 4% meanwhile


def simulate_ramps(challenger_factor: float, seed: int):
    """Per tick (not cumulative): conversions and impressions per arm, and each tick's ramp
    step. Arrays [SIMULATIONS, TICKS] for conversions, [TICKS] for the rest."""
    rng = np.random.default_rng(seed)
    step = np.zeros(TICKS, dtype=int)
    share = np.zeros(TICKS)
    for s, (first, value) in enumerate(RAMP):
        step[first:], share[first:] = s, value
    n_b = (IMPRESSIONS_PER_TICK * share).astype(int)
    n_a = IMPRESSIONS_PER_TICK - n_b
    rate = np.linspace(*DRIFT, TICKS)
    conv_a = rng.binomial(n_a, rate, size=(SIMULATIONS, TICKS))
    conv_b = rng.binomial(n_b, rate * challenger_factor, size=(SIMULATIONS, TICKS))
    return conv_a, n_a, conv_b, n_b, step


def ramp_kills(conv_a, n_a, conv_b, n_b, step, stratified: bool = True):
    """First tick at which the guardrail kills (or -1): ``stratified`` as experiments.decide_steps
    does (each ramp step apart, inverse-variance combined), else pooled across steps."""
    enough = np.minimum(np.cumsum(n_a), np.cumsum(n_b)) >= experiments.MIN_IMPRESSIONS
    if stratified:
        num = np.zeros(conv_a.shape)
        weight = np.zeros(conv_a.shape)
        for s in np.unique(step):
            mask = step == s
            ca, cb = np.cumsum(conv_a * mask, axis=1), np.cumsum(conv_b * mask, axis=1)
            na, nb = np.cumsum(n_a * mask), np.cumsum(n_b * mask)
            _, d, var = experiments.msprt(ca, na, cb, nb)
            w = np.where((na > 0) & (nb > 0), 1.0 / var, 0.0)
            num += w * d
            weight += w
        d = np.divide(num, weight, out=np.zeros_like(num), where=weight > 0)
        var = np.divide(1.0, weight, out=np.ones_like(weight), where=weight > 0)
        lam = experiments.msprt_ratio(d, var)
    else:
        lam, d, _ = experiments.msprt(np.cumsum(conv_a, axis=1), np.cumsum(n_a), np.cumsum(conv_b, axis=1),
                                      np.cumsum(n_b))
    kill = (lam >= 1 / experiments.ALPHA) & (d < 0) & enough
    return np.where(kill.any(axis=1), kill.argmax(axis=1), -1)
