"""Stiffness tools: Jacobian operators, spectra, indices, network readings, test problems.

Expected values come from the problems' analytic Jacobians, from dense linear algebra, or from
stability polynomials written out from Butcher tableaus, never from running the code under test.
"""

import importlib
import json
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from scipy.optimize import brentq

import dia_ode
from dia_ode.models.blocks import BasicBlock, PreActBasicBlock
from dia_ode.rundir import to_jsonable
from dia_ode.solvers import ConstantStep, stages_of
from dia_ode.stiffness import (
    STABILITY_LIMITS, block_spectra, choose_method, dense_jacobian, jacobian_operator, list_problems,
    local_stiffness, log_norm, problem_indices, problems, spectral_radius, spectrum, spectrum_with_info,
    step_index, stiffness_ratio, trace_stiffness,
)

spectrum_module = importlib.import_module("dia_ode.stiffness.eigen")


def linear_field(a: np.ndarray):
    a = torch.as_tensor(a, dtype=torch.float64)
    return lambda y: a @ y


# --- classic problems -----------------------------------------------------------------------------

def test_van_der_pol_at_2_0_has_eigenvalues_minus_3mu_and_minus_1_over_3mu():
    vdp = problems.get("vdp", mu=1000.0)
    values = spectrum(vdp.field_at(0.0), torch.tensor([2.0, 0.0], dtype=torch.float64), k=2)
    # J = [[mu (1 - 4), -mu], [1/mu, 0]]: λ^2 + 3 mu λ + 1 = 0, so λ ≈ -3 mu and ≈ -1 / (3 mu)
    np.testing.assert_allclose(values.real, [-3000.0, -1.0 / 3000.0], rtol=1e-3)
    np.testing.assert_allclose(values.imag, 0.0, atol=1e-9)
    assert stiffness_ratio(values) == pytest.approx(9e6, rel=1e-3)


def test_robertson_at_t0_has_eigenvalues_0_0_minus_0_04():
    rober = problems.get("robertson")
    values = spectrum(rober.field_at(0.0), rober.y0, k=3)
    np.testing.assert_allclose(np.sort(values.real), [-0.04, 0.0, 0.0], atol=1e-12)
    assert stiffness_ratio(values) == 1.0  # the two zeros are excluded, one eigenvalue remains


def test_linear_problem_returns_its_eigenvalues_in_every_order_and_its_stiffness_ratio():
    lam = [-0.5, -2.0, -30.0, 4.0]
    linear = problems.get("linear", eigenvalues=lam)
    f = linear.field_at(0.0)
    expected = {"LM": [-30.0, 4.0, -2.0, -0.5], "LR": [4.0, -0.5, -2.0, -30.0], "SR": [-30.0, -2.0, -0.5, 4.0]}
    for which, order in expected.items():
        np.testing.assert_allclose(spectrum(f, linear.y0, k=4, which=which).real, order, atol=1e-10)
    assert stiffness_ratio(spectrum(f, linear.y0, k=4)) == pytest.approx(30.0 / 0.5)  # 4 > 0 is left out


def test_arpack_path_returns_the_chosen_eigenvalues_of_a_large_linear_system():
    lam = np.concatenate([[2000.0, -1000.0, -400.0, 50.0, 20.0], -np.linspace(1.0, 5.0, 295)])  # n = 300
    linear = problems.get("linear", eigenvalues=lam)
    expected = {"LM": [2000.0, -1000.0], "LR": [2000.0, 50.0], "SR": [-1000.0, -400.0]}
    for which, top in expected.items():
        values, info = spectrum_with_info(linear.field_at(0.0), linear.y0, k=2, which=which)
        assert info["path"] == "arpack"
        np.testing.assert_allclose(values.real, top, rtol=1e-8)


