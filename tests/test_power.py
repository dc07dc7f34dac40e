"""The power of a seed study (analysis/power.py), against scipy's noncentral t and a simulation."""

import math

import numpy as np
import pytest
from scipy import stats

from dia_ode.analysis.intervals import mean_interval
from dia_ode.analysis.power import MAX_SEEDS, minimal_detectable_effect, power_of, power_row, seeds_needed


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
@pytest.mark.parametrize("effect", [0.0, 0.3, 1.0, 2.5])
def test_power_is_the_noncentral_t_tail_where_scipy_computes_it(n, effect):
    critical = stats.t.ppf(0.975, n - 1)
    shift = effect * math.sqrt(n) / 0.7
    expected = stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)
    if math.isnan(expected):  # scipy's far tail at a large noncentrality: the lower tail is nil there
        expected = stats.nct.sf(critical, n - 1, shift)
    assert power_of(effect, 0.7, n) == pytest.approx(expected, abs=1e-9)
    assert power_of(-effect, 0.7, n) == pytest.approx(expected, abs=1e-9)  # two-sided


def test_power_stays_defined_where_scipys_noncentral_t_gives_nan():
    critical = stats.t.ppf(0.975, 99)
    assert math.isnan(stats.nct.cdf(-critical, 99, 10.0))  # the reason for the integral
    assert power_of(1.0, 1.0, 100) == pytest.approx(1.0, abs=1e-9)
    assert 0.88 < power_of(0.1, 1.0, 1000) < 0.89  # a large n, a small effect: the bulk of V is narrow


def test_the_minimal_detectable_effect_is_detected_that_often_in_a_simulation():
    n, std = 3, 1.0
    mde = minimal_detectable_effect(std, n)
    assert power_of(mde, std, n) == pytest.approx(0.8, abs=1e-9)
    rng = np.random.default_rng(0)
    samples = rng.normal(mde, std, size=(40_000, n))
    t = samples.mean(1) / (samples.std(1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.01)  # 40,000 tests: the rate's scatter is 0.002
    # the normal rule's effect, (1.96 + 0.84) s / sqrt(n), is detected far less often at n = 3
    assert power_of((1.96 + 0.8416) * std / math.sqrt(n), std, n) < 0.4


def test_seeds_needed_is_the_first_n_that_reaches_the_power():
    for effect, std in ((1.0, 1.0), (0.5, 1.0), (0.0324, 0.011)):
        n = seeds_needed(effect, std)
        assert power_of(effect, std, n) >= 0.8 > power_of(effect, std, n - 1) if n > 2 else True
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.5, 0.0) == 2
    assert seeds_needed(1e-4, 1.0) is None  # beyond MAX_SEEDS
    assert power_of(1e-4, 1.0, MAX_SEEDS) < 0.8


def test_power_row_of_an_interval():
    interval = mean_interval([0.01, -0.02, 0.015])
    row = power_row("dia - plain accuracy", interval, effect=0.0324)
    assert row["n"] == 3 and row["std"] == interval.std
    assert row["mde"] == pytest.approx(minimal_detectable_effect(interval.std, 3))
    assert row["seeds_needed"] == seeds_needed(0.0324, interval.std)
    assert power_row("x", interval)["seeds_needed"] is None  # no effect given
    one = power_row("x", mean_interval([0.5]), effect=0.1)
    assert one["mde"] is None and one["seeds_needed"] is None  # one seed: no spread to plan with
    with pytest.raises(ValueError, match="at least 2"):
        minimal_detectable_effect(1.0, 1)
