"""DDPM noise schedules and the forward process q(x_t | x_0) (Ho et al. 2020, arXiv 2006.11239).

x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, eps ~ N(0, I), with abar_t = prod_{s <= t} (1 - beta_s):
the closed form every sampler and the loss use. Schedules: "linear" (beta from 1e-4 to 0.02 over T
steps, Ho et al.) and "cosine" (abar_t = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2),
s = 0.008, betas clipped at 0.999; Nichol & Dhariwal 2021, arXiv 2102.09672). Timesteps are 0-based
here: t = 0 .. T - 1 is the paper's 1 .. T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class NoiseSchedule:
    """betas (T,) float64 and what follows from them."""

    betas: torch.Tensor

    @property
    def steps(self) -> int:
        return self.betas.numel()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t, (T,) float64, decreasing from ~1 to ~0."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t for each sample's timestep t (B,) and noise like x0."""
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def make_schedule(name: str = "linear", steps: int = 1000) -> NoiseSchedule:
    """The named schedule over `steps` timesteps; ValueError for an unknown name or steps < 1."""
    if steps < 1:
        raise ValueError(f"a noise schedule needs steps >= 1, got {steps}")
    if name == "linear":
        # Ho et al.'s endpoints are for T = 1000; scaling by 1000 / T keeps the total noise of a shorter chain
        scale = 1000.0 / steps
        return NoiseSchedule(torch.linspace(scale * 1e-4, min(scale * 0.02, 0.999), steps, dtype=torch.float64))
    if name == "cosine":
        s = 0.008
        grid = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        return NoiseSchedule((1 - abar[1:] / abar[:-1]).clamp(max=0.999))
    raise ValueError(f"unknown noise schedule '{name}'; valid: {', '.join(SCHEDULES)}")