def test_linear_reference_equals_the_matrix_exponential():
    linear = problems.get("linear", eigenvalues=[-1.0, -50.0, -3.0])
    a = linear.jacobian(0.0, linear.y0.numpy())
    np.testing.assert_allclose(a, a.T, atol=1e-12)  # Q diag(λ) Q^T is symmetric
    np.testing.assert_allclose(np.linalg.eigvalsh(a), [-50.0, -3.0, -1.0], atol=1e-10)
    t_eval = [0.0, 0.01, 0.3, 1.0]
    exact = np.stack([expm(a * t) @ linear.y0.numpy() for t in t_eval])
    np.testing.assert_allclose(linear.reference(t_eval), exact, rtol=1e-7, atol=1e-10)


def test_robertson_reference_conserves_the_total_mass():
    y = problems.get("robertson").reference([0.0, 0.1, 1.0, 10.0, 40.0])
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-9)
    assert y[-1, 0] < 0.8 and y[-1, 2] > 0.2  # the reaction really ran


def test_problem_indices_along_van_der_pol():
    ind = problem_indices(problems.get("vdp", mu=100.0), np.linspace(0.0, 2.0, 5))
    assert ind["eigenvalues"].shape == (5, 2) and ind["y"].shape == (5, 2)
    assert ind["spectral_radius"][0] == pytest.approx(300.0, rel=1e-3)
    # Söderlind: μ2(J) >= max Re λ at every point
    assert np.all(ind["log_norm"] >= ind["eigenvalues"].real.max(axis=1) - 1e-9)
    # the local estimate follows the fast mode (tests/test_stiffness_continuous.py checks mu = 1000)
    np.testing.assert_allclose(ind["local_stiffness"], ind["spectral_radius"], rtol=1e-3)


def test_every_problem_is_float64_and_maps_y0_to_its_shape():
    for name in list_problems():
        p = problems.get(name)
        assert p.y0.dtype == torch.float64 and p.f(p.t_span[0], p.y0).shape == p.y0.shape


# --- operators and spectra of network blocks ------------------------------------------------------

def test_jacobian_operator_products_equal_the_dense_jacobian():
    block = BasicBlock(3, 3).double().eval()
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    jac = dense_jacobian(block.branch, x)
    op = jacobian_operator(block.branch, x)
    v = np.random.default_rng(1).standard_normal(x.numel())
    np.testing.assert_allclose(op.matvec(v), jac @ v, atol=1e-12)
    np.testing.assert_allclose(op.rmatvec(v), jac.T @ v, atol=1e-12)


@pytest.mark.parametrize("block_cls, dtype, rtol", [(BasicBlock, torch.float64, 1e-8),
                                                     (PreActBasicBlock, torch.float32, 1e-4)])
def test_matrix_free_spectrum_equals_dense_eigenvalues(block_cls, dtype, rtol, monkeypatch):
    block = block_cls(8, 8).to(dtype).eval()
    x = torch.randn(1, 8, 8, 8, dtype=dtype)  # n = 512: ARPACK, not the dense fallback
    exact = np.linalg.eigvals(dense_jacobian(block.branch, x))
    assert choose_method(x.numel(), 6) == "arpack"
    monkeypatch.setattr(spectrum_module, "dense_jacobian", lambda *a: pytest.fail("dense path ran"))
    values, info = spectrum_with_info(block.branch, x, k=6)
    assert info["path"] == "arpack" and info["matvecs"] < x.numel()
    top = np.sort(np.abs(exact))[::-1][:6]
    np.testing.assert_allclose(np.abs(values), top, rtol=rtol)
    distance = np.min(np.abs(values[:, None] - exact[None, :]), axis=1)
    assert np.all(distance <= rtol * np.abs(values))
    np.testing.assert_array_equal(spectrum(block.branch, x, k=6), values)  # fixed start vector


def test_bad_which_and_shape_changing_fields_raise_one_line_errors():
    with pytest.raises(ValueError, match="valid: LM, LR, SR") as err:
        spectrum(lambda y: y, torch.zeros(3), which="LI")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="same shape"):
        spectrum(BasicBlock(2, 4, stride=2).eval().branch, torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="has 3 stages"):
        block_spectra(dia_ode.create_model("resnet20", in_channels=1, base_width=2), torch.randn(1, 1, 4, 4),
                      stages=[3])


