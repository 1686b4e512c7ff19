"""Experiment analysis and the guardrail's sequential test.

The unit is the shopper (issue 19; ``entities.credits``): a variant's counters hold the
shoppers exposed to it (``impressions``) and those who clicked, carted and bought, each
counted once per analysis however many lists, impressions, clicks or replays they send, so no
one shopper can steer the test. Conversion is the share of exposed shoppers who bought,
attributed through ``rec_id``/``variant`` by ``aggregate``; the shopper is also the unit of
randomization (sticky buckets), so the counts are independent Bernoulli trials, as the test
assumes. The guardrail asks, every time it runs, whether the challenger converts
worse than the champion, with a mixture sequential probability ratio test (mSPRT, Johari
et al. 2017) on the difference of the two conversion rates: the statistic

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 V (V + tau^2)))

(d the observed difference, V its variance, tau^2 the mixing variance of the effect) is an
always-valid likelihood ratio: however often it is looked at, the chance that it ever
crosses 1/alpha when the variants are equal is at most alpha. The guardrail kills only when
it crosses and the challenger is the worse one, so its false-kill rate is at most alpha; a
naive z-test repeated at every look has no such bound (see the tests' simulation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from personalize import keys
from personalize.ingest import entities
from personalize.rollout.flags import CHALLENGER, CHAMPION

ALPHA = 0.05
# The mixing distribution's scale: the size of difference in conversion rate the test is
# tuned to find (half a point of conversion).
TAU = 0.005
MIN_IMPRESSIONS = 500  # exposed shoppers per variant, before the normal approximation is trusted
Z95 = 1.959963984540054


@dataclass
class Counters:
    """One variant's shoppers (see the module): exposed (``impressions``), clicked, carted,
    bought; ``revenue`` sums every attributed purchase."""

    impressions: int = 0
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    revenue: float = 0.0

    @property
    def conversion(self) -> float:
        return self.purchases / self.impressions if self.impressions else 0.0

    @property
    def click_through(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def revenue_per_impression(self) -> float:
        return self.revenue / self.impressions if self.impressions else 0.0


def merge_variant_rows(rows: list[entities.VariantRow]) -> Counters:
    c = Counters()
    for row in rows:
        c.impressions += row.counts[0]
        c.clicks += row.counts[1]
        c.add_to_carts += row.counts[2]
        c.purchases += row.counts[3]
        c.revenue += row.revenue
    return c


def merge_counters(parts: list[Counters]) -> Counters:
    out = Counters()
    for c in parts:
        out.impressions += c.impressions
        out.clicks += c.clicks
        out.add_to_carts += c.add_to_carts
        out.purchases += c.purchases
        out.revenue += c.revenue
    return out


def read_counters(store, experiment: str, variants=(CHAMPION, CHALLENGER)) -> dict[str, Counters]:
    """Per variant, the counters merged over their per-shard rows (items table)."""
    out = {}
    for variant in variants:
        rows = [entities.VariantRow.from_obj(s.row) for s in store.query("items", keys.variant_pk(experiment, variant))
                if s.row is not None]
        out[variant] = merge_variant_rows(rows)
    return out


def msprt(conv_a: float, n_a: float, conv_b: float, n_b: float, tau: float = TAU):
    """(Lambda, d, V) for the difference d = rate_b - rate_a; works on numpy arrays too."""
    p_a = np.divide(conv_a, n_a, out=np.zeros_like(np.asarray(conv_a, dtype=float)), where=np.asarray(n_a) > 0)
    p_b = np.divide(conv_b, n_b, out=np.zeros_like(np.asarray(conv_b, dtype=float)), where=np.asarray(n_b) > 0)
    pooled = np.divide(np.asarray(conv_a) + conv_b, np.asarray(n_a) + n_b,
                       out=np.zeros_like(np.asarray(conv_a, dtype=float)), where=(np.asarray(n_a) + n_b) > 0)
    var = pooled * (1 - pooled) * (1 / np.maximum(n_a, 1) + 1 / np.maximum(n_b, 1))
    var = np.maximum(var, 1e-12)
    d = p_b - p_a
    t2 = tau * tau
    log_lambda = 0.5 * np.log(var / (var + t2)) + t2 * d * d / (2 * var * (var + t2))
    return np.exp(np.minimum(log_lambda, 700)), d, var


def stratified(strata: list[tuple[Counters, Counters]]):
    """(d, V) over ramp steps: each step's difference (constant share within it), combined
    with inverse-variance weights. Pooling steps with different shares is biased whenever
    conversion drifts over time (the challenger's impressions sit in the later, bigger
    steps); within a step both arms see the same times, so the combination is not."""
    num = weight = 0.0
    for champion, challenger in strata:
        if champion.impressions == 0 or challenger.impressions == 0:
            continue
        _, d, var = msprt(champion.purchases, champion.impressions, challenger.purchases, challenger.impressions)
        w = 1.0 / float(var)
        num += w * float(d)
        weight += w
    if weight == 0:
        return 0.0, 1.0
    return num / weight, 1.0 / weight


def msprt_ratio(d, var, tau: float = TAU):
    """The mixture likelihood ratio for an estimate ``d`` of variance ``var``."""
    t2 = tau * tau
    var = np.maximum(var, 1e-12)
    log_lambda = 0.5 * np.log(var / (var + t2)) + t2 * d * d / (2 * var * (var + t2))
    return np.exp(np.minimum(log_lambda, 700))


@dataclass
class Decision:
    action: str          # "kill", "continue", "winning" or "insufficient_data"
    reason: str
    likelihood_ratio: float
    difference: float
    threshold: float


def decide(champion: Counters, challenger: Counters, alpha: float = ALPHA, tau: float = TAU,
           min_impressions: int = MIN_IMPRESSIONS) -> Decision:
    threshold = 1 / alpha
    if min(champion.impressions, challenger.impressions) < min_impressions:
        return Decision("insufficient_data", f"fewer than {min_impressions} impressions in a variant",
                        1.0, 0.0, threshold)
    lam, d, _ = msprt(champion.purchases, champion.impressions, challenger.purchases, challenger.impressions, tau)
    lam, d = float(lam), float(d)
    if lam >= threshold and d < 0:
        return Decision("kill", f"challenger converts worse: {challenger.conversion:.4%} vs {champion.conversion:.4%} "
                        f"(mSPRT ratio {lam:.1f} >= {threshold:.0f}, alpha {alpha})", lam, d, threshold)
    if lam >= threshold and d > 0:
        return Decision("winning", f"challenger converts better: {challenger.conversion:.4%} vs "
                        f"{champion.conversion:.4%} (mSPRT ratio {lam:.1f}); promotion is a human's call",
                        lam, d, threshold)
    return Decision("continue", f"no decision yet (mSPRT ratio {lam:.2f} < {threshold:.0f})", lam, d, threshold)


def decide_steps(strata: list[tuple[Counters, Counters]], alpha: float = ALPHA, tau: float = TAU,
                 min_impressions: int = MIN_IMPRESSIONS) -> Decision:
    """``decide`` over an experiment's ramp steps (champion, challenger counters per step)."""
    threshold = 1 / alpha
    total_a = sum(a.impressions for a, _ in strata)
    total_b = sum(b.impressions for _, b in strata)
    if min(total_a, total_b) < min_impressions:
        return Decision("insufficient_data", f"fewer than {min_impressions} impressions in a variant",
                        1.0, 0.0, threshold)
    d, var = stratified(strata)
    lam = float(msprt_ratio(d, var, tau))
    steps = f"{len(strata)} ramp step{'s' if len(strata) != 1 else ''}"
    if lam >= threshold and d < 0:
        return Decision("kill", f"challenger converts worse by {-d:.4%} per impression over {steps} "
                        f"(mSPRT ratio {lam:.1f} >= {threshold:.0f}, alpha {alpha})", lam, d, threshold)
    if lam >= threshold and d > 0:
        return Decision("winning", f"challenger converts better by {d:.4%} per impression over {steps} "
                        f"(mSPRT ratio {lam:.1f}); promotion is a human's call", lam, d, threshold)
    return Decision("continue", f"no decision yet over {steps} (mSPRT ratio {lam:.2f} < {threshold:.0f})",
                    lam, d, threshold)


