"""Samplers of a noise predictor eps(x_t, t): ancestral DDPM, DDIM, and the probability-flow ODE.

Each returns (samples, stats) with stats["nfe"] the noise predictor's evaluations. The model is any
callable eps_model(x, t) with t a (B,) tensor of (possibly fractional) timesteps in [0, T - 1]
(noise_schedule.py's 0-based steps).

- DDPM (Ho et al. 2020, arXiv 2006.11239, Algorithm 2): T steps, x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t)
  eps) / sqrt(alpha_t) + sigma_t z with sigma_t^2 the posterior variance beta_t (1 - abar_{t-1}) / (1 - abar_t).
- DDIM (Song, Meng & Ermon 2021, arXiv 2010.02502, eq. 12): any increasing subsequence of the timesteps;
  eta = 0 is deterministic, eta = 1 with every timestep is the ancestral sampler in distribution.
- Probability-flow ODE: in DDIM's variables xbar = x / sqrt(abar), sbar = sqrt((1 - abar) / abar) the
  deterministic sampler is the ODE d xbar / d sbar = eps(x, t) (Song et al. 2021, section 4.3; Karras et
  al. 2022 call this the sigma parametrisation), solved in u = log sbar (d xbar / du = sbar eps: fixed
  steps in u spread over every noise scale, where steps uniform in sbar would skip the small ones) from
  t = T - 1 down to t = 0 by torchdiffeq or dia_ode's integrator (adaptive dopri5 with rtol / atol, or a
  fixed-step method with a number of steps; on dia_ode any error controller and each sample on its own
  steps) inside the project's continuous block (solvers/continuous.py), so sampling reports
  what a neural ODE's forward does: evaluations, accepted and rejected steps, each step's size, and a
  step budget. t(sbar) interpolates the schedule's log sbar table.
"""

from __future__ import annotations

import torch

from dia_ode.solvers import AbstractStageController, AbstractDynamics, ConstantStep, ContinuousBlock
from dia_ode.solvers.backends import DEFAULT_BACKEND, DEFAULT_CONTROLLER
from dia_ode.tasks.noise_schedule import NoiseSchedule