def test_unknown_problem_or_parameter_raises_with_the_valid_names():
    with pytest.raises(ValueError, match="valid: robertson, vdp, hires, orego, linear, lorenz, brusselator") as err:
        problems.get("rossler")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="valid: mu"):
        problems.get("vdp", eps=1e-3)


# --- indices --------------------------------------------------------------------------------------

def test_stiffness_ratio_excludes_zeros_and_positives():
    assert stiffness_ratio(np.array([-1000.0, -1.0, 0.0, 1e-13, 5.0])) == pytest.approx(1000.0)
    assert stiffness_ratio(np.array([-3.0 + 4.0j, -3.0 - 4.0j, -0.5])) == pytest.approx(6.0)
    assert stiffness_ratio(np.array([-2.0])) == 1.0
    assert math.isnan(stiffness_ratio(np.array([0.0, 1.0])))
    assert spectral_radius(np.array([-3.0 + 4.0j, 1.0])) == pytest.approx(5.0)


def test_local_estimate_is_abs_lambda_on_linear_systems():
    lam, t = -7.5, np.linspace(0.0, 0.3, 6)
    states = np.exp(lam * t)[:, None]  # (K, 1): y(t) = e^{λ t}
    np.testing.assert_allclose(local_stiffness(states, lam * states), abs(lam), rtol=1e-12)
    a = np.diag([-1.0, -10.0, -100.0])
    along = [torch.tensor([0.0, math.exp(-10.0 * s), 0.0]) for s in t]  # along the eigenvector e2
    np.testing.assert_allclose(local_stiffness(along, [torch.as_tensor(a) @ y.double() for y in along]),
                               10.0, rtol=1e-6)
    mixed = np.stack([np.exp(np.diag(a) * s) for s in t])  # all modes: between min and max |λ|
    rho = local_stiffness(mixed, mixed @ a.T)
    assert np.all((rho >= 1.0) & (rho <= 100.0))


def test_log_norm_of_a_non_normal_matrix_is_the_analytic_value():
    a = np.array([[-1.0, 4.0], [0.0, -2.0]])  # stable (λ = -1, -2) but μ2 > 0: transient growth
    mu = -1.5 + math.sqrt(0.25 + 4.0)  # largest eigenvalue of [[-1, 2], [2, -2]]
    assert log_norm(linear_field(a), torch.zeros(2, dtype=torch.float64)) == pytest.approx(mu, rel=1e-12)
    blocks = np.kron(np.eye(150), a)  # n = 300 through eigsh on (J v + J^T v) / 2
    x = torch.zeros(300, dtype=torch.float64)
    assert log_norm(linear_field(blocks), x, method="arpack") == pytest.approx(mu, rel=1e-8)


def stability_limit(a: np.ndarray, b: np.ndarray) -> float:
    """Where |R(z)| = 1 on the negative real axis, R(z) = 1 + z b^T (I - z A)^{-1} 1."""
    def growth(z: float) -> float:
        stages = np.linalg.solve(np.eye(len(b)) - z * a, np.ones(len(b)))
        return abs(1.0 + z * b @ stages) - 1.0
    return -brentq(growth, -4.0, -1.5)


def test_stability_limits_and_step_index():
    from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU as dp
    a_dp = np.zeros((7, 7))
    for i, row in enumerate(dp.beta):
        a_dp[i + 1, :len(row)] = row.numpy()
    a_rk4 = np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]])
    b_rk4 = np.array([1, 2, 2, 1]) / 6
    assert stability_limit(np.zeros((1, 1)), np.ones(1)) == pytest.approx(STABILITY_LIMITS["euler"], abs=1e-9)
    assert stability_limit(a_rk4, b_rk4) == pytest.approx(STABILITY_LIMITS["rk4"], abs=5e-5)
    assert stability_limit(a_dp, dp.c_sol.numpy()) == pytest.approx(STABILITY_LIMITS["dopri5"], abs=5e-5)
    assert step_index(0.5, 4.0) == pytest.approx(1.0)
    assert step_index(1.0, 2.7853, "rk4") == pytest.approx(1.0, abs=5e-5)  # the limits to 4 decimals
    np.testing.assert_allclose(step_index(np.array([1.0, 2.0]), 3.3066, "dopri5"), [1.0, 2.0], rtol=5e-5)
    assert step_index(1.0, 2.5127, "bosh3") == pytest.approx(1.0, abs=5e-5)  # every tableau has a limit
    with pytest.raises(ValueError, match="unknown method 'rk45'; valid: euler, midpoint, "):
        step_index(1.0, 1.0, "rk45")


