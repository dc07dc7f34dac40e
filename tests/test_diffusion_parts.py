"""First parts of the diffusion issue (10): noise schedules with the closed-form forward process, and the
Fréchet distance."""

import numpy as np
import pytest
import torch

from dia_ode.analysis.frechet import feature_distance, frechet_distance, gaussian_stats
from dia_ode.tasks.noise_schedule import make_schedule
from dia_ode.solvers import StepBudgetExceeded


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


# ---- samplers on a Gaussian with its exact noise predictor -------------------------------------------------

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def _exact_eps(schedule):
    """eps(x_t, t) of data N(MU, SIGMA): x_t ~ N(sqrt(abar) MU, abar SIGMA + (1 - abar) I), and
    eps = sqrt(1 - abar) C_t^-1 (x - sqrt(abar) MU) (the score times -sqrt(1 - abar))."""
    from dia_ode.tasks.diffusion_samplers import alpha_bar_at

    def eps(x, t):
        a = alpha_bar_at(schedule, t)[:, None, None]  # (B, 1, 1)
        cov = a * SIGMA + (1 - a) * torch.eye(2, dtype=torch.float64)
        centred = x - a[:, :, 0].sqrt() * MU
        return (1 - a[:, :, 0]).sqrt() * torch.linalg.solve(cov, centred[..., None])[..., 0]
    return eps


def _moments_match(x, tol):
    assert torch.allclose(x.mean(0), MU, atol=tol), x.mean(0)
    assert torch.allclose(torch.cov(x.T), SIGMA, atol=tol), torch.cov(x.T)


def test_ddpm_ddim_and_the_probability_flow_ode_sample_a_gaussian_with_its_exact_noise_predictor():
    from dia_ode.tasks.diffusion_samplers import ddim_sample, ddpm_sample, probability_flow_sample

    schedule = make_schedule("linear", 1000)
    eps = _exact_eps(schedule)
    shape = (10_000, 2)
    ddpm, stats = ddpm_sample(eps, schedule, shape, torch.Generator().manual_seed(0))
    assert stats["nfe"] == 1000
    _moments_match(ddpm, 0.03)
    stochastic, stats = ddim_sample(eps, schedule, shape, 1000, torch.Generator().manual_seed(1), eta=1.0)
    assert stats["nfe"] == 1000  # eta = 1 over every timestep: the ancestral sampler in distribution
    _moments_match(stochastic, 0.03)
    flow, stats = probability_flow_sample(eps, schedule, shape, torch.Generator().manual_seed(3), rtol=1e-6, atol=1e-6)
    _moments_match(flow, 0.03)
    assert 10 < stats["nfe"] < 500  # measured 170
    # the continuous block's record: accepted steps cover the whole log-sbar interval, each step's size logged
    span = stats["log_sbar"][0] - (stats["log_sbar"][-1] - stats["step"][-1])
    assert len(stats["step"]) == stats["num_accepted"] and sum(stats["step"]) == pytest.approx(span)
    fixed, stats = probability_flow_sample(eps, schedule, shape, torch.Generator().manual_seed(3), method="rk4",
                                           steps=40)
    assert stats["nfe"] == 160 and torch.allclose(fixed, flow, atol=0.01)  # rk4: 4 evaluations a step
    assert stats["num_accepted"] == 40 and stats["num_rejected"] == 0
    with pytest.raises(StepBudgetExceeded, match="max_num_steps=5"):
        probability_flow_sample(eps, schedule, shape, torch.Generator().manual_seed(3), rtol=1e-6, atol=1e-6,
                                max_num_steps=5)
    # deterministic DDIM from the same x_T is Euler on this ODE: first order in the number of steps
    errors = [float((ddim_sample(eps, schedule, shape, n, torch.Generator().manual_seed(3))[0] - flow).abs().max())
              for n in (50, 200)]
    assert errors[1] < 0.35 * errors[0]  # measured 0.131 -> 0.033 for 4x the steps
    with pytest.raises(ValueError, match="DDIM steps"):
        ddim_sample(eps, schedule, shape, 0, torch.Generator())
