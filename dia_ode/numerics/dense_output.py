"""Dense output: the solution between accepted steps, and writing the save times a step passes.

Every method has the cubic Hermite interpolant (order 3, from the values and slopes at both ends);
a method with a continuous extension of its own (dopri5's, rodas4's) hands the solver that one instead
(numerics/methods.py).
"""

from __future__ import annotations

from typing import Callable

import torch

# interpolant(rows, theta (R, T)) -> (R, T, n): a step's continuous extension for some of its samples
Interpolant = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def hermite(theta: torch.Tensor, h: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor, y1: torch.Tensor,
            f1: torch.Tensor) -> torch.Tensor:
    """Cubic Hermite interpolation on a step (order 3: a dense output every method here supports).

    theta (B, T) in [0, 1], h (B,), y0/f0/y1/f1 (B, n) -> (B, T, n)."""
    th = theta[..., None].to(y0.dtype)
    h = h.to(y0.dtype)[:, None, None]
    h00, h10 = (1 + 2 * th) * (1 - th) ** 2, th * (1 - th) ** 2
    h01, h11 = th ** 2 * (3 - 2 * th), th ** 2 * (th - 1)
    return h00 * y0[:, None] + h10 * h * f0[:, None] + h01 * y1[:, None] + h11 * h * f1[:, None]


def save_inside_step(out: torch.Tensor, save: torch.Tensor, idx: torch.Tensor, accept: torch.Tensor,
                     ta: torch.Tensor, h: torch.Tensor, t_new: torch.Tensor, y_new: torch.Tensor,
                     interpolate: Interpolant) -> None:
    """Write the save times inside each accepted step (ta, t_new] into out.

    interpolate(rows, theta (R, T)) -> (R, T, n) evaluates the step's continuous extension for the rows
    (indices into idx) at the fractions theta of their steps."""
    if not save.numel() or not _any_save_between(save, ta, t_new):
        return
    inside = (save[None] > ta[:, None]) & (save[None] <= t_new[:, None]) & accept[:, None]  # (Ba, T)
    if not bool(inside.any()):
        return
    rows = inside.any(dim=1).nonzero().flatten()
    theta = ((save[None] - ta[rows, None]) / h[rows, None]).clamp(0.0, 1.0)
    values = interpolate(rows, theta)
    values = torch.where((save[None] == t_new[rows, None])[..., None], y_new[rows][:, None], values)
    mask = inside[rows]
    block = out[idx[rows]]
    block[mask] = values[mask]
    out[idx[rows]] = block


def _any_save_between(save: torch.Tensor, ta: torch.Tensor, t_new: torch.Tensor) -> bool:
    """Whether a save time lies in (min ta, max t_new]: two reductions, where the full (batch x save
    times) mask of save_inside_step is five operations on a step that most often saves nothing."""
    return bool(((save > ta.min()) & (save <= t_new.max())).any())
