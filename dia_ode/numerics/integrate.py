"""Integration of a batch with per-sample step control, result codes and a trace.

Every sample of a batch has its own time t, step h, accept/reject decision and controller state (as in
torchode; torchdiffeq instead takes one step for the whole batch, so one stiff sample sets the step of
all): a step is tried for the samples still running, each sample's error ratio decides for it alone,
and a sample that finishes (or fails) drops out of the next step's batch. Time is float64 whatever the
state's dtype. Nothing here raises on a failed solve: each sample ends with a result code (RESULTS).
`per_sample=False` takes torchdiffeq's rule instead (one error norm over the batch, one step for all),
so the two can be compared step for step.

The state may have any shape (B, ...): images, tokens or vectors; error norms are per sample over all
its other dimensions. The solve is differentiable by backpropagation through its operations
(discretise-then-optimise): the state is then updated out of place, so a sample that finishes keeps
its graph, and the step sizes are chosen from detached values, as torchdiffeq chooses them under
no_grad (a step size is a decision, not a function of the parameters).

The solver is a loop over small objects, as diffrax's: a method's step() returns a StepResult
(numerics/methods.py), the state is a dataclass (SolveState), the error controller and the stiff switch
are swappable policies (numerics/controllers.py, numerics/stiff_switch.py), and `solve` is the loop.

Written here rather than taken from torchode because the lab needs what no library returns: the
per-step trace with Hairer's stiffness estimate (numerics/stiffness_test.py) and controllers that are
plain objects one can replace by a learned one (numerics/controllers.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dia_ode.numerics.controllers import AbstractErrorController, IController
from dia_ode.numerics.dense_output import hermite, save_inside_step
from dia_ode.numerics.methods import Rosenbrock, RungeKutta
from dia_ode.numerics.rosenbrock import get_rosenbrock, local_jacobian
from dia_ode.numerics.solution import (DT_UNDERFLOW, MAX_STEPS, NON_FINITE, NON_FINITE_STEP, RESULTS, RUNNING, STATS,
                                       SUCCESS, TRACE_FIELDS, Solution, Trace, TraceRecorder)
from dia_ode.numerics.stiff_switch import SWITCH_STREAK, NoSwitch, StiffSwitch
from dia_ode.numerics.stiffness_test import NoStiffnessTest, StiffnessTest
from dia_ode.numerics.tableaux import Tableau, get_tableau

__all__ = ["DT_UNDERFLOW", "MAX_STEPS", "NON_FINITE", "NON_FINITE_STEP", "RESULTS", "RUNNING", "SUCCESS",
           "SWITCH_STREAK", "TRACE_FIELDS", "SolveState", "Solution", "Trace", "batched", "solve"]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# on_step(step, t (B,), h (B,), accept (B,), idx (B,)): see solve
StepCallback = Callable[[object, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class SolveState:
    """Everything a solve carries from one step to the next, per sample (B,).

    Attributes:
        t, end: the sample's time and its end (float64).
        y: the state (B, n).
        k1: f(t, y), the next step's first stage (B, n).
        h: the next step to try (float64).
        result: result code (RUNNING until the sample ends).
        stats: Solution.stats, accumulated.
        controller, stiffness, switch: the states of the error controller, the stiffness test and the
            stiff switch, each a dict of (B, ...) tensors.
    """

    t: torch.Tensor
    end: torch.Tensor
    y: torch.Tensor
    k1: torch.Tensor
    h: torch.Tensor
    result: torch.Tensor
    stats: dict[str, torch.Tensor]
    controller: dict[str, torch.Tensor]
    stiffness: dict[str, torch.Tensor]
    switch: dict[str, torch.Tensor]


def batched(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Field:
    """A single-sample field f(t (), y (n,)) -> (n,) as a batch field f(t (B,), y (B, n)) (torch.func.vmap)."""
    return torch.func.vmap(f)


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Per sample (B,): the root mean square over the state's entries (B, n)."""
    return x.pow(2).mean(dim=-1).sqrt()


