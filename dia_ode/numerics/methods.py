"""The integrator's one-step methods, each a small object whose step() returns a StepResult.

`RungeKutta` runs any explicit tableau of numerics/tableaux.py, `Rosenbrock` any linearly implicit
method of numerics/rosenbrock.py (the stiff switch's). A method owns its stages, its embedded error
estimate, its continuous extension and what a step costs; solve (integrate.py) owns everything around
them: error norms, controllers, the stiffness test, the switch, saving and result codes. This is
diffrax's split of a solver, so that a new method is one class and the loop never branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from dia_ode.numerics.dense_output import Interpolant
from dia_ode.numerics.rosenbrock import RosenbrockTableau, rosenbrock_dense, rosenbrock_step
from dia_ode.numerics.tableaux import Tableau

# field(t (B,) float64, y (B, n)) -> (B, n), already bound to the samples of the step
StepField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepResult:
    """One attempted step of a group of samples (B of them).

    Attributes:
        y_new: the proposed state (B, n).
        error: the embedded error estimate (B, n); None where the step has none (fixed steps).
        error_exponent: k of the controllers' factor ratio^(-1/k) (the estimate's order + 1).
        stages: the stage derivatives k_i and the states they were taken at (Hairer's stiffness test
            reads the last two); empty for a method that has no such pair to offer.
        stage_inputs: the states of the stages, one per stage derivative.
        next_stage: f(t_new, y_new) where the step computed it anyway (FSAL), else None.
        interpolant: the method's own continuous extension on this step; None: cubic Hermite.
        jacobian: the step's Jacobian (B, n, n) where the method formed one, else None.
        costs: what the step cost each sample, by Solution.stats name (nfe, num_jacobians, ...).
    """

    y_new: torch.Tensor
    error: torch.Tensor | None
    error_exponent: int
    stages: list[torch.Tensor] = field(default_factory=list)
    stage_inputs: list[torch.Tensor] = field(default_factory=list)
    next_stage: torch.Tensor | None = None
    interpolant: Interpolant | None = None
    jacobian: torch.Tensor | None = None
    costs: dict[str, int] = field(default_factory=dict)


class RungeKutta:
    """An explicit Runge-Kutta method from its tableau."""

    def __init__(self, tableau: Tableau) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.a_rows = [_terms(row) for row in tableau.a]
        self.b_terms = _terms(tableau.b)
        self.e_terms = None if tableau.b_error is None else _terms(tableau.b_error)
        self.c = [float(v) for v in tableau.c]
        self.dense = None if tableau.dense is None else _terms(tableau.dense)
        self.error_exponent = tableau.error_order + 1

    def step(self, f: StepField, t: torch.Tensor, y: torch.Tensor, f0: torch.Tensor, h: torch.Tensor,
             estimate_error: bool = True) -> StepResult:
        """One step of size h (B,) float64 from (t, y) with f(t, y) = f0.

        Args:
            estimate_error: form the embedded error estimate (False for fixed steps, which need none).
        """
        hy = h.to(y.dtype)[:, None]
        ks, inputs = [f0], [y]
        for i in range(1, self.tableau.stages):
            yi = y + hy * _combine(self.a_rows[i], ks)
            inputs.append(yi)
            ks.append(f(t + self.c[i] * h, yi))
        y_new = y + hy * _combine(self.b_terms, ks)
        error = hy * _combine(self.e_terms, ks) if self.e_terms is not None and estimate_error else None
        interpolant = None
        if self.dense is not None:  # the method's own continuous extension
            interpolant = lambda r, th: _dense(th, h[r], y[r], y_new[r], [k[r] for k in ks], self.dense)  # noqa: E731
        return StepResult(y_new, error, self.error_exponent, ks, inputs,
                          next_stage=ks[-1] if self.tableau.fsal else None, interpolant=interpolant,
                          costs={"nfe": self.tableau.stages - 1})


class Rosenbrock:
    """A linearly implicit (Rosenbrock) method: one Jacobian and one LU factorisation a step."""

    def __init__(self, tableau: RosenbrockTableau) -> None:
        self.tableau = tableau
        self.name = tableau.name
        self.error_exponent = tableau.error_order + 1

    def step(self, f: StepField, t: torch.Tensor, y: torch.Tensor, f0: torch.Tensor, h: torch.Tensor,
             estimate_error: bool = True) -> StepResult:
        """One step of size h (B,) float64 from (t, y) with f(t, y) = f0 (always with its error estimate)."""
        step = rosenbrock_step(self.tableau, lambda alpha, yy: f(t + alpha * h, yy), y, f0, h)
        y_new = step["y_new"]
        interpolant = None
        if "dense" in step:
            interpolant = lambda r, th: rosenbrock_dense(th, y[r], y_new[r], [d[r] for d in step["dense"]])  # noqa: E731
        return StepResult(y_new, step["error"], self.error_exponent, interpolant=interpolant,
                          jacobian=step["jacobian"],
                          costs={"nfe": self.tableau.evaluations, "num_jacobians": 1,
                                 "num_linear_solves": self.tableau.stages})


def _terms(weights) -> list[tuple[int, float]]:
    """(stage, weight) of the nonzero weights, as Python floats: combining stages is the inner loop,
    and a float times a tensor is cheaper than indexing a weight tensor."""
    return [(j, float(w)) for j, w in enumerate(weights) if w != 0]


def _combine(terms: list[tuple[int, float]], ks: list[torch.Tensor]) -> torch.Tensor:
    """sum_j w_j k_j over the terms."""
    total = ks[terms[0][0]] * terms[0][1]
    for j, w in terms[1:]:
        total = total.add(ks[j], alpha=w)
    return total


def _dense(theta: torch.Tensor, h: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, ks: list[torch.Tensor],
           d: list[tuple[int, float]]) -> torch.Tensor:
    """A continuous extension of order 4 from the step's stages (Hairer's DOPRI5 form), (B, T, n):
    y(theta) = y0 + theta (r2 + (1 - theta)(r3 + theta (r4 + (1 - theta) r5)))."""
    th = theta[..., None].to(y0.dtype)
    hk = h.to(y0.dtype)[:, None]
    r2 = y1 - y0
    r3 = hk * ks[0] - r2
    r4 = r2 - hk * ks[-1] - r3
    r5 = hk * _combine(d, ks)
    r2, r3, r4, r5 = (r[:, None] for r in (r2, r3, r4, r5))
    return y0[:, None] + th * (r2 + (1 - th) * (r3 + th * (r4 + (1 - th) * r5)))
