"""Explicit Runge-Kutta integration of a batch with per-sample step control, result codes and a trace.

Every sample of a batch has its own time t, step h, accept/reject decision and controller state (as in
torchode; torchdiffeq instead takes one step for the whole batch, so one stiff sample sets the step of
all): a step is tried for the samples still running, each sample's error ratio decides for it alone,
and a sample that finishes (or fails) drops out of the next step's batch. Time is float64 whatever the
state's dtype. Nothing here raises on a failed solve: each sample ends with a result code (RESULTS).

Written here rather than taken from torchode because the lab needs what no library returns: the
per-step trace with Hairer's stiffness estimate (numerics/stiffness_test.py) and controllers that are
plain objects one can replace by a learned one (numerics/controllers.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from dia_ode.numerics.controllers import AbstractController, IController
from dia_ode.numerics.rosenbrock import get_rosenbrock, local_jacobian, rosenbrock_dense, rosenbrock_step
from dia_ode.numerics.stiffness_test import NoStiffnessTest, StiffnessTest
from dia_ode.numerics.tableaux import Tableau, get_tableau

RUNNING, SUCCESS, MAX_STEPS, DT_UNDERFLOW, NON_FINITE = range(5)
RESULTS = {SUCCESS: "success", MAX_STEPS: "max steps reached", DT_UNDERFLOW: "step size underflow",
           NON_FINITE: "non-finite state", RUNNING: "running"}
Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Stiff marks that move a sample to the implicit method. DOPRI5's diagnostic streak (15) is for telling
# the user; a switch pays off as soon as stability, not accuracy, limits the step: three marks measured
# 1.79x / 1.61x LSODA's evaluations on Robertson / HIRES, against 2.66x / 1.75x with 15 (theory/controllers.md).
SWITCH_STREAK = 3
TRACE_FIELDS = ("t", "h", "error_ratio", "accepted", "h_lambda", "stiff", "h_rho")


@dataclass
class Trace:
    """One row per attempted step (all samples, in order of attempt).

    Attributes:
        sample: index of the sample in the batch.
        t: time at the start of the step (float64).
        h: the step tried.
        error_ratio: its error ratio (0 for a fixed-step method, inf where not finite).
        accepted: whether the step was taken.
        h_lambda: Hairer's estimate of h times the dominant eigenvalue's modulus (nan where the method
            has no two stages at one node, or on a rejected step).
        stiff: the stiffness flag after this step (the streak rule of numerics/stiffness_test.py); whether
            one step is stability-limited is StiffnessTest.limited(h_lambda) (h_rho on implicit steps).
        h_rho: h times the exact spectral radius of the Jacobian at the step's start (solve's
            exact_spectrum, and every step of the stiff switch's implicit method; NaN elsewhere and on
            rejected steps).
        method: the method in use.
    """

    sample: torch.Tensor
    t: torch.Tensor
    h: torch.Tensor
    error_ratio: torch.Tensor
    accepted: torch.Tensor
    h_lambda: torch.Tensor
    stiff: torch.Tensor
    h_rho: torch.Tensor
    method: list[str] = field(default_factory=list)

    def of(self, sample: int) -> dict[str, torch.Tensor]:
        """The rows of one sample as tensors keyed by field name."""
        rows = self.sample == sample
        return {name: getattr(self, name)[rows] for name in TRACE_FIELDS}


@dataclass
class Solution:
    """What solve returns.

    Attributes:
        t: the save times (T,) float64.
        y: the solution at the save times (B, T, n); NaN at times a failed sample never reached.
        result: result code per sample (B,) (RESULTS).
        stats: per sample (B,) int64: nfe, num_steps, num_accepted, num_rejected, num_stiff_steps (accepted
            steps that stability limits, each judged alone: StiffnessTest.limited), num_flagged_steps
            (accepted steps under the streak rule's flag, which a controller's swings can keep down), and
            for the stiff switch num_jacobians, num_linear_solves, num_implicit_steps (accepted on the stiff
            method).
        trace: the per-step Trace when asked for, else None.
    """

    t: torch.Tensor
    y: torch.Tensor
    result: torch.Tensor
    stats: dict[str, torch.Tensor]
    trace: Trace | None = None

    @property
    def success(self) -> torch.Tensor:
        return self.result == SUCCESS

    def messages(self) -> list[str]:
        """The result of every sample in words."""
        return [RESULTS[int(code)] for code in self.result]

    def per_accepted(self, stat: str) -> torch.Tensor:
        """stats[stat] over the accepted steps per sample (B,) float64, 0 without any; the stiff fraction
        is per_accepted("num_stiff_steps")."""
        return self.stats[stat].double() / self.stats["num_accepted"].clamp_min(1)


def batched(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Field:
    """A single-sample field f(t (), y (n,)) -> (n,) as a batch field f(t (B,), y (B, n)) (torch.func.vmap)."""
    return torch.func.vmap(f)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(dim=-1).sqrt()


def _initial_step(f: Field, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor, k: int, rtol: float,
                  atol: float) -> torch.Tensor:
    """Hairer's starting step (Solving ODEs I, II.4), per sample, as torchdiffeq computes it (1 more nfe)."""
    scale = atol + y0.abs() * rtol
    d0, d1 = _rms(y0 / scale).double(), _rms(f0 / scale).double()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    f1 = f(t0 + h0, y0 + h0.to(y0.dtype)[:, None] * f0)
    d2 = _rms((f1 - f0) / scale).double() / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3),
                     (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / k))
    return torch.minimum(100 * h0, h1)


