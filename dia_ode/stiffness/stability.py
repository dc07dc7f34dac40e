"""Stability functions of explicit Runge-Kutta methods, from their Butcher tableaus.

A Runge-Kutta step of size h applied to the linear test equation y' = λ y multiplies y by R(z),
z = h λ, with R(z) = 1 + z b^T (I - z A)^{-1} 1 (Hairer & Wanner, Solving ODEs II, IV.2). For an
explicit method A is strictly lower triangular, so R is the polynomial 1 + sum_j (b^T A^{j-1} 1) z^j
of degree at most s (the number of stages). The step is linearly stable for the mode λ when z lies in
the stability region |R(z)| <= 1; explicit Euler's is the disk |1 + z| <= 1. The tableaus below are
those torchdiffeq integrates with (tests/test_stiffness_continuous.py checks bosh3, fehlberg2 and
dopri5 against torchdiffeq's own tables, and euler / rk4 against their textbook polynomials).
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np

from dia_ode.numerics.tableaux import TABLEAUX as METHODS
from dia_ode.numerics.tableaux import polynomial_real_axis_limit, tableau_polynomial


def _tableau(rows: list[list[F]], b: list[F]) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) as float64 arrays from the strictly lower rows of A (row i has i entries)."""
    s = len(b)
    a = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        a[i, :len(row)] = [float(v) for v in row]
    return a, np.array([float(v) for v in b])


# torchdiffeq method -> (A, b) of the solution it propagates (for the adaptive pairs: the higher-order
# one, torchdiffeq's c_sol). heun2 and adaptive_heun are both Heun's 2-stage method; torchdiffeq's
# rk4 is Kutta's 3/8 rule, whose stability polynomial every 4-stage order-4 method shares.
TABLEAUS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "euler": (METHODS["euler"].a, METHODS["euler"].b),
    "midpoint": _tableau([[F(1, 2)]], [F(0), F(1)]),
    "heun2": _tableau([[F(1)]], [F(1, 2), F(1, 2)]),
    "adaptive_heun": _tableau([[F(1)]], [F(1, 2), F(1, 2)]),
    "heun3": _tableau([[F(1, 3)], [F(0), F(2, 3)]], [F(1, 4), F(0), F(3, 4)]),
    "fehlberg2": _tableau([[F(1, 2)], [F(1, 256), F(255, 256)]], [F(1, 512), F(255, 256), F(1, 512)]),
    "bosh3": (METHODS["bosh3"].a, METHODS["bosh3"].b),
    "rk4": _tableau([[F(1, 3)], [F(-1, 3), F(1)], [F(1), F(-1), F(1)]], [F(1, 8), F(3, 8), F(3, 8), F(1, 8)]),
    "dopri5": (METHODS["dopri5"].a, METHODS["dopri5"].b),  # the lab's tables: one copy of the numbers
}


def stability_methods() -> list[str]:
    """The methods whose stability function is known here."""
    return list(TABLEAUS)


def stability_polynomial(method: str) -> np.ndarray:
    """Coefficients c_0 .. c_s of R(z) = sum_j c_j z^j (lowest degree first) of an explicit method.

    Raises:
        ValueError: a method without a tableau here (implicit Adams, dopri8, ...), listing the valid ones.
    """
    if method not in TABLEAUS:
        raise ValueError(f"no stability function for method '{method}'; valid: {', '.join(TABLEAUS)}")
    return tableau_polynomial(*TABLEAUS[method])


def stability_function(method: str, z: np.ndarray | complex) -> np.ndarray:
    """R(z) of `method` at the complex points z (any shape)."""
    return np.polynomial.polynomial.polyval(np.asarray(z, dtype=np.complex128), stability_polynomial(method))


def inside_region(method: str, z: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Whether each z lies in the stability region |R(z)| <= 1 (+ tol for round-off on the boundary)."""
    return np.abs(stability_function(method, z)) <= 1.0 + tol


def real_axis_limit(method: str) -> float:
    """The length r of the interval [-r, 0] of the negative real axis inside the region (2 for Euler)."""
    return polynomial_real_axis_limit(stability_polynomial(method))
