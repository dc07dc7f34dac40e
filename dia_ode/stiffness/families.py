"""Batch families of problems: many members of one kind, solved in one batch with per-sample control.

A family draws its members' parameters (n, p) from a seed, gives the batch field f(t, y, params) that
`numerics.solve` takes through `args` (row for row: each sample its own parameters), the members'
initial values, the save times, and a reference solution per member. The controller lab trains and
tests step-size controllers on them (studies/dia_controller_training.py).

- VdpFamily: Van der Pol (Liénard form, y0 = (2, 0)) with mu ~ U[mu_low, mu_high]: from non-stiff to
  stiff with mu; references by scipy's Radau at rtol 1e-10.
- LinearFamily: random stable linear systems y' = A y, A = Q diag(-lambda) Q^T with Q a random rotation
  and the rates lambda log-uniform in [rate_low, rate_high] (the stiffness ratio is their spread);
  references exact, y(t) = Q diag(exp(-lambda t)) Q^T y0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dia_ode.stiffness.problems import get_problem, vdp_field

SAVE_POINTS = 11


def _check_range(name: str, low: float, high: float) -> None:
    if not 0 < low <= high:
        raise ValueError(f"need 0 < {name} low <= high, got {low}, {high}")


@dataclass(frozen=True)
class VdpFamily:
    """Van der Pol problems with mu ~ U[mu_low, mu_high] on [0, t1] (module docstring)."""

    mu_low: float = 1.0
    mu_high: float = 10.0
    t1: float = 10.0
    name = "vdp"

    def __post_init__(self) -> None:
        _check_range("mu", self.mu_low, self.mu_high)
        if not self.t1 > 0:
            raise ValueError(f"t1 must be > 0, got {self.t1}")

    def draw(self, n: int, seed: int) -> torch.Tensor:
        """n values of mu (n, 1) float64 from the seeded generator."""
        g = torch.Generator().manual_seed(seed)
        return self.mu_low + (self.mu_high - self.mu_low) * torch.rand(n, 1, generator=g, dtype=torch.float64)

    @staticmethod
    def field(t: torch.Tensor, y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """The batch field with each sample's mu (args of numerics.solve)."""
        return vdp_field(y, mu[:, 0])

    def y0(self, n: int) -> torch.Tensor:
        return torch.tensor([[2.0, 0.0]], dtype=torch.float64).expand(n, 2).clone()

    def times(self) -> torch.Tensor:
        return torch.linspace(0.0, self.t1, SAVE_POINTS, dtype=torch.float64)

    def references(self, mus: torch.Tensor) -> np.ndarray:
        """(n, SAVE_POINTS, 2): scipy Radau at rtol 1e-10 for every member."""
        return np.stack([get_problem("vdp", mu=float(mu)).reference(self.times().numpy(), rtol=1e-10)
                         for mu in mus[:, 0]])

    @staticmethod
    def describe(params: torch.Tensor) -> list[float]:
        """Each member in one number: its mu."""
        return params[:, 0].tolist()


@dataclass(frozen=True)
class LinearFamily:
    """Random stable linear systems of size `dim` with rates log-uniform in [rate_low, rate_high] on
    [0, t1] (module docstring). A member's parameters are (rates (dim), Q flattened (dim * dim))."""

    rate_low: float = 1.0
    rate_high: float = 1000.0
    t1: float = 1.0
    dim: int = 3
    name = "linear"

    def __post_init__(self) -> None:
        _check_range("rate", self.rate_low, self.rate_high)
        if not self.t1 > 0:
            raise ValueError(f"t1 must be > 0, got {self.t1}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")

    def draw(self, n: int, seed: int) -> torch.Tensor:
        """(n, dim + dim^2) float64: each member's rates, then its rotation Q (QR of a Gaussian matrix)."""
        g = torch.Generator().manual_seed(seed)
        logs = torch.rand(n, self.dim, generator=g, dtype=torch.float64)
        rates = self.rate_low * (self.rate_high / self.rate_low) ** logs
        q, r = torch.linalg.qr(torch.randn(n, self.dim, self.dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # a unique Q: Haar-distributed
        return torch.cat([rates, q.flatten(1)], dim=1)

    def matrices(self, params: torch.Tensor) -> torch.Tensor:
        """A = Q diag(-rates) Q^T per member, (n, dim, dim)."""
        rates, q = params[:, :self.dim], params[:, self.dim:].reshape(-1, self.dim, self.dim)
        return q @ torch.diag_embed(-rates) @ q.transpose(-1, -2)

    def field(self, t: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """y' = A y with each sample's A (args of numerics.solve)."""
        return (self.matrices(params) @ y[..., None])[..., 0]

    def y0(self, n: int) -> torch.Tensor:
        return torch.ones(n, self.dim, dtype=torch.float64)

    def times(self) -> torch.Tensor:
        return torch.linspace(0.0, self.t1, SAVE_POINTS, dtype=torch.float64)

    def references(self, params: torch.Tensor) -> np.ndarray:
        """(n, SAVE_POINTS, dim): the exact solution Q exp(-rates t) Q^T y0."""
        rates, q = params[:, :self.dim], params[:, self.dim:].reshape(-1, self.dim, self.dim)
        t = self.times()
        modes = (q.transpose(-1, -2) @ self.y0(params.shape[0])[..., None])[..., 0]  # (n, dim)
        decay = torch.exp(-rates[:, None, :] * t[None, :, None])  # (n, T, dim)
        return torch.einsum("nij,ntj->nti", q, decay * modes[:, None, :]).numpy()

    def describe(self, params: torch.Tensor) -> list[float]:
        """Each member in one number: its stiffness ratio (largest rate over smallest)."""
        rates = params[:, :self.dim]
        return (rates.amax(dim=1) / rates.amin(dim=1)).tolist()


FAMILIES = {"vdp": VdpFamily, "linear": LinearFamily}
