"""Tests for the Vision Transformer read as an Euler solver over depth (dia_ode/models/vit.py), the
AlternatingStageController (dia_ode/solvers/interleaved.py) and the analysis of token traces.

theory/vit.md names these tests next to the claims they check. Tiny shapes (C = 8..16, depth <= 3).
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import dia_ode
from dia_ode.analysis import attention_vectors, stage_correlations, step_sizes
from dia_ode.attention import DIALSTMCell
from dia_ode.models import VisionTransformer, create_model, list_models, model_entry
from dia_ode.models.vit import MLPStep, SelfAttentionStep, default_patch_size
from dia_ode.attention.dia import DIAUnit
from dia_ode.solvers import (AbstractStageController, AlternatingStageController, DIAStageController, ResidualStage,
                             trace)
from dia_ode.stiffness import block_spectra, dense_jacobian, trace_stiffness

TINY = {"dim": 12, "depth": 2, "heads": 2}  # 12 channels != 16 tokens of an 8x8 image: axes cannot be confused


def tiny(name: str = "dia_vit_tiny", image_size: int = 8, in_channels: int = 1, **options) -> VisionTransformer:
    return create_model(name, image_size=image_size, in_channels=in_channels, **{**TINY, **options}).eval()


# --- shapes and the backbone interface ---------------------------------------------------------------

@pytest.mark.parametrize("size, channels, patch", [(8, 1, 2), (28, 1, 4), (32, 3, 4)])
def test_shapes_for_digits_idx_and_cifar_inputs(size, channels, patch):
    model = tiny(image_size=size, in_channels=channels, num_classes=7)
    x = torch.randn(2, channels, size, size)
    g = size // patch  # the default patch: 8x8 -> 2, 28x28 and 32x32 -> 4
    assert default_patch_size(size) == patch and model.patch_size == patch
    assert model(x).shape == (2, 7)
    assert model.forward_features(x).shape == (2, g * g, 12)  # (B, N, C) after the final LayerNorm
    (fmap,) = model.forward_stages(x)
    assert fmap.shape == (2, 12, g, g)  # (B, C, H/p, W/p)
    assert [(f.channels, f.stride) for f in model.feature_info] == [(12, patch)]
    # the map is the encoder's token output, token n = row n // g, column n % g
    tokens = model.encoder(model.embed(x)[0])
    torch.testing.assert_close(fmap[:, :, 1, 0], tokens[:, g])


def test_position_embedding_is_sized_at_construction_and_interpolated_for_other_sizes():
    model = tiny(image_size=8)  # patch 2: a 4x4 grid
    assert model.pos_embed.shape == (1, 16, 12)
    assert model.position_embedding(4, 4) is model.pos_embed
    assert model.position_embedding(8, 6).shape == (1, 48, 12)
    assert model(torch.randn(2, 1, 16, 12)).shape == (2, 10)  # any size the patch divides


def test_patch_size_that_does_not_divide_the_image_is_a_value_error():
    with pytest.raises(ValueError, match=r"patch_size=3.*8"):
        create_model("vit_tiny", image_size=8, patch_size=3)
    with pytest.raises(ValueError, match=r"patch_size=2.*9x8"):
        tiny()(torch.randn(1, 1, 9, 8))
    with pytest.raises(ValueError, match="heads"):
        create_model("vit_tiny", dim=10, heads=4)


def test_cbam_is_refused_and_the_registry_lists_the_vit_family():
    with pytest.raises(ValueError, match="cbam_vit_tiny"):
        create_model("cbam_vit_tiny")
    with pytest.raises(ValueError, match="no attention 'cbam'.*valid: none, se, eca, shared, dia"):
        create_model("vit_tiny", attention="cbam")
    with pytest.raises(ValueError, match="valid: none, se, eca, shared, dia"):
        VisionTransformer(attention="cbam")
    for name in ("dia_vit_tiny", "shared_vit_tiny"):
        with pytest.raises(ValueError, match="sam='cbam'"):
            create_model(name, sam="cbam")
    names = list_models(family="vit")
    assert {"vit_tiny", "vit_small", "dia_vit_tiny", "dia_vit_small", "se_vit_tiny"} <= set(names)
    assert not any(n.startswith("cbam_") for n in names)
    recipe = dict(model_entry("dia_vit_tiny").recipe)
    assert recipe["optimizer"] == "adamw" and recipe["warmup_epochs"] > 0 and recipe["lr"] > 0
    assert {"weight_decay", "epochs", "batch_size"} <= set(recipe)


# --- the encoder is one residual stage of 2 * depth Euler sub-steps ----------------------------------

@pytest.mark.parametrize("name", ["vit_tiny", "se_vit_tiny", "shared_vit_tiny", "dia_vit_tiny"])
def test_trace_has_two_sub_steps_per_block_and_recording_does_not_change_the_output(name):
    model = tiny(name, depth=3)
    x = torch.randn(3, 1, 8, 8)
    plain = model(x)
    (tr,), out = trace(model, x, return_output=True)
    assert torch.equal(out, plain)
    assert len(tr.steps) == len(tr.updates) == 6 and len(tr.states) == 7
    assert all(s.shape == (3, 16, 12) for s in tr.states)  # (B, N, C)
    per_channel = name != "vit_tiny"
    assert all(h.shape == ((3, 1, 12) if per_channel else ()) for h in tr.steps)  # h per embedding channel
    for k, block in enumerate(model.encoder.blocks):  # Lie–Trotter: attention at even k, MLP at odd k
        assert isinstance(block, SelfAttentionStep if k % 2 == 0 else MLPStep)
        torch.testing.assert_close(block.branch(tr.states[k]), tr.updates[k])


@pytest.mark.parametrize("split", [False, True])
def test_every_sub_step_is_an_euler_step(split):
    """x_{k+1} = x_k + h_k ⊙ f_k(x_k), with h_k (B, 1, C) broadcast over the tokens."""
    (tr,) = trace(tiny(split_controller=split), torch.randn(2, 1, 8, 8))
    for k in range(len(tr)):
        torch.testing.assert_close(tr.states[k + 1], tr.states[k] + tr.steps[k] * tr.updates[k],
                                   rtol=1e-6, atol=1e-6)


def test_dia_has_one_cell_for_the_whole_encoder_and_two_with_split_controller():
    def cells(model):
        return [m for m in model.modules() if isinstance(m, DIALSTMCell)]

    assert len(cells(tiny(depth=3))) == 1
    split = tiny(depth=3, split_controller=True)
    assert len(cells(split)) == 2 and isinstance(split.encoder.controller, AlternatingStageController)
    assert len(cells(tiny("vit_tiny", depth=3))) == 0


def test_dia_parameter_overhead_does_not_grow_with_depth_but_se_does():
    def params(name, depth):
        return sum(p.numel() for p in tiny(name, depth=depth).parameters())

    dia = {d: params("dia_vit_tiny", d) - params("vit_tiny", d) for d in (1, 2, 4)}
    se = {d: params("se_vit_tiny", d) - params("vit_tiny", d) for d in (1, 2, 4)}
    cell = sum(p.numel() for p in DIALSTMCell(12).parameters())
    assert dia[1] == dia[2] == dia[4] == cell  # one cell, nothing per block
    assert se[4] == 2 * se[2] == 4 * se[1] > 0  # one SE per sub-step


def test_split_controller_gives_the_mlp_sub_steps_their_own_state():
    """With split, sub-step 1 (the first MLP step) is the MLP cell's FIRST step: h_1 = DIA_m(f_1, (0, 0));
    without it, h_1 depends on the state left by sub-step 0."""
    x = torch.randn(2, 1, 8, 8)
    model = tiny(split_controller=True)
    (tr,) = trace(model, x)
    unit_m = model.encoder.controller.controllers[1].unit
    h_1, _ = unit_m(tr.updates[1], unit_m.init_state(tr.updates[1]))
    torch.testing.assert_close(tr.steps[1], h_1)
    shared = tiny()
    (tr,) = trace(shared, x)
    unit = shared.encoder.controller.unit
    h_1_fresh, _ = unit(tr.updates[1], unit.init_state(tr.updates[1]))
    assert not torch.allclose(tr.steps[1], h_1_fresh)


def test_every_parameter_gets_a_finite_gradient():
    model = tiny(split_controller=True).train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --- AlternatingStageController ----------------------------------------------------------------------

class Recorder(AbstractStageController):
    """h_k = tag; the state is the list of the indices this controller was called with."""

    def __init__(self, tag: float) -> None:
        super().__init__()
        self.tag = tag

    def init(self, x0):
        return ()

    def forward(self, k, f_k, state):
        return self.tag, state + (k,)


def test_alternating_controller_routes_sub_step_k_to_controller_k_mod_m_with_index_k_div_m():
    """j = k mod m;  h_k, s^(j) = C_j(k // m, f_k, s^(j));  s^(i) unchanged for i != j."""
    for m in (1, 2, 3):
        ctrl = AlternatingStageController([Recorder(float(j)) for j in range(m)])
        f, state = torch.zeros(1, 2, 3), ctrl.init(torch.zeros(1, 2, 3))
        for k in range(7):
            before = state
            h, state = ctrl(k, f, state)
            assert h == k % m
            assert all(state[i] == before[i] for i in range(m) if i != k % m)
        assert state == tuple(tuple(range(len(range(j, 7, m)))) for j in range(m))  # each counts 0, 1, ...
    with pytest.raises(ValueError):
        AlternatingStageController([])


def test_alternating_dia_equals_each_cell_run_on_its_own_sub_sequence():
    """Two DIA controllers alternating on f_0 .. f_5 give the steps each gives alone on f_j, f_{j+2}, f_{j+4}."""
    a, b = DIAStageController(DIAUnit(8)), DIAStageController(DIAUnit(8))
    f = [torch.randn(2, 5, 8) for _ in range(6)]
    ctrl, expected = AlternatingStageController([a, b]), {}
    for j, c in enumerate((a, b)):
        s = c.init(f[0])
        for i, k in enumerate(range(j, 6, 2)):
            expected[k], s = c(i, f[k], s)
    state = ctrl.init(f[0])
    for k in range(6):
        h, state = ctrl(k, f[k], state)
        torch.testing.assert_close(h, expected[k])
    stage = ResidualStage([_Field() for _ in range(6)], ctrl)  # the unchanged stage loop takes it
    assert stage(torch.randn(2, 5, 8)).shape == (2, 5, 8)


class _Field(dia_ode.solvers.AbstractBlock):
    def branch(self, x, cond=None):
        return torch.tanh(x)

    def shortcut(self, x):
        return x


# --- analysis reads token traces unchanged -----------------------------------------------------------

def test_step_sizes_and_correlations_read_token_steps():
    (tr,) = trace(tiny(), torch.randn(3, 1, 8, 8))
    a = attention_vectors(tr)
    assert a.shape == (3, 4, 12)  # (N, L, C): 2 * depth sub-steps, C channels (not the 16 tokens)
    torch.testing.assert_close(a[:, 2], tr.steps[2][:, 0, :])
    summary = step_sizes(tr)
    assert summary["channel_mean"].shape == (4, 12) and not summary["constant"]
    np.testing.assert_allclose(summary["block_mean"], [float(h.double().mean()) for h in tr.steps], rtol=1e-12)
    (entry,) = stage_correlations([tr])
    assert (entry["num_blocks"], entry["channels"]) == (4, 12)
    assert np.isfinite(entry["per_sample"]["mean_r"]) and -1 <= entry["batch_mean"]["mean_r"] <= 1
    with pytest.raises(ValueError, match="constant step"):
        attention_vectors(trace(tiny("vit_tiny"), torch.randn(2, 1, 8, 8))[0])


def test_trace_stiffness_takes_norms_over_tokens_per_channel():
    (tr,) = trace(tiny(), torch.randn(2, 1, 8, 8))
    rho, rho_c = trace_stiffness(tr), trace_stiffness(tr, per_channel=True)
    assert rho.shape == (2, 3) and rho_c.shape == (2, 3, 12) and np.isfinite(rho_c).all()
    x, f = [t.double() for t in tr.states], [t.double() for t in tr.updates]
    by_hand = (f[2][1] - f[1][1]).norm() / (x[2][1] - x[1][1]).norm()  # sample 1, sub-steps 1 -> 2
    assert rho[1, 1] == pytest.approx(by_hand.item(), rel=1e-12)
    by_hand_c = (f[2][1, :, 5] - f[1][1, :, 5]).norm() / (x[2][1, :, 5] - x[1][1, :, 5]).norm()  # channel 5
    assert rho_c[1, 1, 5] == pytest.approx(by_hand_c.item(), rel=1e-12)


def test_block_spectra_on_a_vit_uses_forward_mode_ad_through_attention():
    model, x = tiny(dim=8, heads=2, depth=1), torch.randn(2, 1, 8, 8)
    result = block_spectra(model, x, k=3, samples=1, method="arpack")  # J v by linearize (forward mode)
    rows = result["blocks"]
    assert [(r["block"], r["path"], r["skipped"]) for r in rows] == [(0, "arpack", None), (1, "arpack", None)]
    assert all(np.isfinite(r["step_eigenvalues"]).all() and 0 < r["h_min"] <= r["h_max"] < 1 for r in rows)
    # sub-step 0 (attention): eigenvalues of diag(h) J with h the traced per-channel step, h (1, 1, C)
    (tr,) = trace(model, x[:1])
    scale = tr.steps[0].expand_as(tr.states[0]).reshape(-1).double().numpy()
    with sdpa_kernel(SDPBackend.MATH):  # jacrev through the fused kernel works, but warns (no batching rule)
        jac = dense_jacobian(model.encoder.blocks[0].branch, tr.states[0])
    expected = np.sort(np.abs(np.linalg.eigvals(scale[:, None] * jac)))[::-1][:3]
    np.testing.assert_allclose(np.abs(rows[0]["step_eigenvalues"]), expected, rtol=1e-3)
