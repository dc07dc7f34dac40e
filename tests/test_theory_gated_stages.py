"""Gated stages x_{k+1} = x_k + h_k ⊙ f_k(x_k): the five results of theory/gated_stages.md.

Each test checks a predicted rate, bound or identity on toy stages (a few-dimensional state, random
smooth fields, sigmoid gates, the project's DIALSTMCell) and, where a statement could be confused
with a wrong neighbour, also checks that the wrong variant fails the same assertion. Expected values
come from scipy's DOP853 at tolerance 1e-12, from autograd Jacobians or from closed forms, never from
the code under test. Everything is float64 except the BatchNorm identity (float32, as in the models).
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn
from torch.func import jacrev

from dia_ode.attention import DIAUnit, DIALSTMCell, SqueezeExcite
from dia_ode.attention.dia_cell import zero_
from dia_ode.solvers import AbstractBlock, ConstantStep, DIAStageController, ResidualStage

F64 = torch.float64


def slope(xs, ys) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def reference(rhs, x0: np.ndarray, t_end: float):
    """Dense DOP853 solution of dx/dt = rhs(x, t) for a batch x0 (B, n), tolerance 1e-12."""
    shape = x0.shape
    return solve_ivp(lambda t, y: rhs(y.reshape(shape), t).ravel(), (0.0, t_end), x0.ravel(),
                     method="DOP853", rtol=1e-12, atol=1e-12, dense_output=True).sol


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class ToyField:
    """Random smooth f(x, t) = W2 tanh(W1 x + b1 + t u) + sin(3t) and a sigmoid-MLP gate τ ∈ (0, 2)^n."""

    def __init__(self, n: int = 4, hidden: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.W1 = rng.normal(size=(hidden, n)) / math.sqrt(n)
        self.b1, self.u = rng.normal(size=hidden), rng.normal(size=hidden)
        self.W2 = rng.normal(size=(n, hidden)) / math.sqrt(hidden)
        self.V1 = rng.normal(size=(hidden, n)) / math.sqrt(n)
        self.c1, self.v = rng.normal(size=hidden), rng.normal(size=hidden)
        self.V2, self.c2 = rng.normal(size=(n, hidden)) / math.sqrt(hidden), rng.normal(size=n)
        self.x0 = rng.normal(size=(3, n))  # (B, n): three initial states

    def f(self, x, t):
        return np.tanh(x @ self.W1.T + self.b1 + t * self.u) @ self.W2.T + np.sin(3.0 * t)

    def tau(self, x, t, kind: str):
        """τ(t) (kind "time") or τ(x, t) (kind "state"), a two-layer MLP followed by 2·sigmoid."""
        pre = self.c1 + t * self.v + (x @ self.V1.T if kind == "state" else 0.0 * x[:, :1])
        return 2.0 * sigmoid(np.tanh(pre) @ self.V2.T + self.c2)


# --- 1. consistency as depth grows ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["time", "state"])
def test_gated_stage_with_steps_tau_over_L_converges_at_first_order(kind):
    toy = ToyField()
    rhs = lambda x, t: toy.tau(x, t, kind) * toy.f(x, t)  # noqa: E731  the predicted limit τ ⊙ f
    exact = reference(rhs, toy.x0, 1.0)
    ungated = reference(toy.f, toy.x0, 1.0)  # a wrong limit: the gate dropped
    depths = [8, 16, 32, 64, 128, 256]
    errors, wrong = [], []
    for L in depths:
        x, e, e_wrong = toy.x0.copy(), 0.0, 0.0
        for k in range(L):
            t = k / L
            x = x + toy.tau(x, t, kind) / L * toy.f(x, t)  # h_k = τ(x_k, t_k) / L
            e = max(e, np.abs(x.ravel() - exact((k + 1) / L)).max())  # global error, max over the grid
            e_wrong = max(e_wrong, np.abs(x.ravel() - ungated((k + 1) / L)).max())
        errors.append(e)
        wrong.append(e_wrong)
    assert slope(depths, errors) == pytest.approx(-1.0, abs=0.1)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(orders - 1.0) < 0.1)
    assert max(L * e for L, e in zip(depths, errors)) < 2.0  # e_L <= C / L with one constant C
    # Against the wrong limit dx/dt = f the error does not go to zero: the same assertion fails.
    assert slope(depths, wrong) > -0.2 and min(wrong) > 0.1


def dia_horizon(cell: DIALSTMCell, f: nn.Module, x0: torch.Tensor, L: int) -> torch.Tensor:
    """T_L = sum_k h_k per sample and channel, for L DIA steps on the tied field f (explicit loop)."""
    x, h, c = x0, torch.zeros_like(x0), torch.zeros_like(x0)
    horizon = torch.zeros_like(x0)
    for _ in range(L):
        f_k = f(x)  # (B, C)
        h, c = cell(f_k, (h, c))  # z_k = f_k: a (B, C) state has nothing to squeeze
        x = x + h * f_k
        horizon = horizon + h
    return horizon


def test_unscaled_dia_steps_give_a_horizon_that_grows_like_L():
    C = 4
    f = nn.Sequential(nn.Linear(C, 8), nn.Tanh(), nn.Linear(8, C)).double()  # bounded: |z_k| <= const
    cell = DIALSTMCell(C, reduction=1).double()
    x0 = torch.randn(3, C, dtype=F64)
    depths = [8, 16, 32, 64, 128, 256]
    with torch.no_grad():
        horizons = torch.stack([dia_horizon(cell, f, x0, L) for L in depths])  # (6, B, C)
        assert torch.equal(dia_horizon(zero_(DIALSTMCell(C, reduction=1)).double(), f, x0, 64),
                           torch.full_like(x0, 16.0))  # DIA at its zero init: h = 1/4, T_L = L / 4
    per_block = horizons / torch.tensor(depths, dtype=F64)[:, None, None]
    assert per_block.min() > 0.1 and per_block.max() < 0.5  # T_L / L = mean h, bounded away from 0
    for b in range(x0.shape[0]):
        for i in range(C):
            assert slope(depths, horizons[:, b, i].numpy()) == pytest.approx(1.0, abs=0.05)
    # The 1/L-scaled gate h_k = τ(t_k) / L has a horizon that converges (to ∫ τ): slope ≈ 0.
    toy = ToyField()
    scaled = [sum(toy.tau(toy.x0, k / L, "time") / L for k in range(L)) for L in depths]  # (B, n) each
    assert abs(slope(depths, [s[0, 0] for s in scaled])) < 0.05
    assert np.abs(scaled[-1] - scaled[-2]).max() < 0.01


def test_unscaled_steps_follow_the_flow_to_T_only_to_order_h():
    rng = np.random.default_rng(2)
    n, hidden = 4, 8
    W1, b1 = rng.normal(size=(hidden, n)) / 2.0, rng.normal(size=hidden)
    W2 = rng.normal(size=(n, hidden)) / math.sqrt(hidden)
    f = lambda x, t=0.0: np.tanh(x @ W1.T + b1) @ W2.T - x  # noqa: E731  tied, autonomous
    x0, T = rng.normal(size=(3, n)), 4.0
    flow = reference(f, x0, T)(T)
    steps = [1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64]
    errors = []
    for h in steps:
        x = x0.copy()
        for _ in range(round(T / h)):
            x = x + h * f(x)
        errors.append(np.abs(x.ravel() - flow).max())
    assert slope(steps, errors) == pytest.approx(1.0, abs=0.1)  # e(h) ≈ C h at a fixed horizon T
    assert errors[0] > 10 * errors[-1]  # DIA's h = 1/4 is 16 times further from the flow than h = 1/64
    # With h = O(1) the stage is the difference equation, not the flow: dx/dt = -10 x decays, the
    # map x -> (1 - 10 h) x with h = 1/4 multiplies by -1.5 per block.
    x = np.ones(1)
    for _ in range(20):
        x = x + 0.25 * (-10.0 * x)
    assert abs(x[0]) == pytest.approx(1.5 ** 20) and math.exp(-10.0 * 5.0) < 1e-20


# --- 2. stability with the gate's own Jacobian ----------------------------------------------------


def mlp(n: int, hidden: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(hidden, n, generator=g, dtype=F64) / math.sqrt(n)
    b1 = torch.randn(hidden, generator=g, dtype=F64)
    W2 = scale * torch.randn(n, hidden, generator=g, dtype=F64) / math.sqrt(hidden)
    return lambda x: W2 @ torch.tanh(W1 @ x + b1)


def full_and_frozen(f, h, x):
    """DΦ(x) of Φ(x) = x + h(x) ⊙ f(x) by autograd, and the frozen-gate I + diag(h(x)) J_f(x)."""
    full = jacrev(lambda v: v + h(v) * f(v))(x)
    frozen = torch.eye(x.numel(), dtype=F64) + torch.diag(h(x)) @ jacrev(f)(x)
    return full, frozen


def radius(M: torch.Tensor) -> float:
    return torch.linalg.eigvals(M).abs().max().item()


def test_block_jacobian_is_frozen_part_plus_gate_term():
    n = 5
    f, gate = mlp(n, 8, seed=1), mlp(n, 8, seed=2)
    h = lambda x: torch.sigmoid(gate(x))  # noqa: E731  a sigmoid-MLP gate reading the state
    x = torch.randn(n, dtype=F64)
    full, frozen = full_and_frozen(f, h, x)
    gate_term = torch.diag(f(x)) @ jacrev(h)(x)  # diag(f) ∂h/∂x
    torch.testing.assert_close(full, frozen + gate_term, rtol=0, atol=1e-13)
    assert gate_term.abs().max() > 1e-2  # the frozen Jacobian alone misses a term of order one


def test_at_a_fixed_point_with_a_positive_gate_the_gate_term_vanishes():
    n = 5
    x_star = torch.randn(n, dtype=F64)
    inner = mlp(n, 8, seed=3, scale=0.3)
    f = lambda x: inner(x - x_star) - inner(torch.zeros(n, dtype=F64)) - (x - x_star)  # noqa: E731  f(x*) = 0
    gate = mlp(n, 8, seed=4)
    h = lambda x: torch.sigmoid(gate(x))  # noqa: E731
    full, frozen = full_and_frozen(f, h, x_star)
    assert torch.equal(torch.diag(f(x_star)) @ jacrev(h)(x_star), torch.zeros(n, n, dtype=F64))
    torch.testing.assert_close(full, frozen, rtol=0, atol=1e-15)  # so DΦ(x*) is the frozen Jacobian
    rho = radius(full)
    assert rho < 1
    # ρ < 1 is the verdict: iterates from nearby converge to x*, at the rate ρ.
    x = x_star + 1e-3 * torch.randn(n, dtype=F64)
    errs = []
    for _ in range(60):
        x = x + h(x) * f(x)
        errs.append((x - x_star).norm().item())
    assert errs[-1] < 1e-3 * 1e-3 and (errs[-1] / errs[-11]) ** 0.1 == pytest.approx(rho, rel=0.05)


def gate_toy(kind: str, n: int = 3):
    """f(x) = 1 + B x and h(x) = sigmoid(W x): 'braking' (B ≈ +I/2, W ≈ -4I) or 'accelerating'
    (B ≈ -I/2, W ≈ +4I), with a small random coupling."""
    g = torch.Generator().manual_seed(1)
    sign = 1.0 if kind == "braking" else -1.0
    B = sign * 0.5 * torch.eye(n, dtype=F64) + 0.1 * torch.randn(n, n, generator=g, dtype=F64)
    W = -sign * 4.0 * torch.eye(n, dtype=F64) + 0.1 * torch.randn(n, n, generator=g, dtype=F64)
    return (lambda x: 1.0 + B @ x), (lambda x: torch.sigmoid(W @ x))


def test_gate_term_flips_the_stability_verdict_along_a_trajectory():
    # Braking gate on an expanding field: the frozen Jacobian says every block expands, the full one
    # says every block contracts, and the stage map (autograd through 8 blocks) contracts.
    f, h = gate_toy("braking")
    phi = lambda v: v + h(v) * f(v)  # noqa: E731
    x, fulls, frozens = torch.zeros(3, dtype=F64), [], []
    for _ in range(8):
        full, frozen = full_and_frozen(f, h, x)
        fulls.append(full)
        frozens.append(frozen)
        x = phi(x)
    assert all(radius(M) > 1.0 for M in frozens) and all(radius(M) < 0.9 for M in fulls)

    def stage(v):
        for _ in range(8):
            v = phi(v)
        return v

    x0 = torch.zeros(3, dtype=F64)
    S = jacrev(stage)(x0)
    chain = torch.linalg.multi_dot(fulls[::-1])
    frozen_chain = torch.linalg.multi_dot(frozens[::-1])
    torch.testing.assert_close(S, chain, rtol=0, atol=1e-14)  # the stage Jacobian is the full product
    assert torch.linalg.matrix_norm(S, 2) < 0.1 and radius(frozen_chain) > 1.5
    d = 1e-6 * torch.randn(3, dtype=F64)
    assert (stage(x0 + d) - stage(x0)).norm() < 0.1 * d.norm()  # the nonlinear stage contracts too
    # Accelerating gate on a contracting field: the opposite verdicts at the input.
    f, h = gate_toy("accelerating")
    full, frozen = full_and_frozen(f, h, torch.zeros(3, dtype=F64))
    assert radius(frozen) < 0.8 and radius(full) > 1.5


def dia_augmented_map(cell: DIALSTMCell, f, C: int):
    """Ψ(x, h, c) = (x + Cell_h(z(x), m) ⊙ f(x), Cell(z(x), m)) on the flattened y = (x, h, c), z = f(x)."""

    def psi(y):
        x, h, c = y[:C], y[C:2 * C], y[2 * C:]
        fx = f(x)
        h_next, c_next = cell(fx[None], (h[None], c[None]))  # (1, C) each
        return torch.cat([x + h_next[0] * fx, h_next[0], c_next[0]])

    return psi


def test_dia_fixed_point_spectrum_is_the_frozen_block_and_the_memory():
    C = 4
    cell = DIALSTMCell(C, reduction=1).double()
    x_star = torch.randn(C, dtype=F64)
    inner = mlp(C, 8, seed=5)
    f = lambda x: inner(x - x_star) - inner(torch.zeros(C, dtype=F64))  # noqa: E731  f(x*) = 0
    m = torch.zeros(2 * C, dtype=F64)
    with torch.no_grad():  # m* = Cell(0, m*) by fixed-point iteration
        for _ in range(300):
            h, c = cell(torch.zeros(1, C, dtype=F64), (m[None, :C], m[None, C:]))
            m = torch.cat([h[0], c[0]])
    psi = dia_augmented_map(cell, f, C)
    y_star = torch.cat([x_star, m])
    torch.testing.assert_close(psi(y_star), y_star, rtol=0, atol=1e-14)
    J = jacrev(psi)(y_star)  # (3C, 3C)
    assert torch.equal(J[:C, C:], torch.zeros(C, 2 * C, dtype=F64))  # diag(f*) ∂h/∂m = 0
    x_block = torch.eye(C, dtype=F64) + torch.diag(m[:C]) @ jacrev(f)(x_star)
    torch.testing.assert_close(J[:C, :C], x_block, rtol=0, atol=1e-14)  # the frozen block, h = h*
    # Block lower triangular: the spectrum is that of the frozen block and of the memory's ∂Cell/∂m.
    union = torch.cat([torch.linalg.eigvals(x_block), torch.linalg.eigvals(J[C:, C:])]).detach().numpy()
    np.testing.assert_allclose(np.poly(torch.linalg.eigvals(J).detach().numpy()), np.poly(union), atol=1e-10)


# --- 3. propagation of a perturbation -------------------------------------------------------------


def log_norm_2(A: torch.Tensor) -> float:
    """μ2(A) = λ_max((A + A^T) / 2)."""
    return torch.linalg.eigvalsh((A + A.T) / 2).max().item()


def norm_2(A: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(A, 2).item()


def test_perturbation_bounds_hold_along_a_gated_stage():
    n, L = 4, 16
    fields = [mlp(n, 8, seed=10 + k, scale=1.5) for k in range(L)]  # untied f_k
    time_gate = mlp(1, 8, seed=9)
    steps = [torch.sigmoid(time_gate(torch.tensor([k / L], dtype=F64)))[0] * torch.sigmoid(
        torch.randn(n, dtype=F64)) for k in range(L)]  # h_k ∈ (0, 1)^n, independent of x

    def stage(x):
        for f, h in zip(fields, steps):
            x = x + h * f(x)
        return x

    x, A = torch.randn(n, dtype=F64), []  # A_k = diag(h_k) J_k along the trajectory
    x0 = x.clone()
    for f, h in zip(fields, steps):
        A.append(torch.diag(h) @ jacrev(f)(x))
        x = x + h * f(x)
    eye = torch.eye(n, dtype=F64)
    d0 = 1e-7 * torch.randn(n, dtype=F64)
    dL = (stage(x0 + d0) - stage(x0)).norm().item()
    product = math.prod(norm_2(eye + a) for a in A)
    second_order = math.exp(sum(log_norm_2(a) + norm_2(a) ** 2 / 2 for a in A))
    crude = math.prod(1 + norm_2(a) for a in A)
    assert dL <= (1 + 1e-5) * product * d0.norm().item()
    for a in A:  # the exact one-step bound ||I + A||_2^2 <= 1 + 2 μ2(A) + ||A||_2^2
        assert norm_2(eye + a) ** 2 <= 1 + 2 * log_norm_2(a) + norm_2(a) ** 2 + 1e-12
    assert product <= second_order * (1 + 1e-12) and product <= crude * (1 + 1e-12)
    # The first-order log-norm factor exp(μ2(A)) is no bound for an O(1) step: J = -3 I, h = 1.
    a = -3.0 * eye
    assert norm_2(eye + a) == pytest.approx(2.0) and math.exp(log_norm_2(a)) < 0.05
    assert norm_2(eye + a) == pytest.approx(math.sqrt(1 + 2 * log_norm_2(a) + norm_2(a) ** 2))


def test_per_channel_steps_keep_eigenvalues_stable_but_can_make_mu2_positive():
    J = torch.tensor([[-1.0, 3.0], [-3.0, -1.0]], dtype=F64)  # μ2(J) = -1: contractive in the 2-norm
    D = torch.diag(torch.tensor([1.0, 0.01], dtype=F64))  # a per-channel step
    assert log_norm_2(J) == pytest.approx(-1.0)
    assert log_norm_2(D @ J) > 1.0  # diag(h) J expands some vectors in the 2-norm
    assert torch.linalg.eigvals(D @ J).real.max() < 0  # eigenvalues stay in the left half-plane
    # In the norm ||v||_{D^-1} = ||D^{-1/2} v||_2: μ(DJ) = μ2(D^{1/2} J D^{1/2}) <= h_min μ2(J) < 0.
    r = torch.sqrt(D)
    assert log_norm_2(r @ J @ r) <= 0.01 * log_norm_2(J) + 1e-12


def test_eigenvalues_inside_the_euler_disc_do_not_bound_a_non_normal_stage():
    h = 0.25  # DIA's step at its zero initialisation
    J = torch.tensor([[-1.0, 40.0], [0.0, -1.0]], dtype=F64)  # non-normal, both eigenvalues -1
    M = torch.eye(2, dtype=F64) + h * J
    assert torch.linalg.eigvals(M).abs().max() == pytest.approx(0.75)  # |1 + h λ| < 1: the test passes
    norms, P = [], torch.eye(2, dtype=F64)
    for _ in range(40):
        P = M @ P
        norms.append(norm_2(P))
    assert max(norms) > 10.0  # ... yet the stage amplifies a perturbation 16.9 times
    assert norms[-1] < 1e-2  # only transiently: M^k -> 0
    # Two blocks whose eigenvalues pass the same test, alternated: unbounded growth.
    M2 = torch.eye(2, dtype=F64) + h * J.T
    assert radius(M2) == pytest.approx(0.75)
    assert radius(M2 @ M) > 100.0
    P = torch.linalg.matrix_power(M2 @ M, 10)
    assert norm_2(P) > 1e19


# --- 4. identifiability of h ----------------------------------------------------------------------


def batchnorm(C: int, gamma, beta, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(C)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
        bn.running_mean.copy_(torch.randn(C, generator=g))
        bn.running_var.copy_(torch.rand(C, generator=g) + 0.5)
    return bn


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_constant_step_is_absorbed_by_the_branchs_final_batchnorm(mode):
    C = 4
    conv = nn.Conv2d(C, C, 3, padding=1, bias=False)
    gamma, beta = torch.randn(C), torch.randn(C)
    h = torch.sigmoid(torch.randn(C))  # a constant per-channel step in (0, 1)
    bn = batchnorm(C, gamma, beta, seed=0).train(mode == "train")
    absorbed = batchnorm(C, h * gamma, h * beta, seed=0).train(mode == "train")
    wrong = batchnorm(C, h * gamma, beta, seed=0).train(mode == "train")  # β left unscaled
    x = torch.randn(8, C, 5, 5)
    with torch.no_grad():
        u = conv(x)
        gated = x + h.view(1, C, 1, 1) * bn(u)  # step h, γ, β
        plain = x + absorbed(u)  # step 1, γ' = h γ, β' = h β
        torch.testing.assert_close(gated, plain)
        torch.testing.assert_close(bn.running_mean, absorbed.running_mean, rtol=0, atol=0)
        torch.testing.assert_close(bn.running_var, absorbed.running_var, rtol=0, atol=0)
        assert (x + wrong(u) - gated).abs().max() > 1e-2


def test_a_state_dependent_step_is_not_absorbed_by_a_constant_gamma():
    C = 4
    conv, bn = nn.Conv2d(C, C, 3, padding=1, bias=False), nn.BatchNorm2d(C).eval()
    se = SqueezeExcite(C, reduction=1)
    x = torch.randn(16, C, 5, 5) + 2.0 * torch.randn(16, C, 1, 1)  # samples with their own channel means
    with torch.no_grad():
        v = bn(conv(x))  # (B, C, H, W)
        target = se(v) * v  # h(x) ⊙ f(x) with an SE gate reading the branch
        # best constant per-channel γ-scale s_c (least squares over batch and space) for s_c v_c
        s = (target * v).sum(dim=(0, 2, 3)) / (v * v).sum(dim=(0, 2, 3))  # (C,)
        residual = (target - s.view(1, C, 1, 1) * v).norm() / target.norm()
    assert residual > 1e-2  # the gate varies over inputs; only its constant part is absorbed


# --- 5. DIA's memory: a one-step method on (x, h, c) ---------------------------------------------


class ToyBlock(AbstractBlock):
    """Untied smooth branch f_k(x) = tanh(conv1x1(x)) on images, identity shortcut."""

    def __init__(self, C: int):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 1)

    def branch(self, x, cond=None):
        return torch.tanh(self.conv(x))

    def shortcut(self, x):
        return x


def dia_one_step(unit: DIAUnit, block: ToyBlock, x, memory):
    """Ψ_k(x_k, m_{k-1}) = (x_k + h_k ⊙ f_k(x_k), m_k), (h_k, c_k) = Cell(GAP f_k(x_k), m_{k-1})."""
    f_k = block.branch(x)  # (B, C, H, W)
    h, c = unit.cell(f_k.mean(dim=(2, 3)), memory)  # (B, C) each
    return x + h[:, :, None, None] * f_k, (h, c)


def dia_toy(C=4, L=6, seed=0):
    torch.manual_seed(seed)
    blocks = [ToyBlock(C).double() for _ in range(L)]
    unit = DIAUnit(C, sam="se", reduction=1).double()
    return blocks, unit, ResidualStage(blocks, DIAStageController(unit))


def test_dia_stage_is_a_one_step_map_on_x_and_its_memory():
    C, L, k0 = 4, 6, 3
    blocks, unit, stage = dia_toy(C, L)
    x0 = torch.randn(5, C, 3, 3, dtype=F64)
    with torch.no_grad():
        out = stage(x0)
        x, m = x0, (torch.zeros(5, C, dtype=F64), torch.zeros(5, C, dtype=F64))
        for k, block in enumerate(blocks):
            if k == k0:
                x_mid, m_mid = x, m
            x, m = dia_one_step(unit, block, x, m)
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)  # the library stage iterates Ψ
        # (x, m) is a state: restarting at block k0 from (x_k0, m_k0 - 1) gives the same output ...
        y = (x_mid, m_mid)
        for block in blocks[k0:]:
            y = dia_one_step(unit, block, *y)
        assert torch.equal(y[0], x)
        # ... and x alone is not: with the memory reset the tail of the stage computes something else.
        y = (x_mid, (torch.zeros(5, C, dtype=F64), torch.zeros(5, C, dtype=F64)))
        for block in blocks[k0:]:
            y = dia_one_step(unit, block, *y)
        assert (y[0] - x).abs().max() > 1e-3


def lmm_residual(xs, fs) -> float:
    """Residual of the best fixed-coefficient fit x_{K+1} = sum_j α_j x_j + β_j f_j (least squares over
    samples and positions, per channel), relative to the last update x_{K+1} - x_K; the worst channel."""
    worst = 0.0
    for i in range(xs[0].shape[1]):
        columns = [x[:, i].flatten() for x in xs[:-1]] + [f[:, i].flatten() for f in fs]
        A, b = torch.stack(columns, dim=1), xs[-1][:, i].flatten()
        coef = torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution  # rank-deficient for a constant step
        update = b - xs[-2][:, i].flatten()  # x_{K+1} - x_K: the residual is measured against the step
        worst = max(worst, ((A @ coef)[:, 0] - b).norm().item() / update.norm().item())
    return worst


def test_dia_stage_is_not_a_linear_multistep_method_in_x():
    C, L = 4, 4
    blocks, unit, _ = dia_toy(C, L, seed=1)
    x = torch.randn(32, C, 3, 3, dtype=F64) + 2.0 * torch.randn(32, C, 1, 1, dtype=F64)  # varied GAPs
    with torch.no_grad():
        xs, fs = [x], []  # DIA
        xc, fc = [x], []  # the constant step h = 1/4 on the same blocks
        m = (torch.zeros(32, C, dtype=F64), torch.zeros(32, C, dtype=F64))
        for block in blocks:
            fs.append(block.branch(xs[-1]))
            x, m = dia_one_step(unit, block, xs[-1], m)
            xs.append(x)
            fc.append(block.branch(xc[-1]))
            xc.append(xc[-1] + 0.25 * fc[-1])
        constant = ResidualStage(blocks, ConstantStep(0.25))(xs[0])
    torch.testing.assert_close(constant, xc[-1], rtol=0, atol=1e-12)
    assert lmm_residual(xc, fc) < 1e-10  # a constant step is a (one-step) LMM: α = e_K, β = h e_K
    assert lmm_residual(xs, fs) > 1e-2  # DIA's coefficients depend on the input: no fixed α, β fit


def test_two_branch_evaluations_estimate_the_local_error_where_dia_sees_none():
    n = 4
    g = torch.sigmoid(torch.randn(n, dtype=F64))  # a frozen per-channel gate; the step is h = s g
    x = torch.randn(n, dtype=F64)
    A = torch.randn(n, n, dtype=F64)
    b = torch.randn(n, dtype=F64)
    fields = {k: (lambda v, a=a: b + a @ torch.tanh(v - x)) for k, a in ((1, A), (10, 10 * A))}  # f(x) = b for both
    f, rel = fields[1], []
    for s in (0.02, 0.01, 0.005):
        euler = x + s * g * f(x)
        flow = reference(lambda v, t: (g * f(torch.from_numpy(v[0]))).numpy()[None], x.numpy()[None], s)(s)
        true = flow - euler.numpy()  # the local error of the gated Euler step
        proxy = (s / 2 * g * (f(euler) - f(x))).numpy()  # Heun minus Euler: two branch evaluations
        rel.append(np.linalg.norm(proxy - true) / np.linalg.norm(true))
    # the proxy is the local error to leading order: the relative gap is O(s)
    assert rel[-1] < 0.01 and slope([0.02, 0.01, 0.005], rel) == pytest.approx(1.0, abs=0.15)
    # DIA's input GAP(f_k(x_k)) is the same for both fields, so is its step; the proxy is not.
    cell = DIALSTMCell(n, reduction=1).double()
    zero = torch.zeros(1, n, dtype=F64)
    with torch.no_grad():
        steps = [cell(fields[k](x)[None], (zero, zero))[0] for k in (1, 10)]
    assert torch.equal(steps[0], steps[1])
    s = 0.01
    err = [(s / 2 * g * (fields[k](x + s * g * fields[k](x)) - fields[k](x))).norm().item() for k in (1, 10)]
    assert err[1] > 5 * err[0]
