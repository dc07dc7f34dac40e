"""Gradients of a solve by the adjoint method (optimise-then-discretise), each sample on its own steps.

The forward solve records no graph. Backward solves the augmented system of every sample from t1 back
to t0 (Pontryagin; "Neural Ordinary Differential Equations", Chen et al., arXiv 1806.07366), between
consecutive save times, where the output's gradient is added to the adjoint and the state is reset to
the forward solution (as torchdiffeq does):

    dy/dt = f(t, y),    da/dt = -a^T df/dy,    dtheta/dt = -a^T df/dtheta.

Time runs backwards, so the solver integrates tau = -t forwards. Each sample keeps its own steps,
error controller and result code on (y, a). The parameter adjoint is a quadrature over the accepted
steps with the method's own weights and stages (the same numbers as integrating it as part of the
state), summed over the samples as it is computed: it never enters the error norm. That is
torchdiffeq's `adjoint_options={"norm": "seminorm"}` ("Hey, that's not an ODE", Kidger et al., arXiv
2009.09457), here the only choice: a full norm would need a parameter adjoint per sample, B copies of
the parameters and a vector-Jacobian product per sample.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field as dataclass_field
from typing import Callable, Sequence

import torch
from torch import nn

from dia_ode.numerics.integrate import RESULTS, SUCCESS, solve
from dia_ode.numerics.methods import RungeKutta, StepResult
from dia_ode.numerics.solution import Solution
from dia_ode.numerics.tableaux import Tableau, get_tableau


class AdjointFailed(RuntimeError):
    """The backward solve of some samples ended without success (their result codes in the message)."""


@dataclass
class _Adjoint:
    """What forward hands to backward: the field, its parameters, the options of both solves, and the
    statistics of the backward solve once it ran (Solution.backward_stats)."""

    f: Callable
    params: tuple[torch.Tensor, ...]
    t0: float
    t1: float
    save: torch.Tensor
    options: dict
    backward_options: dict
    solution: Solution | None = None
    backward_stats: dict[str, torch.Tensor] = dataclass_field(default_factory=dict)
    on_backward: Callable[[dict[str, torch.Tensor]], None] | None = None


def solve_adjoint(f: Callable, y0: torch.Tensor, t0: float, t1: float, *, params: Sequence[torch.Tensor] | None = None,
                  t_eval: torch.Tensor | None = None, adjoint_rtol: float | None = None,
                  adjoint_atol: float | None = None, adjoint_max_steps: int | None = None,
                  on_backward: Callable[[dict[str, torch.Tensor]], None] | None = None, **options) -> Solution:
    """solve(f, y0, t0, t1, ...) whose gradients come from the adjoint method (module docstring).

    Args:
        f: the batch field f(t (B,), y (B, ...)) -> (B, ...); an nn.Module gives its parameters.
        y0: initial values (B, ...).
        params: the tensors to differentiate besides y0; default f's parameters that require grad.
        t_eval: save times in [t0, t1], increasing (default t0 and t1).
        adjoint_rtol, adjoint_atol: tolerances of the backward solve (default: the forward's).
        adjoint_max_steps: step budget of each backward segment (default: the forward's).
        on_backward: called with the backward solve's statistics once it ran (a block's nfe_backward).
        **options: solve's options (method, controller, rtol, atol, per_sample, max_steps, ...), used by
            both solves (trace: the forward's only); a fresh copy of the controller for the backward
            one. Not: args, stiff_switch, on_step.

    Returns:
        The forward Solution; its y carries the adjoint to y0 and params. After backward,
        `Solution.backward_stats` holds the backward solve's statistics (nfe, num_steps, ...) per sample.

    Raises:
        ValueError: an option the adjoint does not take, or save times that do not span [t0, t1].
        AdjointFailed: from backward, when a backward solve fails (one line: samples, results, option).
    """
    for name in ("args", "stiff_switch", "on_step"):
        if options.get(name) is not None and options.get(name) is not False:
            raise ValueError(f"solve_adjoint does not take {name}")
    if params is None:
        params = [p for p in f.parameters() if p.requires_grad] if isinstance(f, nn.Module) else []
    save = torch.tensor([t0, t1], dtype=torch.float64) if t_eval is None else \
        torch.as_tensor(t_eval, dtype=torch.float64).flatten()
    if save.numel() < 2 or float(save[0]) != t0 or float(save[-1]) != t1:
        raise ValueError(f"t_eval must start at t0={t0} and end at t1={t1} for the adjoint (the backward solve "
                         f"runs from save time to save time)")
    backward = {key: value for key, value in options.items() if key != "trace"}
    backward["rtol"] = adjoint_rtol if adjoint_rtol is not None else options.get("rtol", 1e-6)
    backward["atol"] = adjoint_atol if adjoint_atol is not None else options.get("atol", 1e-6)
    if adjoint_max_steps is not None:
        backward["max_steps"] = adjoint_max_steps
    context = _Adjoint(f, tuple(params), float(t0), float(t1), save, dict(options), backward, on_backward=on_backward)
    y = _AdjointSolve.apply(context, y0, *context.params)
    solution = context.solution
    solution.y = y
    solution.backward_stats = context.backward_stats
    return solution


class _AdjointSolve(torch.autograd.Function):
    """y(save times) = solve(...) with backward by the adjoint method."""

    @staticmethod
    def forward(ctx, context: _Adjoint, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            context.solution = solve(context.f, y0, context.t0, context.t1, t_eval=context.save, **context.options)
        ctx.context = context
        ctx.save_for_backward(context.solution.y)
        return context.solution.y.clone()  # (B, T, ...)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        context = ctx.context
        (ys,) = ctx.saved_tensors
        grad_y0, grad_params = _backward(context, ys, grad_y)
        return (None, grad_y0, *grad_params)


def _backward(context: _Adjoint, ys: torch.Tensor, grad_y: torch.Tensor
              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(dL/dy0, dL/dparams) from the output's gradient grad_y (B, T, ...) (module docstring)."""
    B, shape = ys.shape[0], ys.shape[2:]
    n = ys[0, 0].numel()
    ys, grad_y = ys.reshape(B, -1, n), grad_y.reshape(B, -1, n)  # flat states: (B, T, n)
    params, save = context.params, context.save
    totals = [torch.zeros_like(p) for p in params]
    stats: dict[str, torch.Tensor] = {}
    a = grad_y[:, -1]  # (B, n)
    method = context.backward_options.get("method", "dopri5")
    tableau = get_tableau(method) if isinstance(method, str) else method
    field = _AugmentedField(context.f, shape, n)
    quadrature = _ParameterQuadrature(field, params, totals, tableau)
    quadrature.evaluations = torch.zeros(B, dtype=torch.int64)
    for j in range(save.numel() - 1, 0, -1):
        z0 = torch.cat([ys[:, j], a], dim=1)  # (B, 2n): the forward state, the adjoint
        options = {**context.backward_options, "controller": _fresh(context.backward_options.get("controller"))}
        sol = solve(field, z0, -float(save[j]), -float(save[j - 1]), on_step=quadrature, **options)
        if not bool((sol.result == SUCCESS).all()):
            failed = sol.result != SUCCESS
            codes = sorted({RESULTS[int(c)] for c in sol.result[failed]})
            raise AdjointFailed(f"the adjoint solve failed for {int(failed.sum())} of {B} samples ({', '.join(codes)}) "
                                f"between t = {float(save[j - 1]):g} and {float(save[j]):g}; loosen adjoint_rtol / "
                                f"adjoint_atol or raise adjoint_max_steps")
        for key, value in sol.stats.items():
            stats[key] = stats.get(key, 0) + value
        a = sol.y[:, -1, n:] + grad_y[:, j - 1]  # the adjoint at save time j - 1, plus its own gradient there
    context.backward_stats.update(stats, nfe_quadrature=quadrature.evaluations)
    if context.on_backward is not None:
        context.on_backward(context.backward_stats)
    return a.reshape(B, *shape), totals


def _fresh(controller):
    """A new controller like the given one (its state is per solve), or None for the default."""
    return None if controller is None else copy.deepcopy(controller)


class _AugmentedField:
    """The backward system in tau = -t, on flat states z = [y, a] (B, 2n):
    dz/dtau = [-f(-tau, y), a^T df/dy]."""

    def __init__(self, f: Callable, shape: torch.Size, n: int) -> None:
        self.f, self.shape, self.n = f, shape, n

    def field_and_vjp(self, tau: torch.Tensor, z: torch.Tensor, inputs: Sequence[torch.Tensor]
                      ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(f(-tau, y) flat (B, n), the vector-Jacobian products of a with f w.r.t. y and `inputs`)."""
        y, a = z[:, :self.n], z[:, self.n:]
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            out = self.f(-tau, y.reshape(y.shape[0], *self.shape)).reshape(y.shape[0], -1)  # (B, n)
            grads = torch.autograd.grad(out, (y, *inputs), a, allow_unused=True)
        grads = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, (y, *inputs)))
        return out.detach(), grads

    def __call__(self, tau: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out, (vjp_y,) = self.field_and_vjp(tau, z, ())
        return torch.cat([-out, vjp_y], dim=1)  # (B, 2n)


class _ParameterQuadrature:
    """on_step of the backward solves: adds every accepted step's h * sum_i b_i a_i^T df/dtheta(t_i, y_i)
    over its stages to the parameters' gradients (one vector-Jacobian product a stage, all samples at
    once: their weights h b_i go into the cotangent, so the products sum over the samples)."""

    def __init__(self, field: _AugmentedField, params: Sequence[torch.Tensor], totals: list[torch.Tensor],
                 tableau: Tableau) -> None:
        self.field, self.params, self.totals = field, tuple(params), totals
        self.method = RungeKutta(tableau)
        self.evaluations: torch.Tensor | None = None  # (B,) per sample, once the batch size is known

    def __call__(self, step: StepResult, tau: torch.Tensor, h: torch.Tensor, accept: torch.Tensor,
                 idx: torch.Tensor) -> None:
        if not self.params or not bool(accept.any()):
            return
        self.evaluations[idx[accept]] += len(self.method.b_terms)
        weight = (h * accept).to(step.stage_inputs[0].dtype)[:, None]  # (B, 1): 0 on rejected steps
        for stage, b in self.method.b_terms:
            z = step.stage_inputs[stage]
            tau_s = tau + self.method.c[stage] * h
            cotangent = torch.cat([z[:, :self.field.n], b * weight * z[:, self.field.n:]], dim=1)
            _, (_, *grads) = self.field.field_and_vjp(tau_s, cotangent, self.params)
            for total, g in zip(self.totals, grads):
                total += g