def _batch_rms(x: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's norm: one root mean square over the whole batch (B, n), given to every sample (B,)."""
    return x.pow(2).mean().sqrt().expand(x.shape[0])


@torch.no_grad()
def _initial_step(f: Field, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor, k: int, rtol: float,
                  atol: float, norm: Callable[[torch.Tensor], torch.Tensor] = _rms) -> torch.Tensor:
    """Hairer's starting step (Solving ODEs I, II.4), per sample, as torchdiffeq computes it (1 more nfe)."""
    scale = atol + y0.abs() * rtol
    d0, d1 = norm(y0 / scale).double(), norm(f0 / scale).double()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    f1 = f(t0 + h0, y0 + h0.to(y0.dtype)[:, None] * f0)
    d2 = norm((f1 - f0) / scale).double() / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / k))
    return torch.minimum(100 * h0, h1)


def solve(f: Field, y0: torch.Tensor, t0: float, t1: float, *, method: str | Tableau = "dopri5",
          controller: AbstractErrorController | None = None, rtol: float = 1e-6, atol: float = 1e-6,
          step_size: float | None = None, first_step: float | None = None, t_eval: torch.Tensor | None = None,
          max_steps: int = 100_000, trace: bool = False, stiffness: StiffnessTest | bool | None = None,
          args: torch.Tensor | None = None, stiff_switch: bool = False, stiff_method: str = "rodas4",
          switch_streak: int = SWITCH_STREAK, exact_spectrum: bool = False, per_sample: bool = True,
          on_step: StepCallback | None = None) -> Solution:
    """Integrate y' = f(t, y) from t0 to t1 for a batch of initial values, each sample on its own steps.

    Args:
        f: batch field f(t (B,) float64, y (B, ...)) -> (B, ...), or f(t, y, args) when `args` is given; wrap
            a single-sample field with batched(). It is called on the samples still running only, so a
            per-sample parameter must come through `args` (or the state), never be captured whole.
        y0: initial values (B, ...): vectors (B, n), images (B, C, H, W), tokens (B, N, D).
        t0, t1: the interval, t1 > t0.
        method: a name of numerics.tableaux.TABLEAUX or a Tableau.
        controller: error-based step-size controller (adaptive methods); default IController().
        rtol, atol: tolerances of the error ratio ||err / (atol + rtol max(|y|, |y_new|))||_rms.
        step_size: fixed step (required for euler/rk4; makes an adaptive method take fixed steps too).
        first_step: the first step of every sample; default Hairer's starting-step rule.
        t_eval: save times in [t0, t1], increasing (default: t0 and t1); between accepted steps the
            solution is interpolated (dopri5's 4th-order continuous extension; cubic Hermite otherwise).
        max_steps: step budget per sample (attempts: accepted + rejected).
        trace: record every attempted step (Solution.trace).
        stiffness: the stiffness test run on every accepted step; default StiffnessTest(tableau); False: none
            (h_lambda NaN, no flag; not with stiff_switch).
        args: per-sample parameters (B, ...), handed to f as its third argument, row for row.
        stiff_switch: continue a sample whose steps stability limits on `stiff_method` and back (the
            policy of numerics/stiff_switch.py). The diagnostic flag (trace.stiff, num_flagged_steps)
            keeps the test's own streak.
        stiff_method: "ros2", "rodas3" or "rodas4" (order 2, 3, 4; rodas4 has its own dense output).
        switch_streak: stiff marks that move a sample to the stiff method (SWITCH_STREAK).
        exact_spectrum: also record h times the exact spectral radius of the Jacobian at every accepted
            step's start (trace.h_rho; the Jacobian by forward-mode autodiff, its eigenvalues by
            torch.linalg.eigvals: n Jacobian-vector products and an n x n eigenproblem a step).
        per_sample: each sample on its own steps (default); False: one error norm over the batch and
            one step for all of it, as torchdiffeq steps (the samples still share t and h at the end).
        on_step: called after every attempted step of the explicit method as on_step(step, t, h,
            accept, idx): its StepResult, the samples' start times and steps (float64), which were
            accepted, and their indices in the batch (instrumentation, e.g. the adjoint's quadrature).

    Returns:
        Solution, its y (B, T, ...). A sample that fails ends with its result code, never an exception.

    Raises:
        ValueError: bad arguments (t1 <= t0, tolerances <= 0, a fixed-step method without step_size,
            save times outside the interval), named in the message.
    """
    tableau = get_tableau(method) if isinstance(method, str) else method
    shape = tuple(y0.shape[1:])
    if y0.dim() > 2:  # any state: the loop sees (B, n), the field its own shape
        f, y0 = _flat_field(f, shape), y0.reshape(y0.shape[0], -1)
    save = _checked(tableau, y0, t0, t1, rtol, atol, step_size, t_eval, stiffness, args, stiff_switch, switch_streak)
    implicit_method = Rosenbrock(get_rosenbrock(stiff_method))
    stiffness = NoStiffnessTest(tableau) if stiffness is False else stiffness or StiffnessTest(tableau)
    switch = StiffSwitch(implicit_method, stiffness, switch_streak) if stiff_switch else NoSwitch()
    if args is None:
        call = lambda tt, yy, rows: f(tt, yy)  # noqa: E731 -- one signature for the loop below
    else:
        call = lambda tt, yy, rows: f(tt, yy, args[rows])  # noqa: E731
    loop = _StepLoop(call, RungeKutta(tableau), controller or IController(), stiffness, switch, rtol, atol, step_size,
                     save, max_steps, exact_spectrum, TraceRecorder(trace), _rms if per_sample else _batch_rms, on_step)
    state, out = loop.start(y0, t0, t1, first_step)
    while True:
        running = (state.result == RUNNING).nonzero().flatten()
        if running.numel() == 0:
            break
        implicit = state.switch["implicit"][running]
        for group, stiff_mode in ((running[~implicit], False), (running[implicit], True)):
            if group.numel():
                loop.attempt(state, out, group, stiff_mode)
    return Solution(save, out.reshape(*out.shape[:2], *shape), state.result, state.stats, loop.recorder.finish())


