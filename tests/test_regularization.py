"""Adjoint options, RNODE's kinetic and Jacobian penalties and STEER's random end time
(dia_ode/solvers/regularization.py, ContinuousBlock's options; theory/continuous_dia.md)."""

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.integrate import quad_vec
from scipy.linalg import expm
from torch import nn

import dia_ode
from dia_ode.solvers import ContinuousBlock, PlainDynamics, make_dynamics, regularization_loss
from dia_ode.tasks import get_task


class Linear(nn.Module):
    """f(t, x) = A x on (B, d) states."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, x):
        return x @ self.A.T


class MLP(nn.Module):
    """A smooth field with parameters: f(t, x) = W2 tanh(W1 x + b1) + b2."""

    def __init__(self, d: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, t, x):
        return self.l2(torch.tanh(self.l1(x)))


def mlp_block(**kw) -> ContinuousBlock:
    torch.manual_seed(0)
    return ContinuousBlock(PlainDynamics(MLP()), T=1.0, **kw).double()


def backward_stats(block: ContinuousBlock, x: torch.Tensor) -> dict:
    block(x).pow(2).sum().backward()
    return block.stats


# ---- adjoint options --------------------------------------------------------------------------------------------

def test_adjoint_tolerances_reach_torchdiffeq_and_default_to_the_forwards():
    x = torch.randn(8, 4, dtype=torch.float64)
    default = backward_stats(mlp_block(adjoint=True, rtol=1e-4, atol=1e-4), x)
    same = backward_stats(mlp_block(adjoint=True, rtol=1e-4, atol=1e-4, adjoint_rtol=1e-4, adjoint_atol=1e-4), x)
    tight = backward_stats(mlp_block(adjoint=True, rtol=1e-4, atol=1e-4, adjoint_rtol=1e-9, adjoint_atol=1e-9), x)
    assert same == default
    assert tight["nfe_forward"] == default["nfe_forward"]  # only the adjoint solve changes
    assert tight["nfe_backward"] > default["nfe_backward"]


def test_seminorm_reaches_torchdiffeq_and_saves_adjoint_steps():
    x = torch.randn(8, 4, dtype=torch.float64)
    full = mlp_block(adjoint=True, rtol=1e-5, atol=1e-5)
    semi = mlp_block(adjoint=True, rtol=1e-5, atol=1e-5, adjoint_seminorm=True)
    full_stats, semi_stats = backward_stats(full, x), backward_stats(semi, x)
    assert semi_stats["nfe_forward"] == full_stats["nfe_forward"]
    assert semi_stats["nfe_backward"] < full_stats["nfe_backward"]  # the parameters' adjoint no longer limits dt
    for p, q in zip(full.parameters(), semi.parameters()):  # the gradient is still the gradient
        assert torch.allclose(p.grad, q.grad, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("kw,needle", [
    ({"adjoint_rtol": 1e-5}, "adjoint=True"),
    ({"adjoint_seminorm": True}, "adjoint=True"),
    ({"adjoint": True, "adjoint_atol": 0.0}, "adjoint_atol must be > 0"),
    ({"adjoint": True, "adjoint_seminorm": True, "method": "rk4", "step_size": 0.1}, "fixed-grid 'rk4'"),
    ({"kinetic_energy": -1.0}, "kinetic_energy must be >= 0"),
    ({"jacobian_norm": float("nan")}, "jacobian_norm must be >= 0"),
    ({"steer": 1.0}, "steer must satisfy 0 <= steer < T = 1"),
    ({"steer": -0.1}, "steer"),
    ({"hutchinson_noise": "uniform"}, "unknown hutchinson_noise 'uniform'; valid: gaussian, rademacher"),
])
def test_bad_adjoint_and_regularisation_options_raise_value_error(kw, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        ContinuousBlock(PlainDynamics(MLP()), **kw)


def test_bad_model_option_is_a_one_line_usage_error(tmp_path):
    from dia_ode.cli import main

    result = CliRunner().invoke(main, ["train", "--model", "odenet", "--model-option", "steer=1.5", "--out",
                                       str(tmp_path), "--no-progress"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--model" in errors[0] and "steer" in errors[0], result.output
    assert not any(tmp_path.iterdir())


def test_ls_lists_the_new_options_with_types_and_defaults():
    from dia_ode.cli import main

    result = CliRunner().invoke(main, ["ls", "--options", "dia_odenet"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split(None, 1)[1] for line in result.output.splitlines()[1:] if line.strip()}
    assert rows["adjoint_rtol"].split() == ["float", "or", "None", "None"]
    assert rows["adjoint_atol"].split() == ["float", "or", "None", "None"]
    assert rows["adjoint_seminorm"].split() == ["bool", "False"]
    for name in ("kinetic_energy", "jacobian_norm", "steer"):
        assert rows[name].split() == ["float", "0.0"]
    assert rows["hutchinson_noise"].split() == ["str", "'gaussian'"]


def test_rademacher_probes_are_reachable_from_the_model_and_the_command_line(tmp_path, monkeypatch):
    from dia_ode.cli import main
    from dia_ode.solvers.regularization import RegularizedDynamics

    net = dia_ode.create_model("odenet", in_channels=1, width=4, jacobian_norm=0.1, hutchinson_noise="rademacher")
    with torch.no_grad():
        net.block.dynamics.f.norm3.weight.fill_(1.0)  # a non-zero field
    net.train()(torch.randn(2, 1, 8, 8))
    assert net.block.hutchinson_noise == "rademacher" and "hutchinson_noise=rademacher" in repr(net.block)
    assert regularization_loss(net).item() > 0
    probes, real_initial_state = {}, RegularizedDynamics.initial_state

    def spy(self, x):  # keeps the probe ε the solve draws
        y0 = real_initial_state(self, x)
        probes["eps"] = self.eps
        return y0
    monkeypatch.setattr(RegularizedDynamics, "initial_state", spy)
    net(torch.randn(2, 1, 8, 8))
    assert probes["eps"] and all(set(e.unique().tolist()) <= {-1.0, 1.0} for e in probes["eps"])  # ±1 entries only
    result = CliRunner().invoke(main, ["train", "--model", "odenet", "--model-option", "hutchinson_noise=cauchy",
                                       "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "hutchinson_noise" in result.output and "Traceback" not in result.output


# ---- RNODE ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["none", "dia"])
@pytest.mark.parametrize("adjoint", [False, True])
def test_augmented_solve_gives_the_plain_x_T_and_steps_and_eval_is_unregularised(attention, adjoint):
    from dia_ode.models.odenet import ConvField

    torch.manual_seed(1)
    f = ConvField(8, zero_init=False)
    x = torch.randn(3, 8, 4, 4)
    plain = ContinuousBlock(make_dynamics(attention, f, 8), adjoint=adjoint, rtol=1e-4, atol=1e-4)
    reg = ContinuousBlock(make_dynamics(attention, f, 8), adjoint=adjoint, rtol=1e-4, atol=1e-4,
                          kinetic_energy=0.1, jacobian_norm=0.1)
    reg.dynamics.load_state_dict(plain.dynamics.state_dict())
    x_plain, x_reg = plain(x), reg(x)
    assert torch.allclose(x_plain, x_reg, rtol=1e-5, atol=1e-6)
    assert reg.stats["num_steps"] == plain.stats["num_steps"]  # E and J take no part in the step control
    assert reg.penalty is not None and reg.penalty.item() > 0 and plain.penalty is None
    reg.eval()
    assert torch.equal(reg(x), plain.eval()(x)) and reg.penalty is None and regularization_loss(reg) is None


def linear_block(A: torch.Tensor, T: float, **kw) -> ContinuousBlock:
    return ContinuousBlock(PlainDynamics(Linear(A)), T=T, rtol=1e-9, atol=1e-9, **kw).double()


def test_kinetic_energy_is_the_analytic_integral_on_a_linear_field():
    torch.manual_seed(2)
    A = torch.randn(3, 3, dtype=torch.float64) * 0.7
    x0 = torch.randn(5, 3, dtype=torch.float64)
    T, lam = 1.3, 0.25
    block = linear_block(A, T, kinetic_energy=lam)
    block(x0)
    An, X0 = A.numpy(), x0.numpy()

    def speed2(t):  # ||A e^{At} x0||^2 per sample
        v = X0 @ (An @ expm(An * t)).T
        return (v ** 2).sum(axis=1)

    exact = quad_vec(speed2, 0.0, T, epsabs=1e-12, epsrel=1e-12)[0]  # (B,)
    assert block.penalty.item() == pytest.approx(lam * exact.mean(), rel=1e-6)
    assert not np.allclose(exact, exact.mean())  # the samples differ: a per-sample integral is checked


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_term_averages_to_the_squared_frobenius_norm(noise):
    torch.manual_seed(3)
    A = torch.randn(4, 4, dtype=torch.float64)
    T, lam, n = 0.5, 1.0, 4000
    block = linear_block(A * 0.1, T, jacobian_norm=lam, hutchinson_noise=noise)
    block.dynamics.f.A.data.copy_(A)
    block(torch.randn(n, 4, dtype=torch.float64))  # one ε per sample: n independent probes
    M = A @ A.T  # ε^T A A^T ε has mean tr(M) = ||A||_F^2 and variance 2||M||_F^2 (Gaussian ε)
    target, sd = T * torch.linalg.matrix_norm(A) ** 2, T * math.sqrt(2 / n) * torch.linalg.matrix_norm(M)
    assert abs(block.penalty.item() - target.item()) < 4 * sd.item()
    assert abs(block.penalty.item() - target.item()) < 0.1 * target.item()


@pytest.mark.parametrize("adjoint", [False, True])
def test_penalty_gradients_flow_and_agree_between_backprop_and_adjoint(adjoint):
    x = torch.randn(6, 4, dtype=torch.float64)
    grads = {}
    for adj in (False, adjoint):
        torch.manual_seed(4)  # the same ε for both solves
        block = mlp_block(adjoint=adj, rtol=1e-9, atol=1e-9, kinetic_energy=0.5, jacobian_norm=0.5)
        out = block(x)
        regularization_loss(block).backward()
        grads[adj] = [p.grad.clone() for p in block.parameters()]
        assert all(g.abs().sum() > 0 for g in grads[adj])
        assert out.grad_fn is not None
    for g, h in zip(grads[False], grads[adjoint]):
        assert torch.allclose(g, h, rtol=1e-5, atol=1e-8)


def test_classification_task_adds_the_penalty_and_reports_reg():
    task = get_task("classification")
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(5)
    net = dia_ode.create_model("dia_odenet", in_channels=1, width=4, kinetic_energy=0.3, jacobian_norm=0.2)
    with torch.no_grad():
        net.block.dynamics.f.norm3.weight.fill_(1.0)  # a non-zero field, so the penalty is not 0
    loss, sums = task.loss(net, (x, y))
    penalty = regularization_loss(net)
    assert penalty.item() > 0
    assert loss.item() == pytest.approx(sums["loss"] / 4 + penalty.item(), rel=1e-6)
    assert sums["reg"] == pytest.approx(4 * penalty.item())
    loss.backward()
    assert net.block.dynamics.f.conv1.conv.weight.grad.abs().sum() > 0
    plain_loss, plain_sums = task.loss(dia_ode.create_model("odenet", in_channels=1, width=4), (x, y))
    assert "reg" not in plain_sums and plain_loss.item() == pytest.approx(plain_sums["loss"] / 4)


# ---- STEER ------------------------------------------------------------------------------------------------------

def test_steer_draws_end_times_within_bounds_in_training_and_uses_T_in_eval():
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)
    x0 = torch.randn(2, 2, dtype=torch.float64)
    T, b = 2.0, 0.5
    block = linear_block(A, T, steer=b)

    def end_times(seed):
        torch.manual_seed(seed)
        times = []
        for _ in range(20):
            x_T = block(x0)
            exact = x0 @ torch.linalg.matrix_exp(A * block.end_time).T  # the solve really ends at end_time
            assert torch.allclose(x_T, exact, rtol=1e-6, atol=1e-8)
            times.append(block.end_time)
        return times

    times = end_times(0)
    assert all(T - b <= t <= T + b for t in times)
    assert len(set(times)) == len(times) and max(times) - min(times) > b  # they vary and cover the interval
    assert end_times(0) == times and end_times(1) != times  # seeded
    block.eval()
    for _ in range(3):
        assert torch.allclose(block(x0), x0 @ torch.linalg.matrix_exp(A * T).T, rtol=1e-6, atol=1e-8)
        assert block.end_time == T


def test_a_resumed_regularised_run_reproduces_the_uninterrupted_one(tmp_path):
    """STEER's end times and Hutchinson's noise come from torch's global generator: seeded per epoch,
    a run stopped after epoch 1 and resumed draws exactly what the uninterrupted run drew."""
    from dia_ode.engine import TrainConfig, resume_training, run_training
    from dia_ode.rundir import read_jsonl, start_run

    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop

    cfg = dict(model="odenet", model_options={"width": 4, "steer": 0.3, "jacobian_norm": 0.1}, epochs=2,
               batch_size=512, device="cpu", augment=False)
    whole = start_run(tmp_path, "whole", {"command": "train", **cfg}, argv=["t"])
    run_training(TrainConfig(**cfg), whole, progress=False)
    parted = start_run(tmp_path, "parted", {"command": "train", **cfg}, argv=["t"])
    with pytest.raises(Stop):
        run_training(TrainConfig(**cfg), parted, progress=False, on_epoch_end=stop)
    torch.manual_seed(12345)  # whatever the global generator holds before a resume must not matter
    resume_training(parted, progress=False)
    expected, resumed = read_jsonl(whole / "metrics.jsonl"), read_jsonl(parted / "metrics.jsonl")
    assert expected[0]["train_reg"] > 0  # the regularisers are on
    for key in ("train_loss", "train_reg", "val_loss"):
        assert resumed[1][key] == expected[1][key], key
