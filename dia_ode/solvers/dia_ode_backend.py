"""A continuous block's forward on the project's integrator (backend="dia_ode"): numerics.solve over [0, T].

The block's dynamics F(t, y) become a field on one (B, n) state per sample (StatePacking: a tuple state
such as DIA's (x, h, c) is flattened part by part and concatenated), time is float64 and handed to the
dynamics as one time per sample (B,), and the solve is differentiable by backpropagation through its
operations. What the solve records becomes the block's record:

- `stats` (solvers/continuous.py, STAT_KEYS): per-sample counts averaged over the batch (nfe_forward is
  the mean evaluations of F per sample: torchdiffeq evaluates every sample at every call, so its count
  is the same number, and the mean is also the solve's cost in whole-batch evaluations, since a finished
  sample leaves the batch), nfe_forward_max the most any sample needed, num_stiff_steps the accepted
  steps that Hairer's test found stability-limited out of num_tested_steps (num_accepted with dopri5, 0
  with the methods that lack the test's stage pair). A fixed-step method takes the block's grid of n
  equal steps and evaluates F once more than torchdiffeq, at T (the integrator's last first stage);
- `log` (StepLog): the first sample's attempted steps, which are every sample's in batch mode;
- `sample_stats` and `step_trace`: every sample's counts (B,) and every attempted step (numerics.Trace);
  `h_lambda`: the stiffness test's h·λ of every sample's accepted steps;
- the recorder of solvers.trace: the states, fields and steps at the accepted steps, as on torchdiffeq.
  They are read from a second solve without a graph that saves the states at the first solve's step
  starts (saving never moves a step, and a save time on a step's end is the step's own state). With
  per-sample steps the samples of a batch share no steps: a batch of one is traced, a larger one is
  refused (trace one sample at a time).

A sample whose solve fails (step budget, non-finite state, step size underflow) stops the forward with a
SolveFailed in one line: how many samples, their result codes in words, and the option to change.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from dia_ode.numerics import (MAX_STEPS, NON_FINITE, NON_FINITE_STEP, RESULTS, SUCCESS, Solution, StiffnessTest, solve,
                              solve_adjoint)
from dia_ode.solvers.backends import DIA_ODE_TABLEAUX, SolveFailed, SolverOptionError, grid_steps

if TYPE_CHECKING:  # continuous.py imports this module
    from dia_ode.solvers.continuous import AbstractDynamics, ContinuousBlock

# a fixed step T / n made longer by this many rounding units per step: n - 1 steps of t + h then stop
# short of T by more than their rounding, and the last one ends on T exactly (no extra step of 1e-16)
GRID_PAD_ULPS = 4


@dataclass(frozen=True)
class StatePacking:
    """One (B, n) state per sample for a state that is a tensor (B, ...) or a tuple of them.

    Attributes:
        shapes: each part's shape without the batch dimension.
        tupled: whether the state is a tuple.
    """

    shapes: tuple[tuple[int, ...], ...]
    tupled: bool

    @classmethod
    def of(cls, y: torch.Tensor | tuple[torch.Tensor, ...]) -> "StatePacking":
        """The packing of states shaped like y (its parts must share the dtype: one state vector)."""
        parts = y if isinstance(y, tuple) else (y,)
        if len({p.dtype for p in parts}) > 1:
            raise ValueError(f"a packed state needs one dtype, got {', '.join(str(p.dtype) for p in parts)}")
        return cls(tuple(tuple(p.shape[1:]) for p in parts), isinstance(y, tuple))

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    def pack(self, y: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(B, n): each part flattened per sample, concatenated along dim 1 (a view for one part)."""
        parts = y if self.tupled else (y,)
        flat = [p.reshape(p.shape[0], -1) for p in parts]  # (B, n_i) each
        return flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)

    def unpack(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The state of (B, n): views of z, each part in its own shape (B, ...)."""
        parts = tuple(p.reshape(z.shape[0], *shape) for p, shape in zip(z.split(self.sizes, dim=1), self.shapes))
        return parts if self.tupled else parts[0]

    def field(self, dynamics) -> Any:
        """dynamics(t, y) as a field on packed states: f(t (B,), z (B, n)) -> (B, n)."""
        return lambda t, z: self.pack(dynamics(t, self.unpack(z)))


def check_supported(adjoint: bool, kinetic_energy: float, jacobian_norm: float) -> None:
    """Refuse what the dia_ode backend cannot do yet, naming the option (SolverOptionError)."""
    for name, value in (("kinetic_energy", kinetic_energy), ("jacobian_norm", jacobian_norm)):
        if value:
            raise SolverOptionError(name, f"{name}={value} with backend=dia_ode is not available yet: RNODE's "
                                          f"integrals must stay out of the per-sample error norm (use "
                                          f"backend=torchdiffeq)")


def forward(block: "ContinuousBlock", x: torch.Tensor) -> torch.Tensor:
    """x(T) of the block on the dia_ode backend, filling block.stats, block.log, block.sample_stats,
    block.step_trace and the recorder (module docstring).

    Raises:
        SolveFailed: a sample's solve ended without success.
        ValueError: solvers.trace on a batch of several samples with per-sample steps.
        SolverOptionError: a state that is not on the CPU (below).
    """
    if x.device.type != "cpu":
        # the integrator keeps its times, steps, statistics and controller states on the CPU: a clear
        # refusal instead of a device mismatch deep in a step, until it follows the state's device
        raise SolverOptionError("backend", f"backend=dia_ode runs on the CPU only for now (the input is on "
                                           f"{x.device.type}): use backend=torchdiffeq on {x.device.type}")
    dynamics = block.dynamics
    if block.recorder is not None and block.per_sample and x.shape[0] > 1:
        raise ValueError(f"solvers.trace records one batch of states per accepted step, and per_sample=True gives "
                         f"each of the {x.shape[0]} samples its own steps: trace one sample at a time, or build "
                         f"the model with per_sample=false")
    y0 = dynamics.initial_state(x)
    packing = StatePacking.of(y0)
    z0 = packing.pack(y0)  # (B, n)
    sol = _solve(block, packing.field(dynamics), z0, trace=True)
    _fill_record(block, sol)  # the record of a failed solve too: where it went wrong
    _raise_on_failure(block, sol)
    x_T = dynamics.readout(packing.unpack(sol.y[:, -1]))  # sol.y (B, 2, n): the states at 0 and T
    if block.recorder is not None:
        _record(block, dynamics, packing, z0.detach(), sol)
        block.recorder.finish(x_T)
    return x_T


def _solve(block: "ContinuousBlock", field, z0: torch.Tensor, trace: bool, t_eval: torch.Tensor | None = None
           ) -> Solution:
    """numerics.solve of the block's packed field from 0 to its end time, saving at t_eval (default 0 and
    the end), differentiable by backpropagation through its operations."""
    step_size = None
    if block.step_size is not None:  # the grid of uniform_grid: n equal steps, padded (GRID_PAD_ULPS)
        n = grid_steps(block.end_time, block.step_size)
        step_size = block.end_time / n * (1 + GRID_PAD_ULPS * n * sys.float_info.epsilon)
    options = dict(method=DIA_ODE_TABLEAUX[block.method], controller=block.error_controller, rtol=block.rtol,
                   atol=block.atol, step_size=step_size,
                   max_steps=sys.maxsize if block.max_num_steps is None else block.max_num_steps, trace=trace,
                   per_sample=block.per_sample)
    if block.adjoint and t_eval is None and torch.is_grad_enabled():
        # optimise-then-discretise: every sample's own backward steps, its error norm always the
        # seminorm (numerics/adjoint.py: the parameters' adjoint is summed over the samples)
        params = [p for p in block.parameters() if p.requires_grad]
        return solve_adjoint(field, z0, 0.0, block.end_time, params=params, adjoint_rtol=block.adjoint_rtol,
                             adjoint_atol=block.adjoint_atol, on_backward=lambda stats: _count_backward(block, stats),
                             **options)
    return solve(field, z0, 0.0, block.end_time, t_eval=t_eval, **options)


def _count_backward(block: "ContinuousBlock", stats: dict[str, torch.Tensor]) -> None:
    """The adjoint solve's cost in the block's stats: mean evaluations and steps per sample."""
    evaluations = stats["nfe"] + stats["nfe_quadrature"]  # (B,): the backward field's and the quadrature's
    block.stats["nfe_backward"] = float(evaluations.double().mean())
    block.stats["num_steps_backward"] = float(stats["num_steps"].double().mean())


def _raise_on_failure(block: "ContinuousBlock", sol: Solution) -> None:
    """SolveFailed in one line when a sample ended without success (module docstring)."""
    failed = sol.result != SUCCESS
    if not bool(failed.any()):
        return
    codes = Counter(int(code) for code in sol.result[failed])
    words = ", ".join(f"{count} {RESULTS[code]}" for code, count in sorted(codes.items()))
    rows = torch.isin(sol.trace.sample, failed.nonzero().flatten())  # the failed samples' attempted steps
    reached = float(sol.trace.t[rows].max()) if bool(rows.any()) else 0.0
    tolerances = f"rtol/atol (now {block.rtol:g}/{block.atol:g})"
    smaller = (f"a smaller step_size (now {block.step_size:g})" if block.step_size is not None
               else f"tighter {tolerances}")
    advice = []
    if MAX_STEPS in codes:
        loosen = "a larger step_size" if block.step_size is not None else f"loosen {tolerances}"
        advice.append(f"raise max_num_steps={block.max_num_steps} or {loosen}")
    if NON_FINITE in codes:
        advice.append(f"the dynamics blew up: {smaller}")
    if NON_FINITE_STEP in codes:
        advice.append("the error controller proposed a NaN or infinite step (a trained controller with NaN weights?)")
    if set(codes) - {MAX_STEPS, NON_FINITE, NON_FINITE_STEP}:
        advice.append(f"the steps shrank to nothing (a blow-up or a stiff field): loosen {tolerances}")
    raise SolveFailed(f"dia_ode ODE solve ({block.method}) failed for {int(failed.sum())} of {failed.numel()} "
                      f"samples ({words}) by t={reached:.6g} of [0, {block.end_time:g}]: {'; '.join(advice)}")


def _fill_record(block: "ContinuousBlock", sol: Solution) -> None:
    """The block's stats, log, sample_stats and step_trace from the solution (module docstring)."""
    counts = {key: value.double() for key, value in sol.stats.items()}  # (B,) float64 each
    stats = block.stats
    stats["nfe_forward"] = float(counts["nfe"].mean())
    stats["nfe_forward_max"] = int(sol.stats["nfe"].max())
    for key in ("num_steps", "num_accepted", "num_rejected"):
        stats[key] = float(counts[key].mean())
    stats["num_stiff_steps"] = float(counts["num_stiff_steps"].mean())
    tested = StiffnessTest(DIA_ODE_TABLEAUX[block.method]).pair is not None  # the test's two stages at one node
    stats["num_tested_steps"] = stats["num_accepted"] if tested else 0.0
    first = sol.trace.of(0)  # the first sample's rows: (S,) each
    block.log.t, block.log.dt = list(first["t"].unbind()), list(first["h"].unbind())
    block.log.accepted, block.log.h_lambda = first["accepted"].tolist(), first["h_lambda"].tolist()
    block.sample_stats, block.step_trace = sol.stats, sol.trace
    h_lambda = sol.trace.h_lambda[sol.trace.accepted]
    block.h_lambda = h_lambda[h_lambda.isfinite()].double()


@torch.no_grad()
def _record(block: "ContinuousBlock", dynamics: "AbstractDynamics", packing: StatePacking, z0: torch.Tensor,
            sol: Solution) -> None:
    """Feed solvers.trace's recorder the accepted steps of the (common) steps of the solve: x_k, f_k and
    h_k = dt_k a(t_k) at each step's start, from a second solve that saves the states there."""
    steps = sol.trace.of(0)
    starts, dts = steps["t"][steps["accepted"]], steps["h"][steps["accepted"]]  # (K,) float64 each
    states = _solve(block, packing.field(dynamics), z0, trace=False, t_eval=starts).y  # (B, K, n)
    for k, (t_k, dt_k) in enumerate(zip(starts, dts)):
        y_k = packing.unpack(states[:, k])  # (B, ...) or a tuple of them
        t = t_k.expand(states.shape[0])  # (B,) float64: one time per sample, as the solve hands it
        x_k = dynamics.readout(y_k)
        a = dynamics.attention(t, y_k)
        dt = dt_k.to(x_k.dtype)
        block.recorder.record(x_k, dynamics.f(t, x_k), dt if a is None else dt * a, t_k)
