"""The continuous block: dy/dt = F(t, y) over [0, T] solved by torchdiffeq or by dia_ode's own integrator.

The continuous-depth twin of a residual stage ("Neural Ordinary Differential Equations", Chen et al.,
arXiv 1806.07366): instead of L Euler steps x_{k+1} = x_k + h_k f(x_k), an adaptive or fixed-grid
solver integrates the dynamics from t = 0 to t = T. The engine is an option (solvers/backends.py):
torchdiffeq (`odeint`, or `odeint_adjoint` for O(1) memory; the default) or the project's integrator
(`backend="dia_ode"`, solvers/dia_ode_backend.py: per-sample steps, any error controller, the stiffness
test on every step). torchdiffeq is instrumented without editing it: evaluations are counted in the
vector field's forward, steps through its callbacks. In training a block can also regularise its
dynamics (RNODE's kinetic and Jacobian penalties, STEER's random end time; solvers/regularization.py).
See theory/continuous_dia.md.

Statistics (`ContinuousBlock.stats`, keys STAT_KEYS, a fresh dict at every forward), per sample: on
torchdiffeq every sample takes every step, on dia_ode the per-sample counts are averaged over the batch
(so nfe_forward means the same on both: evaluations of F per sample, also the solve's cost in
whole-batch evaluations):
    nfe_forward         evaluations of F made by the forward solve
    nfe_backward        evaluations of F made while backpropagating this forward's output: with the
                        adjoint, the adjoint solve's evaluations (each with one vector-Jacobian
                        product); with direct backprop 0, since autograd replays the recorded graph
                        and never calls F again
    num_steps           steps attempted by the forward solve (= num_accepted + num_rejected)
    num_accepted        accepted steps (every step of a fixed-grid method)
    num_rejected        rejected steps (always 0 for fixed-grid methods)
    num_steps_backward  steps attempted by the adjoint solve (0 with direct backprop)
    nfe_forward_max     the most evaluations of F any one sample needed (= nfe_forward on torchdiffeq)
    num_stiff_steps     accepted steps that Hairer's stiffness test found stability-limited
                        (numerics.StiffnessTest.limited)
    num_tested_steps    accepted steps the stiffness test examined: num_accepted with dopri5 on either
                        engine, 0 where no test ran (a method without the test's stage pair). The
                        stiff fraction is num_stiff_steps / num_tested_steps, undefined at 0 (never 0/N:
                        0 stiff steps of an untested solve are not a measurement)

The test's own reading, h·λ of every sample's accepted steps, is kept beside them (`h_lambda`): the
solver record of training (solvers/statistics.py) takes its median, at no extra evaluation.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from dia_ode.numerics.stiffness_test import StiffnessTest, h_lambda_of, stage_differences
from dia_ode.solvers import dia_ode_backend
from dia_ode.solvers.backends import (ADAPTIVE_METHODS, DEFAULT_BACKEND, DEFAULT_CONTROLLER, FIXED_GRID_METHODS,
                                      SolveFailed, SolverChoice, StepBudgetExceeded, StepLog, grid_steps)
from dia_ode.solvers.controllers import AbstractStageController, ConstantStep
from dia_ode.solvers.regularization import RegularizedDynamics, check_regularization, steer_end_time

STAT_KEYS = ("nfe_forward", "nfe_backward", "num_steps", "num_accepted", "num_rejected", "num_steps_backward",
             "nfe_forward_max", "num_stiff_steps", "num_tested_steps")
__all__ = ["ADAPTIVE_METHODS", "FIXED_GRID_METHODS", "STAT_KEYS", "AbstractDynamics", "ContinuousBlock",
           "PlainDynamics", "SolveFailed", "StepBudgetExceeded", "StepLog", "uniform_grid"]


class AbstractDynamics(nn.Module, abc.ABC):
    """The right-hand side F(t, y) of a continuous block, built around a vector field f(t, x).

    The state y is the feature map x itself or a tuple that starts with x (DIA adds its memory).
    Each dynamics also knows its explicit Euler discretisation as a stage controller, so a
    weight-tied residual stage (solvers.tied.euler_stage) is its discrete twin. Never instantiated.
    """

    f: nn.Module

    def initial_state(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """y(0) for the block input x (B, C, H, W)."""
        return x

    def readout(self, y: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The feature map x inside a state y."""
        return y

    def attention(self, t: torch.Tensor, y: Any) -> torch.Tensor | None:
        """The multiplier a(t) on f at state y (None when there is no attention)."""
        return None

    @abc.abstractmethod
    def euler_controller(self, dt: float) -> AbstractStageController:
        """The stage controller that makes a residual stage the explicit Euler method with step dt."""

    @abc.abstractmethod
    def forward(self, t: torch.Tensor, y: Any) -> Any:
        """The time derivative dy/dt at (t, y).

        t is float64: a 0-d tensor on torchdiffeq (one time for the batch), (B,) on dia_ode (one time per
        sample, which may differ with per-sample steps; the batch holds the samples still running)."""