def _flat_field(f: Callable, shape: tuple[int, ...]) -> Callable:
    """f on states of `shape` per sample, as a field on flat (B, n) states (views: no copies)."""
    def flat(t: torch.Tensor, y: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        return f(t, y.reshape(y.shape[0], *shape), *args).reshape(y.shape[0], -1)
    return flat


def _checked(tableau: Tableau, y0: torch.Tensor, t0: float, t1: float, rtol: float, atol: float,
             step_size: float | None, t_eval, stiffness, args: torch.Tensor | None, stiff_switch: bool,
             switch_streak: int) -> torch.Tensor:
    """Refuse bad arguments with a ValueError naming them; return the save times (T,) float64."""
    if not t1 > t0:
        raise ValueError(f"t1 must be > t0, got t0={t0}, t1={t1}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    if step_size is None and not tableau.adaptive:
        raise ValueError(f"method '{tableau.name}' has no error estimate: give step_size")
    if stiff_switch and (step_size is not None or not tableau.adaptive):
        raise ValueError("stiff_switch needs an adaptive method without step_size")
    if switch_streak < 1:
        raise ValueError(f"switch_streak must be >= 1, got {switch_streak}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    if y0.dim() != 2:
        raise ValueError(f"y0 must be (batch, ...), got shape {tuple(y0.shape)}")
    save = torch.tensor([t0, t1], dtype=torch.float64) if t_eval is None else \
        torch.as_tensor(t_eval, dtype=torch.float64).flatten()
    if save.numel() and (save.min() < t0 or save.max() > t1 or bool((save.diff() < 0).any())):
        raise ValueError(f"t_eval must increase within [t0={t0}, t1={t1}]")
    if stiffness is False and stiff_switch:
        raise ValueError("stiff_switch needs the stiffness test (stiffness=False turns it off)")
    if args is not None and args.shape[0] != y0.shape[0]:
        raise ValueError(f"args must have the batch size {y0.shape[0]} first, got shape {tuple(args.shape)}")
    return save


class _StepLoop:
    """One solve's fixed parts (field, method, policies, tolerances, save times, trace) and its two moves:
    start the state, and attempt one step for a group of samples."""

    def __init__(self, call, method: RungeKutta, controller: AbstractErrorController, stiffness: StiffnessTest,
                 switch: NoSwitch, rtol: float, atol: float, step_size: float | None, save: torch.Tensor,
                 max_steps: int, exact_spectrum: bool, recorder: TraceRecorder,
                 norm: Callable[[torch.Tensor], torch.Tensor], on_step: StepCallback | None = None) -> None:
        self.call, self.method, self.controller, self.stiffness, self.switch = call, method, controller, stiffness, switch
        self.rtol, self.atol, self.step_size, self.save = rtol, atol, step_size, save
        self.max_steps, self.exact_spectrum, self.recorder, self.norm = max_steps, exact_spectrum, recorder, norm
        self.differentiable = False  # whether the state carries a graph (start decides)
        self.on_step = on_step

    def start(self, y0: torch.Tensor, t0: float, t1: float, first_step: float | None
              ) -> tuple[SolveState, torch.Tensor]:
        """The state before the first step, and the save buffer (B, T, n) with y0 at the save times = t0."""
        B, n = y0.shape
        everyone = torch.arange(B)
        t = torch.full((B,), float(t0), dtype=torch.float64)
        stats = {key: torch.zeros(B, dtype=torch.int64) for key in STATS}
        out = torch.full((B, self.save.numel(), n), float("nan"), dtype=y0.dtype)
        out[:, self.save == t0] = y0[:, None]
        k1 = self.call(t, y0, everyone)
        stats["nfe"] += 1
        # the field's output tells whether backpropagation will run through the solve (its parameters
        # or y0 require grad): then the state is updated out of place (module docstring)
        self.differentiable = torch.is_grad_enabled() and (k1.requires_grad or y0.requires_grad)
        result = torch.full((B,), RUNNING, dtype=torch.int64)
        result[~torch.isfinite(k1).all(dim=-1) | ~torch.isfinite(y0).all(dim=-1)] = NON_FINITE
        if self.step_size is not None or first_step is not None:
            h = torch.full((B,), float(self.step_size if self.step_size is not None else first_step),
                           dtype=torch.float64)
        else:
            h = _initial_step(lambda tt, yy: self.call(tt, yy, everyone), t, y0.detach(), k1.detach(),
                              self.method.error_exponent, self.rtol, self.atol, self.norm)
            stats["nfe"] += 1
        result[(result == RUNNING) & ~torch.isfinite(h)] = NON_FINITE_STEP  # first_step=nan: no step to try
        state = SolveState(t, torch.full((B,), float(t1), dtype=torch.float64), y0.clone(), k1, h, result, stats,
                           self.controller.init(B), self.stiffness.init(B), self.switch.init(B))
        return state, out

    def attempt(self, s: SolveState, out: torch.Tensor, idx: torch.Tensor, stiff_mode: bool) -> None:
        """One attempted step for the samples idx, all on the explicit method or all on the stiff one."""
        # the whole batch (most steps of a batch of similar solves) is read and written through views:
        # a gather and a scatter per state tensor were a quarter of the step's time at batch 1,024
        sel = slice(None) if idx.numel() == s.t.numel() else idx
        ta, ya, k1a, ha, end = s.t[sel], s.y[sel], s.k1[sel], s.h[sel], s.end[sel]
        h_try = torch.minimum(ha, end - ta)
        method = self.switch.stiff_method if stiff_mode else self.method
        step = method.step(lambda tt, yy: self.call(tt, yy, sel), ta, ya, k1a, h_try,
                           estimate_error=self.step_size is None)
        y_new = step.y_new
        for key, cost in step.costs.items():
            s.stats[key][sel] += cost
        accept, factor, ratio, raw_h_lambda = self._decide(s, sel, ya, h_try, step, stiff_mode)

        t_new = torch.where(h_try == end - ta, end, ta + h_try)
        k_next = step.next_stage
        if k_next is None:  # the next step's first stage, evaluated now (it is also the interpolant's end slope)
            k_next = torch.zeros_like(k1a)
            acc = accept.nonzero().flatten()
            if acc.numel():
                k_next[acc] = self.call(t_new[acc], y_new[acc], idx[acc])
                s.stats["nfe"][idx[acc]] += 1
        interpolate = step.interpolant or (
            lambda r, th: hermite(th, h_try[r], ya[r], k1a[r], y_new[r], k_next[r]))
        save_inside_step(out, self.save, idx, accept, ta, h_try, t_new, y_new, interpolate)
        h_lambda, stiff, h_rho = self._stiffness(s, idx, sel, ta, ya, h_try, accept, raw_h_lambda, step, stiff_mode)

        s.stats["num_steps"][sel] += 1
        s.stats["num_accepted"][sel] += accept.long()
        s.stats["num_rejected"][sel] += (~accept).long()
        # per step, for the stiff fraction (NaN h_lambda of rejected steps counts no step); the streak's
        # flag apart, as a controller that swings h across the bound keeps it down (stiffness_test.py)
        s.stats["num_stiff_steps"][sel] += self.stiffness.limited(h_lambda).long()
        s.stats["num_flagged_steps"][sel] += (stiff & accept).long()
        if self.on_step is not None and not stiff_mode:
            self.on_step(step, ta, h_try, accept, idx)
        if self.recorder.enabled:  # ta may be a view of t, which is updated below
            self.recorder.add(method.name, sample=idx, t=ta.clone(), h=h_try, error_ratio=ratio, accepted=accept,
                              h_lambda=h_lambda, stiff=stiff, h_rho=h_rho)
        s.t = self._written(s.t, sel, torch.where(accept, t_new, ta))  # a field may keep the time it was given
        s.y = self._written(s.y, sel, torch.where(accept[:, None], y_new, ya))
        s.k1 = self._written(s.k1, sel, torch.where(accept[:, None], k_next, k1a))
        h_next = (h_try * factor).clamp_max(self.controller.limits.dt_max) if self.step_size is None else ha
        s.h[sel] = h_next
        self._result_codes(s, sel, accept, t_new, k_next, h_next)

    def _written(self, target: torch.Tensor, sel, value: torch.Tensor) -> torch.Tensor:
        """target with its rows sel replaced by value: in place, or out of place where a graph runs
        through the state (an in-place write would change tensors that backward still needs)."""
        if not self.differentiable:
            target[sel] = value
            return target
        return value if isinstance(sel, slice) else target.index_put((sel,), value)

    @torch.no_grad()
    def _decide(self, s: SolveState, sel, ya: torch.Tensor, h_try: torch.Tensor, step, stiff_mode: bool):
        """(accept, factor of the next step, error ratio, raw h * lambda) of a step: the error norm, then
        the controller, which also sees the stiffness estimate (None on the stiff method). Decisions, not
        functions of the parameters: no graph (module docstring)."""
        y_new = step.y_new
        if step.error is not None:
            scale = self.atol + self.rtol * torch.maximum(ya.abs(), y_new.abs())
            ratio = self.norm(step.error / scale).double()
        else:
            ratio = torch.zeros(h_try.numel(), dtype=torch.float64)
        finite = torch.isfinite(ratio) & torch.isfinite(y_new).all(dim=-1)
        ratio = ratio.masked_fill(~finite, float("inf"))  # masked_fill, not where: the step loop's ops count
        raw_h_lambda = None if stiff_mode else self.stiffness.estimate(h_try, step.stages, step.stage_inputs)
        if self.step_size is None:
            sub = {key: value[sel] for key, value in s.controller.items()}
            seen = None if raw_h_lambda is None else raw_h_lambda / self.stiffness.threshold
            accept, factor, sub = self.controller.adapt(sub, h_try, ratio, step.error_exponent, stiffness=seen)
            for key, value in sub.items():
                s.controller[key][sel] = value
        else:  # fixed steps: every finite step is taken, h stays
            accept, factor = finite, torch.ones_like(ratio)
        return accept & finite, factor, ratio, raw_h_lambda

    def _stiffness(self, s: SolveState, idx: torch.Tensor, sel, ta: torch.Tensor, ya: torch.Tensor,
                   h_try: torch.Tensor, accept: torch.Tensor, raw_h_lambda: torch.Tensor | None, step,
                   stiff_mode: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h * lambda, the flag, h * exact radius) of an attempted step, with the stiffness test's and
        the switch's states moved on."""
        if not stiff_mode:
            sub = {key: value[sel] for key, value in s.stiffness.items()}
            h_lambda, stiff, sub = self.stiffness.update(sub, raw_h_lambda, accept)
            for key, value in sub.items():
                s.stiffness[key][sel] = value
            h_rho = torch.full_like(h_try, float("nan"))
            if self.exact_spectrum:
                radius = _spectral_radius_of(local_jacobian(lambda yy: self.call(ta, yy, sel), ya))
                h_rho = (h_try * radius).masked_fill(~accept, float("nan"))
            self.switch.after_explicit(s.switch, idx, accept, sub.get("stiff_count"))
            return h_lambda, stiff, h_rho
        # the exact local spectrum: is the explicit method's stability bound still binding?
        radius = _spectral_radius_of(step.jacobian)
        h_lambda = torch.where(accept, h_try * radius, torch.full_like(radius, float("nan")))
        stiff = ~(h_lambda < self.stiffness.threshold)
        leave = self.switch.after_implicit(s.switch, idx, sel, accept, stiff)
        for key, value in self.stiffness.init(int(leave.sum())).items():
            s.stiffness[key][idx[leave]] = value
        s.stats["num_implicit_steps"][sel] += accept.long()
        return h_lambda, stiff, h_lambda

    def _result_codes(self, s: SolveState, sel, accept: torch.Tensor, t_new: torch.Tensor, k_next: torch.Tensor,
                      h_next: torch.Tensor) -> None:
        """Finished, non-finite (state or proposed step), stalled or out of budget: the samples' result codes
        after a step."""
        finished = accept & (t_new >= s.end[sel])
        code = s.result[sel].masked_fill(finished, SUCCESS)
        nonfinite_start = ~torch.isfinite(k_next).all(dim=-1) & accept & ~finished
        code = code.masked_fill(nonfinite_start & (code == RUNNING), NON_FINITE)
        # a NaN step fails every test below (and an infinite one is no step): end the sample now
        code = code.masked_fill((code == RUNNING) & ~torch.isfinite(h_next), NON_FINITE_STEP)
        stalled = (h_next < self.controller.limits.dt_min) | (s.t[sel] + h_next == s.t[sel])
        code = code.masked_fill((code == RUNNING) & stalled, DT_UNDERFLOW)
        code = code.masked_fill((code == RUNNING) & (s.stats["num_steps"][sel] >= self.max_steps), MAX_STEPS)
        s.result[sel] = code


def _spectral_radius_of(jacobian: torch.Tensor) -> torch.Tensor:
    """max |eigenvalue| per sample of (B, n, n) Jacobians, float64."""
    return torch.linalg.eigvals(jacobian).abs().amax(dim=-1).double()