def _hermite(theta: torch.Tensor, h: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor, y1: torch.Tensor,
             f1: torch.Tensor) -> torch.Tensor:
    """Cubic Hermite interpolation on a step (order 3: a dense output every method here supports).

    theta (B, T) in [0, 1], h (B,), y0/f0/y1/f1 (B, n) -> (B, T, n)."""
    th = theta[..., None].to(y0.dtype)
    h = h.to(y0.dtype)[:, None, None]
    h00, h10 = (1 + 2 * th) * (1 - th) ** 2, th * (1 - th) ** 2
    h01, h11 = th ** 2 * (3 - 2 * th), th ** 2 * (th - 1)
    return h00 * y0[:, None] + h10 * h * f0[:, None] + h01 * y1[:, None] + h11 * h * f1[:, None]


def solve(f: Field, y0: torch.Tensor, t0: float, t1: float, *, method: str | Tableau = "dopri5",
          controller: AbstractController | None = None, rtol: float = 1e-6, atol: float = 1e-6,
          step_size: float | None = None, first_step: float | None = None, t_eval: torch.Tensor | None = None,
          max_steps: int = 100_000, trace: bool = False, stiffness: StiffnessTest | bool | None = None,
          args: torch.Tensor | None = None, stiff_switch: bool = False, stiff_method: str = "rodas4",
          switch_streak: int = SWITCH_STREAK, exact_spectrum: bool = False) -> Solution:
    """Integrate y' = f(t, y) from t0 to t1 for a batch of initial values, each sample on its own steps.

    Args:
        f: batch field f(t (B,) float64, y (B, n)) -> (B, n), or f(t, y, args) when `args` is given; wrap a
            single-sample field with batched(). It is called on the samples still running only, so a
            per-sample parameter must come through `args` (or the state), never be captured whole.
        y0: initial values (B, n).
        t0, t1: the interval, t1 > t0.
        method: a name of numerics.tableaux.TABLEAUX or a Tableau.
        controller: step-size controller (adaptive methods); default IController().
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
        stiff_switch: once `switch_streak` accepted steps of a sample are marked stiff by the stiffness
            test (before its streak_off non-stiff ones in a row), continue it on `stiff_method` (an
            L-stable Rosenbrock method of numerics/rosenbrock.py, Jacobian by autodiff), and back on the
            explicit method once h times the exact local spectral radius stays below the explicit
            method's threshold for streak_on steps (LSODA's idea; the trace names the method of every
            step). The diagnostic flag (trace.stiff, num_flagged_steps) keeps the test's own streak.
        stiff_method: "ros2", "rodas3" or "rodas4" (order 2, 3, 4; rodas4 has its own dense output).
        switch_streak: stiff marks that move a sample to the stiff method (SWITCH_STREAK).
        exact_spectrum: also record h times the exact spectral radius of the Jacobian at every accepted
            step's start (trace.h_rho; the Jacobian by forward-mode autodiff, its eigenvalues by
            torch.linalg.eigvals: n Jacobian-vector products and an n x n eigenproblem a step).

    Returns:
        Solution. A sample that fails ends with its result code, never an exception.

    Raises:
        ValueError: bad arguments (t1 <= t0, tolerances <= 0, a fixed-step method without step_size,
            save times outside the interval), named in the message.
    """
    tableau = get_tableau(method) if isinstance(method, str) else method
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
        raise ValueError(f"y0 must be (batch, n), got shape {tuple(y0.shape)}")
    save = torch.tensor([t0, t1], dtype=torch.float64) if t_eval is None else \
        torch.as_tensor(t_eval, dtype=torch.float64).flatten()
    if save.numel() and (save.min() < t0 or save.max() > t1 or bool((save.diff() < 0).any())):
        raise ValueError(f"t_eval must increase within [t0={t0}, t1={t1}]")
    implicit_method = get_rosenbrock(stiff_method)
    controller = controller or IController()
    if stiffness is False and stiff_switch:
        raise ValueError("stiff_switch needs the stiffness test (stiffness=False turns it off)")
    stiffness = NoStiffnessTest(tableau) if stiffness is False else stiffness or StiffnessTest(tableau)
    a_rows = [_terms(row) for row in tableau.a]
    b_terms = _terms(tableau.b)
    e_terms = None if tableau.b_error is None else _terms(tableau.b_error)
    c = [float(v) for v in tableau.c]
    dense = None if tableau.dense is None else _terms(tableau.dense)
    k_exponent = tableau.error_order + 1
    B, n = y0.shape
    if args is not None and args.shape[0] != B:
        raise ValueError(f"args must have the batch size {B} first, got shape {tuple(args.shape)}")
    if args is None:
        call = lambda tt, yy, rows: f(tt, yy)  # noqa: E731 -- one signature for the loop below
    else:
        call = lambda tt, yy, rows: f(tt, yy, args[rows])  # noqa: E731

    t = torch.full((B,), float(t0), dtype=torch.float64)
    end = torch.full((B,), float(t1), dtype=torch.float64)
    y = y0.clone()
    result = torch.full((B,), RUNNING, dtype=torch.int64)
    stats = {key: torch.zeros(B, dtype=torch.int64)
             for key in ("nfe", "num_steps", "num_accepted", "num_rejected", "num_stiff_steps", "num_flagged_steps",
                         "num_jacobians", "num_linear_solves", "num_implicit_steps")}
    out = torch.full((B, save.numel(), n), float("nan"), dtype=y0.dtype)
    out[:, save == t0] = y0[:, None]
    everyone = torch.arange(B)
    k1 = call(t, y, everyone)
    stats["nfe"] += 1
    bad = ~torch.isfinite(k1).all(dim=-1) | ~torch.isfinite(y0).all(dim=-1)
    result[bad] = NON_FINITE
    if step_size is not None:
        h = torch.full((B,), float(step_size), dtype=torch.float64)
    elif first_step is not None:
        h = torch.full((B,), float(first_step), dtype=torch.float64)
    else:
        h = _initial_step(lambda tt, yy: call(tt, yy, everyone), t, y, k1, k_exponent, rtol, atol)
        stats["nfe"] += 1
    cstate = controller.init(B)
    sstate = stiffness.init(B)
    implicit = torch.zeros(B, dtype=torch.bool)  # the samples on the stiff method (stiff_switch)
    back = torch.zeros(B, dtype=torch.int64)  # consecutive implicit steps the explicit method could have taken
    rows: list[dict[str, torch.Tensor]] = []
    methods: list[str] = []

    def advance(idx: torch.Tensor, stiff_mode: bool) -> None:
        """One attempted step for the samples idx, all on the explicit method or all on the stiff one."""
        # the whole batch (most steps of a batch of similar solves) is read and written through views:
        # a gather and a scatter per state tensor were a quarter of the step's time at batch 1,024
        sel = slice(None) if idx.numel() == B else idx
        ta, ya, k1a, ha = t[sel], y[sel], k1[sel], h[sel]
        h_try = torch.minimum(ha, end[sel] - ta)
        hy = h_try.to(y0.dtype)[:, None]
        if not stiff_mode:
            ks, stage_inputs = [k1a], [ya]
            for i in range(1, tableau.stages):
                yi = ya + hy * _combine(a_rows[i], ks)
                stage_inputs.append(yi)
                ks.append(call(ta + c[i] * h_try, yi, sel))
            stats["nfe"][sel] += tableau.stages - 1
            y_new = ya + hy * _combine(b_terms, ks)
            err = hy * _combine(e_terms, ks) if e_terms is not None and step_size is None else None
            k_exp = k_exponent
        else:
            step = rosenbrock_step(implicit_method, lambda alpha, yy: call(ta + alpha * h_try, yy, sel), ya, k1a, h_try)
            y_new, err, k_exp = step["y_new"], step["error"], implicit_method.error_order + 1
            stats["nfe"][sel] += implicit_method.evaluations
            stats["num_jacobians"][sel] += 1
            stats["num_linear_solves"][sel] += implicit_method.stages
        if err is not None:
            scale = atol + rtol * torch.maximum(ya.abs(), y_new.abs())
            ratio = _rms(err / scale).double()
        else:
            ratio = torch.zeros(idx.numel(), dtype=torch.float64)
        finite = torch.isfinite(ratio) & torch.isfinite(y_new).all(dim=-1)
        ratio = ratio.masked_fill(~finite, float("inf"))  # masked_fill, not where: the step loop's ops count
        sub = {key: value[sel] for key, value in cstate.items()}
        raw_h_lambda = None if stiff_mode else stiffness.estimate(h_try, ks, stage_inputs)
        if step_size is None:
            seen = None if raw_h_lambda is None else raw_h_lambda / stiffness.threshold
            accept, factor, sub = controller.adapt(sub, h_try, ratio, k_exp, stiffness=seen)
        else:  # fixed steps: every finite step is taken, h stays
            accept, factor = finite, torch.ones_like(ratio)
        accept = accept & finite
        for key, value in sub.items():
            cstate[key][sel] = value

        t_new = torch.where(h_try == end[sel] - ta, end[sel], ta + h_try)
        acc = accept.nonzero().flatten()
        if tableau.fsal and not stiff_mode:
            k_next = ks[-1]
        else:  # the next step's first stage, evaluated now (it is also the interpolant's end slope)
            k_next = torch.zeros_like(k1a)
            if acc.numel():
                k_next[acc] = call(t_new[acc], y_new[acc], idx[acc])
                stats["nfe"][idx[acc]] += 1
        if not stiff_mode:
            h_lambda, stiff, ssub = stiffness.update({key: value[sel] for key, value in sstate.items()}, raw_h_lambda,
                                                     accept)
            for key, value in ssub.items():
                sstate[key][sel] = value
            if dense is not None:  # the method's own continuous extension
                interpolate = lambda r, th: _dense(th, h_try[r], ya[r], y_new[r], [k[r] for k in ks], dense)  # noqa: E731
            else:
                interpolate = lambda r, th: _hermite(th, h_try[r], ya[r], k1a[r], y_new[r], k_next[r])  # noqa: E731
            _save(out, save, idx, accept, ta, h_try, t_new, y_new, interpolate)
            h_rho = torch.full_like(h_try, float("nan"))
            if exact_spectrum:
                radius = _spectral_radius(lambda yy: call(ta, yy, sel), ya)
                h_rho = (h_try * radius).masked_fill(~accept, float("nan"))
            if stiff_switch:  # stability limits the step: go implicit (LSODA's switch, Hairer's test the trigger)
                implicit[idx[accept & (ssub["stiff_count"] >= switch_streak)]] = True
        else:  # the exact local spectrum: is the explicit method's stability bound still binding?
            radius = _spectral_radius_of(step["jacobian"])
            h_lambda = torch.where(accept, h_try * radius, torch.full_like(radius, float("nan")))
            h_rho = h_lambda
            stiff = ~(h_lambda < stiffness.threshold)
            counted = torch.where(stiff, torch.zeros_like(back[sel]), back[sel] + 1)
            back[sel] = torch.where(accept, counted, back[sel])
            leave = accept & (back[sel] >= stiffness.streak_on)
            implicit[idx[leave]] = False
            back[idx[leave]] = 0
            for key, value in stiffness.init(int(leave.sum())).items():
                sstate[key][idx[leave]] = value
            if "dense" in step:
                interpolate = lambda r, th: rosenbrock_dense(th, ya[r], y_new[r], [d[r] for d in step["dense"]])  # noqa: E731
            else:
                interpolate = lambda r, th: _hermite(th, h_try[r], ya[r], k1a[r], y_new[r], k_next[r])  # noqa: E731
            _save(out, save, idx, accept, ta, h_try, t_new, y_new, interpolate)
            stats["num_implicit_steps"][sel] += accept.long()

        stats["num_steps"][sel] += 1
        stats["num_accepted"][sel] += accept.long()
        stats["num_rejected"][sel] += (~accept).long()
        # per step, for the stiff fraction (NaN h_lambda of rejected steps counts no step); the streak's
        # flag apart, as a controller that swings h across the bound keeps it down (stiffness_test.py)
        stats["num_stiff_steps"][sel] += stiffness.limited(h_lambda).long()
        stats["num_flagged_steps"][sel] += (stiff & accept).long()
        if trace:
            # ta may be a view of t, which is updated below
            rows.append({"sample": idx, "t": ta.clone(), "h": h_try, "error_ratio": ratio, "accepted": accept,
                         "h_lambda": h_lambda, "stiff": stiff, "h_rho": h_rho})
            methods.extend([implicit_method.name if stiff_mode else tableau.name] * idx.numel())
        t[sel] = torch.where(accept, t_new, ta)
        y[sel] = torch.where(accept[:, None], y_new, ya)
        k1[sel] = torch.where(accept[:, None], k_next, k1a)
        h_next = (h_try * factor).clamp_max(controller.limits.dt_max) if step_size is None else ha
        h[sel] = h_next

        finished = accept & (t_new >= end[sel])
        code = result[sel].masked_fill(finished, SUCCESS)
        nonfinite_start = ~torch.isfinite(k_next).all(dim=-1) & accept & ~finished
        code = code.masked_fill(nonfinite_start & (code == RUNNING), NON_FINITE)
        stalled = (h_next < controller.limits.dt_min) | (t[sel] + h_next == t[sel])
        code = code.masked_fill((code == RUNNING) & stalled, DT_UNDERFLOW)
        code = code.masked_fill((code == RUNNING) & (stats["num_steps"][sel] >= max_steps), MAX_STEPS)
        result[sel] = code

    while True:
        running = (result == RUNNING).nonzero().flatten()
        if running.numel() == 0:
            break
        for group, stiff_mode in ((running[~implicit[running]], False), (running[implicit[running]], True)):
            if group.numel():
                advance(group, stiff_mode)

    recorded = None
    if trace:
        cat = {key: torch.cat([r[key] for r in rows]) if rows else torch.zeros(0) for key in ("sample", *TRACE_FIELDS)}
        recorded = Trace(**cat, method=methods)
    return Solution(save, out, result, stats, recorded)