def lift(champion: Counters, challenger: Counters) -> tuple[float, float, float] | None:
    """Relative lift of the challenger's conversion, with a 95% interval (delta method on
    the log ratio); None without conversions in both."""
    if not (champion.purchases and challenger.purchases):
        return None
    ratio = challenger.conversion / champion.conversion
    se = math.sqrt((1 - champion.conversion) / champion.purchases + (1 - challenger.conversion) / challenger.purchases)
    return ratio - 1, math.exp(math.log(ratio) - Z95 * se) - 1, math.exp(math.log(ratio) + Z95 * se) - 1


def report(counters: dict[str, Counters]) -> list[dict]:
    total = sum(c.impressions for c in counters.values()) or 1
    champion = counters.get(CHAMPION, Counters())
    rows = []
    for variant, c in counters.items():
        row = {"variant": variant, "share": c.impressions / total, "impressions": c.impressions,
               "click_through": c.click_through, "conversion": c.conversion,
               "revenue_per_impression": c.revenue_per_impression}
        if variant != CHAMPION:
            row["lift"] = lift(champion, c)
        rows.append(row)
    return rows


def format_report(experiment: str, counters: dict[str, Counters], decision: Decision | None = None) -> str:
    header = f"{'variant':<11} {'share':>7} {'impressions':>11} {'CTR':>7} {'conversion':>10} {'rev/impr':>9}"
    lines = [f"experiment {experiment}", header + "  lift (95% CI)"]
    for r in report(counters):
        lift_text = ""
        if r.get("lift"):
            mid, low, high = r["lift"]
            lift_text = f"{mid:+.1%} ({low:+.1%} .. {high:+.1%})"
        elif "lift" in r:
            lift_text = "n/a (no conversions yet)"
        lines.append(f"{r['variant']:<11} {r['share']:>7.2%} {r['impressions']:>11} {r['click_through']:>7.2%} "
                     f"{r['conversion']:>10.3%} {r['revenue_per_impression']:>9.3f}  {lift_text}")
    if decision is not None:
        lines.append(f"guardrail: {decision.action}: {decision.reason}")
    return "\n".join(lines)
