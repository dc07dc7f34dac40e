"""Stiffness indices: numbers that say how stiff x' = f(x) is at a point or along a trajectory.

- Spectral radius ρ(J) = max |λ|: an explicit method with step h is stable on the linearisation only
  if every h λ lies in its stability region (Hairer & Wanner, Solving ODEs II, IV.2); on the negative
  real axis the region reaches -2 (explicit Euler), -2.7853 (classic RK4), -3.3066 (DOPRI5), so
  `step_index` = h ρ / limit > 1 means the step is too long for stability (for eigenvalues near the
  negative real axis).
- Stiffness ratio max |Re λ| / min |Re λ| over Re λ < 0 (Lambert, Numerical Methods for Ordinary
  Differential Systems, 1991, ch. 6), with Lambert's caveats: it ignores eigenvalues with Re λ >= 0 and
  says nothing for a scalar problem.
- Logarithmic norm μ2(J) = λ_max((J + J^T)/2) (Söderlind, "The logarithmic norm. History and modern
  theory", BIT 46, 2006): the initial growth rate d/dt ||δx|| <= μ2 ||δx|| of perturbations.
- Local Lipschitz estimate ρ = ||f(x_b) - f(x_a)|| / ||x_b - x_a||, the form Hairer's DOPRI5 uses to
  detect stiffness (Hairer, Nørsett & Wanner, Solving ODEs I, II.10; Hairer & Wanner II, IV.2): read
  along a trajectory (`local_stiffness`), or at one point along the direction that a few quotients
  themselves pick out (`dominant_quotient`), which follows the fast mode as DOPRI5's own does.
The definitions and the checks that pin them down are in theory/stiffness.md.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh

from dia_ode.stiffness.jacobian import VectorField, dense_jacobian, jacobian_operator
from dia_ode.stiffness.eigen import choose_method, default_tol, limited_threads, start_vector
from dia_ode.stiffness.stability import real_axis_limit, stability_methods

# Where the stability region of each explicit method meets the negative real axis: |R(-limit)| = 1
# for its stability polynomial R, computed from numerics' tableaux (one source: euler 2, rk4
# 2.7853, dopri5 3.3066; tests/test_stiffness.py recomputes them from torchdiffeq's tables).
STABILITY_LIMITS = {method: real_axis_limit(method) for method in stability_methods()}

# Eigenvalues with |Re λ| <= ZERO_TOL * max |λ| count as zero in the stiffness ratio. Dense float64
# eigenvalues carry errors of about 1e-16 ||J|| (times their condition), so 1e-10 is safely above the
# noise while ratios up to 1e10 (van der Pol with mu = 1e4 has ~1e9) stay visible.
ZERO_TOL = 1e-10


def zero_tolerance(dtype: torch.dtype) -> float:
    """ZERO_TOL for eigenvalues of a Jacobian evaluated in `dtype`: at least 1e3 eps (1.2e-4 for
    float32), since float32 products make ARPACK's and the dense eigenvalues noisy at eps ||J||."""
    return max(ZERO_TOL, 1e3 * torch.finfo(dtype).eps)


def spectral_radius(eigenvalues: np.ndarray) -> float:
    """max |λ| over the given eigenvalues (exact only if they include the largest: which="LM")."""
    return float(np.max(np.abs(eigenvalues)))


def stiffness_ratio(eigenvalues: np.ndarray, tol: float = ZERO_TOL) -> float:
    """Lambert's stiffness ratio max |Re λ| / min |Re λ| over the eigenvalues with Re λ < 0.

    Eigenvalues with |Re λ| <= tol * max |λ| are treated as zero and excluded (conserved quantities,
    dead ReLUs and round-off produce them, and they would make the ratio infinite).

    Args:
        eigenvalues: the eigenvalues (all of them, or the k computed: then the ratio is over those).
        tol: relative threshold below which Re λ counts as zero.

    Returns:
        The ratio (>= 1); 1.0 when exactly one eigenvalue remains; NaN when none does.
    """
    values = np.asarray(eigenvalues, dtype=np.complex128)
    if values.size == 0:
        return float("nan")
    threshold = tol * np.max(np.abs(values))
    decaying = -values.real[values.real < -threshold]
    if decaying.size == 0:
        return float("nan")
    return float(decaying.max() / decaying.min())


def step_index(h: float | np.ndarray, rho: float | np.ndarray, method: str = "euler") -> float | np.ndarray:
    """h ρ / limit: how far the step h is along the negative real axis of `method`'s stability region
    (> 1: an eigenvalue -ρ would be unstable). Broadcasts over arrays.

    Raises:
        ValueError: unknown method (valid: the keys of STABILITY_LIMITS, i.e. stability_methods()).
    """
    if method not in STABILITY_LIMITS:
        raise ValueError(f"unknown method '{method}'; valid: {', '.join(STABILITY_LIMITS)}")
    index = np.asarray(h, dtype=np.float64) * np.asarray(rho, dtype=np.float64) / STABILITY_LIMITS[method]
    return float(index) if index.ndim == 0 else index