def _spectral_radius_of(jacobian: torch.Tensor) -> torch.Tensor:
    """max |eigenvalue| per sample of (B, n, n) Jacobians, float64."""
    return torch.linalg.eigvals(jacobian).abs().amax(dim=-1).double()


def _spectral_radius(field: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """The exact local spectral radius of a batch field at y (B, n), per sample."""
    return _spectral_radius_of(local_jacobian(field, y))


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


def _save(out: torch.Tensor, save: torch.Tensor, idx: torch.Tensor, accept: torch.Tensor, ta: torch.Tensor,
          h: torch.Tensor, t_new: torch.Tensor, y_new: torch.Tensor,
          interpolate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Write the save times inside each accepted step (ta, t_new] into out.

    interpolate(rows, theta (R, T)) -> (R, T, n) evaluates the step's continuous extension for the rows
    (indices into idx) at the fractions theta of their steps."""
    if not save.numel() or not _any_save_between(save, ta, t_new):
        return
    inside = (save[None] > ta[:, None]) & (save[None] <= t_new[:, None]) & accept[:, None]  # (Ba, T)
    if not bool(inside.any()):
        return
    rows = inside.any(dim=1).nonzero().flatten()
    theta = ((save[None] - ta[rows, None]) / h[rows, None]).clamp(0.0, 1.0)
    values = interpolate(rows, theta)
    values = torch.where((save[None] == t_new[rows, None])[..., None], y_new[rows][:, None], values)
    mask = inside[rows]
    block = out[idx[rows]]
    block[mask] = values[mask]
    out[idx[rows]] = block


def _any_save_between(save: torch.Tensor, ta: torch.Tensor, t_new: torch.Tensor) -> bool:
    """Whether a save time lies in (min ta, max t_new]: two reductions, where the full (batch x save
    times) mask of _save is five operations on a step that most often saves nothing."""
    return bool(((save > ta.min()) & (save <= t_new.max())).any())
