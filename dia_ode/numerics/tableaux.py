"""The one table of explicit Runge-Kutta methods: the Butcher tableaux the controller lab integrates
with, and the stability polynomial R(z) of an explicit method. stiffness/stability.py reads both from
here, so every coefficient of the project has one source.

Fixed-step methods:
- euler (order 1); midpoint, explicit midpoint (order 2); heun2, Heun's trapezoidal method (order 2);
- heun3, Heun's third-order method (order 3); rk4, the classic order-4 method.
Adaptive pairs (an embedded lower-order solution gives the local error estimate):
- adaptive_heun: Heun-Euler 2(1), 2 stages; fehlberg2: Fehlberg's 2(1), 3 stages;
- bosh3: Bogacki & Shampine 3(2) (Appl. Math. Lett. 2, 1989), FSAL, 4 stages;
- dopri5: Dormand & Prince 5(4) (J. Comput. Appl. Math. 6, 1980), FSAL, 7 stages;
- tsit5: Tsitouras 5(4) (Comput. Math. Appl. 62, 2011), FSAL, 7 stages.
The names are torchdiffeq's where it has the method. Its rk4 is Kutta's 3/8 rule, not the classic
method; the two share their stability polynomial (every 4-stage method of order 4 has R = sum z^j / j!,
j <= 4), but not their steps.

Each tableau is checked against the order conditions in tests/test_numerics.py; dopri5, bosh3,
fehlberg2 and adaptive_heun also against torchdiffeq's tables, and one step of each fixed-step method
against torchdiffeq's step. The stability bound on the negative real axis (the largest r with
|R(-r)| <= 1) is what Hairer's stiffness test compares h*lambda with (numerics/stiffness_test.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F
from functools import cached_property

import numpy as np
from scipy.optimize import brentq


@dataclass(frozen=True, eq=False)  # arrays: identity is equality (one object per method)
class Tableau:
    """An explicit Runge-Kutta method.

    Attributes:
        name: registry name ("dopri5").
        c: nodes (s,).
        a: the strictly lower triangular matrix (s, s).
        b: weights of the propagated solution (s,).
        b_error: weights of the error estimate b - b_hat (s,), None for a fixed-step method.
        order: order of the propagated solution.
        error_order: order of the embedded solution (the error estimate is O(h^(error_order + 1))).
        fsal: the last stage is f at the new solution (First Same As Last): it is the next step's first.
        dense: weights d of a 4th-order continuous extension (dopri5: Hairer's, Solving ODEs I, II.6),
            None where the integrator interpolates by a cubic Hermite polynomial.
    """

    name: str
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    b_error: np.ndarray | None
    order: int
    error_order: int
    fsal: bool
    dense: np.ndarray | None = None

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @cached_property
    def real_stability_limit(self) -> float:
        """r of the interval [-r, 0] of the real axis inside the stability region |R(z)| <= 1."""
        return polynomial_real_axis_limit(tableau_polynomial(self.a, self.b))


def _tableau(name: str, rows: list[list], b: list, b_hat: list | None, order: int, error_order: int,
             fsal: bool, dense: list | None = None) -> Tableau:
    """A Tableau from exact (Fraction) or float entries; c is the row sums of a (the usual condition)."""
    s = len(b)
    a = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        a[i, :len(row)] = [float(v) for v in row]
    weights = np.array([float(v) for v in b])
    error = None if b_hat is None else weights - np.array([float(v) for v in b_hat])
    return Tableau(name, a.sum(axis=1), a, weights, error, order, error_order, fsal,
                   None if dense is None else np.array([float(v) for v in dense]))


_DOPRI5_ROWS = [
    [F(1, 5)],
    [F(3, 40), F(9, 40)],
    [F(44, 45), F(-56, 15), F(32, 9)],
    [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
    [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
    [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
]
# Tsitouras (2011), Table 1: the published coefficients (floats; the paper gives them to 16 digits).
_TSIT5_ROWS = [
    [0.161],
    [-0.008480655492356989, 0.335480655492357],
    [2.8971530571054935, -6.359448489975075, 4.3622954328695815],
    [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
    [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383],
    [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774],
]
_TSIT5_ERROR = [-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
                0.5823571654525552, -0.45808210592918697, 1.0 / 66.0]  # b - b_hat, as published

_HEUN_ROWS, _HEUN_B = [[F(1)]], [F(1, 2), F(1, 2)]  # heun2 and adaptive_heun: one method, with and without Euler

TABLEAUX: dict[str, Tableau] = {t.name: t for t in (
    _tableau("euler", [], [F(1)], None, order=1, error_order=1, fsal=False),
    _tableau("midpoint", [[F(1, 2)]], [F(0), F(1)], None, order=2, error_order=2, fsal=False),
    _tableau("heun2", _HEUN_ROWS, _HEUN_B, None, order=2, error_order=2, fsal=False),
    _tableau("heun3", [[F(1, 3)], [F(0), F(2, 3)]], [F(1, 4), F(0), F(3, 4)], None, order=3, error_order=3,
             fsal=False),
    _tableau("rk4", [[F(1, 2)], [F(0), F(1, 2)], [F(0), F(0), F(1)]], [F(1, 6), F(1, 3), F(1, 3), F(1, 6)], None,
             order=4, error_order=4, fsal=False),
    # Kutta's 3/8 rule: torchdiffeq's "rk4" (its rk4_alt_step_func), kept so the two can agree step for step
    _tableau("rk38", [[F(1, 3)], [F(-1, 3), F(1)], [F(1), F(-1), F(1)]], [F(1, 8), F(3, 8), F(3, 8), F(1, 8)], None,
             order=4, error_order=4, fsal=False),
    _tableau("adaptive_heun", _HEUN_ROWS, _HEUN_B, [F(1), F(0)], order=2, error_order=1, fsal=False),
    # the last stage is f at the embedded (first-order) solution, not at the propagated one: not FSAL
    _tableau("fehlberg2", [[F(1, 2)], [F(1, 256), F(255, 256)]], [F(1, 512), F(255, 256), F(1, 512)],
             [F(1, 256), F(255, 256), F(0)], order=2, error_order=1, fsal=False),
    _tableau("bosh3", [[F(1, 2)], [F(0), F(3, 4)], [F(2, 9), F(1, 3), F(4, 9)]], [F(2, 9), F(1, 3), F(4, 9), F(0)],
             [F(7, 24), F(1, 4), F(1, 3), F(1, 8)], order=3, error_order=2, fsal=True),
    _tableau("dopri5", _DOPRI5_ROWS, [*_DOPRI5_ROWS[-1], F(0)],
             [F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)],
             order=5, error_order=4, fsal=True,
             dense=[F(-12715105075, 11282082432), F(0), F(87487479700, 32700410799), F(-10690763975, 1880347072),
                    F(701980252875, 199316789632), F(-1453857185, 822651844), F(69997945, 29380423)]),
    _tableau("tsit5", _TSIT5_ROWS, [*_TSIT5_ROWS[-1], 0.0],
             [b - e for b, e in zip([*_TSIT5_ROWS[-1], 0.0], _TSIT5_ERROR)], order=5, error_order=4, fsal=True),
)}


def tableau_polynomial(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R(z)'s coefficients (lowest degree first) of the explicit method with matrix `a` and weights `b`:
    c_0 = 1 and c_j = b^T A^{j-1} 1, the expansion of 1 + z b^T (I - z A)^{-1} 1 for nilpotent A."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    coefficients, power = [1.0], np.ones(len(b))  # power = A^{j-1} 1
    for _ in range(len(b)):
        coefficients.append(float(b @ power))
        power = a @ power
    return np.trim_zeros(np.array(coefficients), "b")


def polynomial_real_axis_limit(coefficients: np.ndarray) -> float:
    """real_axis_limit of the stability polynomial with these coefficients (lowest degree first)."""
    r = np.linspace(0.0, 10.0, 10_001)  # every explicit method of this project meets the axis before -10
    values = np.abs(np.polynomial.polynomial.polyval(-r, coefficients))
    outside = np.nonzero(values > 1.0)[0]
    if not outside.size:
        return float(r[-1])
    return float(brentq(lambda x: abs(np.polynomial.polynomial.polyval(-x, coefficients)) - 1.0,
                        r[outside[0] - 1], r[outside[0]], xtol=1e-12))


def list_methods(adaptive: bool | None = None) -> list[str]:
    """Method names; adaptive=True only the embedded pairs, False only the fixed-step ones."""
    return [name for name, t in TABLEAUX.items() if adaptive is None or t.adaptive == adaptive]


def get_tableau(name: str) -> Tableau:
    """The method called `name`; ValueError lists the valid ones."""
    if name not in TABLEAUX:
        raise ValueError(f"unknown method '{name}'; valid: {', '.join(TABLEAUX)}")
    return TABLEAUX[name]
