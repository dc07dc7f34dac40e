"""Numerical checks of statements in theory/ mended in issue 25 (item 1).

stiffness.md: the gate's term in a block's Jacobian, and Euler's amplification over every eigenvalue;
correlation.md: the per-sample statistic's limit in C and its null spread 1/sqrt(C - 1);
vit.md: the order of the Lie splitting and the field that unequal sub-steps converge to.
Expected values come from autograd, dense linear algebra, matrix exponentials or closed forms.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from torch import nn
from torch.autograd.functional import jacobian

from dia_ode.analysis.correlation import layer_correlation, mean_off_diagonal
from dia_ode.solvers import ConstantStep, ResidualStage, StageTrace
from dia_ode.solvers.interleaved import AlternatingStageController
from dia_ode.solvers.stage import AbstractBlock
from dia_ode.stiffness.network import block_row

# --- stiffness.md: the gated block x -> x + h(x) ⊙ f(x) ----------------------------------------------

# f(x) = tanh(W x), h(x) = sigmoid(V x + b) at the point X (a seeded draw, rounded to one decimal)
W = torch.tensor([[-0.3, 1.3, 2.0], [0.6, -1.1, -2.1], [-1.2, 0.6, -1.8]], dtype=torch.float64)
V = torch.tensor([[1.1, -1.0, -0.6], [0.9, -4.4, 0.9], [-2.7, -0.4, -1.1]], dtype=torch.float64)
B = torch.tensor([1.2, -1.9, 0.0], dtype=torch.float64)
X = torch.tensor([-0.3, -0.3, -0.5], dtype=torch.float64)


def field(x):
    return torch.tanh(x @ W.T)


def gate(x):
    return torch.sigmoid(x @ V.T + B)


def radius(m) -> float:
    return float(np.abs(np.linalg.eigvals(np.asarray(m))).max())


class FieldBlock(nn.Module):
    """A block whose branch is a given map, for block_row."""

    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def branch(self, x, cond=None):
        return self.f(x)


def test_the_full_block_jacobian_has_the_gate_term_and_freezing_the_gate_changes_its_radius():
    # d/dx [x + h(x) ⊙ f(x)] = I + diag(h) J_f + diag(f) J_h; J_f, J_h written out, not by autograd
    f, h = field(X), gate(X)
    j_f = torch.diag(1 - f ** 2) @ W
    j_h = torch.diag(h * (1 - h)) @ V
    full = torch.eye(3, dtype=torch.float64) + torch.diag(h) @ j_f + torch.diag(f) @ j_h
    frozen = torch.eye(3, dtype=torch.float64) + torch.diag(h) @ j_f
    autograd_full = jacobian(lambda v: v + gate(v) * field(v), X)
    torch.testing.assert_close(full, autograd_full, rtol=0, atol=1e-12)
    torch.testing.assert_close(autograd_full - frozen, torch.diag(f) @ j_h, rtol=0, atol=1e-12)
    # the gate term decides stability here: frozen, Euler amplifies; with it, the map contracts
    assert radius(autograd_full) == pytest.approx(0.702, abs=1e-3)
    assert radius(frozen) == pytest.approx(1.028, abs=1e-3)


def test_block_spectra_read_the_frozen_gate_jacobian_not_the_full_one():
    # block_row (one row of block_spectra) freezes the traced h: its step eigenvalues are those of
    # diag(h) J_f and its euler_amplification is rho(I + diag(h) J_f) = 1.028, not the full map's 0.702
    x, h = X[None], gate(X)[None]
    stage_trace = StageTrace(states=[x, x + h * field(x)], updates=[field(x)], steps=[h])
    row = block_row(FieldBlock(field), stage_trace, stage=0, index=0, sample=0, k=3)
    j_f = jacobian(field, X)
    np.testing.assert_allclose(np.sort_complex(row["step_eigenvalues"]),
                               np.sort_complex(np.linalg.eigvals((torch.diag(h[0]) @ j_f).numpy())), atol=1e-12)
    assert row["euler_amplification"] == pytest.approx(radius(torch.eye(3) + torch.diag(h[0]) @ j_f), abs=1e-12)
    assert row["euler_amplification"] == pytest.approx(1.028, abs=1e-3)


@pytest.mark.parametrize("n, method", [(20, "dense"), (300, "arpack")])
def test_euler_amplification_sees_a_small_eigenvalue_with_positive_real_part(n, method):
    # z = h λ: a bulk in [-1.9, -0.1] (|1 + z| <= 0.9) and one small z = +0.05 (|1 + z| = 1.05). The
    # top-3 by modulus are all inside Euler's disk; the max of |1 + z| over them (the old
    # euler_amplification) is 0.9 and says "stable", the true max over all eigenvalues is 1.05.
    lam = np.concatenate([np.linspace(-1.9, -0.1, n - 1), [0.05]])
    q, r = np.linalg.qr(np.random.default_rng(0).standard_normal((n, n)))
    a = torch.as_tensor((q * np.sign(np.diag(r))) @ np.diag(lam) @ (q * np.sign(np.diag(r))).T)
    x = torch.ones(1, n, dtype=torch.float64)
    stage_trace = StageTrace(states=[x, x + x @ a.T], updates=[x @ a.T], steps=[torch.tensor(1.0, dtype=torch.float64)])
    row = block_row(FieldBlock(lambda v: v @ a.T), stage_trace, stage=0, index=0, sample=0, k=3, method=method)
    assert row["step_path"] == method
    np.testing.assert_allclose(row["step_eigenvalues"].real, [-1.9, -1.9 + 1.8 / (n - 2), -1.9 + 3.6 / (n - 2)],
                               rtol=1e-6)
    assert np.max(np.abs(1 + row["step_eigenvalues"])) == pytest.approx(0.9, rel=1e-6)  # the top-k reading
    assert row["euler_amplification"] == pytest.approx(1.05, rel=1e-8)


# --- correlation.md: the per-sample r and its permuted null -------------------------------------------

def pearson(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pearson r of the last axis, row by row."""
    u, v = u - u.mean(-1, keepdim=True), v - v.mean(-1, keepdim=True)
    return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))