def ddpm_sample(eps_model, schedule: NoiseSchedule, shape: tuple[int, ...], generator: torch.Generator
                ) -> tuple[torch.Tensor, dict]:
    """Ancestral sampling over all T steps; (x_0, {"nfe": T})."""
    betas, abar = schedule.betas, schedule.alphas_cumprod
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    for t in range(schedule.steps - 1, -1, -1):
        eps = eps_model(x, torch.full((shape[0],), float(t), dtype=torch.float64))
        mean = (x - betas[t] / (1 - abar[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
        if t == 0:
            x = mean
        else:
            variance = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
            x = mean + variance.sqrt() * torch.randn(shape, generator=generator, dtype=torch.float64)
    return x, {"nfe": schedule.steps}


def ddim_sample(eps_model, schedule: NoiseSchedule, shape: tuple[int, ...], steps: int, generator: torch.Generator,
                eta: float = 0.0) -> tuple[torch.Tensor, dict]:
    """DDIM over `steps` evenly spaced timesteps (the last one T - 1); (x_0, {"nfe": steps})."""
    if not 1 <= steps <= schedule.steps:
        raise ValueError(f"DDIM steps must be in [1, {schedule.steps}], got {steps}")
    abar = schedule.alphas_cumprod
    # from T - 1 down, so that one step starts at the prior's end (linspace(0, T - 1, 1) would be [0])
    times = torch.linspace(schedule.steps - 1, 0, steps).round().long().unique()
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    for i in range(len(times) - 1, -1, -1):
        t = int(times[i])
        a_t, a_prev = abar[t], (abar[int(times[i - 1])] if i > 0 else torch.tensor(1.0, dtype=torch.float64))
        eps = eps_model(x, torch.full((shape[0],), float(t), dtype=torch.float64))
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps
        if i > 0 and eta > 0:
            x = x + sigma * torch.randn(shape, generator=generator, dtype=torch.float64)
    return x, {"nfe": len(times)}


class ProbabilityFlow(AbstractDynamics):
    """d xbar / d tau of the probability-flow ODE, tau = log sbar(T - 1) - log sbar: time runs forward from
    the prior (tau = 0) to the data (tau = span), as a continuous block integrates. (Euler in tau is not
    DDIM: DDIM is Euler in sbar itself; theory/unet.md.) tau is one time for the batch (torchdiffeq) or
    one per sample (B,) (dia_ode's per-sample steps)."""

    def __init__(self, eps_model, schedule: NoiseSchedule) -> None:
        super().__init__()
        abar = schedule.alphas_cumprod
        self.log_sbar = (((1 - abar) / abar).sqrt()).log()  # increasing in t
        self.eps_model = eps_model
        self.f = None  # no separate vector field module: the noise predictor is a plain callable

    @property
    def span(self) -> float:
        return float(self.log_sbar[-1] - self.log_sbar[0])

    def log_sbar_at(self, tau: torch.Tensor) -> torch.Tensor:
        """u = log sbar at tau, clamped to the schedule (the solver's first-step probe may look past it)."""
        return (self.log_sbar[-1] - tau.to(torch.float64).cpu()).clamp(self.log_sbar[0], self.log_sbar[-1])

    def timestep(self, u: torch.Tensor) -> torch.Tensor:
        """Fractional timestep at u = log sbar, 0-d or (B,) (linear in log sbar between the table's entries)."""
        log_sbar = self.log_sbar
        i = torch.searchsorted(log_sbar, u.reshape(-1)).clamp(1, len(log_sbar) - 1).reshape(u.shape)
        w = (u - log_sbar[i - 1]) / (log_sbar[i] - log_sbar[i - 1])
        return (i - 1 + w).to(torch.float64)

    def forward(self, tau: torch.Tensor, xbar: torch.Tensor) -> torch.Tensor:
        u = self.log_sbar_at(tau)  # 0-d or (B,)
        s = u.exp()
        a = 1 / (1 + s ** 2)  # abar at sbar = s
        column = (-1, *[1] * (xbar.dim() - 1))  # a per-sample factor against (B, C, H, W)
        eps = self.eps_model(xbar * a.sqrt().reshape(column).to(xbar.device),
                             self.timestep(u).expand(xbar.shape[0]))
        return -eps * s.reshape(column).to(xbar.device)  # d xbar / d tau = - sbar eps

    def euler_controller(self, dt: float) -> AbstractStageController:
        return ConstantStep(dt)


def probability_flow_sample(eps_model, schedule: NoiseSchedule, shape: tuple[int, ...], generator: torch.Generator,
                            method: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
                            steps: int | None = None, max_num_steps: int | None = None,
                            backend: str = DEFAULT_BACKEND, controller: str = DEFAULT_CONTROLLER,
                            per_sample: bool = False) -> tuple[torch.Tensor, dict]:
    """The probability-flow ODE from t = T - 1 to t = 0 (module docstring) as a continuous block:
    (x_0, {"nfe", "nfe_max", "num_accepted", "num_rejected", "log_sbar", "step"}), "log_sbar" and "step"
    the start and size (in log sbar) of every accepted step. backend, controller and per_sample choose the
    engine as a continuous block's options do (solvers/backends.py); with per-sample steps the counts are
    means over the samples, nfe_max the most any sample needed, and the steps are the first sample's.

    Raises:
        StepBudgetExceeded: more than max_num_steps attempted steps (on dia_ode SolveFailed, a
            StepBudgetExceeded too: a sample's solve ended without success).
        SolverOptionError: a bad backend, controller or per_sample, naming it.
    """
    dynamics = ProbabilityFlow(eps_model, schedule)
    span = dynamics.span
    step_size = None if steps is None else span / steps
    block = ContinuousBlock(dynamics, T=span, method=method, rtol=rtol, atol=atol, step_size=step_size,
                            max_num_steps=max_num_steps, backend=backend, controller=controller,
                            per_sample=per_sample)
    abar = schedule.alphas_cumprod
    x_T = torch.randn(shape, generator=generator, dtype=torch.float64)  # the prior N(0, I), as DDPM's
    xbar = block(x_T / abar[-1].sqrt())  # xbar = x / sqrt(abar)
    record = block.log.tensors()
    accepted = record["accepted"]
    stats = {"nfe": block.stats["nfe_forward"], "nfe_max": block.stats["nfe_forward_max"],
             "num_accepted": block.stats["num_accepted"],
             "num_rejected": block.stats["num_rejected"],
             "log_sbar": (dynamics.log_sbar[-1] - record["t"][accepted]).tolist(),
             "step": record["dt"][accepted].tolist()}
    return xbar * abar[0].sqrt(), stats


def alpha_bar_at(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """abar at fractional timesteps t, interpolated as the probability-flow sampler does (log sbar linear
    between integer timesteps); exact at integers."""
    abar = schedule.alphas_cumprod
    log_sbar = (((1 - abar) / abar).sqrt()).log()
    t = t.to(torch.float64).clamp(0, schedule.steps - 1)
    low = t.floor().long().clamp(max=schedule.steps - 2) if schedule.steps > 1 else t.floor().long()
    w = t - low
    high = (low + 1).clamp(max=schedule.steps - 1)
    ls = (1 - w) * log_sbar[low] + w * log_sbar[high]
    return 1 / (1 + ls.exp() ** 2)