def log_norm(f: VectorField, x: torch.Tensor, *, method: str = "auto", tol: float | None = None,
             threads: int | None = 1) -> float:
    """The logarithmic 2-norm μ2(J) = largest eigenvalue of (J + J^T)/2, J the Jacobian of f at x.

    Args:
        f: vector field mapping a tensor shaped like x to the same shape.
        x: the point.
        method: "auto" (dense for small n, as in spectrum), "arpack" (eigsh on the symmetric part built
            from J v and J^T v, never forming J) or "dense".
        tol: ARPACK relative tolerance (None: default_tol of x's dtype).
        threads: torch threads while computing (None: leave as set); BLAS always runs on one.
    """
    n = x.numel()
    with limited_threads(threads):
        if choose_method(n, 1, method) == "dense":
            jac = dense_jacobian(f, x)  # (n, n) float64
            return float(np.linalg.eigvalsh(0.5 * (jac + jac.T))[-1])
        op = jacobian_operator(f, x)
        sym = LinearOperator((n, n), matvec=lambda v: 0.5 * (op.matvec(v) + op.rmatvec(v)), dtype=np.float64)
        (mu,) = eigsh(sym, k=1, which="LA", v0=start_vector(n), return_eigenvectors=False,
                      tol=default_tol(x.dtype) if tol is None else tol)
    return float(mu)


def difference_quotient(x_a: torch.Tensor, x_b: torch.Tensor, f_a: torch.Tensor, f_b: torch.Tensor,
                        dims: Sequence[int]) -> torch.Tensor:
    """||f_b - f_a|| / ||x_b - x_a|| with 2-norms over `dims`, in float64 (differences of nearby
    states cancel digits; float32 would lose them). NaN where x_b = x_a."""
    num = torch.linalg.vector_norm(f_b.double() - f_a.double(), dim=tuple(dims))
    den = torch.linalg.vector_norm(x_b.double() - x_a.double(), dim=tuple(dims))
    return torch.where(den > 0, num / den, torch.full_like(num, float("nan")))


def dominant_quotient(f: VectorField, x: torch.Tensor, iterations: int = 4, rel_step: float | None = None) -> float:
    """The local estimate ||f(x + ε d) - f(x - ε d)|| / ||2 ε d|| along the direction the quotients pick.

    Why not the quotient between two points of a trajectory (`local_stiffness`): on a stiff problem
    the solution moves along the slow manifold, so x_{k+1} - x_k has almost no component along the fast
    mode and the quotient sees the slow eigenvalue (van der Pol, mu = 1000, 4001 points: median 8e-4
    against a spectral radius of ~1,700). DOPRI5's estimate works because its stages differ along the
    mode its own errors amplify; here that amplification is made explicit: starting from d_0 = f(x),
    each quotient's difference q_i = (f(x + ε d_i) - f(x - ε d_i)) / 2 ~ ε J d_i is the next direction,
    i.e. a power iteration on J with f evaluations only. Central differences, because a one-sided one
    adds ε f''/2: at Robertson's y0 (ρ = 0.04, the y2^2 term 3e7) it made the estimate 53x too large.
    After a few of them ρ -> |λ_max| for a dominant real eigenvalue (the error shrinks like
    |λ_2 / λ_1|^i); otherwise it stays between the smallest |λ| and ||J||_2 like every difference
    quotient.

    Args:
        f: vector field mapping a tensor shaped like x to the same shape.
        x: the point (float64 recommended: the differences cancel digits).
        iterations: quotients taken (two f evaluations each); the last one is returned.
        rel_step: ε = rel_step * max(1, ||x||). None: eps^(1/3) of x's dtype (6.1e-6 in float64,
            4.9e-3 in float32), the step that balances the rounding error of a central difference
            (~ eps / ε) against its truncation error (~ ε^2); a fixed 1e-7 is below float32's
            resolution (a float32 linear field with |λ_max| = 1000 read 863).

    Returns:
        ρ >= 0 (0 when f is locally constant).
    """
    x = x.detach()
    with torch.no_grad():
        f_x = f(x)
        d = f_x if torch.linalg.vector_norm(f_x) > 0 else torch.ones_like(x)  # at an equilibrium: any direction
        rel_step = torch.finfo(x.dtype).eps ** (1 / 3) if rel_step is None else rel_step
        eps = rel_step * max(1.0, float(torch.linalg.vector_norm(x)))
        rho = 0.0
        for _ in range(iterations):
            norm = torch.linalg.vector_norm(d)
            if norm == 0:
                return 0.0
            step = eps * d / norm
            q = 0.5 * (f(x + step) - f(x - step))  # ε J d / ||d|| up to O(ε^3): no curvature bias
            rho, d = float(torch.linalg.vector_norm(q)) / eps, q
    return rho


def _stack(points: Sequence | np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.stack([p if torch.is_tensor(p) else torch.as_tensor(np.asarray(p)) for p in points])


def local_stiffness(states: Sequence | np.ndarray | torch.Tensor,
                    values: Sequence | np.ndarray | torch.Tensor) -> np.ndarray:
    """ρ_k = ||f(x_{k+1}) - f(x_k)|| / ||x_{k+1} - x_k|| along a trajectory of ONE vector field f.

    On a linear field f(x) = A x this is ||A d|| / ||d|| for d = x_{k+1} - x_k, so |λ| when d lies
    along an eigenvector, and at most ||A||_2 (Hairer, Nørsett & Wanner I, II.10).

    Args:
        states: K points x_k, a sequence of arrays/tensors or one array with leading dim K.
        values: the K values f(x_k), shaped like states.

    Returns:
        float64 array (K - 1,); NaN where two consecutive states coincide.
    """
    x, fx = _stack(states), _stack(values)
    if x.shape != fx.shape:
        raise ValueError(f"states {tuple(x.shape)} and values {tuple(fx.shape)} must have the same shape")
    x, fx = x.reshape(len(x), -1), fx.reshape(len(fx), -1)  # (K, m)
    return difference_quotient(x[:-1], x[1:], fx[:-1], fx[1:], dims=(1,)).cpu().numpy()
