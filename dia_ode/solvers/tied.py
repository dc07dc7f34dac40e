"""The weight-tied discrete twin of a continuous block: L Euler steps of the same dynamics.

    x_{k+1} = x_k + h_k ⊙ f(t_k, x_k),   t_k = k dt,   dt = T / L,   k = 0 .. L-1

is the residual stage (solvers.stage.ResidualStage) whose L blocks share one vector field f and whose
controller is the dynamics' Euler controller (a constant step dt, dt * SAM(f) or the Euler step of
the continuous DIA). It converges to the continuous block's x(T) like 1/L (explicit Euler is first
order) and, being a ResidualStage, is read by solvers.trace like every other stage.
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.solvers.continuous import AbstractDynamics
from dia_ode.solvers.stage import AbstractBlock, ResidualStage


class FieldBlock(AbstractBlock):
    """Block k of a stage built from a vector field: branch f(t_k, x), identity shortcut.

    Args:
        f: the vector field f(t, x); the same module in every block of a tied stage.
        t: the block's time t_k (a Python float, i.e. float64).
    """

    def __init__(self, f: nn.Module, t: float) -> None:
        super().__init__()
        self.f = f
        self.t = t

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.f(self.t, x)  # the time t_k is the field's only condition

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"t={self.t:g}"


def euler_stage(dynamics: AbstractDynamics, T: float, num_steps: int) -> ResidualStage:
    """The explicit Euler method with step T / num_steps on `dynamics`, as a weight-tied residual stage.

    The stage shares dynamics.f and the dynamics' attention modules (the same objects), so a
    continuous block built on `dynamics` and this stage are two solvers for one model.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = T / num_steps
    blocks = [FieldBlock(dynamics.f, k * dt) for k in range(num_steps)]  # t_k = k dt in float64
    return ResidualStage(blocks, dynamics.euler_controller(dt))