@pytest.mark.parametrize("channels", [4, 16, 64])
def test_r_of_independent_channel_vectors_spreads_as_one_over_sqrt_c_minus_1(channels):
    # 400,000 pairs: the std of the sample std is 0.11% of it; 1/sqrt(C) is 13%, 3.2%, 0.8% lower
    g = torch.Generator().manual_seed(channels)
    r = torch.cat([pearson(*torch.randn(2, 50_000, channels, generator=g, dtype=torch.float64)) for _ in range(8)])
    assert abs(float(r.mean())) < 0.003
    assert float(r.std()) == pytest.approx(1 / math.sqrt(channels - 1), rel=0.004)


@pytest.mark.parametrize("channels", [4, 5])
def test_r_against_every_channel_permutation_has_mean_0_and_variance_one_over_c_minus_1(channels):
    # the permutation distribution of Pearson's r, exactly: every one of the C! permutations, r from
    # layer_correlation's per-sample protocol
    g = torch.Generator().manual_seed(1)
    u, v = torch.rand(channels, generator=g, dtype=torch.float64), torch.rand(channels, generator=g, dtype=torch.float64)
    r = torch.tensor([float(layer_correlation(torch.stack([u, v[list(p)]])[None], "per_sample")[0, 1])
                      for p in itertools.permutations(range(channels))], dtype=torch.float64)
    assert float(r.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float((r ** 2).mean()) == pytest.approx(1 / (channels - 1), abs=1e-12)


def test_a_shared_profiles_per_sample_r_reaches_its_limit_as_c_grows_not_as_n_grows():
    # a[n, l, c] = p_c + e[n, l, c], var(p) = sigma^2 = 1 over the channels: the limit is 1/2.
    # C = 4 stays 0.09 above it with 20,000 samples; C = 1024 is within 0.01 with 50.
    def per_sample_r(channels: int, samples: int) -> float:
        g = torch.Generator().manual_seed(channels)
        p = torch.randn(channels, generator=g, dtype=torch.float64)
        p = (p - p.mean()) / p.std(correction=0)
        return mean_off_diagonal(layer_correlation(p + torch.randn(samples, 2, channels, generator=g,
                                                                   dtype=torch.float64), "per_sample"))

    assert per_sample_r(4, 20_000) - 0.5 > 0.05
    assert per_sample_r(1024, 50) == pytest.approx(0.5, abs=0.01)


# --- vit.md: a block's two sub-steps are a Lie splitting of order 1 --------------------------------

class LinearBlock(AbstractBlock):
    """f(x) = M x on (batch, n) states, identity shortcut."""

    def __init__(self, m: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("m", torch.as_tensor(m))

    def branch(self, x, cond=None):
        return x @ self.m.T

    def shortcut(self, x):
        return x


def split_stage(first: np.ndarray, second: np.ndarray, blocks: int, a: float, b: float) -> ResidualStage:
    """`blocks` blocks of two sub-steps, steps tau a and tau b (tau = 1 / blocks), one controller each
    (the ViT's split controller)."""
    tau = 1.0 / blocks
    steps = [LinearBlock(m) for _ in range(blocks) for m in (first, second)]
    return ResidualStage(steps, AlternatingStageController([ConstantStep(tau * a), ConstantStep(tau * b)]))


def test_unequal_sub_steps_converge_to_the_weighted_field_at_order_one():
    # x' = a A x + b B x is the limit of L blocks "x += (a/L) A x; x += (b/L) B x" on [0, 1]; A and B do
    # not commute, so even exact sub-flows leave an O(1/L) splitting error (Lie: order 1, not Strang's 2)
    g = np.random.default_rng(3)
    mat_a, mat_b = g.standard_normal((4, 4)), g.standard_normal((4, 4))
    assert np.abs(mat_a @ mat_b - mat_b @ mat_a).max() > 1.0
    a, b = 0.5, 1.5
    x0 = torch.ones(1, 4, dtype=torch.float64)
    weighted = expm(a * mat_a + b * mat_b) @ x0[0].numpy()
    summed = expm(mat_a + mat_b) @ x0[0].numpy()
    sizes = [32, 64, 128, 256]
    with torch.no_grad():
        euler = [split_stage(mat_a, mat_b, n, a, b)(x0)[0].numpy() for n in sizes]
        # exact sub-flows as Euler steps of h = 1: x + (expm(tau a A) - I) x = expm(tau a A) x
        exact = [ResidualStage([LinearBlock(expm(m / n) - np.eye(4)) for _ in range(n) for m in (a * mat_a, b * mat_b)],
                               ConstantStep(1.0))(x0)[0].numpy() for n in sizes]
    for outputs in (euler, exact):
        errors = [np.linalg.norm(y - weighted) for y in outputs]
        ratios = [errors[i] / errors[i + 1] for i in range(len(sizes) - 1)]
        np.testing.assert_allclose(ratios, 2.0, rtol=0.1)  # halving the step halves the error: order 1
        assert errors[-1] < 0.05 * np.linalg.norm(weighted)
        assert np.linalg.norm(outputs[-1] - summed) > 0.5 * np.linalg.norm(summed)  # not the unweighted sum