# --- a network read through its traces ------------------------------------------------------------

@pytest.fixture
def tiny():
    model = dia_ode.create_model("dia_resnet20", in_channels=1, base_width=4)
    return model, torch.randn(2, 1, 8, 8)


def test_trace_stiffness_shapes_and_values(tiny):
    model, x = tiny
    traces = dia_ode.trace(model.eval(), x)
    for s, tr in enumerate(traces):
        rho, rho_c = trace_stiffness(tr), trace_stiffness(tr, per_channel=True)
        assert rho.shape == (2, 2) and rho_c.shape == (2, 2, 4 * 2 ** s)
        assert np.all(np.isnan(rho[:, 0])) == (s > 0)  # block 0 of stages 2 and 3 changes shape
        assert np.all(np.isfinite(rho[:, 1])) and np.all(np.isfinite(rho_c[:, 1]))
    x, f = [t.double() for t in traces[0].states], [t.double() for t in traces[0].updates]
    by_hand = (f[2][1] - f[1][1]).norm() / (x[2][1] - x[1][1]).norm()  # rho[sample 1, k = 1]: blocks 1 -> 2
    assert trace_stiffness(traces[0])[1, 1] == pytest.approx(by_hand.item(), rel=1e-12)


def test_block_spectra_rows_are_finite_and_step_scaled_by_the_per_channel_step(tiny):
    model, x = tiny
    model.train()
    result = block_spectra(model, x, k=4)
    assert model.training and all(m.training for m in model.modules())  # mode restored
    rows = result["blocks"]
    assert len(rows) == 3 * 3 * 2
    assert [(r["stage"], r["block"]) for r in rows if r["skipped"]] == [(1, 0), (1, 0), (2, 0), (2, 0)]
    for r in (r for r in rows if not r["skipped"]):
        assert r["eigenvalues"].shape == (4,) and np.all(np.isfinite(r["step_eigenvalues"]))
        assert r["spectral_radius"] > 0 and 0 < r["h_min"] <= r["h_max"] < 1
    json.dumps(to_jsonable(result), allow_nan=False)
    # stage 0, block 1, sample 1: eigenvalues of diag(h) J with h the traced per-channel DIA step
    row = next(r for r in rows if (r["stage"], r["block"], r["sample"]) == (0, 1, 1))
    tr = dia_ode.trace(model.eval(), x)[0]
    block, x_k, h = stages_of(model)[0].blocks[1], tr.states[1][1:2], tr.steps[1][1]  # h: (C, 1, 1)
    jac = dense_jacobian(block.branch, x_k)
    scale = h.expand_as(x_k[0]).reshape(-1).double().numpy()
    expected = np.linalg.eigvals(scale[:, None] * jac)
    np.testing.assert_allclose(np.abs(row["step_eigenvalues"]), np.sort(np.abs(expected))[::-1][:4], rtol=1e-4)


def test_step_scaled_eigenvalues_are_h_times_eigenvalues_for_a_constant_step(tiny):
    model, x = tiny
    for stage in stages_of(model):
        stage.controller = ConstantStep(0.5)
    result = block_spectra(model, x, k=4, samples=1, stages=[0], method="arpack")
    rows = result["blocks"]
    assert [(r["stage"], r["block"]) for r in rows] == [(0, 0), (0, 1), (0, 2)]
    assert all(r["path"] == r["step_path"] == "arpack" for r in rows)
    for r in rows:
        assert r["h_min"] == r["h_max"] == 0.5
        np.testing.assert_allclose(r["step_eigenvalues"], 0.5 * r["eigenvalues"], rtol=1e-4, atol=1e-6)
        assert r["step_index_euler"] == pytest.approx(0.5 * r["spectral_radius"] / 2.0, rel=1e-4)
