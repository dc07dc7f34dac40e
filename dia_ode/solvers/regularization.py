"""Regularised continuous blocks: the RNODE penalty and STEER's random end time.

RNODE ("How to train your neural ODE: the world of Jacobian and kinetic regularization", Finlay et
al., arXiv 2002.02798) adds to the loss λ_K ∫||F(t, y)||² dt, the kinetic energy of the dynamics, and
λ_J ∫||ε^T ∂F/∂y||² dt, a one-probe Hutchinson estimate of the squared Jacobian Frobenius norm: both
are integrated alongside the state by the same solve. STEER ("STEER: Simple Temporal Regularization
For Neural ODEs", Ghosh et al., arXiv 2006.10711) draws the end time of every training solve
uniformly from [T - b, T + b]. Both push the learned dynamics towards slow, non-stiff fields that an
adaptive solver crosses in few steps (theory/continuous_dia.md, "Regularised dynamics").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # continuous.py imports this module
    from dia_ode.solvers.continuous import AbstractDynamics

NOISES = ("gaussian", "rademacher")


class RegularizedDynamics(nn.Module):
    """One solve's augmented dynamics: the state (*y, E, J) with the per-sample integrals E and J.

        dy/dt = F(t, y)
        dE/dt = ||F(t, y)||²            kinetic energy, summed over every component of y
        dJ/dt = ||ε^T ∂F/∂y (t, y)||²   ε drawn once per solve, E[ε ε^T] = I: E_ε = ||∂F/∂y||_F²

    E(0) = J(0) = 0; both are (B,) tensors. A fresh instance is made per solve, so its ε is fixed
    over the solve (and its adjoint) and new at the next. Only the y part enters the step-size
    control (`error_norm`): the steps, hence x(T), are those of the plain solve. The memory of DIA
    belongs to y, so its speed and stiffness are penalised too: the solver's error control sees it.
    Duck-types AbstractDynamics (initial_state, readout, attention, f) for the instrumented solve;
    it is no dynamics of its own, so it has no Euler twin.

    Args:
        dynamics: the block's dynamics F.
        kinetic_energy: λ_K.
        jacobian_norm: λ_J (0 skips the vector-Jacobian product; J stays 0).
        noise: distribution of ε, "gaussian" or "rademacher" (lower variance, same mean).
    """

    def __init__(self, dynamics: "AbstractDynamics", kinetic_energy: float, jacobian_norm: float,
                 noise: str = "gaussian") -> None:
        super().__init__()
        if noise not in NOISES:
            raise ValueError(f"unknown noise '{noise}'; valid: {', '.join(NOISES)}")
        self.inner = dynamics
        self.f = dynamics.f
        self.kinetic_energy, self.jacobian_norm, self.noise = kinetic_energy, jacobian_norm, noise
        self.tupled = False  # whether the inner state is a tuple (set by initial_state)
        self.eps: tuple[torch.Tensor, ...] = ()

    def _inner(self, y: tuple[torch.Tensor, ...]) -> Any:
        """The inner state inside an augmented one (or a tuple of inner components)."""
        return tuple(y[:-2]) if self.tupled else y[0]

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y0 = self.inner.initial_state(x)
        self.tupled = isinstance(y0, tuple)
        components = y0 if self.tupled else (y0,)
        self.eps = tuple(self._draw(c) for c in components)
        zero = x.new_zeros(x.shape[0])  # (B,)
        return (*components, zero, zero.clone())

    def _draw(self, like: torch.Tensor) -> torch.Tensor:
        if self.noise == "gaussian":
            return torch.randn_like(like)
        return torch.randint_like(like, 2) * 2 - 1

    def readout(self, y: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.inner.readout(self._inner(y))

    def attention(self, t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
        return self.inner.attention(t, self._inner(y))

    def forward(self, t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        differentiable = torch.is_grad_enabled()  # False inside odeint_adjoint's forward solve
        with torch.enable_grad():  # the vector-Jacobian product needs a graph even there
            states = tuple(s if s.requires_grad else s.detach().requires_grad_() for s in y[:-2])
            dy = self.inner(t, states if self.tupled else states[0])
            dys = dy if self.tupled else (dy,)
            dE = sum(d.flatten(1).pow(2).sum(1) for d in dys)  # (B,)
            if self.jacobian_norm:
                # create_graph: J must be differentiable w.r.t. the parameters (double backprop)
                vjps = torch.autograd.grad(dys, states, grad_outputs=self.eps, create_graph=differentiable,
                                           allow_unused=True)
                dJ = sum(v.flatten(1).pow(2).sum(1) for v in vjps if v is not None)
                dJ = dJ if torch.is_tensor(dJ) else torch.zeros_like(dE)
            else:
                dJ = torch.zeros_like(dE)
        out = (*dys, dE, dJ)
        return out if differentiable else tuple(o.detach() for o in out)

    def loss_term(self, y_T: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """λ_K mean_b E_b(T) + λ_J mean_b J_b(T): the block's term of the loss (0-d)."""
        E, J = y_T[-2], y_T[-1]
        return self.kinetic_energy * E.mean() + self.jacobian_norm * J.mean()

    @staticmethod
    def error_norm(y: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """torchdiffeq's default mixed norm (max of RMS norms) over the y components only."""
        return max(c.pow(2).mean().sqrt() for c in y[:-2])


def check_regularization(T: float, kinetic_energy: float, jacobian_norm: float, steer: float,
                         hutchinson_noise: str = "gaussian") -> None:
    """ValueError unless λ_K, λ_J >= 0, 0 <= steer < T and hutchinson_noise is one of NOISES."""
    for name, value in (("kinetic_energy", kinetic_energy), ("jacobian_norm", jacobian_norm)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if not 0 <= steer < T:
        raise ValueError(f"steer must satisfy 0 <= steer < T = {T:g}, got {steer}")
    if hutchinson_noise not in NOISES:
        raise ValueError(f"unknown hutchinson_noise '{hutchinson_noise}'; valid: {', '.join(NOISES)}")


def steer_end_time(T: float, b: float) -> float:
    """STEER's end time: uniform on [T - b, T + b], drawn from torch's global generator."""
    return T + b * (2.0 * float(torch.rand(())) - 1.0)


def regularization_loss(model: nn.Module) -> torch.Tensor | None:
    """The sum of the penalties of the model's last forward, None when no module has one.

    A module takes part by keeping its last training forward's penalty in `penalty` (a 0-d tensor
    with its graph; None in eval mode or when it is not regularised): ContinuousBlock does.
    """
    terms = [m.penalty for m in model.modules() if isinstance(getattr(m, "penalty", None), torch.Tensor)]
    return torch.stack(terms).sum() if terms else None
