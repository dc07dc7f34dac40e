"""Small float64 vector fields shared by the integrator's tests (a module, not a test file)."""

from __future__ import annotations

import torch
from torch import nn

f64 = torch.float64


class MLPField(nn.Module):
    """A small time-dependent vector field dy/dt = W2 tanh(W1 y + w t + b) + b2 (float64); per-sample rates
    through `args`."""

    def __init__(self, n: int = 3, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.state_in = nn.Linear(n, width).double()  # reads y itself: backward keeps the state it was given
        self.time_in = nn.Linear(1, width, bias=False).double()
        self.out = nn.Linear(width, n).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor, rate: torch.Tensor | None = None) -> torch.Tensor:
        t = t.expand(y.shape[0]) if t.dim() == 0 else t  # torchdiffeq passes one time, dia_ode one per sample
        out = self.out(torch.tanh(self.state_in(y) + self.time_in(t[:, None].to(y.dtype))))
        return out if rate is None else out * rate[:, None]


class RecordingField(MLPField):
    """MLPField that records torchdiffeq's accepted step ends (its hook; its fixed-step solvers take none)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: list[float] = []

    def callback_accept_step(self, t0, y0, dt):
        self.accepted.append(float((t0 + dt).detach()))


def gradients(field: nn.Module, y0: torch.Tensor, y_end: torch.Tensor) -> list[torch.Tensor]:
    loss = (y_end ** 2).sum() + y_end.sum()
    return torch.autograd.grad(loss, [y0, *field.parameters()])


def y0_batch(batch: int = 4, n: int = 3) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, batch * n, dtype=f64).reshape(batch, n).requires_grad_(True)
