"""Continuous blocks on dia_ode's own integrator (backend="dia_ode"), checked against torchdiffeq.

- on the same fixed steps (rk4 = rk38, euler) outputs and parameter gradients equal torchdiffeq's to
  1e-10 in float64;
- adaptive dopri5 in batch mode (per_sample=False) takes torchdiffeq's steps and evaluations;
- per-sample steps: on a batch that mixes easy and hard samples each pays for its own steps, and the
  stiffness test's count reaches the block;
- a tuple state (DIA's (x, h, c)) packs into one vector per sample and trains;
- solvers.trace records the dia_ode steps; a failed solve stops with one line; what the backend cannot
  take is refused by the option's name.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dia_ode
from dia_ode.numerics import DIAErrorController
from dia_ode.rundir import start_run
from dia_ode.solvers import (BACKENDS, ContinuousBlock, PlainDynamics, SolveFailed, SolverOptionError, StatePacking,
                             StepBudgetExceeded, trace)
from dia_ode.studies.dia_controller_training import TRAIN_COMMAND, save_dia_controller

f64 = torch.float64


def odenet(dtype=f64, name="odenet", **options) -> nn.Module:
    """A tiny odenet or dia_odenet whose field is not zero (the last GroupNorm's zero scale undone), seeded."""
    torch.manual_seed(0)
    model = dia_ode.create_model(name, in_channels=1, width=4, **options).to(dtype)
    with torch.no_grad():
        model.block.dynamics.f.norm3.weight.normal_(0.0, 2.0)
    return model


class Decay(nn.Module):
    """dx/dt = -r w x for the second channel, the sample's rate r in the first (which stays constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones((), dtype=f64))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rate = x[:, :1]  # (B, 1)
        return torch.cat([torch.zeros_like(rate), -rate * self.w * x[:, 1:]], dim=1)


class CubicDecay(Decay):
    """dx/dt = -r w (x + x^3): nonlinear, so the stiffness test's quotient depends on which two stages it
    compares."""

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rate, value = x[:, :1], x[:, 1:]
        return torch.cat([torch.zeros_like(rate), -rate * self.w * (value + value ** 3)], dim=1)


class Square(nn.Module):
    """dx/dt = x^2: from x(0) = 1 the solution 1 / (1 - t) blows up at t = 1."""

    def forward(self, t, x):
        return x * x


def _logits_and_gradients(model: nn.Module, x: torch.Tensor):
    logits = model(x)
    return logits, torch.autograd.grad((logits ** 2).sum() + logits.sum(), list(model.parameters()))


@pytest.mark.parametrize("method, step_size, stages", [("rk4", 0.1, 4), ("euler", 1 / 7, 1)])
def test_fixed_steps_on_dia_ode_give_torchdiffeqs_outputs_and_parameter_gradients(method, step_size, stages):
    x = torch.randn(3, 1, 8, 8, dtype=f64)
    models = {backend: odenet(method=method, step_size=step_size, backend=backend) for backend in BACKENDS}
    (reference, ref_grads), (ours, grads) = (_logits_and_gradients(models[b], x) for b in BACKENDS)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)
    n = math.ceil(1 / step_size - 1e-9)  # uniform_grid's count: both engines take the same n equal steps
    theirs, mine = (models[b].block.stats for b in BACKENDS)
    assert theirs["num_steps"] == mine["num_steps"] == mine["num_accepted"] == n
    assert mine["nfe_forward"] == theirs["nfe_forward"] + 1 == stages * n + 1  # dia_ode also evaluates f at T


@pytest.mark.parametrize("rtol", [1e-3, 1e-5])
def test_batch_mode_dopri5_takes_torchdiffeqs_steps_and_evaluations(rtol):
    x = torch.randn(3, 1, 8, 8, dtype=f64)
    blocks = {}
    for backend in BACKENDS:
        model = odenet(rtol=rtol, atol=rtol, backend=backend)
        with torch.no_grad():
            model(x)
        blocks[backend] = model.block
    theirs, mine = blocks["torchdiffeq"], blocks["dia_ode"]
    assert mine.stats["nfe_forward"] == theirs.stats["nfe_forward"] >= 2 + 6 * 4  # a few steps at least
    assert mine.stats["nfe_forward_max"] == mine.stats["nfe_forward"]  # one step for the batch
    assert torch.equal(mine.sample_stats["nfe"], torch.full((3,), mine.stats["nfe_forward_max"]))
    ends = {name: (log["t"] + log["dt"])[log["accepted"]] for name, log in
            ((name, block.log.tensors()) for name, block in blocks.items())}
    inner = ends["torchdiffeq"][ends["torchdiffeq"] < 1.0]  # torchdiffeq steps past T and interpolates
    torch.testing.assert_close(ends["dia_ode"][:len(inner)], inner, rtol=1e-6, atol=0)


def test_per_sample_steps_let_easy_samples_pay_only_for_their_own_steps():
    rates = torch.tensor([1.0, 1.0, 1.0, 300.0], dtype=f64)
    x = torch.stack([rates, torch.ones(4, dtype=f64)], dim=1)  # (B, 2): the rate, then the decaying value
    blocks = {per_sample: ContinuousBlock(PlainDynamics(Decay()), T=1.0, rtol=1e-6, atol=1e-6, backend="dia_ode",
                                          per_sample=per_sample) for per_sample in (False, True)}
    outputs = {per_sample: block(x) for per_sample, block in blocks.items()}
    batch, alone = blocks[False].stats, blocks[True].stats
    nfe = blocks[True].sample_stats["nfe"]  # (B,)
    assert alone["nfe_forward"] == pytest.approx(float(nfe.double().mean()))
    assert alone["nfe_forward_max"] == int(nfe[3]) > 3 * int(nfe[0])  # the hard sample's own count
    assert alone["nfe_forward"] < 0.6 * batch["nfe_forward"]  # batch mode: everyone takes the hard sample's steps
    torch.testing.assert_close(outputs[True][:, 1], torch.exp(-rates), rtol=1e-4, atol=1e-6)
    stiff = blocks[True].sample_stats["num_stiff_steps"]  # past the transient, stability sets rate 300's steps
    assert stiff[3] > 0 and int(stiff[:3].sum()) == 0
    assert alone["num_tested_steps"] == alone["num_accepted"]  # dopri5: the test ran on every accepted step
    assert alone["num_stiff_steps"] == float(stiff.double().mean())
    outputs[True][:, 1].sum().backward()  # samples that left the batch early keep their graph
    assert torch.isfinite(blocks[True].dynamics.f.w.grad) and blocks[True].dynamics.f.w.grad != 0


def test_torchdiffeq_runs_the_same_stiffness_test_as_dia_ode_on_the_same_steps():
    rates = torch.tensor([1.0, 300.0], dtype=f64)
    x = torch.stack([rates, 2 * torch.ones(2, dtype=f64)], dim=1)
    blocks = {backend: ContinuousBlock(PlainDynamics(CubicDecay()), T=1.0, rtol=1e-6, atol=1e-6, backend=backend)
              for backend in BACKENDS}
    for block in blocks.values():
        block(x)
    theirs, mine = blocks["torchdiffeq"], blocks["dia_ode"]
    logs = {name: block.log.tensors() for name, block in blocks.items()}
    accepted = logs["torchdiffeq"]["accepted"]
    assert torch.equal(accepted, logs["dia_ode"]["accepted"]) and bool((~accepted).any())  # rejections too
    # the first sample's reading per step (NaN on the rejected ones), and every sample's, the last step
    # left out: torchdiffeq steps past T and interpolates back, the lab ends on T
    torch.testing.assert_close(logs["torchdiffeq"]["h_lambda"][:-1], logs["dia_ode"]["h_lambda"][:-1], rtol=1e-6,
                               atol=0, equal_nan=True)
    assert torch.isnan(logs["torchdiffeq"]["h_lambda"][~accepted]).all()
    torch.testing.assert_close(theirs.h_lambda[:-2], mine.h_lambda[:-2], rtol=1e-6, atol=0)
    assert theirs.stats["num_tested_steps"] == theirs.stats["num_accepted"] == mine.stats["num_tested_steps"]
    assert theirs.stats["num_stiff_steps"] == mine.stats["num_stiff_steps"] > 0  # rate 300 is stability-limited


def test_the_stiffness_test_on_torchdiffeq_measures_the_state_not_rnodes_integrals():
    x = torch.randn(2, 1, 8, 8, dtype=f64)
    readings = {}
    for kinetic_energy in (0.0, 1.0):
        model = odenet(rtol=1e-5, atol=1e-5, kinetic_energy=kinetic_energy).train()
        model(x)
        readings[kinetic_energy] = model.block.h_lambda
    # the integrals take no part in the steps (their own error norm) nor in the reading
    assert readings[0.0].numel() > 0
    torch.testing.assert_close(readings[1.0], readings[0.0], rtol=1e-9, atol=0)


def test_state_packing_flattens_each_part_and_unpacks_views_of_any_subset():
    y = (torch.randn(2, 3, 4, 4), torch.randn(2, 3), torch.randn(2, 3))  # DIA's (x, h, c)
    packing = StatePacking.of(y)
    z = packing.pack(y)
    assert z.shape == (2, 48 + 3 + 3) and torch.equal(z[:, :48], y[0].reshape(2, -1))
    assert all(torch.equal(a, b) for a, b in zip(packing.unpack(z), y))
    assert all(torch.equal(a, b[1:]) for a, b in zip(packing.unpack(z[1:]), y))  # the samples still running
    single = StatePacking.of(y[0])
    assert single.pack(y[0]).data_ptr() == y[0].data_ptr() and torch.equal(single.unpack(single.pack(y[0])), y[0])
    with pytest.raises(ValueError, match="one dtype"):
        StatePacking.of((y[0], y[1].double()))


def test_dia_odenet_packs_its_tuple_state_and_trains_a_step_on_dia_ode():
    torch.manual_seed(0)
    model = dia_ode.create_model("dia_odenet", in_channels=1, width=4, backend="dia_ode", per_sample=True,
                                 controller="pid:H312PID", rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        model.block.dynamics.f.norm3.weight.normal_(0.0, 2.0)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    unit = model.block.dynamics.unit
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in unit.parameters())  # the memory's part of the state trains
    assert model.block.stats["nfe_forward"] > 0 and model.block.sample_stats["nfe"].shape == (4,)
    optimizer.step()
    assert F.cross_entropy(model(x), y) < loss


def test_steer_draws_the_end_time_of_a_dia_ode_training_forward():
    model = odenet(dtype=torch.float32, backend="dia_ode", steer=0.5).train()
    model(torch.randn(2, 1, 8, 8))
    log = model.block.log.tensors()
    end = float((log["t"] + log["dt"])[log["accepted"]][-1])
    assert end == model.block.end_time != model.block.T


@pytest.mark.parametrize("name", ["odenet", "dia_odenet"])
def test_solvers_trace_records_the_dia_ode_steps_and_refuses_a_per_sample_batch(name):
    x = torch.randn(2, 1, 8, 8, dtype=f64)
    traces = {}
    for backend in BACKENDS:  # the same fixed steps: the same records (DIA's attention steps included)
        model = odenet(name=name, method="euler", step_size=0.25, backend=backend)
        (traces[backend],), out = trace(model, x, return_output=True)
        assert torch.equal(out, model(x))  # recording does not change the output
    assert len(traces["dia_ode"]) == len(traces["torchdiffeq"]) == 4
    for record in ("states", "updates", "steps", "times"):
        for ours, theirs in zip(getattr(traces["dia_ode"], record), getattr(traces["torchdiffeq"], record)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    model = odenet(name=name, rtol=1e-4, atol=1e-4, backend="dia_ode")
    (tr,) = trace(model, x)
    log = model.block.log.tensors()
    assert torch.equal(torch.stack(tr.times), log["t"][log["accepted"]])  # the accepted steps, where they start
    per_sample = odenet(name=name, rtol=1e-4, atol=1e-4, backend="dia_ode", per_sample=True)
    with pytest.raises(ValueError, match="trace one sample at a time"):
        trace(per_sample, x)
    assert len(trace(per_sample, x[:1])[0]) >= 1  # one sample: its own steps are the batch's


def test_a_failed_solve_stops_with_one_line_naming_the_samples_their_codes_and_the_option():
    block = ContinuousBlock(PlainDynamics(Square()), T=2.0, backend="dia_ode", per_sample=True, max_num_steps=50)
    with pytest.raises(StepBudgetExceeded, match=r"failed for 1 of 2 samples \(1 max steps reached\) .*"
                                                 r"raise max_num_steps=50 or loosen rtol/atol") as failure:
        block(torch.tensor([[0.1], [1.0]], dtype=f64))  # 1 / (10 - t) is fine on [0, 2]; 1 / (1 - t) is not
    assert isinstance(failure.value, SolveFailed) and "\n" not in str(failure.value)
    assert int(block.sample_stats["num_steps"][0]) < 50  # the healthy sample finished, and its record is kept
    with pytest.raises(SolveFailed, match=r"\(1 non-finite state\).*the dynamics blew up: tighter rtol/atol"):
        block(torch.tensor([[0.1], [math.nan]], dtype=f64))


def test_a_solve_that_fails_in_a_later_epoch_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from dataclasses import asdict

    from dia_ode.engine import TrainConfig, run_training
    from dia_ode.rundir import load_checkpoint

    hard = {"now": False}  # set after epoch 1: from then on every sample's step budget is one step
    forward = ContinuousBlock.forward

    def budgeted(self, x):
        if hard["now"]:
            self.max_num_steps = 1
        return forward(self, x)
    monkeypatch.setattr(ContinuousBlock, "forward", budgeted)
    cfg = TrainConfig(model="odenet", epochs=2, batch_size=256, device="cpu",
                      model_options={"width": 4, "backend": "dia_ode", "per_sample": True})
    run_dir = start_run(tmp_path, "train-odenet", {"command": "train", **asdict(cfg)}, argv=["test"])
    with pytest.raises(SolveFailed, match=r"failed for \d+ of \d+ samples \(\d+ max steps reached\).*"
                                          r"raise max_num_steps=1") as failure:
        run_training(cfg, run_dir, progress=False, on_epoch_end=lambda epoch, row: hard.update(now=True))
    assert "\n" not in str(failure.value)
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1  # epoch 1's checkpoint stays
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("options, option", [
    ({"backend": "jax"}, "backend"),
    ({"backend": "dia_ode", "controller": "pid:H999"}, "controller"),
    ({"backend": "dia_ode", "controller": "p"}, "controller"),
    ({"controller": "pi"}, "controller"),  # torchdiffeq has its own step rule
    ({"per_sample": True}, "per_sample"),  # and one step for the batch
    ({"backend": "dia_ode", "method": "rk4", "step_size": 0.1, "per_sample": True}, "per_sample"),
    ({"backend": "dia_ode", "method": "euler", "step_size": 0.1, "controller": "pi"}, "controller"),
    ({"backend": "dia_ode", "method": "dopri8"}, "method"),
    ({"backend": "dia_ode", "kinetic_energy": 0.1}, "kinetic_energy"),
])
def test_engine_options_the_block_cannot_take_are_refused_by_name(options, option):
    with pytest.raises(SolverOptionError, match=option) as refused:
        ContinuousBlock(PlainDynamics(Square()), **options)
    assert refused.value.option == option


def test_a_trained_controller_run_steers_a_block_and_its_zero_cell_steps_as_pi(tmp_path):
    run_dir = start_run(tmp_path, "controllers-train-dia", {"command": TRAIN_COMMAND})
    save_dia_controller(DIAErrorController(), run_dir)  # the zero cell: the PI controller exactly
    x = torch.randn(2, 1, 8, 8, dtype=f64)
    stats = {}
    for controller in ("pi", f"dia:{run_dir}"):
        model = odenet(rtol=1e-5, atol=1e-5, backend="dia_ode", per_sample=True, controller=controller)
        with torch.no_grad():
            model(x)
        stats[controller] = model.block.sample_stats
    assert all(torch.equal(stats["pi"][key], stats[f"dia:{run_dir}"][key]) for key in ("nfe", "num_rejected"))
    other = start_run(tmp_path, "integrate", {"command": "integrate"})
    with pytest.raises(SolverOptionError, match="controller 'dia:.*holds no DIA controller"):
        odenet(backend="dia_ode", controller=f"dia:{other}")


def test_the_adjoint_on_dia_ode_gives_the_exact_gradient_and_counts_its_backward_solve():
    x = torch.tensor([[1.0, 1.0], [5.0, -2.0], [40.0, 0.5]], dtype=f64)  # rates 1, 5, 40 in the first channel
    grads, blocks = [], []
    for adjoint in (False, True):
        block = ContinuousBlock(PlainDynamics(Decay()), rtol=1e-9, atol=1e-9, backend="dia_ode", per_sample=True,
                                adjoint=adjoint)
        block(x)[:, 1].square().sum().backward()  # x1(T) = x1(0) exp(-r w T), T = 1
        grads.append(float(block.dynamics.f.w.grad))
        blocks.append(block)
    rate, x1 = x[:, 0], x[:, 1]
    exact = float((-2 * rate * x1 ** 2 * torch.exp(-2 * rate)).sum())  # d/dw sum x1(T)^2 at w = 1
    assert grads[0] == pytest.approx(exact, rel=1e-6) and grads[1] == pytest.approx(exact, rel=1e-6)
    backprop, adjoint = (b.stats for b in blocks)
    assert backprop["nfe_backward"] == 0 < adjoint["nfe_backward"] and adjoint["num_steps_backward"] > 0
    steps = blocks[1].sample_stats["num_steps"]
    assert steps[0] < steps[2]  # every sample on its own forward steps


def test_a_state_off_the_cpu_is_refused_by_the_dia_ode_backend_in_one_line():
    block = ContinuousBlock(PlainDynamics(Decay()), backend="dia_ode")
    with pytest.raises(SolverOptionError, match="CPU only") as refused:
        block(torch.zeros(2, 2, dtype=f64, device="meta"))
    assert refused.value.option == "backend"

