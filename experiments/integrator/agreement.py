"""I1 (experiments/README.md): dia_ode's integrator against torchdiffeq in float64, outputs and gradients.

Fixed steps (euler; rk38 = torchdiffeq's rk4) and adaptive dopri5 in batch mode (torchdiffeq's error
estimate and I controller), on a small time-dependent MLP field and a batch of 4 states in R^3; prints
the largest differences of y(T) and of the gradients of sum(y^2) + sum(y) with respect to y0 and the
parameters, and of the accepted step ends.
"""

import dataclasses

import torch
import torchdiffeq
from torch import nn

from dia_ode.numerics import IController, get_tableau, solve

f64 = torch.float64
torch.set_num_threads(1)


class Field(nn.Module):
    def __init__(self, n: int = 3, width: int = 8) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.state_in, self.time_in = nn.Linear(n, width).double(), nn.Linear(1, width, bias=False).double()
        self.out = nn.Linear(width, n).double()
        self.accepted: list[float] = []

    def forward(self, t, y):
        t = t.expand(y.shape[0]) if t.dim() == 0 else t
        return self.out(torch.tanh(self.state_in(y) + self.time_in(t[:, None].to(y.dtype))))


def gradients(field, y0, y):
    return torch.autograd.grad((y ** 2).sum() + y.sum(), [y0, *field.parameters()])


def largest(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


y0 = torch.linspace(-1.0, 1.0, 12, dtype=f64).reshape(4, 3).requires_grad_(True)
for ours, theirs in (("euler", "euler"), ("rk38", "rk4")):
    field = Field()
    mine = solve(field, y0, 0.0, 1.0, method=ours, step_size=0.125).y[:, -1]
    ref = torchdiffeq.odeint(field, y0, torch.tensor([0.0, 1.0], dtype=f64), method=theirs,
                             options={"step_size": 0.125})[-1]
    print(f"fixed {ours} vs torchdiffeq {theirs} (8 steps): max |dy| {float((mine - ref).detach().abs().max()):.1e}, "
          f"max |d grad| {largest(gradients(field, y0, mine), gradients(field, y0, ref)):.1e}")

field = Field()
field.callback_accept_step = lambda t0, y, dt: field.accepted.append(float((t0 + dt).detach()))
dopri5 = get_tableau("dopri5")
shampine = dataclasses.replace(dopri5, b_error=dopri5.b_error * 2 / 3)
for tol in (1e-6, 1e-9):
    field.accepted.clear()
    sol = solve(field, y0, 0.0, 5.0, method=shampine, controller=IController(), per_sample=False, trace=True,
                rtol=tol, atol=tol / 10)
    ref = torchdiffeq.odeint(field, y0, torch.tensor([0.0, 5.0], dtype=f64), method="dopri5", rtol=tol,
                             atol=tol / 10)[-1]
    steps = sol.trace.of(0)
    ends = (steps["t"] + steps["h"])[steps["accepted"]]
    theirs = torch.tensor([t for t in field.accepted if t < 5.0], dtype=f64)
    g_ours, g_ref = gradients(field, y0, sol.y[:, -1]), gradients(field, y0, ref)
    relative = max(float(((a - b).abs() / b.abs().clamp_min(1e-12)).max()) for a, b in zip(g_ours, g_ref))
    print(f"batch dopri5 rtol {tol:g}: {len(ends)} accepted steps (torchdiffeq {len(theirs)} before t1, then "
          f"one past it), max relative difference of step ends {float(((ends[:len(theirs)] - theirs) / theirs).abs().max()):.1e}; "
          f"max |dy| {float((sol.y[:, -1] - ref).detach().abs().max()):.1e}; gradients max relative difference {relative:.1e}")

# the adjoint (per-sample backward steps) against backpropagation and torchdiffeq's seminorm adjoint
from dia_ode.numerics import solve_adjoint  # noqa: E402

field = Field()
times = torch.linspace(0.0, 2.0, 3, dtype=f64)
for tol in (1e-6, 1e-10):
    backprop = gradients(field, y0, solve(field, y0, 0.0, 2.0, t_eval=times, rtol=tol, atol=tol / 100).y)
    adjoint = solve_adjoint(field, y0, 0.0, 2.0, t_eval=times, rtol=tol, atol=tol / 100)
    ours = gradients(field, y0, adjoint.y)
    relative = max(float(((a - b).abs() / b.abs().max()).max()) for a, b in zip(ours, backprop))
    print(f"adjoint vs backprop, per sample, rtol {tol:g}: gradients max relative difference {relative:.1e}; "
          f"backward steps per sample {adjoint.backward_stats['num_steps'].tolist()}")
for tol in (1e-6, 1e-8):
    ours = solve_adjoint(field, y0, 0.0, 2.0, per_sample=False, rtol=tol, atol=tol / 100).y[:, -1]
    theirs = torchdiffeq.odeint_adjoint(field, y0, torch.tensor([0.0, 2.0], dtype=f64), method="dopri5",
                                        adjoint_options={"norm": "seminorm"}, rtol=tol, atol=tol / 100)[-1]
    relative = max(float(((a - b).abs() / b.abs().max()).max())
                   for a, b in zip(gradients(field, y0, ours), gradients(field, y0, theirs)))
    print(f"adjoint vs torchdiffeq's seminorm adjoint, batch mode, rtol {tol:g}: gradients max relative "
          f"difference {relative:.1e}")
