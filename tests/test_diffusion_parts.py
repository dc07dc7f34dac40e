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


# ---- DDIM as a one-step method (theory/unet.md) ------------------------------------------------------------

def _recorded_ddim(name: str, steps: int):
    """Deterministic DDIM with a random eps-predictor (any function of x and t serves) that records every
    call: the x it is given at call i + 1 is the sampler's own step from call i's (x, t, eps). Returns the
    schedule's abar, the calls [(x, t, eps)] and the final sample (the last step lands on abar = 1)."""
    from dia_ode.tasks.diffusion_samplers import ddim_sample

    schedule = make_schedule(name, 1000)
    g = torch.Generator().manual_seed(5)
    W, v = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    calls = []

    def eps(x, t):  # (B, 3), (B,)
        out = torch.tanh(x @ W) + torch.cos(t / 150)[:, None] * v
        calls.append((x.clone(), int(t[0]), out.clone()))
        return out

    final, stats = ddim_sample(eps, schedule, (4, 3), steps, torch.Generator().manual_seed(6))
    assert stats["nfe"] == len(calls) == steps
    return schedule.alphas_cumprod, calls, final


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_one_ddim_step_is_one_euler_step_of_the_probability_flow_ode_in_sbar(name):
    """xbar_s = xbar_t + (sbar_s - sbar_t) eps(x_t, t), xbar = x / sqrt(abar), sbar = sqrt((1 - abar) / abar):
    DDIM (eta = 0) is explicit Euler on d xbar / d sbar = eps, step by step, to rounding; and not Euler in
    u = log sbar, the variable the ODE sampler integrates in, though that too is a first-order method."""
    abar, calls, final = _recorded_ddim(name, 6)
    pairs = [(x, t, e, calls[i + 1][0], abar[calls[i + 1][1]]) for i, (x, t, e) in enumerate(calls[:-1])]
    pairs.append((*calls[-1], final, torch.tensor(1.0, dtype=torch.float64)))  # the last step: to abar = 1, sbar = 0
    assert [t for _, t, _ in calls] == [999, 799, 599, 400, 200, 0]
    for x_t, t, eps, x_s, a_s in pairs:
        a_t = abar[t]
        sbar_t, sbar_s = ((1 - a_t) / a_t).sqrt(), ((1 - a_s) / a_s).sqrt()
        xbar_t = x_t / a_t.sqrt()
        torch.testing.assert_close(x_s / a_s.sqrt(), xbar_t + (sbar_s - sbar_t) * eps, rtol=1e-12, atol=1e-12)
        if a_s < 1:  # the increments differ (xbar_t itself, ~1e4 at the cosine schedule's end, would hide them)
            increment_in_u = (sbar_s / sbar_t).log() * sbar_t * eps
            assert not torch.allclose(x_s / a_s.sqrt() - xbar_t, increment_in_u, rtol=0.05)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_one_ddim_step_is_the_first_order_exponential_integrator_in_log_snr(name):
    """DPM-Solver-1 (Lu et al. 2022, arXiv 2206.00927): x_s = (α_s / α_t) x_t - σ_s (e^h - 1) eps(x_t, t),
    h = λ_s - λ_t, λ = log(α / σ), α = sqrt(abar), σ = sqrt(1 - abar); the project's DDIM step is it, to
    rounding, between any two timesteps of the schedule (λ_s is finite there; the final step to abar = 1
    is the limit λ_s -> inf, checked in sbar by the test above)."""
    abar, calls, _ = _recorded_ddim(name, 6)
    for (x_t, t, eps), (x_s, s, _) in zip(calls, calls[1:]):
        alpha_t, alpha_s = abar[t].sqrt(), abar[s].sqrt()
        sigma_t, sigma_s = (1 - abar[t]).sqrt(), (1 - abar[s]).sqrt()
        h = (alpha_s / sigma_s).log() - (alpha_t / sigma_t).log()
        assert h > 0  # λ grows towards the data
        dpm_solver_1 = alpha_s / alpha_t * x_t - sigma_s * torch.expm1(h) * eps
        torch.testing.assert_close(x_s, dpm_solver_1, rtol=1e-12, atol=1e-12)
