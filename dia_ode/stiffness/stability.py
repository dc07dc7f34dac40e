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
from scipy.optimize import brentq


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
    "euler": _tableau([], [F(1)]),
    "midpoint": _tableau([[F(1, 2)]], [F(0), F(1)]),
    "heun2": _tableau([[F(1)]], [F(1, 2), F(1, 2)]),
    "adaptive_heun": _tableau([[F(1)]], [F(1, 2), F(1, 2)]),
    "heun3": _tableau([[F(1, 3)], [F(0), F(2, 3)]], [F(1, 4), F(0), F(3, 4)]),
    "fehlberg2": _tableau([[F(1, 2)], [F(1, 256), F(255, 256)]], [F(1, 512), F(255, 256), F(1, 512)]),
    "bosh3": _tableau([[F(1, 2)], [F(0), F(3, 4)], [F(2, 9), F(1, 3), F(4, 9)]],
                      [F(2, 9), F(1, 3), F(4, 9), F(0)]),
    "rk4": _tableau([[F(1, 3)], [F(-1, 3), F(1)], [F(1), F(-1), F(1)]], [F(1, 8), F(3, 8), F(3, 8), F(1, 8)]),
    "dopri5": _tableau([
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
    ], [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0)]),
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


def tableau_polynomial(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R(z)'s coefficients (lowest degree first) of the explicit method with matrix `a` and weights `b`:
    c_0 = 1 and c_j = b^T A^{j-1} 1, the expansion of 1 + z b^T (I - z A)^{-1} 1 for nilpotent A."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    coefficients, power = [1.0], np.ones(len(b))  # power = A^{j-1} 1
    for _ in range(len(b)):
        coefficients.append(float(b @ power))
        power = a @ power
    return np.trim_zeros(np.array(coefficients), "b")


def stability_function(method: str, z: np.ndarray | complex) -> np.ndarray:
    """R(z) of `method` at the complex points z (any shape)."""
    return np.polynomial.polynomial.polyval(np.asarray(z, dtype=np.complex128), stability_polynomial(method))


def inside_region(method: str, z: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Whether each z lies in the stability region |R(z)| <= 1 (+ tol for round-off on the boundary)."""
    return np.abs(stability_function(method, z)) <= 1.0 + tol


def real_axis_limit(method: str) -> float:
    """The length r of the interval [-r, 0] of the negative real axis inside the region (2 for Euler)."""
    return polynomial_real_axis_limit(stability_polynomial(method))


def polynomial_real_axis_limit(coefficients: np.ndarray) -> float:
    """real_axis_limit of the stability polynomial with these coefficients (lowest degree first)."""
    r = np.linspace(0.0, 10.0, 10_001)  # every explicit method of this project meets the axis before -10
    values = np.abs(np.polynomial.polynomial.polyval(-r, coefficients))
    outside = np.nonzero(values > 1.0)[0]
    if not outside.size:
        return float(r[-1])
    return float(brentq(lambda x: abs(np.polynomial.polynomial.polyval(-x, coefficients)) - 1.0,
                        r[outside[0] - 1], r[outside[0]], xtol=1e-12))
