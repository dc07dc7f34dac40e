"""ROS2, the L-stable two-stage Rosenbrock method the integrator switches to on a stiff stretch.

Verwer, Spee, Blom & Hundsdorfer (SIAM J. Sci. Comput. 20, 1999), for y' = f(y) with J = f'(y_n),
gamma = 1 + 1/sqrt(2):

    (I - gamma h J) k1 = f(y_n)
    (I - gamma h J) k2 = f(y_n + h k1) - 2 k1
    y_{n+1} = y_n + h (3/2 k1 + 1/2 k2)          (order 2, L-stable)
    y_hat   = y_n + h k1                          (order 1: the error estimate y_{n+1} - y_hat)

One Jacobian, one LU factorisation and two linear solves per step, two evaluations of f (the first is
the derivative at y_n the integrator already holds). The method is written for autonomous fields, as
every classic problem here is; for a time-dependent field the missing df/dt term lowers its order.
J comes from forward-mode autodiff: since the samples of a batch are independent, n Jacobian-vector
products with the unit vectors give every sample's J at once (n = the state size, small here).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

GAMMA = 1.0 + 1.0 / math.sqrt(2.0)
ERROR_ORDER = 1  # the embedded solution's order: the controller's exponent is k = 2


def local_jacobian(field: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """df/dy per sample, (B, n, n), of a batch field y (B, n) -> (B, n) whose samples are independent."""
    n = y.shape[-1]
    columns = []
    for j in range(n):
        tangent = torch.zeros_like(y)
        tangent[:, j] = 1.0
        columns.append(torch.func.jvp(field, (y,), (tangent,))[1])  # (B, n): column j of each J
    return torch.stack(columns, dim=-1)


def ros2_step(field: Callable[[torch.Tensor], torch.Tensor], field_at_stage: Callable[[torch.Tensor], torch.Tensor],
              y: torch.Tensor, f_y: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ROS2 step of size h (B,) from y (B, n) with f(y) = f_y.

    Args:
        field: y -> f(t_n, y), the field at the step's start (for the Jacobian).
        field_at_stage: y -> f(t_n + h, y) (the second stage).

    Returns:
        {"y_new", "error" (y_new - y_hat), "jacobian" (B, n, n)}; the caller counts 1 Jacobian, 1 LU,
        2 linear solves and 1 new evaluation of f.
    """
    jac = local_jacobian(field, y)
    hy = h.to(y.dtype)[:, None]
    eye = torch.eye(y.shape[-1], dtype=y.dtype).expand_as(jac)
    lu, pivots = torch.linalg.lu_factor(eye - GAMMA * hy[..., None] * jac)
    k1 = torch.linalg.lu_solve(lu, pivots, f_y[..., None])[..., 0]
    k2 = torch.linalg.lu_solve(lu, pivots, (field_at_stage(y + hy * k1) - 2.0 * k1)[..., None])[..., 0]
    y_new = y + hy * (1.5 * k1 + 0.5 * k2)
    return {"y_new": y_new, "error": hy * (0.5 * k1 + 0.5 * k2), "jacobian": jac}
