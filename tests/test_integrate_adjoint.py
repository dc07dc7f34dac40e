"""The adjoint method of dia_ode.numerics.solve_adjoint: per-sample backward steps, the gradients of
backpropagation at tight tolerance, torchdiffeq's seminorm adjoint, and failures named in one line."""

from __future__ import annotations

import pytest
import torch
import torchdiffeq

from dia_ode.numerics import AdjointFailed, solve, solve_adjoint
from ode_fields import MLPField, gradients as _gradients, y0_batch as _y0

f64 = torch.float64


def _largest_relative(ours, reference) -> float:
    return max(float(((a - b).abs() / b.abs().max()).max()) for a, b in zip(ours, reference))


def test_the_adjoint_gives_backprops_gradients_at_tight_tolerance():
    field, y0 = MLPField(), _y0()
    times = torch.linspace(0.0, 2.0, 3, dtype=f64)  # the output's gradient enters at every save time
    tol = dict(rtol=1e-10, atol=1e-12)
    backprop = _gradients(field, y0, solve(field, y0, 0.0, 2.0, t_eval=times, **tol).y)
    adjoint = solve_adjoint(field, y0, 0.0, 2.0, t_eval=times, **tol)
    assert _largest_relative(_gradients(field, y0, adjoint.y), backprop) < 1e-7
    steps = adjoint.backward_stats["num_steps"]
    assert steps.shape == (4,) and len(set(steps.tolist())) > 1  # every sample on its own backward steps
    assert (adjoint.backward_stats["nfe_quadrature"] > 0).all()


def test_the_adjoint_agrees_with_torchdiffeqs_seminorm_adjoint_in_batch_mode():
    field, y0 = MLPField(), _y0()
    tol = dict(rtol=1e-8, atol=1e-10)
    ours = solve_adjoint(field, y0, 0.0, 2.0, per_sample=False, **tol).y[:, -1]
    theirs = torchdiffeq.odeint_adjoint(field, y0, torch.tensor([0.0, 2.0], dtype=f64), method="dopri5",
                                        adjoint_options={"norm": "seminorm"}, **tol)[-1]
    assert _largest_relative(_gradients(field, y0, ours), _gradients(field, y0, theirs)) < 1e-6


def test_a_batchs_adjoint_is_the_sum_of_its_samples_adjoints():
    field, y0 = MLPField(), _y0(batch=3) * torch.tensor([[0.1], [1.0], [3.0]], dtype=f64)
    tol = dict(rtol=1e-7, atol=1e-9)
    batch = solve_adjoint(field, y0, 0.0, 1.0, **tol)
    grads = torch.autograd.grad(batch.y.square().sum(), list(field.parameters()))
    expected = [torch.zeros_like(p) for p in field.parameters()]
    for i in range(3):
        alone = solve_adjoint(field, y0[i:i + 1], 0.0, 1.0, **tol)
        for total, g in zip(expected, torch.autograd.grad(alone.y.square().sum(), list(field.parameters()))):
            total += g
        assert torch.equal(alone.backward_stats["num_steps"][0], batch.backward_stats["num_steps"][i])
    assert _largest_relative(grads, expected) < 1e-9


def test_a_failed_backward_solve_names_its_samples_and_the_option():
    field, y0 = MLPField(), _y0()
    sol = solve_adjoint(field, y0, 0.0, 2.0, rtol=1e-8, atol=1e-10, adjoint_max_steps=2)
    with pytest.raises(AdjointFailed, match=r"failed for 4 of 4 samples \(max steps reached\).*adjoint_max_steps"):
        sol.y.sum().backward()


@pytest.mark.parametrize("kwargs, words", [({"args": torch.ones(4)}, "does not take args"),
                                           ({"t_eval": torch.tensor([0.5, 1.0])}, "must start at t0")])
def test_options_the_adjoint_cannot_take_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        solve_adjoint(MLPField(), _y0(), 0.0, 1.0, **kwargs)
