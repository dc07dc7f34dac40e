"""Stability functions of explicit Runge-Kutta methods, from their Butcher tableaux.

A Runge-Kutta step of size h applied to the linear test equation y' = λ y multiplies y by R(z),
z = h λ, with R(z) = 1 + z b^T (I - z A)^{-1} 1 (Hairer & Wanner, Solving ODEs II, IV.2). For an
explicit method A is strictly lower triangular, so R is the polynomial 1 + sum_j (b^T A^{j-1} 1) z^j
of degree at most s (the number of stages). The step is linearly stable for the mode λ when z lies in
the stability region |R(z)| <= 1; explicit Euler's is the disk |1 + z| <= 1.

The tableaux are numerics/tableaux.py's table, the one the project's integrator steps with: no copy
of a coefficient here. Its names are torchdiffeq's, so a continuous block's method names its row
(for an adaptive pair R is that of the propagated solution, torchdiffeq's c_sol); torchdiffeq's rk4
is Kutta's 3/8 rule where the table's is the classic method, and both have the same R.
tests/test_stiffness_continuous.py checks bosh3, fehlberg2, adaptive_heun and dopri5 against
torchdiffeq's own tables, and euler / rk4 against their textbook polynomials.
"""

from __future__ import annotations

import numpy as np

from dia_ode.numerics.tableaux import TABLEAUX, Tableau, tableau_polynomial


def stability_methods() -> list[str]:
    """The methods whose stability function is known here: every method of numerics.TABLEAUX."""
    return list(TABLEAUX)


def _tableau(method: str) -> Tableau:
    if method not in TABLEAUX:
        raise ValueError(f"no stability function for method '{method}'; valid: {', '.join(TABLEAUX)}")
    return TABLEAUX[method]


def stability_polynomial(method: str) -> np.ndarray:
    """Coefficients c_0 .. c_s of R(z) = sum_j c_j z^j (lowest degree first) of an explicit method.

    Raises:
        ValueError: a method without a tableau (implicit Adams, dopri8, ...), listing the valid ones.
    """
    tableau = _tableau(method)
    return tableau_polynomial(tableau.a, tableau.b)


def stability_function(method: str, z: np.ndarray | complex) -> np.ndarray:
    """R(z) of `method` at the complex points z (any shape)."""
    return np.polynomial.polynomial.polyval(np.asarray(z, dtype=np.complex128), stability_polynomial(method))


def inside_region(method: str, z: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Whether each z lies in the stability region |R(z)| <= 1 (+ tol for round-off on the boundary)."""
    return np.abs(stability_function(method, z)) <= 1.0 + tol


def real_axis_limit(method: str) -> float:
    """The length r of the interval [-r, 0] of the negative real axis inside the region (2 for Euler)."""
    return _tableau(method).real_stability_limit
