"""First parts of the diffusion issue (10): noise schedules with the closed-form forward process, and the
Fréchet distance."""

import numpy as np
import pytest
import torch

from dia_ode.analysis.frechet import feature_distance, frechet_distance, gaussian_stats
from dia_ode.tasks.noise_schedule import make_schedule


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_the_forward_process_has_its_closed_form_mean_and_variance(name):
    schedule = make_schedule(name, 1000)
    abar = schedule.alphas_cumprod
    assert schedule.steps == 1000 and bool((abar[1:] < abar[:-1]).all()) and abar[0] > 0.99 and abar[-1] < 1e-3
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 1.5, dtype=torch.float64)
    for t in (0, 250, 600, 999):
        xt = schedule.q_sample(x0, torch.full((len(x0),), t), torch.randn(x0.shape, generator=g, dtype=torch.float64))
        assert float(xt.mean()) == pytest.approx(1.5 * float(abar[t].sqrt()), abs=0.01)
        assert float(xt.var()) == pytest.approx(float(1 - abar[t]), abs=0.01)


def test_schedules_refuse_bad_names_and_lengths():
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="steps >= 1"):
        make_schedule("linear", 0)


def test_the_frechet_distance_is_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 8))
    b = rng.normal(size=(4000, 8))
    same = feature_distance(a, b)
    assert 0 <= same < 0.05
    distances = [feature_distance(a, b + shift) for shift in (0.5, 1.0, 2.0)]
    assert distances[0] < distances[1] < distances[2]
    assert distances[2] == pytest.approx(8 * 2.0 ** 2 + same, rel=0.02)  # ||shift||^2 = d * s^2
    mu, cov = gaussian_stats(a)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8)
    wide = feature_distance(a, 2 * b)  # equal means, covariance 4 I: tr(I + 4I - 2 * 2I) = d
    assert wide == pytest.approx(8.0, rel=0.05)
