"""The engines of a continuous block and the options that choose one: `backend`, `controller`, `per_sample`.

A continuous block (solvers/continuous.py) and the probability-flow sampler solve on one of two engines:

- "torchdiffeq", the reference: one step for the whole batch by its own rule (the elementary error
  controller), the adjoint, and RNODE's penalties integrated alongside the state;
- "dia_ode", the project's integrator (numerics.solve, run by solvers/dia_ode_backend.py): each sample
  on its own steps (`per_sample=True`: a sample that has finished leaves the batch) or torchdiffeq's
  batch rule (`per_sample=False`), any error controller, Hairer's stiffness test on every step, and a
  result code per sample.

The error controller is named by a string: "i" (the elementary controller with torchdiffeq's rule, the
default), "pi" (Hairer's PI), "pid" or "pid:PRESET" (Söderlind's filters, numerics.PID_PRESETS; "pid"
is H312PID), or "dia:RUN" (the learned DIA controller saved by a `dia-ode controllers train` run). This
module is the one source of these choices and of their validation: the models' options, `dia-ode sample`
and `dia-ode controllers` call it, and its SolverOptionError names the option at fault.

Method names are torchdiffeq's on both engines and mean the same method there: "rk4" is Kutta's 3/8 rule
(numerics' "rk38"), and "dopri5" carries torchdiffeq's error estimate (Shampine's, 2/3 of Dormand and
Prince's b - b_hat), so that dopri5 in batch mode takes torchdiffeq's steps. Both engines share the
fixed-step grid (grid_steps), the per-step record (StepLog) and the error of a solve that gave up
(StepBudgetExceeded; SolveFailed on dia_ode).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dia_ode.numerics import (PID_PRESETS, AbstractErrorController, PIDController, Tableau,
                              create_error_controller, get_tableau)
from dia_ode.numerics.dia_controller import load_dia_controller
from dia_ode.util import did_you_mean

BACKENDS = ("torchdiffeq", "dia_ode")
DEFAULT_BACKEND = "torchdiffeq"
DEFAULT_CONTROLLER = "i"
CONTROLLER_FORMS = ("i", "pi", "pid[:PRESET]", "dia:RUN")

# torchdiffeq 0.2.5's methods by kind (its own table is private); tests check this split against it.
ADAPTIVE_METHODS = ("dopri5", "bosh3", "fehlberg2", "adaptive_heun", "dopri8")
FIXED_GRID_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


def _torchdiffeq_dopri5() -> Tableau:
    """dopri5 with torchdiffeq's error estimate: Shampine's embedded solution, whose b - b_hat is 2/3 of
    Dormand and Prince's (tests/test_integrate_gradients.py checks the steps against torchdiffeq's)."""
    dopri5 = get_tableau("dopri5")
    return dataclasses.replace(dopri5, b_error=dopri5.b_error * 2 / 3)


# a block's method name -> the numerics tableau of the same method (module docstring); dopri8 and the
# Adams methods have none, so they stay on torchdiffeq
DIA_ODE_TABLEAUX: dict[str, Tableau] = {
    "dopri5": _torchdiffeq_dopri5(), "rk4": get_tableau("rk38"),
    **{name: get_tableau(name) for name in ("bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2",
                                             "heun3")}}


def grid_steps(span: float, step_size: float) -> int:
    """n = ceil(|span| / step_size) equal steps of a fixed-step method (both engines take this grid)."""
    return max(1, math.ceil(abs(span) / step_size - 1e-9))  # 1e-9: span / step_size integral up to rounding


class StepBudgetExceeded(RuntimeError):
    """A solve attempted more than max_num_steps steps (the dynamics blew up or became too stiff)."""


class SolveFailed(StepBudgetExceeded):
    """Some samples of a dia_ode solve ended without success (their step budget, a non-finite state, a step
    size underflow). A StepBudgetExceeded, so that whatever stops a run on a blown torchdiffeq solve (the
    trainer's one-line message, the report's terminal errors) stops on it too."""


@dataclass
class StepLog:
    """Per-step record of the last forward solve of one block.

    Attributes:
        t: start time of every attempted step, float64 0-d tensors.
        dt: size of every attempted step, float64 0-d tensors.
        accepted: whether each step was accepted.
        h_lambda: Hairer's estimate of h times the dominant eigenvalue's modulus on each step (dopri5 on
            either engine; NaN on a rejected step or where the method has no estimate).

    On dia_ode with per_sample=True the samples take different steps: the log holds the first sample's
    (every sample's are in ContinuousBlock.step_trace). The states, fields and attention at the accepted
    steps are what solvers.trace records.
    """

    t: list[torch.Tensor] = field(default_factory=list)
    dt: list[torch.Tensor] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)
    h_lambda: list[float] = field(default_factory=list)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The record as 1-d CPU tensors: t, dt and h_lambda (float64; h_lambda NaN where not recorded),
        accepted (bool)."""
        def stack(values):
            return torch.stack(values).cpu() if values else torch.zeros(0, dtype=torch.float64)
        h_lambda = torch.tensor(self.h_lambda, dtype=torch.float64) if self.h_lambda else \
            torch.full((len(self.t),), math.nan, dtype=torch.float64)
        return {"t": stack(self.t), "dt": stack(self.dt), "accepted": torch.tensor(self.accepted, dtype=torch.bool),
                "h_lambda": h_lambda}

    def __len__(self) -> int:
        return len(self.t)


class SolverOptionError(ValueError):
    """A bad backend, controller, per_sample or method choice; `option` names the option at fault (a
    model option's name: the command line turns it into its flag)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def parse_controller(spec: str) -> AbstractErrorController:
    """The error controller a name gives: "i", "pi", "pid" / "pid:PRESET" or "dia:RUN" (module docstring).

    Raises:
        SolverOptionError: an unknown name or preset, a preset on a controller that takes none, or a RUN
            that is not a trained controller run (option "controller").
    """
    if not isinstance(spec, str):
        raise SolverOptionError("controller", f"controller takes a name ({', '.join(CONTROLLER_FORMS)}), got {spec!r}")
    name, colon, argument = spec.partition(":")
    if name == "pid":
        if argument and argument not in PID_PRESETS:
            raise SolverOptionError("controller", f"controller '{spec}': unknown PID preset '{argument}'"
                                                  f"{did_you_mean(argument, PID_PRESETS)}; "
                                                  f"valid: {', '.join(PID_PRESETS)}")
        return PIDController(argument) if argument else PIDController()
    if name == "dia":
        if not argument:
            raise SolverOptionError("controller", "controller 'dia' needs the trained controller's run directory: "
                                                  "dia:RUN (a `dia-ode controllers train` run)")
        try:
            return load_dia_controller(argument)
        except ValueError as err:
            raise SolverOptionError("controller", f"controller '{spec}': {err}") from None
    if name in ("i", "pi") and not colon:
        return create_error_controller(name)
    if name in ("i", "pi"):
        raise SolverOptionError("controller", f"controller '{name}' takes no preset ':{argument}' (only pid:PRESET "
                                              f"does; dia:RUN takes a run directory)")
    names = [form.partition(":")[0].partition("[")[0] for form in CONTROLLER_FORMS]  # i, pi, pid, dia
    raise SolverOptionError("controller", f"unknown controller '{spec}'{did_you_mean(name, names)}; "
                                          f"valid: {', '.join(CONTROLLER_FORMS)} (PRESET one of "
                                          f"{', '.join(PID_PRESETS)}; RUN a `dia-ode controllers train` run)")


@dataclass(frozen=True)
class SolverChoice:
    """The engine of one solve, checked against its method (`check`).

    Attributes:
        backend: "torchdiffeq" or "dia_ode".
        controller: the error controller's name (module docstring); "i" on torchdiffeq, whose rule it is.
        per_sample: each sample on its own steps (dia_ode, adaptive methods); False: one step for the batch.
    """

    backend: str = DEFAULT_BACKEND
    controller: str = DEFAULT_CONTROLLER
    per_sample: bool = False

    def check(self, method: str) -> AbstractErrorController | None:
        """Validate the choice for `method` (a torchdiffeq method name) and build its error controller.

        Returns:
            The error controller on dia_ode (None on torchdiffeq, which has its own).

        Raises:
            SolverOptionError: an unknown backend or controller, per_sample that is not a bool, or a
                combination that would be ignored or cannot run (a controller or per_sample on torchdiffeq
                or with a fixed-step method, a method without a dia_ode tableau), naming the option.
        """
        if self.backend not in BACKENDS:
            raise SolverOptionError("backend", f"unknown backend '{self.backend}'"
                                               f"{did_you_mean(str(self.backend), BACKENDS)}; "
                                               f"valid: {', '.join(BACKENDS)}")
        if not isinstance(self.per_sample, bool):
            raise SolverOptionError("per_sample", f"per_sample takes true or false, got {self.per_sample!r}")
        controller = parse_controller(self.controller)  # an unknown name first: it is wrong on every backend
        if self.backend == "torchdiffeq":
            if self.controller != DEFAULT_CONTROLLER:
                raise SolverOptionError("controller", f"controller '{self.controller}' needs backend=dia_ode: "
                                                      f"torchdiffeq steps by its own rule (controller=i)")
            if self.per_sample:
                raise SolverOptionError("per_sample", "per_sample=true needs backend=dia_ode: torchdiffeq takes one "
                                                      "step for the whole batch")
            return None
        if method not in DIA_ODE_TABLEAUX:
            raise SolverOptionError("method", f"method '{method}' has no dia_ode tableau; with backend=dia_ode use "
                                              f"one of {', '.join(DIA_ODE_TABLEAUX)}")
        if method in FIXED_GRID_METHODS and self.per_sample:
            raise SolverOptionError("per_sample", f"per_sample=true chooses each sample's steps by its error "
                                                  f"estimate: fixed-step method '{method}' takes the same steps for "
                                                  f"every sample (use an adaptive method, or per_sample=false)")
        if method in FIXED_GRID_METHODS and self.controller != DEFAULT_CONTROLLER:
            raise SolverOptionError("controller", f"controller '{self.controller}' chooses adaptive steps: "
                                                  f"fixed-step method '{method}' takes none")
        return controller

    def describe(self) -> str:
        """The choice in a few words for labels and file names ("dia_ode pid:H312PID per-sample"); a dia:RUN
        controller by its run directory's name."""
        if self.backend == DEFAULT_BACKEND:
            return self.backend
        name, _, argument = self.controller.partition(":")
        controller = f"dia:{Path(argument).name}" if name == "dia" else self.controller
        return f"{self.backend} {controller} {'per-sample' if self.per_sample else 'batch-steps'}"
