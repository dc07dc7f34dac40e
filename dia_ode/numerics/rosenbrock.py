"""L-stable Rosenbrock methods, the stiff half of the integrator's switch: ROS2, RODAS3, RODAS4.

A Rosenbrock method solves one linear system per stage with one Jacobian J = f'(y_n) and one LU
factorisation per step, instead of Newton iterations. In Hairer & Wanner's transformed form (Solving
ODEs II, IV.7; the form of their RODAS code), with G = I / (h gamma) - J:

    Y_i = y_n + sum_{j<i} A_ij K_j
    G K_i = f(t_n + alpha_i h, Y_i) + sum_{j<i} (C_ij / h) K_j
    y_{n+1} = y_n + sum_j M_j K_j,    error = sum_j E_j K_j

A stage whose Y_i equals the previous stage's (new_f False) reuses that stage's f. The coefficients are
published facts: ROS2 (Verwer, Spee, Blom & Hundsdorfer, SIAM J. Sci. Comput. 20, 1999; order 2(1),
gamma = 1 + 1/sqrt 2), RODAS3 (Sandu et al., Atmos. Environ. 31, 1997; order 3(2), stiffly accurate)
and RODAS4 (Hairer & Wanner, Solving ODEs II, IV.7; order 4(3), stiffly accurate). All three are
L-stable. Written for autonomous fields, as every classic problem here is: the gamma_i h df/dt term
of a time-dependent field is left out, which lowers the order for such a field.

J comes from forward-mode autodiff: since the samples of a batch are independent, n Jacobian-vector
products with the unit vectors give every sample's J at once (n = the state size, small here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in the transformed form above.

    Attributes:
        name: as the trace names the method.
        gamma: the diagonal gamma of G.
        alpha: stage times as fractions of h.
        a, c: the strictly lower rows A_i., C_i. (row i has i entries).
        m, e: solution and error weights.
        new_f: whether stage i evaluates f (else it reuses stage i - 1's).
        error_order: the order of the embedded solution (the controller's exponent is k = error_order + 1).
        dense: rows d_2, d_3 of a continuous extension of order 3 (rosenbrock_dense), or None (the
            integrator then interpolates with a cubic Hermite polynomial).
    """

    name: str
    gamma: float
    alpha: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    c: tuple[tuple[float, ...], ...]
    m: tuple[float, ...]
    e: tuple[float, ...]
    new_f: tuple[bool, ...]
    error_order: int
    dense: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def stages(self) -> int:
        return len(self.m)

    @property
    def evaluations(self) -> int:
        """New evaluations of f per step (the first stage's f(y_n) the integrator already holds)."""
        return sum(self.new_f[1:])


_G2 = 1.0 + 1.0 / math.sqrt(2.0)
ROS2 = RosenbrockTableau(
    "ros2", _G2, alpha=(0.0, 1.0), a=((), (1.0 / _G2,)), c=((), (-2.0 / _G2,)),
    m=(1.5 / _G2, 0.5 / _G2), e=(0.5 / _G2, 0.5 / _G2), new_f=(True, True), error_order=1)

RODAS3 = RosenbrockTableau(
    "rodas3", 0.5, alpha=(0.0, 0.0, 1.0, 1.0),
    a=((), (0.0,), (2.0, 0.0), (2.0, 0.0, 1.0)),
    c=((), (4.0,), (1.0, -1.0), (1.0, -1.0, -8.0 / 3.0)),
    m=(2.0, 0.0, 1.0, 1.0), e=(0.0, 0.0, 0.0, 1.0), new_f=(True, False, True, True), error_order=2)