class PlainDynamics(AbstractDynamics):
    """dx/dt = f(t, x): the plain ODE-Net; its Euler twin is a stage with constant step dt."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.f(t, x)

    def euler_controller(self, dt: float) -> AbstractStageController:
        return ConstantStep(dt)


class _AbstractInstrumented(nn.Module):
    """The function torchdiffeq sees during one solve: counts evaluations, logs steps, keeps the budget.

    A fresh one is made per solve, so a later forward cannot mix its counts with the backward of an
    earlier one. Fixed-grid solvers only call callback_step (every step is accepted); adaptive ones
    also call the accept and reject callbacks, which only _AdaptiveInstrumented has (torchdiffeq
    warns when a solver is given callbacks it does not call).
    """

    def __init__(self, block: "ContinuousBlock", dynamics: nn.Module, stats: dict, log: StepLog) -> None:
        super().__init__()
        self.dynamics = dynamics  # the block's, or its RegularizedDynamics for this solve
        self.stats, self.log = stats, log
        self.budget, self.T, self.method = block.max_num_steps, block.end_time, block.method
        self.recorder = block.recorder
        self.phase = "forward"  # the block switches it to "backward" once the forward solve returns

    def forward(self, t: torch.Tensor, y: Any) -> Any:
        self.stats[f"nfe_{self.phase}"] += 1
        return self.dynamics(t, y)

    def _count_step(self, key: str, t0: torch.Tensor, which: str) -> None:
        self.stats[key] += 1
        if self.budget is not None and self.stats[key] > self.budget:
            raise StepBudgetExceeded(
                f"{which} ODE solve ({self.method}) exceeded max_num_steps={self.budget} at t={float(t0):.6g} "
                f"of [0, {self.T:g}]")

    def _log(self, t0: torch.Tensor, dt: torch.Tensor, accepted: bool) -> None:
        self.log.t.append(t0.detach().to(torch.float64))
        self.log.dt.append(dt.detach().to(torch.float64))
        self.log.accepted.append(accepted)

    def _accept(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self.stats["num_accepted"] += 1
        self._log(t0, dt, True)
        if self.recorder is not None:  # evaluations outside the solve: not counted in the stats
            with torch.no_grad():
                x = self.dynamics.readout(y0)
                a = self.dynamics.attention(t0, y0)
                f = self.dynamics.f(t0, x)
            dt = dt.to(x.dtype)
            self.recorder.record(x, f, dt if a is None else dt * a, t0)

    def callback_step_adjoint(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self._count_step("num_steps_backward", t0, "adjoint")


class _FixedGridInstrumented(_AbstractInstrumented):

    def callback_step(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self._count_step("num_steps", t0, "forward")
        self._accept(t0, y0, dt)


class _AdaptiveInstrumented(_AbstractInstrumented):
    """Also runs Hairer's stiffness test on every accepted step where the method has two stages at one
    node (dopri5: its 6th and 7th, both at t + h, the 5th and 6th evaluation after callback_step since
    k_1 is carried over), per sample like dia_ode's solve: `finish` fills num_stiff_steps,
    num_tested_steps, the log's h_lambda (the first sample's) and `h_lambda` (every sample's accepted
    steps). The pair is found by counting evaluations, not by comparing times, so a solve on a GPU is
    not synchronised at every evaluation."""

    STAGE_PAIR = {"dopri5": (5, 6)}  # evaluations after callback_step that are the test's two stages

    def __init__(self, block: "ContinuousBlock", dynamics: nn.Module, stats: dict, log: StepLog,
                 state_parts=lambda y: y) -> None:
        super().__init__(block, dynamics, stats, log)
        self.test = StiffnessTest(dia_ode_backend.DIA_ODE_TABLEAUX[self.method]) if self.method in self.STAGE_PAIR \
            else None
        self.state_parts = state_parts  # the state's parts the test measures (not RNODE's integrals)
        self._evaluations = 0  # evaluations since the step began
        self._first_stage: tuple[torch.Tensor, torch.Tensor] | None = None  # (g, k) of the pair's first stage
        self._differences: tuple[torch.Tensor, torch.Tensor] | None = None  # (B,) each, of the step being tried
        self._accepted: list[torch.Tensor] = []  # h * lambda (B,) per accepted step with an estimate
        self._log_rows: list[int | None] = []  # per attempted step: its row in _accepted, None if none

    def forward(self, t: torch.Tensor, y: Any) -> Any:
        out = super().forward(t, y)
        if self.test is not None and self.phase == "forward":
            self._evaluations += 1
            first, second = self.STAGE_PAIR[self.method]
            if self._evaluations in (first, second):
                with torch.no_grad():
                    state, field = self.state_parts(y), self.state_parts(out)
                    pack = dia_ode_backend.StatePacking.of(state).pack
                    g, k = pack(state).detach(), pack(field).detach()
                if self._evaluations == first:
                    self._first_stage = (g, k)
                else:
                    self._differences = stage_differences(self._first_stage[1], k, self._first_stage[0], g)
        return out

    def callback_step(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self._count_step("num_steps", t0, "forward")
        self._evaluations, self._differences = 0, None

    def callback_accept_step(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self._accept(t0, y0, dt)
        if self.test is not None:
            self._log_rows.append(None if self._differences is None else len(self._accepted))
            if self._differences is not None:
                self._accepted.append(h_lambda_of(dt.detach().double(), *self._differences))

    def callback_reject_step(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self.stats["num_rejected"] += 1
        self._log(t0, dt, False)
        if self.test is not None:
            self._log_rows.append(None)

    def finish(self) -> torch.Tensor:
        """After the forward solve: the stiffness counts into the stats (per-sample means) and the log, and
        every sample's h * lambda of the accepted steps (1-d float64, CPU; empty without the test)."""
        if self.test is None or not self._accepted:
            return torch.zeros(0, dtype=torch.float64)
        h_lambda = torch.stack(self._accepted).cpu()  # (steps, B): one transfer for the solve
        self.stats["num_stiff_steps"] = float(self.test.limited(h_lambda).double().sum(0).mean())
        self.stats["num_tested_steps"] = float(len(self._accepted))
        sample0 = h_lambda[:, 0].tolist()
        self.log.h_lambda = [math.nan if row is None else sample0[row] for row in self._log_rows]
        h_lambda = h_lambda.flatten()
        return h_lambda[h_lambda.isfinite()]  # NaN where the two stages coincided (a field that is zero)


