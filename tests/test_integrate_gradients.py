"""The integrator on any state and through backpropagation, checked against torchdiffeq in float64.

- a state of any shape (B, ...) is solved exactly as its flattened vectors, norms per sample;
- on the same fixed steps (euler; rk38, which is torchdiffeq's rk4) outputs and parameter gradients
  equal torchdiffeq's to 1e-10;
- in batch mode (one error norm and one step for the batch) adaptive dopri5 with torchdiffeq's error
  estimate takes torchdiffeq's accepted steps and gives its gradients, both to 1e-6;
- per-sample steps: samples that finish early drop out of the batch without breaking the graph, so the
  batch's gradient is the sum of every sample's gradient solved alone.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchdiffeq

from dia_ode.numerics import IController, get_tableau, solve
from ode_fields import MLPField, RecordingField, gradients as _gradients, y0_batch as _y0

f64 = torch.float64


def test_a_state_of_any_shape_is_solved_as_its_flat_vectors():
    rates = torch.tensor([1.0, 300.0], dtype=f64)

    def field(t, y):  # decay at a rate per sample, on images (B, C, H, W)
        return -rates[: y.shape[0], None, None, None] * y * (1 + 0.1 * torch.sin(t))[:, None, None, None]

    y0 = torch.rand(2, 2, 3, 3, dtype=f64) + 0.5
    times = torch.linspace(0.0, 1.0, 5, dtype=f64)
    images = solve(field, y0, 0.0, 1.0, rtol=1e-6, atol=1e-9, t_eval=times)
    flat = solve(lambda t, y: field(t, y.reshape(-1, 2, 3, 3)).reshape(y.shape[0], -1), y0.reshape(2, -1), 0.0,
                 1.0, rtol=1e-6, atol=1e-9, t_eval=times)
    assert images.y.shape == (2, 5, 2, 3, 3)
    assert torch.equal(images.y.reshape(2, 5, -1), flat.y)
    assert torch.equal(images.stats["nfe"], flat.stats["nfe"])
    alone = solve(field, y0[:1], 0.0, 1.0, rtol=1e-6, atol=1e-9)
    assert int(images.stats["nfe"][0]) == int(alone.stats["nfe"][0]) < int(images.stats["nfe"][1])  # per sample


@pytest.mark.parametrize("ours, theirs", [("euler", "euler"), ("rk38", "rk4")])
def test_fixed_steps_give_torchdiffeqs_outputs_and_gradients(ours, theirs):
    field, y0 = MLPField(), _y0()
    mine = solve(field, y0, 0.0, 1.0, method=ours, step_size=0.125).y[:, -1]
    grads = _gradients(field, y0, mine)
    reference = torchdiffeq.odeint(field, y0, torch.tensor([0.0, 1.0], dtype=f64), method=theirs,
                                   options={"step_size": 0.125})[-1]
    torch.testing.assert_close(mine, reference, rtol=0, atol=1e-10)
    for g, r in zip(grads, _gradients(field, y0, reference)):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)


def test_batch_mode_dopri5_takes_torchdiffeqs_accepted_steps_and_gives_its_gradients():
    field, y0 = RecordingField(), _y0()
    dopri5 = get_tableau("dopri5")
    shampine = dataclasses.replace(dopri5, b_error=dopri5.b_error * 2 / 3)  # torchdiffeq's error estimate
    tol = dict(rtol=1e-9, atol=1e-10)
    sol = solve(field, y0, 0.0, 5.0, method=shampine, controller=IController(), per_sample=False, trace=True, **tol)
    grads = _gradients(field, y0, sol.y[:, -1])
    reference = torchdiffeq.odeint(field, y0, torch.tensor([0.0, 5.0], dtype=f64), method="dopri5", **tol)[-1]
    steps = sol.trace.of(0)
    ours = (steps["t"] + steps["h"])[steps["accepted"]]
    theirs = torch.tensor(field.accepted, dtype=f64)
    inner = theirs[theirs < 5.0]  # torchdiffeq steps past t1 and interpolates; we end on t1
    # the same steps, to the rounding of an error estimate that cancels to ~1e-9 of the stages
    assert len(inner) > 15 and len(ours) in (len(inner), len(inner) + 1)
    torch.testing.assert_close(ours[:len(inner)], inner, rtol=1e-6, atol=0)
    for i in range(1, len(y0)):  # one step for the batch: every sample took the same steps
        assert torch.equal(sol.trace.of(i)["h"], steps["h"])
    for g, r in zip(grads, _gradients(field, y0, reference)):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8)


def test_per_sample_steps_backpropagate_through_samples_that_finish_early():
    field = MLPField()
    y0 = _y0(batch=3)
    rates = torch.tensor([1.0, 20.0, 200.0], dtype=f64)  # the fast samples take many more steps
    times = torch.linspace(0.0, 1.0, 4, dtype=f64)
    sol = solve(field, y0, 0.0, 1.0, args=rates, rtol=1e-7, atol=1e-9, t_eval=times)
    assert sol.stats["num_steps"][0] < sol.stats["num_steps"][2]  # sample 0 left the batch first
    batch_grads = _gradients(field, y0, sol.y)
    expected = [torch.zeros_like(p) for p in field.parameters()]
    for i in range(3):
        alone = solve(field, y0[i:i + 1], 0.0, 1.0, args=rates[i:i + 1], rtol=1e-7, atol=1e-9, t_eval=times)
        # the same steps alone (to the rounding of a matrix product over another batch size)
        torch.testing.assert_close(alone.y[0], sol.y[i], rtol=0, atol=1e-11)
        assert torch.equal(alone.stats["num_steps"][0], sol.stats["num_steps"][i])
        loss = (alone.y ** 2).sum() + alone.y.sum()
        for total, g in zip(expected, torch.autograd.grad(loss, list(field.parameters()))):
            total += g
    for g, e in zip(batch_grads[1:], expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)
    assert batch_grads[0].abs().sum() > 0  # y0's gradient reaches every sample


def test_no_graph_is_built_where_no_gradient_is_wanted():
    field, y0 = MLPField(), _y0().detach()
    with torch.no_grad():
        sol = solve(field, y0, 0.0, 1.0, rtol=1e-6, atol=1e-8)
    assert not sol.y.requires_grad
    assert solve(field, y0, 0.0, 1.0, rtol=1e-6, atol=1e-8).y.requires_grad  # the parameters ask for one
