"""The power of a seed study: the smallest effect its n seeds detect, and the seeds an effect would need.

A comparison over seeds is a one-sample t test on the per-seed (paired) differences: with n values of
sample standard deviation s, the two-sided test at level 1 - confidence rejects "no effect" when
|mean| / (s / sqrt(n)) exceeds t_{(1+confidence)/2, n-1}. Under a true effect d the statistic follows the
noncentral t with n - 1 degrees of freedom and noncentrality d sqrt(n) / s, so its power is exact, not the
normal approximation's (which flatters the 3 to 5 seeds a training study affords: at n = 3 the normal
rule's effect is detected with 0.8 power only about half the time).

- minimal_detectable_effect: the d that the test detects with the given power at this n and s;
- seeds_needed: the smallest n that detects a given d (the paper's effect) with that power, taking s
  from the study as the spread of one seed's difference.

s is the study's own estimate: with 3 seeds it is itself uncertain, so both numbers are a planning
guide, not a guarantee.
"""

from __future__ import annotations

import math

from scipy import integrate, optimize, stats

from dia_ode.analysis.intervals import Interval

POWER = 0.8  # the conventional target: a real effect of this size is missed one time in five
MAX_SEEDS = 10_000  # seeds_needed stops looking here (an effect far below the spread)


def power_of(effect: float, std: float, n: int, confidence: float = 0.95) -> float:
    """The probability that the two-sided t test on n values with spread std rejects "no effect" when the
    true mean is `effect` (noncentral t, exact)."""
    if n < 2:
        raise ValueError(f"a t test needs at least 2 values, got {n}")
    if std <= 0:
        return 1.0 if effect != 0 else 1.0 - confidence
    df = n - 1
    critical = stats.t.ppf((1 + confidence) / 2, df)
    shift = abs(effect) * math.sqrt(n) / std
    # T = (Z + shift) / sqrt(V / df), V ~ chi2(df): P(|T| > c) as an integral over V. scipy's nct returns
    # NaN at large noncentralities (about 10 at df = 99), where the integral stays exact.
    def rejects(v: float) -> float:
        scale = critical * math.sqrt(v / df)
        return (stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale)) * stats.chi2.pdf(v, df)
    low, high = stats.chi2.ppf([1e-14, 1 - 1e-14], df)  # where V lives: quad would miss a narrow bulk
    value, _ = integrate.quad(rejects, low, high, epsabs=1e-12, limit=200)
    return float(min(max(value, 0.0), 1.0))


def minimal_detectable_effect(std: float, n: int, power: float = POWER, confidence: float = 0.95) -> float:
    """The smallest |effect| that n values of spread std detect with `power` (0 when std is 0)."""
    if n < 2:
        raise ValueError(f"a t test needs at least 2 values, got {n}")
    if not 1 - confidence < power < 1:
        raise ValueError(f"power must lie in ({1 - confidence:g}, 1), got {power}")
    if std <= 0:
        return 0.0
    high = std
    while power_of(high, std, n, confidence) < power:  # bracket the root: power grows with the effect
        high *= 2
    return float(optimize.brentq(lambda d: power_of(d, std, n, confidence) - power, 0.0, high, xtol=1e-12 * high))


def seeds_needed(effect: float, std: float, power: float = POWER, confidence: float = 0.95) -> int | None:
    """The fewest seeds whose test detects `effect` with `power` when one seed's difference spreads by
    std; None beyond MAX_SEEDS (the effect is lost in the spread) or for a zero effect."""
    if effect == 0:
        return None
    if std <= 0:
        return 2
    if power_of(effect, std, MAX_SEEDS, confidence) < power:
        return None
    low, high = 2, MAX_SEEDS  # power grows with n: bisect for the first n that reaches it
    while low < high:
        mid = (low + high) // 2
        if power_of(effect, std, mid, confidence) >= power:
            high = mid
        else:
            low = mid + 1
    return low


def power_row(name: str, interval: Interval, effect: float | None = None, power: float = POWER) -> dict:
    """One comparison's power, for a report's table: {"comparison", "n", "std", "mde", "effect",
    "seeds_needed"}; mde and seeds_needed are None where the interval has no spread estimate (one seed)
    or no effect is given."""
    row = {"comparison": name, "n": interval.n, "std": interval.std, "mde": None, "effect": effect,
           "seeds_needed": None}
    if interval.std is None or interval.n < 2:
        return row
    row["mde"] = minimal_detectable_effect(interval.std, interval.n, power, interval.confidence)
    if effect is not None:
        row["seeds_needed"] = seeds_needed(effect, interval.std, power, interval.confidence)
    return row


__all__ = ["MAX_SEEDS", "POWER", "minimal_detectable_effect", "power_of", "power_row", "seeds_needed"]