def uniform_grid(step_size: float):
    """torchdiffeq grid_constructor: n = ceil(|T| / step_size) equal steps, end point exact.

    Replaces torchdiffeq's own step_size grid, whose ceil((t1 - t0) / step_size + 1) can add a
    spurious tiny last step when T / step_size is an integer only up to rounding (T = 1, step 1/49: 50 steps).
    Works in either direction (the adjoint solve runs from T back to 0).
    """
    def grid(func, y0: Any, t: torch.Tensor) -> torch.Tensor:
        n = grid_steps(float(t[-1] - t[0]), step_size)
        ts = t[0] + (t[-1] - t[0]) * torch.arange(n + 1, dtype=t.dtype, device=t.device) / n  # float64
        ts[-1] = t[-1]
        return ts
    return grid


class ContinuousBlock(nn.Module):
    """x(T) from x(0) = x by integrating the dynamics over [0, T] with torchdiffeq or dia_ode's integrator.

    Args:
        dynamics: the right-hand side (PlainDynamics, GatedDynamics, DIADynamics, ...).
        T: the end time (the "depth" of the block).
        method: a torchdiffeq method, one of ADAPTIVE_METHODS or FIXED_GRID_METHODS (on dia_ode the same
            method by its numerics tableau: solvers/backends.py).
        rtol: relative tolerance (adaptive methods).
        atol: absolute tolerance (adaptive methods).
        step_size: step of a fixed-grid method (required there; the grid has ceil(T / step_size)
            equal steps).
        adjoint: backpropagate with the adjoint method (odeint_adjoint) instead of through the solver.
        max_num_steps: budget of attempted steps per solve (forward and adjoint separately; per sample on
            dia_ode); past it StepBudgetExceeded is raised. None: no budget.
        adjoint_rtol: relative tolerance of the adjoint solve (adaptive methods, adjoint only); None:
            rtol.
        adjoint_atol: absolute tolerance of the adjoint solve; None: atol.
        adjoint_seminorm: measure the adjoint solve's error on the state and its adjoint only, not
            on the parameters' adjoint (torchdiffeq's adjoint_options norm="seminorm",
            "Hey, that's not an ODE", Kidger et al., arXiv 2009.09457).
        kinetic_energy: λ_K of RNODE's ∫||F||² dt penalty (training only; 0: none).
        jacobian_norm: λ_J of RNODE's Hutchinson ∫||ε^T ∂F/∂y||² dt penalty (training only; 0: none).
        steer: STEER's b: a training forward integrates to T' ~ U[T - b, T + b] (0 <= b < T); eval
            always to T.
        hutchinson_noise: distribution of the Jacobian penalty's probe ε, "gaussian" or "rademacher"
            (same mean, lower variance).
        backend: "torchdiffeq" or "dia_ode" (solvers/backends.py); on dia_ode the adjoint gives every
            sample its own backward steps and always measures their error with the seminorm
            (numerics/adjoint.py); RNODE's penalties are not taken there yet (STEER is).
        controller: dia_ode's error controller: "i" (torchdiffeq's rule), "pi", "pid[:PRESET]" or "dia:RUN".
        per_sample: on dia_ode with an adaptive method, each sample on its own steps; False: one step for
            the batch, as torchdiffeq takes.

    After a forward, `stats` holds the counts of that forward (see STAT_KEYS in the module docstring)
    and `log` its per-step record; backward adds nfe_backward and num_steps_backward to the same dict.
    On dia_ode, `sample_stats` also holds every sample's counts (numerics.Solution.stats, (B,) each) and
    `step_trace` every attempted step (numerics.Trace); both are None on torchdiffeq. `h_lambda` holds
    Hairer's h·λ of every sample's accepted steps (1-d float64 on the CPU; empty without the test).
    `end_time` is the T it integrated to and `penalty` its regularisation term (a 0-d tensor in a
    regularised training forward, else None; solvers.regularization_loss sums it over a model).
    """

    def __init__(self, dynamics: AbstractDynamics, T: float = 1.0, method: str = "dopri5", rtol: float = 1e-3,
                 atol: float = 1e-3, step_size: float | None = None, adjoint: bool = False,
                 max_num_steps: int | None = 1000, adjoint_rtol: float | None = None,
                 adjoint_atol: float | None = None, adjoint_seminorm: bool = False, kinetic_energy: float = 0.0,
                 jacobian_norm: float = 0.0, steer: float = 0.0, hutchinson_noise: str = "gaussian",
                 backend: str = DEFAULT_BACKEND, controller: str = DEFAULT_CONTROLLER,
                 per_sample: bool = False) -> None:
        super().__init__()
        if method not in ADAPTIVE_METHODS + FIXED_GRID_METHODS:
            raise ValueError(f"unknown method '{method}'; valid: {', '.join(ADAPTIVE_METHODS + FIXED_GRID_METHODS)}")
        if method in FIXED_GRID_METHODS and step_size is None:
            raise ValueError(f"fixed-grid method '{method}' needs step_size")
        if method in ADAPTIVE_METHODS and step_size is not None:
            raise ValueError(f"step_size applies to fixed-grid methods, not to adaptive '{method}' (use rtol, atol)")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if not T > 0:
            raise ValueError(f"T must be > 0, got {T}")
        if max_num_steps is not None and max_num_steps < 1:
            raise ValueError(f"max_num_steps must be >= 1 or None, got {max_num_steps}")
        _check_adjoint_options(method, adjoint, adjoint_rtol, adjoint_atol, adjoint_seminorm)
        check_regularization(T, kinetic_energy, jacobian_norm, steer, hutchinson_noise)
        # the error controller is a plain object, not a submodule: a learned one is fixed, not trained here
        self.error_controller = SolverChoice(backend, controller, per_sample).check(method)
        if backend == "dia_ode":
            dia_ode_backend.check_supported(adjoint, kinetic_energy, jacobian_norm)
        self.backend, self.controller, self.per_sample = backend, controller, per_sample
        self.dynamics = dynamics
        self.T, self.method, self.rtol, self.atol = float(T), method, rtol, atol
        self.step_size, self.adjoint, self.max_num_steps = step_size, adjoint, max_num_steps
        self.adjoint_rtol, self.adjoint_atol, self.adjoint_seminorm = adjoint_rtol, adjoint_atol, adjoint_seminorm
        self.kinetic_energy, self.jacobian_norm, self.steer = kinetic_energy, jacobian_norm, steer
        self.hutchinson_noise = hutchinson_noise
        self.recorder = None  # set by solvers.trace while it records; never saved
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.log = StepLog()
        self.sample_stats, self.step_trace = None, None
        self.h_lambda = torch.zeros(0, dtype=torch.float64)
        self.end_time, self.penalty = self.T, None

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.stats, self.log, self.penalty = dict.fromkeys(STAT_KEYS, 0), StepLog(), None
        self.sample_stats, self.step_trace = None, None
        self.h_lambda = torch.zeros(0, dtype=torch.float64)
        self.end_time = steer_end_time(self.T, self.steer) if self.training and self.steer else self.T
        if self.backend == "dia_ode":
            return dia_ode_backend.forward(self, x)
        regularized = self.training and (self.kinetic_energy > 0 or self.jacobian_norm > 0)
        dynamics = (RegularizedDynamics(self.dynamics, self.kinetic_energy, self.jacobian_norm, self.hutchinson_noise)
                    if regularized else self.dynamics)
        if self.adaptive:  # the stiffness test measures the state, not the penalties' integrals
            parts = (lambda y: tuple(y[:-2])) if regularized else (lambda y: y)
            func = _AdaptiveInstrumented(self, dynamics, self.stats, self.log, state_parts=parts)
        else:
            func = _FixedGridInstrumented(self, dynamics, self.stats, self.log)
        t = torch.tensor([0.0, self.end_time], dtype=torch.float64, device=x.device)  # float64: solvers accumulate time
        options = {} if self.adaptive else {"grid_constructor": uniform_grid(self.step_size)}
        adjoint_options = dict(options, **({"norm": "seminorm"} if self.adjoint_seminorm else {}))
        if regularized and self.adaptive:
            options["norm"] = RegularizedDynamics.error_norm  # the penalties' integrals take no part in the steps
        y0 = dynamics.initial_state(x)
        if self.adjoint:
            ys = odeint_adjoint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method, options=options,
                                adjoint_rtol=self.adjoint_rtol, adjoint_atol=self.adjoint_atol,
                                adjoint_options=adjoint_options)
        else:
            ys = odeint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method, options=options)
        func.phase = "backward"
        self.stats["nfe_forward_max"] = self.stats["nfe_forward"]  # every sample takes every step
        if self.adaptive:
            self.h_lambda = func.finish()
        y_T = tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1]
        if regularized:
            self.penalty = dynamics.loss_term(y_T)
        x_T = dynamics.readout(y_T)
        if self.recorder is not None:
            self.recorder.finish(x_T)
        return x_T

    def extra_repr(self) -> str:
        solver = f"rtol={self.rtol}, atol={self.atol}" if self.adaptive else f"step_size={self.step_size}"
        extras = [f"{name}={value}" for name, value, default in (
            ("adjoint_rtol", self.adjoint_rtol, None), ("adjoint_atol", self.adjoint_atol, None),
            ("adjoint_seminorm", self.adjoint_seminorm, False), ("kinetic_energy", self.kinetic_energy, 0.0),
            ("jacobian_norm", self.jacobian_norm, 0.0), ("steer", self.steer, 0.0),
            ("hutchinson_noise", self.hutchinson_noise, "gaussian"), ("backend", self.backend, DEFAULT_BACKEND),
            ("controller", self.controller, DEFAULT_CONTROLLER), ("per_sample", self.per_sample, False))
            if value != default]
        return ", ".join([f"T={self.T}, method={self.method}, {solver}, adjoint={self.adjoint}, "
                          f"max_num_steps={self.max_num_steps}", *extras])


def _check_adjoint_options(method: str, adjoint: bool, adjoint_rtol: float | None, adjoint_atol: float | None,
                           seminorm: bool) -> None:
    """ValueError for adjoint options without the adjoint, on a fixed grid, or tolerances <= 0."""
    given = [name for name, value in (("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol),
                                      ("adjoint_seminorm", seminorm)) if value not in (None, False)]
    if given and not adjoint:
        raise ValueError(f"{', '.join(given)} apply to the adjoint solve: set adjoint=True")
    if given and method in FIXED_GRID_METHODS:
        raise ValueError(f"{', '.join(given)} apply to adaptive methods, not to fixed-grid '{method}'")
    for name, value in (("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