_RODAS4_M = (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.687886036105895)
RODAS4 = RosenbrockTableau(
    "rodas4", 0.25, alpha=(0.0, 0.386, 0.21, 0.63, 1.0, 1.0),
    a=((),
       (1.544,),
       (0.9466785280815826, 0.2557011698983284),
       (3.314825187068521, 2.896124015972201, 0.9986419139977817),
       _RODAS4_M,
       (*_RODAS4_M, 1.0)),
    c=((),
       (-5.6688,),
       (-2.430093356833875, -0.2063599157091915),
       (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
       (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.7089089320616),
       (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054)),
    m=(*_RODAS4_M, 1.0, 1.0), e=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0), new_f=(True,) * 6, error_order=3,
    dense=((10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823, 1.025137723295662),
           (-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386, -6.594389125716872)))

ROSENBROCK = {method.name: method for method in (ROS2, RODAS3, RODAS4)}


def get_rosenbrock(name: str) -> RosenbrockTableau:
    """A Rosenbrock method by name; ValueError naming the choices otherwise."""
    if name not in ROSENBROCK:
        raise ValueError(f"unknown stiff method '{name}'; valid: {', '.join(ROSENBROCK)}")
    return ROSENBROCK[name]


def local_jacobian(field: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """df/dy per sample, (B, n, n), of a batch field y (B, n) -> (B, n) whose samples are independent."""
    n = y.shape[-1]
    columns = []
    for j in range(n):
        tangent = torch.zeros_like(y)
        tangent[:, j] = 1.0
        columns.append(torch.func.jvp(field, (y,), (tangent,))[1])  # (B, n): column j of each J
    return torch.stack(columns, dim=-1)


def rosenbrock_step(method: RosenbrockTableau, field: Callable[[float, torch.Tensor], torch.Tensor],
                    y: torch.Tensor, f_y: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step of size h (B,) from y (B, n) with f(y) = f_y.

    Args:
        field: (alpha, y) -> f(t_n + alpha h, y), the field at a stage's time.

    Returns:
        {"y_new", "error", "jacobian" (B, n, n)} and, for a method with a continuous extension, "dense"
        (its two combinations of the stages, for rosenbrock_dense); the caller counts 1 Jacobian, 1 LU,
        method.stages linear solves and method.evaluations new evaluations of f.
    """
    jac = local_jacobian(lambda yy: field(0.0, yy), y)
    hy = h.to(y.dtype)[:, None]
    eye = torch.eye(y.shape[-1], dtype=y.dtype).expand_as(jac)
    lu, pivots = torch.linalg.lu_factor(eye / (method.gamma * hy[..., None]) - jac)
    ks: list[torch.Tensor] = []
    f_stage = f_y
    for i in range(method.stages):
        if i and method.new_f[i]:
            f_stage = field(method.alpha[i], y + _weighted(method.a[i], ks))
        rhs = f_stage + _weighted(method.c[i], ks) / hy if i else f_stage
        ks.append(torch.linalg.lu_solve(lu, pivots, rhs[..., None])[..., 0])
    step = {"y_new": y + _weighted(method.m, ks), "error": _weighted(method.e, ks), "jacobian": jac}
    if method.dense is not None:
        step["dense"] = [_weighted(row, ks) for row in method.dense]
    return step


def rosenbrock_dense(theta: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, d: list[torch.Tensor]) -> torch.Tensor:
    """The continuous extension of RODAS (Hairer & Wanner's rodas code), (B, T, n) at theta (B, T):
    y(theta) = (1 - theta) y0 + theta (y1 + (1 - theta)(d_2 + theta d_3))."""
    th = theta[..., None].to(y0.dtype)
    y0, y1, d2, d3 = (v[:, None] for v in (y0, y1, *d))
    return (1 - th) * y0 + th * (y1 + (1 - th) * (d2 + th * d3))


def _weighted(weights: tuple[float, ...], ks: list[torch.Tensor]) -> torch.Tensor:
    """sum_j w_j k_j over the nonzero weights (zeros(like k_0) when all are zero)."""
    total = torch.zeros_like(ks[0])
    for w, k in zip(weights, ks):
        if w:
            total = total.add(k, alpha=w)
    return total
