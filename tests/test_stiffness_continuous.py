"""Stiffness of continuous-depth blocks along the solver's steps, stability functions, the local estimate.

Expected values come from textbook polynomials, torchdiffeq's own Butcher tables, dense linear algebra
or analytic Jacobians, never from running the code under test.
"""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dia_ode
from dia_ode.cli import main
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import start_run
from dia_ode.solvers import SOLVER_RECORD, trace
from dia_ode.stiffness import (
    STABILITY_LIMITS, continuous_spectra, dense_jacobian, inside_region, problem_indices, problems,
    real_axis_limit, stability_function, stability_methods, stability_polynomial, summarise_block,
)
from dia_ode.stiffness.indices import dominant_quotient


def r_of_tableau(a: np.ndarray, b: np.ndarray, z: complex) -> complex:
    """R(z) = 1 + z b^T (I - z A)^{-1} 1, straight from the definition."""
    return 1.0 + z * b @ np.linalg.solve(np.eye(len(b)) - z * a, np.ones(len(b)))


def torchdiffeq_tableau(module: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    tableau = getattr(__import__(f"torchdiffeq._impl.{module}", fromlist=[name]), name)
    s = len(tableau.c_sol)
    a = np.zeros((s, s), dtype=complex)
    for i, row in enumerate(tableau.beta):
        a[i + 1, :len(row)] = row.numpy()
    return a, tableau.c_sol.numpy().astype(complex)


# ---------------------------------------------------------------- stability functions

def test_euler_and_rk4_stability_functions_are_the_textbook_polynomials():
    assert abs(stability_function("euler", -2.0)) == pytest.approx(1.0)
    assert stability_function("euler", -1.0 + 0.5j) == pytest.approx(0.5j)  # 1 + z
    np.testing.assert_allclose(stability_polynomial("rk4"), [1, 1, 1 / 2, 1 / 6, 1 / 24], rtol=1e-14)
    z = np.array([-2.0, 0.3 + 1.1j])
    np.testing.assert_allclose(stability_function("rk4", z), 1 + z + z ** 2 / 2 + z ** 3 / 6 + z ** 4 / 24)
    assert inside_region("euler", np.array([-1.0, -2.0, -2.01, 0.1])).tolist() == [True, True, False, False]


@pytest.mark.parametrize("method,module,name", [
    ("dopri5", "dopri5", "_DORMAND_PRINCE_SHAMPINE_TABLEAU"), ("bosh3", "bosh3", "_BOGACKI_SHAMPINE_TABLEAU"),
    ("fehlberg2", "fehlberg2", "_FEHLBERG2_TABLEAU"), ("adaptive_heun", "adaptive_heun", "_ADAPTIVE_HEUN_TABLEAU"),
])
def test_adaptive_methods_match_torchdiffeqs_own_tableaus(method, module, name):
    a, b = torchdiffeq_tableau(module, name)
    for z in (-3.0, -1.2 + 2.5j, 0.4 - 0.7j):
        assert stability_function(method, z) == pytest.approx(r_of_tableau(a, b, z), rel=1e-12)


def test_real_axis_limits_and_unknown_methods():
    # textbook values [HW2, IV.2]: every s-stage method of order s <= 4 shares R = sum_j z^j / j!
    textbook = {"euler": 2.0, "midpoint": 2.0, "heun3": 2.5127, "bosh3": 2.5127, "rk4": 2.7853, "dopri5": 3.3066}
    for method, limit in textbook.items():
        assert real_axis_limit(method) == pytest.approx(limit, abs=5e-5)
        assert STABILITY_LIMITS[method] == real_axis_limit(method)  # one source, not a second table
    assert set(STABILITY_LIMITS) == set(stability_methods())
    assert {"euler", "rk4", "dopri5"} <= set(stability_methods())
    with pytest.raises(ValueError, match="no stability function for method 'dopri8'; valid: euler"):
        stability_polynomial("dopri8")


# ---------------------------------------------------------------- continuous blocks

def tiny(name: str) -> torch.nn.Module:
    """A tiny continuous model whose field is not zero (the last GroupNorm's zero-init scale undone)."""
    model = dia_ode.create_model(name, in_channels=1, width=4)
    torch.nn.init.normal_(model.block.dynamics.f.norm3.weight, std=2.0)
    return model.eval()


def test_trace_of_a_continuous_model_holds_its_accepted_steps_and_an_empty_model_raises():
    model = tiny("odenet")
    (tr,) = trace(model, torch.randn(2, 1, 8, 8))
    log = model.block.log.tensors()
    assert tr.kind == "continuous" and len(tr) == int(log["accepted"].sum()) >= 1
    t, dt = np.array([float(t) for t in tr.times]), log["dt"][log["accepted"]].numpy()
    np.testing.assert_allclose(t[1:], t[:-1] + dt[:-1], rtol=1e-12)  # each step starts where the last ended
    assert t[-1] < model.block.T <= t[-1] + dt[-1]  # dopri5's last step may overshoot T and interpolate
    with pytest.raises(ValueError, match="Linear has no ResidualStage or ContinuousBlock"):
        trace(torch.nn.Linear(2, 2), torch.randn(1, 2))


@pytest.mark.parametrize("name", ["odenet", "se_odenet"])
def test_continuous_spectra_are_dt_a_times_the_field_jacobian_at_every_step(name):
    model = tiny(name)
    x = torch.randn(3, 1, 8, 8)
    result = continuous_spectra(model, x, k=16, samples=2)  # n = 4 * 2 * 2 = 16: every eigenvalue
    (tr,) = trace(model, x[:2])
    rows = result["steps"]
    assert len(rows) == 2 * len(tr) == 2 * result["blocks"][0]["num_steps"]
    assert [r["t"] for r in rows[::2]] == sorted(r["t"] for r in rows[::2]) and rows[0]["t"] == 0.0
    for r in rows:
        x_k = tr.states[r["step"]][r["sample"]:r["sample"] + 1]
        t_k = tr.times[r["step"]].float()
        jac = dense_jacobian(lambda v: model.block.dynamics.f(t_k, v), x_k)
        h = tr.steps[r["step"]]
        h = h.reshape(-1) if h.dim() == 0 else h[r["sample"]].reshape(-1)  # the channel step, or dt
        scale = np.repeat(h.double().numpy(), jac.shape[0] // h.numel())  # diag(h) on (C, H, W)
        exact = np.linalg.eigvals(scale[:, None] * jac)
        np.testing.assert_allclose(np.sort_complex(r["step_eigenvalues"]), np.sort_complex(exact), atol=1e-5)
        assert r["spectral_radius"] == pytest.approx(np.abs(np.linalg.eigvals(jac)).max(), rel=1e-5)
        if name == "odenet":
            assert r["h_mean"] == pytest.approx(r["dt"])
        # inside |R| <= 1, up to float32 noise of the eigenvalues (1e3 eps of the largest |z|) for the zero ones
        inside = np.abs(stability_function("dopri5", exact)) <= 1 + 1.2e-4 * np.abs(exact).max()
        assert r["fraction_inside"] == pytest.approx(inside.mean())
    summary = summarise_block(rows, result["blocks"][0])
    assert summary["max_spectral_radius"] == pytest.approx(max(r["spectral_radius"] for r in rows))
    with pytest.raises(ValueError, match="no continuous block"):
        continuous_spectra(dia_ode.create_model("resnet20", in_channels=1, base_width=4), x)


def test_continuous_spectra_trace_a_per_sample_block_one_sample_at_a_time():
    model = dia_ode.create_model("odenet", in_channels=1, width=4, backend="dia_ode", per_sample=True, rtol=1e-5,
                                 atol=1e-5)
    torch.nn.init.normal_(model.block.dynamics.f.norm3.weight, std=2.0)
    model.eval()
    x = torch.randn(2, 1, 8, 8) * torch.tensor([0.1, 3.0])[:, None, None, None]  # unlike samples: unlike steps
    rows = continuous_spectra(model, x, k=2, samples=2)["steps"]
    for i in range(2):  # each sample's rows are its own accepted steps, as the sample alone takes them
        (alone,) = trace(model, x[i:i + 1])
        mine = [r for r in rows if r["sample"] == i]
        assert [r["t"] for r in mine] == [float(t) for t in alone.times]
    assert [(r["block"], r["step"], r["sample"]) for r in rows] == sorted((r["block"], r["step"], r["sample"])
                                                                        for r in rows)


def test_stiffness_command_on_a_continuous_run(tmp_path):
    cfg = TrainConfig(model="odenet", epochs=2, batch_size=256, device="cpu", model_options={"width": 4})
    run_dir = start_run(tmp_path / "trained", "train-odenet", {"command": "train", **asdict(cfg)}, argv=["test"])
    run_training(cfg, run_dir, progress=False)
    result = CliRunner().invoke(main, ["stiffness", str(run_dir), "--k", "3", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "block 0 (dopri5," in result.output and "inside the dopri5 region" in result.output
    (out,) = (tmp_path / "out").iterdir()
    data = json.loads((out / "stiffness.json").read_text())
    assert data["blocks"][0]["solver"] == "dopri5" and len(data["steps"]) == 2 * data["blocks"][0]["num_steps"]
    row = data["steps"][0]
    assert {"t", "dt", "eigenvalues", "spectral_radius", "step_eigenvalues", "fraction_inside"} <= set(row)
    assert 0.0 <= row["fraction_inside"] <= 1.0 and len(row["eigenvalues"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "odenet" and summary["dataset"] == "digits"
    assert (out / "figures" / "step_eigenvalues_block0.png").is_file()
    # the solver's record along training, read from metrics.jsonl as the trainer wrote it
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(set(SOLVER_RECORD) <= set(row) for row in history)
    assert [row["epoch"] for row in data["training"]] == [1, 2]
    for mine, written in zip(data["training"], history):
        assert all(mine[key] == written[key] for key in ("nfe_forward", *SOLVER_RECORD))
    last = history[-1]
    assert 0.0 <= last["stiff_fraction"] <= 1.0 and last["h_lambda_median"] > 0  # dopri5: the test ran
    assert last["nfe_forward_max"] >= last["nfe_forward"]
    assert summary["training"]["last"] == data["training"][-1]
    trained = json.loads((run_dir / "summary.json").read_text())["solver"]
    assert trained == {"epoch": 2, "nfe_forward": last["nfe_forward"], **{k: last[k] for k in SOLVER_RECORD}}
    assert "solver record along training" in result.output
    assert (out / "figures" / "stiffness_along_training.png").is_file()


def test_stiffness_record_only_reads_the_run_without_solving(tmp_path, monkeypatch):
    cfg = TrainConfig(model="odenet", epochs=1, batch_size=256, device="cpu", model_options={"width": 4})
    run_dir = start_run(tmp_path / "trained", "train-odenet", {"command": "train", **asdict(cfg)}, argv=["test"])
    run_training(cfg, run_dir, progress=False)

    def no_solve(*args, **kwargs):
        raise AssertionError("--record-only solved the model")
    monkeypatch.setattr(dia_ode.solvers.ContinuousBlock, "forward", no_solve)
    result = CliRunner().invoke(main, ["stiffness", str(run_dir), "--record-only", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    (out,) = (tmp_path / "out").iterdir()
    data = json.loads((out / "stiffness.json").read_text())
    assert set(data) == {"training"} and len(data["training"]) == 1
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["stiffness_along_training.png"]


# ---------------------------------------------------------------- the local estimate

def test_local_estimate_follows_the_fast_mode_of_van_der_pol():
    mu = 1000.0
    ind = problem_indices(problems.get("vdp", mu=mu), np.linspace(0.0, 2 * mu, 21))
    y1, _ = ind["y"].T
    # the analytic Jacobian [[mu (1 - y1^2), -mu], [1/mu, 0]] at every reference point
    exact = np.array([np.abs(np.linalg.eigvals([[mu * (1 - a ** 2), -mu], [1 / mu, 0.0]])).max() for a in y1])
    ratio = ind["local_stiffness"] / exact
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-5)  # theory/stiffness.md's claim, at every point
    assert np.median(exact) > 1000  # the fast mode really is fast here


def test_dominant_quotient_on_linear_fields():
    a = torch.tensor([[-1000.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    assert dominant_quotient(lambda y: a @ y, torch.tensor([1.0, 1.0], dtype=torch.float64)) == \
        pytest.approx(1000.0, rel=1e-3)
    assert dominant_quotient(lambda y: 0 * y, torch.ones(3, dtype=torch.float64)) == 0.0
    assert dominant_quotient(lambda y: -y, torch.zeros(2, dtype=torch.float64)) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("x", [[1.0, 1.0], [3.0, -2.0], [100.0, 5.0]])
def test_dominant_quotient_steps_above_the_resolution_of_float32(x):
    a = torch.tensor([[-1000.0, 1.0], [0.0, -1.0]])  # float32, |λ_max| = 1000
    assert dominant_quotient(lambda y: a @ y, torch.tensor(x)) == pytest.approx(1000.0, rel=1e-4)
