"""Mean, spread and confidence interval of a metric over repeated runs (seeds), and what one test example
is worth, so a table can say whether a difference is a finding or noise.

The interval is Student's t interval of the mean, mean ± t_{(1+c)/2, n-1} · s / sqrt(n) with the
sample standard deviation s (ddof=1): with the 3 to 5 seeds a training study affords, the normal
interval (z = 1.96) would be too narrow by a factor of 2.2 (3 seeds: t = 4.30) to 1.4 (5 seeds:
t = 2.78). One value has no spread: its
std and interval are None, with the reason, rather than a zero that would read as certainty.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """A metric over n repeated runs.

    Attributes:
        mean: the sample mean (nan when a value is not finite).
        std: the sample standard deviation (ddof=1); None when it cannot be estimated (see reason).
        n: the number of values.
        low: lower end of the confidence interval of the mean; None with std.
        high: upper end; None with std.
        confidence: the interval's confidence level, e.g. 0.95.
        values: the values themselves, in the order given (per seed).
        reason: why std and the interval are None; None when they are given.
    """

    mean: float
    std: float | None
    n: int
    low: float | None
    high: float | None
    confidence: float
    values: tuple[float, ...]
    reason: str | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (the "±" of a CI; of the clipped interval when mean_interval was given
        bounds); None without an interval."""
        return None if self.high is None else (self.high - self.low) / 2

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (values as a list)."""
        return {**asdict(self), "values": list(self.values)}

    @classmethod
    def from_dict(cls, fields: dict) -> "Interval":
        """The Interval of to_dict's output (read back from JSON)."""
        return cls(**{**fields, "values": tuple(fields["values"])})

    def format(self, spec: str = ".4f", spread: str = "std", spread_spec: str | None = None) -> str:
        """"0.9731 ± 0.0016" (spread="std" or "ci": ± the std or the CI half-width), the mean in the
        format `spec` (".4f" for accuracies, ".4g" for counts) and the spread in `spread_spec` (default:
        spec); the mean alone when there is no spread to show (one value, or all values equal)."""
        width = self.std if spread == "std" else self.half_width
        mean = format_number(self.mean, spec)
        return mean if not width else f"{mean} ± {format_number(width, spread_spec or spec)}"

    def format_ci(self, spec: str = ".4f") -> str:
        """"[0.9691, 0.9771]", or "n/a" without an interval."""
        if self.low is None:
            return "n/a"
        return f"[{format_number(self.low, spec)}, {format_number(self.high, spec)}]"


def format_number(value: float, spec: str = ".4g") -> str:
    """`value` in the format spec; "n/a" when not finite, thousands separated from 10,000 on."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1e4 else format(value, spec)


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range of a metric by its name: (0, 1) for accuracies ("test_acc", "best_val_acc"), else None."""
    return (0.0, 1.0) if name.rsplit("_", 1)[-1] in ("acc", "accuracy") else None


def mean_interval(values: Iterable[float], confidence: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> Interval:
    """Mean, sample std and Student-t confidence interval of the mean of `values`.

    Args:
        values: one number per run (seed); at least one.
        confidence: the interval's level in (0, 1).
        bounds: the range the quantity cannot leave (metric_bounds: (0, 1) for an accuracy); the
            interval is clipped to it, since with 2 or 3 seeds a t interval of an accuracy can reach
            below 0 or above 1, which reads as a broken number rather than as "very uncertain".

    Returns:
        An Interval; with one value, or a value that is not finite, std/low/high are None and
        `reason` says why.

    Raises:
        ValueError: no values, or a confidence outside (0, 1).

    Example:
        >>> iv = mean_interval([0.97, 0.975, 0.98])
        >>> round(iv.mean, 4), round(iv.std, 4), iv.n
        (0.975, 0.005, 3)
        >>> round(iv.low, 4), round(iv.high, 4)    # 0.975 ± 4.303 * 0.005 / sqrt(3)
        (0.9626, 0.9874)
    """
    data = tuple(float(v) for v in values)
    if not data:
        raise ValueError("mean_interval needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    n = len(data)
    array = np.asarray(data)
    if not np.isfinite(array).all():
        return Interval(math.nan, None, n, None, None, confidence, data, reason="a value is not finite")
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, None, 1, None, None, confidence, data, reason="one value: no spread to estimate")
    std = float(array.std(ddof=1))
    # t.ppf rather than t.interval: a zero std then gives the zero-width interval, not nan.
    half = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, std, n, low, high, confidence, data)


def one_example_worth(n_test: int) -> float:
    """How much one test example moves an accuracy (or any per-example mean): 1 / n_test.

    A difference of one or two of these between two models is one or two examples classified
    differently: noise, whatever the seed count.

    Raises:
        ValueError: n_test < 1.
    """
    if n_test < 1:
        raise ValueError(f"a test set needs at least one example, got {n_test}")
    return 1.0 / n_test


def example_note(n_test: int, metric: str = "accuracy") -> str:
    """One line for a table's footer: "one test example = 0.0028 accuracy (359 test examples)"."""
    return f"one test example = {one_example_worth(n_test):.2g} {metric} ({n_test:,} test examples)"
