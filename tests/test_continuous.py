import math

import numpy as np
import pytest
import torch
from torch import nn
from torchdiffeq import odeint

import dia_ode
from dia_ode.attention import DIAUnit, SqueezeExcite
from dia_ode.attention.layout import IMAGES
from dia_ode.models.odenet import ConvField, TimeConv2d, matched_width, num_params
from dia_ode.solvers import (
    ADAPTIVE_METHODS, FIXED_GRID_METHODS, STAT_KEYS, ContinuousBlock, DIAStageController, DIADynamics, DynamicsMeter,
    FieldBlock, GatedDynamics, PlainDynamics, ResidualStage, SharedAttention, StepBudgetExceeded,
    dynamics_stats, euler_stage, make_dynamics, solver_record, trace,
)


def field(channels=3, dtype=torch.float32):
    """A random vector field f(t, x) (not zero-initialised, so the dynamics are not trivial)."""
    return ConvField(channels, zero_init=False).to(dtype)


def randomise(module, std=0.3):
    """Random weights everywhere (a fresh cell's gates sit near 1/2; this moves them around)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def dynamics(kind, channels=3, dtype=torch.float32):
    f = field(channels, dtype)
    if kind == "none":
        return PlainDynamics(f)
    if kind == "se":
        return GatedDynamics(f, randomise(SqueezeExcite(channels, reduction=1)).to(dtype))
    return DIADynamics(f, randomise(DIAUnit(channels, reduction=1)).to(dtype))


class SmoothField(nn.Module):
    """f(t, x) = tanh(conv_t(x)): a smooth right-hand side (ConvField's ReLU has kinks)."""

    def __init__(self, channels):
        super().__init__()
        self.conv = TimeConv2d(channels, channels)

    def forward(self, t, x):
        return torch.tanh(self.conv(t, x))


def smooth_(module):
    """Replace every nn.ReLU inside `module` (the DIA cell's bottleneck MLPs) by nn.Tanh."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Tanh())
        else:
            smooth_(child)
    return module


class Linear(nn.Module):
    """dx/dt = lam x + sin(10 t): stiff enough for dopri5 to reject steps."""

    def __init__(self, lam):
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(lam))

    def forward(self, t, x):
        return self.lam * x + torch.sin(10 * t)


class Square(nn.Module):
    """dx/dt = x^2: from x(0) = 1 the solution 1 / (1 - t) blows up at t = 1."""

    def forward(self, t, x):
        return x * x


# --- the discrete stage as a solver of the continuous block -----------------------------------------


@pytest.mark.parametrize("kind", ["none", "se", "dia"])
def test_tied_euler_stage_converges_to_dopri5_at_first_order(kind):
    dyn = dynamics(kind, dtype=torch.float64)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        exact = ContinuousBlock(dyn, T=1.0, rtol=1e-10, atol=1e-10, max_num_steps=None)(x)
        Ls = np.array([8, 16, 32, 64])
        errors = np.array([(euler_stage(dyn, 1.0, L)(x) - exact).abs().max().item() for L in Ls])
    slope = np.polyfit(np.log(Ls), np.log(errors), 1)[0]
    assert -slope == pytest.approx(1.0, abs=0.2)
    observed_orders = np.log2(errors[:-1] / errors[1:])  # from L and 2L
    assert np.all(np.abs(observed_orders - 1.0) < 0.2)


def test_torchdiffeq_euler_step_01_equals_ten_discrete_steps():
    dyn = dynamics("none")
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        raw = odeint(dyn.f, x, torch.tensor([0.0, 1.0], dtype=torch.float64), method="euler",
                     options={"step_size": 0.1})[-1]
        block = ContinuousBlock(dyn, T=1.0, method="euler", step_size=0.1)(x)
        stage = euler_stage(dyn, 1.0, 10)(x)
        loop = x
        for k in range(10):
            loop = loop + 0.1 * dyn.f(0.1 * k, loop)
    for y in (block, stage, loop):
        torch.testing.assert_close(y, raw, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["none", "se", "dia"])
def test_euler_stage_and_continuous_euler_block_are_one_solver(kind):
    dyn = dynamics(kind)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():  # T / L = 1/6 has no exact float; the grid still has 6 steps
        block = ContinuousBlock(dyn, T=1.0, method="euler", step_size=1 / 6)
        torch.testing.assert_close(block(x), euler_stage(dyn, 1.0, 6)(x), rtol=0, atol=1e-6)
    assert block.stats["num_steps"] == 6


def test_uniform_grid_keeps_t_over_step_size_steps_where_torchdiffeqs_grid_adds_one():
    class Counting(nn.Module):
        calls = 0

        def forward(self, t, x):
            self.calls += 1
            return -x

    f, x = Counting(), torch.ones(2)
    odeint(f, x, torch.tensor([0.0, 1.0], dtype=torch.float64), method="euler", options={"step_size": 1 / 49})
    assert f.calls == 50  # ceil(1 / (1/49) + 1) points: a spurious tiny 50th step
    block = ContinuousBlock(PlainDynamics(Counting()), T=1.0, method="euler", step_size=1 / 49)
    block(x)
    assert block.stats["num_steps"] == block.stats["nfe_forward"] == 49


# --- the continuous DIA and SE reduce to their discrete stages ------------------------------------


def test_continuous_dia_with_euler_step_one_is_the_discrete_dia_loop():
    dyn = dynamics("dia")
    f, unit, L = dyn.f, dyn.unit, 5
    x0 = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        # The discrete DIA written out (theory/dia.md): (h_k, c_k) = Cell(GAP f(x_k), h_{k-1}, c_{k-1}).
        x, h, c = x0, torch.zeros(2, 3), torch.zeros(2, 3)
        for k in range(L):
            f_k = f(float(k), x)
            h, c = unit.cell(IMAGES.squeeze(f_k), (h, c))
            x = x + h[:, :, None, None] * f_k
        stage = ResidualStage([FieldBlock(f, float(k)) for k in range(L)], DIAStageController(unit))
        ts = torch.tensor([0.0, float(L)], dtype=torch.float64)
        joint = odeint(dyn, dyn.initial_state(x0), ts, method="euler", options={"step_size": 1.0})
        block = ContinuousBlock(dyn, T=float(L), method="euler", step_size=1.0)(x0)
        tied = euler_stage(dyn, float(L), L)(x0)
    torch.testing.assert_close(stage(x0), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(joint[0][-1], x, rtol=0, atol=1e-6)
    torch.testing.assert_close(joint[1][-1], h, rtol=0, atol=1e-6)  # the memory too
    torch.testing.assert_close(joint[2][-1], c, rtol=0, atol=1e-6)
    torch.testing.assert_close(block, x, rtol=0, atol=1e-6)
    assert torch.equal(tied, stage(x0))  # EulerDIA with dt = 1 is DIAStageController bit for bit


def test_continuous_se_with_euler_step_one_is_the_shared_se_stage():
    dyn = dynamics("se")
    x0 = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        stage = ResidualStage([FieldBlock(dyn.f, float(k)) for k in range(4)], SharedAttention(dyn.sam))
        block = ContinuousBlock(dyn, T=4.0, method="euler", step_size=1.0)
        torch.testing.assert_close(block(x0), stage(x0), rtol=0, atol=1e-6)


# --- gradients -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "dia"])
def test_adjoint_gradients_match_direct_backprop_for_a_smooth_field(kind):
    f = SmoothField(3).double()
    dyn = PlainDynamics(f) if kind == "none" else DIADynamics(f, smooth_(DIAUnit(3, reduction=1)).double())
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        block = ContinuousBlock(dyn, T=1.0, rtol=1e-10, atol=1e-10, adjoint=adjoint, max_num_steps=None)
        xi = x.clone().requires_grad_(True)
        (block(xi) ** 2).sum().backward()
        grads.append([xi.grad] + [p.grad.clone() for p in dyn.parameters()])
        dyn.zero_grad(set_to_none=True)
    assert len(grads[1]) == 1 + len(list(dyn.parameters()))
    for direct, adjoint in zip(*grads):
        torch.testing.assert_close(adjoint, direct, rtol=1e-6, atol=1e-8)


def test_relu_kinks_make_the_adjoint_costlier_and_its_gradient_further_from_direct_backprop():
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    cost, mismatch = {}, {}
    for name, f in (("smooth", SmoothField(3)), ("relu", field(3))):
        grads = []
        for adjoint in (False, True):  # the default tolerances, 1e-3
            block = ContinuousBlock(PlainDynamics(f.double()), T=1.0, adjoint=adjoint)
            xi = x.clone().requires_grad_(True)
            (block(xi) ** 2).sum().backward()
            grads.append(xi.grad)
        cost[name] = block.stats["nfe_backward"] / block.stats["nfe_forward"]
        mismatch[name] = ((grads[1] - grads[0]).norm() / grads[0].norm()).item()
    assert cost["relu"] > 2 * cost["smooth"]
    assert mismatch["relu"] > 0.01 > 10 * mismatch["smooth"]


# --- statistics ------------------------------------------------------------------------------------


def test_dopri5_nfe_is_two_plus_six_per_attempted_step_with_rejections():
    block = ContinuousBlock(PlainDynamics(Linear(-50.0)), T=1.0, rtol=1e-3, atol=1e-3)
    block(torch.ones(3))
    s = block.stats
    assert s["num_rejected"] > 0  # the relation is checked with rejected steps present
    assert s["num_steps"] == s["num_accepted"] + s["num_rejected"] == len(block.log)
    assert s["nfe_forward"] == 2 + 6 * (s["num_accepted"] + s["num_rejected"])
    assert s["nfe_backward"] == 0


@pytest.mark.parametrize("kind", ["none", "dia"])
def test_adaptive_nfe_relation_holds_per_method_forward_and_adjoint(kind):
    from torchdiffeq._impl.odeint import SOLVERS  # stages per step S = len(tableau.alpha) (FSAL: first reused)

    dyn = dynamics(kind)
    x = torch.randn(2, 3, 3, 3, requires_grad=True)
    for method in ("dopri5", "bosh3"):
        S = len(SOLVERS[method].tableau.alpha)
        block = ContinuousBlock(dyn, T=1.0, method=method, rtol=1e-4, atol=1e-4, adjoint=True)
        block(x).sum().backward()
        s = block.stats
        assert s["nfe_forward"] == 2 + S * s["num_steps"]
        assert s["nfe_backward"] == 2 + S * s["num_steps_backward"] > 2  # one adjoint solve over [T, 0]
    assert [len(SOLVERS[m].tableau.alpha) for m in ("dopri5", "bosh3")] == [6, 3]  # as theory/continuous_dia.md says


@pytest.mark.parametrize("method, per_step", [("rk4", 4), ("euler", 1), ("midpoint", 2)])
def test_fixed_grid_nfe_is_stages_times_steps_and_direct_backward_evaluates_nothing(method, per_step):
    block = ContinuousBlock(dynamics("none"), T=1.0, method=method, step_size=0.25)
    x = torch.randn(2, 3, 3, 3, requires_grad=True)
    out = block(x)
    assert block.stats["num_steps"] == block.stats["num_accepted"] == 4 and block.stats["num_rejected"] == 0
    assert block.stats["nfe_forward"] == per_step * 4
    out.sum().backward()  # autograd replays the recorded graph: f is not called again
    assert block.stats["nfe_backward"] == 0
    logged = block.log.tensors()
    assert logged["t"].dtype == torch.float64 and logged["accepted"].all()
    assert logged["dt"].sum().item() == pytest.approx(1.0)


def test_stats_are_reset_by_every_forward():
    block = ContinuousBlock(dynamics("none"), T=1.0, method="euler", step_size=0.5, adjoint=True)
    x = torch.randn(1, 3, 3, 3, requires_grad=True)
    block(x).sum().backward()
    assert block.stats["nfe_backward"] == 2
    block(x)
    assert block.stats == {**dict.fromkeys(STAT_KEYS, 0), "nfe_forward": 2, "num_steps": 2, "num_accepted": 2,
                           "nfe_forward_max": 2}  # a fixed-step method runs no stiffness test: num_tested_steps 0


def test_method_lists_match_torchdiffeq():
    from torchdiffeq._impl.odeint import SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver
    from torchdiffeq._impl.solvers import FixedGridODESolver

    assert set(ADAPTIVE_METHODS) == {m for m, s in SOLVERS.items() if issubclass(s, RKAdaptiveStepsizeODESolver)}
    assert set(FIXED_GRID_METHODS) <= {m for m, s in SOLVERS.items() if issubclass(s, FixedGridODESolver)}


# --- step budget -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method, options, nfe_per_step, nfe_extra",
                         [("dopri5", {}, 6, 2), ("rk4", {"step_size": 1e-3}, 4, 0)])
def test_step_budget_stops_a_blow_up_with_a_clear_error(method, options, nfe_per_step, nfe_extra):
    block = ContinuousBlock(PlainDynamics(Square()), T=2.0, method=method, max_num_steps=50, **options)
    with pytest.raises(StepBudgetExceeded, match=r"max_num_steps=50 at t=[0-9.e-]+ of \[0, 2\]"):
        block(torch.ones(1))
    assert block.stats["num_steps"] == 51  # the 51st attempt is refused...
    assert block.stats["nfe_forward"] == nfe_extra + nfe_per_step * 50  # ...before it evaluates f
    assert block.log.tensors()["t"].max().item() < 1.0  # stopped before the singularity at t = 1


def test_torchdiffeqs_own_max_num_steps_is_a_bare_assertion_and_unknown_to_fixed_grids():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.raises(AssertionError, match="max_num_steps exceeded"):
        odeint(Square(), torch.ones(1), t, method="dopri5", options={"max_num_steps": 50})
    with pytest.warns(UserWarning, match="Unexpected arguments"):
        odeint(Square(), torch.ones(1), torch.tensor([0.0, 0.5], dtype=torch.float64), method="rk4",
               options={"step_size": 0.1, "max_num_steps": 1})


def test_step_budget_also_bounds_the_adjoint_solve():
    def solve(budget):
        torch.manual_seed(1)  # the same field and input for both solves
        block = ContinuousBlock(dynamics("none"), T=1.0, rtol=1e-5, atol=1e-5, adjoint=True, max_num_steps=budget)
        block(torch.randn(1, 3, 3, 3, requires_grad=True)).sum().backward()
        return block.stats

    free = solve(None)
    assert free["num_steps_backward"] > free["num_steps"]  # the augmented adjoint state needs more steps
    with pytest.raises(StepBudgetExceeded, match=f"adjoint ODE solve .* max_num_steps={free['num_steps']} "):
        solve(free["num_steps"])  # enough for the forward solve, not for the adjoint one


def test_bad_solver_options_raise_value_error():
    dyn = dynamics("none")
    with pytest.raises(ValueError, match="needs step_size"):
        ContinuousBlock(dyn, method="rk4")
    with pytest.raises(ValueError, match="unknown method 'rk5'"):
        ContinuousBlock(dyn, method="rk5")
    with pytest.raises(ValueError, match="fixed-grid"):
        ContinuousBlock(dyn, method="dopri5", step_size=0.1)
    with pytest.raises(ValueError, match="BatchNorm"):
        make_dynamics("dia", field(), 3, sam="cbam")


# --- recording -------------------------------------------------------------------------------------


def test_trace_records_a_continuous_block_at_accepted_steps_without_changing_anything():
    model = dia_ode.create_model("dia_odenet", in_channels=1, num_classes=4, width=8)
    randomise(model.block.dynamics.f.norm3)  # leave the zero-initialised identity
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected, stats = model(x), dynamics_stats(model)
        (tr,), out = trace(model, x, return_output=True)
    assert torch.equal(out, expected) and dynamics_stats(model) == stats
    steps = model.block.log.tensors()
    assert tr.kind == "continuous"
    assert len(tr.steps) == len(tr.updates) == len(tr.times) == int(steps["accepted"].sum()) == stats["num_accepted"]
    assert len(tr.states) == len(tr.steps) + 1
    t, dt = steps["t"][steps["accepted"]], steps["dt"][steps["accepted"]]
    assert torch.equal(torch.stack(tr.times), t)
    with torch.no_grad():  # h_k = dt_k * a(t_k): the attention at the state where the accepted step starts
        for k in (0, len(tr.steps) - 1):
            a = tr.steps[k] / dt[k].float()
            assert a.shape == (2, 8, 1, 1) and ((a > 0) & (a < 1)).all()
            torch.testing.assert_close(tr.updates[k], model.block.dynamics.f(t[k], tr.states[k]))
    torch.testing.assert_close(tr.states[0], model.stem(x))  # x_0 is the block input
    assert t[0].item() == 0.0
    torch.testing.assert_close(t[1:], (t + dt)[:-1], rtol=0, atol=1e-12)  # accepted steps chain
    assert t[-1].item() < 1.0 <= (t[-1] + dt[-1]).item()  # the last one reaches T (x(T) is interpolated)


# --- models ----------------------------------------------------------------------------------------

MODELS = ["odenet", "se_odenet", "dia_odenet", "rknet", "se_rknet", "dia_rknet",
          "untiednet", "se_untiednet", "dia_untiednet"]


def test_the_family_is_registered():
    assert sorted(MODELS) == sorted(dia_ode.list_models("*odenet") + dia_ode.list_models("*rknet")
                                    + dia_ode.list_models("*untiednet"))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32)])
def test_models_give_logits_for_digits_idx_and_cifar_shapes(name, shape):
    model = dia_ode.create_model(name, in_channels=shape[1], num_classes=7, width=8)
    out = model(torch.randn(*shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_one_training_step_lowers_the_loss_and_stats_have_the_stable_keys(name):
    continuous = "odenet" in name
    options = {"adjoint": True} if continuous else {"num_steps": 3}
    model = dia_ode.create_model(name, in_channels=1, num_classes=10, width=8, **options)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    stats = dynamics_stats(model)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    assert nn.functional.cross_entropy(model(x), y).item() < loss.item()
    assert tuple(stats) == STAT_KEYS
    if continuous:  # dopri5 with the adjoint
        assert stats["nfe_forward"] == 2 + 6 * stats["num_steps"] and stats["nfe_backward"] > 0
    else:  # a discrete stage of L = 3 blocks
        assert stats == {**dict.fromkeys(STAT_KEYS, 0), "nfe_forward": 3, "num_steps": 3, "num_accepted": 3,
                         "nfe_forward_max": 3}


def test_discrete_twins_expose_their_steps_through_solvers_trace():
    model = dia_ode.create_model("dia_rknet", in_channels=1, width=8, T=2.0, num_steps=4)
    (stage_trace,) = trace(model, torch.randn(2, 1, 8, 8))
    assert len(stage_trace) == 4
    assert all(((h > 0) & (h < 0.5)).all() for h in stage_trace.steps)  # h_k = (T / L) a_k, a_k in (0, 1)


def test_tied_models_have_one_field_and_untied_match_their_parameter_budget():
    for attention in ("", "se_", "dia_"):
        tied = num_params(dia_ode.create_model(f"{attention}rknet", in_channels=1))
        assert num_params(dia_ode.create_model(f"{attention}odenet", in_channels=1)) == tied
        rk = dia_ode.create_model(f"{attention}rknet", in_channels=1, num_steps=6)
        assert len({id(b.f) for b in rk.block.blocks}) == 1
        w = matched_width(attention.rstrip("_") or "none", 10, 1, 6, 32, 2)

        def gap(width):
            return abs(num_params(dia_ode.create_model(f"{attention}untiednet", in_channels=1, width=width)) - tied)
        assert gap(w) <= min(gap(w - 1), gap(w + 1))
        assert gap(w) < 0.05 * tied
        assert dia_ode.create_model(f"{attention}untiednet", in_channels=1).block.blocks[0].f.norm1.num_channels == w


def test_model_options_are_checked():
    with pytest.raises(ValueError):
        dia_ode.create_model("odenet", num_steps=4)  # a discrete-twin option
    with pytest.raises(ValueError, match="reduction"):
        dia_ode.create_model("odenet", reduction=4)
    assert math.isclose(dia_ode.create_model("dia_odenet", T=2.5).block.T, 2.5)


def test_dynamics_meter_sums_every_pass_by_mode_including_the_last_backward():
    torch.manual_seed(0)
    model = dia_ode.create_model("odenet", in_channels=1, width=4, adjoint=True)
    with torch.no_grad():  # a field that is not zero at initialisation, so the stiffness test has a reading
        for p in model.block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 1, 8, 8)
    expected = {"train": dict.fromkeys(("passes",) + STAT_KEYS, 0), "eval": dict.fromkeys(("passes",) + STAT_KEYS, 0)}
    h_lambda = {"train": [], "eval": []}
    with DynamicsMeter(model) as meter:
        for mode in ("train", "train", "eval", "train"):
            model.train(mode == "train")
            out = model(x)
            if mode == "train":
                out.sum().backward()
            expected[mode]["passes"] += 1
            for key, value in dynamics_stats(model).items():  # the most one sample needed: a max, not a sum
                expected[mode][key] = max(expected[mode][key], value) if key == "nfe_forward_max" \
                    else expected[mode][key] + value
            h_lambda[mode].append(model.block.h_lambda)
        assert meter.read() == expected
        assert meter.read()["train"]["nfe_backward"] > 0
        for mode in ("train", "eval"):  # every pass's h*lambda, the last one's included
            assert torch.equal(meter.h_lambda(mode), torch.cat(h_lambda[mode]))
        train = expected["train"]
        assert train["num_tested_steps"] == train["num_accepted"] > 0 and meter.h_lambda("train").numel() > 0
        record = solver_record(meter)
        assert record["nfe_forward_max"] == train["nfe_forward_max"] < train["nfe_forward"]
        assert record["rejected_steps"] == train["num_rejected"] / 3
        assert record["stiff_fraction"] == train["num_stiff_steps"] / train["num_tested_steps"]
        assert record["h_lambda_median"] == float(torch.cat(h_lambda["train"]).median())
        meter.reset()
        assert meter.read()["train"]["passes"] == 0 and meter.h_lambda("train").numel() == 0
        assert math.isnan(solver_record(meter)["stiff_fraction"])  # nothing tested: undefined, not 0


def test_models_train_and_resume_with_the_project_training_loop(tmp_path):
    from dataclasses import asdict

    from dia_ode.rundir import start_run
    from dia_ode.engine import TrainConfig, resume_training, run_training

    for name in ("dia_odenet", "dia_rknet"):  # rknet's state dict names the tied f once per block
        cfg = TrainConfig(model=name, epochs=1, batch_size=256, device="cpu", model_options={"width": 4})
        run_dir = start_run(tmp_path / name, "train", {"command": "train", **asdict(cfg)}, argv=["test"])
        assert math.isfinite(run_training(cfg, run_dir, progress=False)["test_loss"])
        assert resume_training(run_dir, epochs=2, progress=False)["epochs"] == 2
