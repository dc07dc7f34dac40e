"""Attention in continuous depth: a state-dependent time re-scaling a(t) ⊙ f, and its Euler twins.

A self-attention module that multiplies a residual branch is a step size (theory/dia.md); in
continuous depth it becomes a per-channel re-scaling of the vector field. Without memory (SE,
"Squeeze-and-Excitation Networks", arXiv 1709.01507) dx/dt = SE(f) ⊙ f. DIA ("DIANet", arXiv
1905.10671) has a memory m = (h, c); its continuous twin integrates the joint state (x, m):

    dm/dt = Cell(GAP f(t, x), m) - m
    dx/dt = Cell_h(GAP f(t, x), m) ⊙ f(t, x)

whose explicit Euler step of size 1 is exactly the discrete DIA stage (theory/continuous_dia.md).
Each dynamics hands out the controller of its Euler step, so solvers.tied.euler_stage builds the
weight-tied discrete twin from the very same modules.
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.attention.dia import DIAUnit
from dia_ode.attention.dia_cell import State
from dia_ode.attention.registry import ATTENTIONS, get_attention
from dia_ode.solvers.continuous import AbstractDynamics, PlainDynamics
from dia_ode.solvers.controllers import AbstractStageController



class GatedDynamics(AbstractDynamics):
    """dx/dt = SAM(f(t, x)) ⊙ f(t, x): a memoryless attention as a time re-scaling.

    Args:
        f: the vector field f(t, x).
        sam: a self-attention module mapping f (B, C, H, W) to a multiplier broadcastable to f.
    """

    def __init__(self, f: nn.Module, sam: nn.Module) -> None:
        super().__init__()
        self.f = f
        self.sam = sam

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        f = self.f(t, x)  # (B, C, H, W)
        return self.sam(f) * f

    def attention(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.sam(self.f(t, x))  # (B, C, 1, 1)

    def euler_controller(self, dt: float) -> AbstractStageController:
        return EulerAttention(self.sam, dt)


class DIADynamics(AbstractDynamics):
    """The continuous DIA on the joint state y = (x, h, c), memory starting at h = c = 0.

    Args:
        f: the vector field f(t, x).
        unit: the DIA unit (squeeze + DIA-LSTM cell) whose one step is read as an Euler step of m.
    """

    def __init__(self, f: nn.Module, unit: DIAUnit) -> None:
        super().__init__()
        self.f = f
        self.unit = unit

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (x, *self.unit.init_state(x))  # x (B, C, H, W), h (B, C), c (B, C)

    def readout(self, y: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return y[0]

    def forward(self, t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, h, c = y
        f = self.f(t, x)  # (B, C, H, W)
        a, (h_cell, c_cell) = self.unit(f, (h, c))  # a (B, C, 1, 1): the cell's output h at this state
        return a * f, h_cell - h, c_cell - c

    def attention(self, t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, h, c = y
        return self.unit(self.f(t, x), (h, c))[0]  # (B, C, 1, 1)

    def euler_controller(self, dt: float) -> AbstractStageController:
        return EulerDIA(self.unit, dt)


class EulerAttention(AbstractStageController):
    """Euler step dt of dx/dt = SAM(f) ⊙ f: h_k = dt * SAM(f_k), one module for every step."""

    def __init__(self, sam: nn.Module, dt: float) -> None:
        super().__init__()
        self.sam = sam
        self.dt = dt

    def forward(self, k: int, f_k: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.dt * self.sam(f_k), state


class EulerDIA(AbstractStageController):
    """Euler step dt of the continuous DIA: h_k = dt * a_k and m_{k+1} = m_k + dt (Cell(z_k, m_k) - m_k).

    With dt = 1 this is solvers.DIAStageController exactly (torch.lerp with weight 1 returns the cell's
    output bit for bit), i.e. the discrete DIA stage.
    """

    def __init__(self, unit: DIAUnit, dt: float) -> None:
        super().__init__()
        self.unit = unit
        self.dt = dt

    def init(self, x0: torch.Tensor) -> State:
        return self.unit.init_state(x0)

    def forward(self, k: int, f_k: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        a, cell = self.unit(f_k, state)  # a (B, C, 1, 1); cell = Cell(z_k, m_k), (B, C) each
        m_next = tuple(torch.lerp(m, m_cell, self.dt) for m, m_cell in zip(state, cell))
        return self.dt * a, m_next


def make_dynamics(attention: str, f: nn.Module, channels: int, **options) -> AbstractDynamics:
    """Build continuous dynamics around the vector field f by attention name (attention.ATTENTIONS).

    Args:
        attention: a row of the attention table with a continuous form ("none", "se", "eca", "dia").
        f: the vector field f(t, x) with `channels` output channels.
        channels: C of f's output.
        **options: the attention's options (reduction for se; reduction, sam ("se" or "eca"),
            cell_state, output_gate, eca_kernel for dia).
    """
    spec = get_attention(attention)
    if not spec.continuous:
        valid = [name for name, row in ATTENTIONS.items() if row.continuous]
        raise ValueError(f"attention '{attention}' has no continuous form; valid: {', '.join(valid)}")
    if spec.scope == "recurrent" and options.get("sam", "se") not in ("se", "eca"):
        raise ValueError(f"continuous DIA takes sam 'se' or 'eca', not '{options['sam']}' "
                         "(CBAM's spatial gate has a BatchNorm)")
    if spec.scope == "constant":
        spec.check(options)
        if options:
            raise ValueError(f"attention 'none' takes no option {', '.join(map(repr, sorted(options)))}")
        return PlainDynamics(f)
    return _BY_SCOPE[spec.scope](f, spec.module(channels, **options))


# scope -> right-hand side: memoryless attentions re-scale time, a recurrent one adds its memory to the state.
_BY_SCOPE = {"per_block": GatedDynamics, "shared": GatedDynamics, "recurrent": DIADynamics}
