"""Wide ResNets and ResNeXts: official layouts and parameter counts, DIA placement, one cell per stage.

Big models are built on the meta device (shapes only, no memory, no init cost); forward passes run on
tiny ones (base_width 4) with 8x8 inputs.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dia_ode
from dia_ode.attention import DIALSTMCell
from dia_ode.models import CifarResNeXt, WideResNet
from dia_ode.models.blocks import WideBasicBlock
from dia_ode.solvers import trace


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return dia_ode.create_model(name, **kwargs)


def cells_of(model):
    return [m for m in model.modules() if isinstance(m, DIALSTMCell)]


def official_cell_params(c, r=4):
    # DIANet's LSTMCell(c, c, 1): w_ih and w_hh are each Linear(c, c // r) -> ReLU -> Linear(c // r, 4c).
    return 2 * (c * (c // r) + c // r + (c // r) * 4 * c + 4 * c)


# ---- parameter counts against the official code and the published tables ------------------------

def test_wrn52_4_matches_the_official_parameter_count():
    # xternalz/WideResNet-pytorch and DIANet's WRN with depth 52, widen 4, CIFAR-100, no extra BN.
    assert n_params(meta_model("wrn52_4", num_classes=100)) == 12_072_500
    # bearpaw/pytorch-classification README: WRN-28-10, 36.48M parameters on CIFAR-10.
    assert round(n_params(meta_model("wrn28_10")) / 1e6, 2) == 36.48


def test_official_dia_wrn52_4_is_the_plain_one_plus_a_bn_per_block_and_three_cells():
    # DIANet models/cifar/dia_wrn.py: bn_additional in each of the 3 x 8 blocks, LSTMCell(64/128/256), r = 4.
    bns = 2 * 8 * (64 + 128 + 256)
    cells = sum(official_cell_params(c) for c in (64, 128, 256))
    model = meta_model("dia_wrn52_4", num_classes=100, branch_bn=True)
    assert n_params(model) == 12_072_500 + bns + cells == 12_298_516


def resnext_params_by_hand(depth, cardinality, d, num_classes, widen=4, in_channels=3):
    """Count the layers of the official CIFAR ResNeXt (prlz77 / bearpaw / DIANet code) one by one."""
    n = (depth - 2) // 9
    total = in_channels * d * 9 + 2 * d  # stem conv + BN
    c_in = d
    for i in range(3):
        c_out, width = widen * d * 2 ** i, cardinality * d * 2 ** i
        for k in range(n):
            c = c_in if k == 0 else c_out
            total += c * width + 2 * width  # conv_reduce + bn_reduce
            total += width * (width // cardinality) * 9 + 2 * width  # grouped conv_conv + bn
            total += width * c_out + 2 * c_out  # conv_expand + bn_expand
            if c != c_out:
                total += c * c_out + 2 * c_out  # shortcut conv + bn
        c_in = c_out
    return total + c_in * num_classes + num_classes


@pytest.mark.parametrize("name, depth, cardinality, d, published_m", [
    ("resnext29_8x64d", 29, 8, 64, 34.43),    # ResNeXt paper Table 7: 34.4M; bearpaw README: 34.43M
    ("resnext29_16x64d", 29, 16, 64, 68.16),  # ResNeXt paper Table 7: 68.1M; bearpaw README: 68.16M
    ("resnext101_8x32d", 101, 8, 32, None),   # DIANet's CIFAR variant: no published count
])
def test_resnext_matches_the_official_layer_list_and_published_counts(name, depth, cardinality, d, published_m):
    count = n_params(meta_model(name))  # CIFAR-10, as the published counts are
    assert count == resnext_params_by_hand(depth, cardinality, d, num_classes=10)
    if published_m is not None:
        assert round(count / 1e6, 2) == published_m
    assert n_params(meta_model(name, num_classes=100)) == resnext_params_by_hand(depth, cardinality, d, 100)


def test_resnext29_8x64d_exact_count():
    assert n_params(meta_model("resnext29_8x64d")) == 34_426_698
    assert n_params(meta_model("resnext101_8x32d", num_classes=100)) == 32_138_244


# ---- DIA: one cell per stage, official sizes, overhead independent of depth ------------------------

def test_dia_overhead_is_one_cell_per_stage_and_independent_of_depth():
    def overhead(name):
        return n_params(meta_model(f"dia_{name}", num_classes=100)) - n_params(meta_model(name, num_classes=100))

    wrn_cells = sum(official_cell_params(c) for c in (64, 128, 256))
    assert {overhead(n) for n in ("wrn16_4", "wrn40_4", "wrn52_4")} == {wrn_cells}

    def resnext_overhead(depth):
        with torch.device("meta"):
            plain = CifarResNeXt(depth, 8, 32, num_classes=100)
            dia = CifarResNeXt(depth, 8, 32, attention="dia", num_classes=100)
        return n_params(dia) - n_params(plain)

    assert resnext_overhead(29) == resnext_overhead(101) == sum(official_cell_params(c) for c in (128, 256, 512))


def test_branch_bn_adds_one_batchnorm_per_block():
    def extra(name):
        return n_params(meta_model(name, branch_bn=True)) - n_params(meta_model(name))

    assert extra("wrn16_4") == 2 * 2 * (64 + 128 + 256)  # n = 2 blocks per stage
    assert extra("wrn40_4") == 2 * 6 * (64 + 128 + 256)  # n = 6: grows with depth, unlike the cell


@pytest.mark.parametrize("name, channels", [("dia_wrn52_4", (64, 128, 256)), ("dia_wrn16_8", (128, 256, 512)),
                                            ("dia_resnext101_8x32d", (128, 256, 512)),
                                            ("dia_resnext29_8x64d", (256, 512, 1024))])
def test_dia_models_have_one_cell_per_stage_with_the_official_sizes(name, channels):
    cells = cells_of(meta_model(name))
    assert [c.channels for c in cells] == list(channels)
    assert [c.w_ih[0].out_features for c in cells] == [c // 4 for c in channels]  # official reduction r = 4
    assert [c.w_hh[2].out_features for c in cells] == [4 * c for c in channels]


def test_dia_reduction_option_reaches_the_cells():
    cells = cells_of(meta_model("dia_wrn52_4", reduction=8))
    assert [c.w_ih[0].out_features for c in cells] == [8, 16, 32]


@pytest.mark.parametrize("name, per_stage", [("dia_wrn16_2", 2), ("dia_resnext29_8x64d", 3)])
def test_every_block_of_a_stage_steps_the_same_cell(name, per_stage):
    model = dia_ode.create_model(name, in_channels=1, base_width=4)
    cells = cells_of(model)
    assert len(cells) == 3
    calls = {id(c): 0 for c in cells}
    for cell in cells:
        cell.register_forward_hook(lambda mod, inp, out: calls.__setitem__(id(mod), calls[id(mod)] + 1))
    model(torch.randn(2, 1, 8, 8))
    assert list(calls.values()) == [per_stage] * 3


@pytest.mark.parametrize("name", ["dia_wrn16_2", "dia_resnext29_8x64d", "se_wrn16_2"])
def test_linear_biases_start_at_zero_as_in_the_official_code(name):
    model = dia_ode.create_model(name, base_width=4)
    biases = [m.bias for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(biases) > 1 and all((b == 0).all() for b in biases)  # head and attention MLPs


# ---- where the step multiplies -------------------------------------------------------------------

@pytest.mark.parametrize("name, post, widths", [("dia_wrn16_2", None, (8, 16, 32)),
                                                ("dia_resnext29_8x64d", F.relu, (16, 32, 64))])
def test_the_step_multiplies_the_whole_branch_before_the_skip_add(name, post, widths):
    """x_{k+1} = post(x_k + h_k * f_k) inside a stage, h_k per sample and stage channel."""
    model = dia_ode.create_model(name, in_channels=1, base_width=4).eval()
    traces = trace(model, torch.randn(3, 1, 8, 8))
    for t, c in zip(traces, widths):
        for k in range(1, len(t)):  # blocks after the first have an identity shortcut
            assert t.steps[k].shape == (3, c, 1, 1)
            expected = t.states[k] + t.steps[k] * t.updates[k]
            torch.testing.assert_close(t.states[k + 1], expected if post is None else post(expected))
    if post is None:
        assert any((t.states[-1] < 0).any() for t in traces)  # pre-activation WRN: no ReLU after the add


def test_branches_end_where_the_official_code_applies_the_attention():
    wrn = dia_ode.create_model("wrn16_2", base_width=4)
    wrn_bn = dia_ode.create_model("wrn16_2", base_width=4, branch_bn=True)
    resnext = dia_ode.create_model("resnext29_8x64d", base_width=4)
    assert all(isinstance(b.f[-1], nn.Conv2d) for s in wrn.stages for b in s.blocks)
    assert all(isinstance(b.f[-1], nn.BatchNorm2d) for s in wrn_bn.stages for b in s.blocks)
    assert all(isinstance(b.f[-1], nn.BatchNorm2d) for s in resnext.stages for b in s.blocks)
    dropout = dia_ode.create_model("wrn16_2", base_width=4, dropout=0.3)
    block = dropout.stages[0].blocks[1]
    assert [type(m) for m in block.f[3:]] == [nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Conv2d]  # BN-ReLU-drop-conv


# ---- the WRN block against the official forward --------------------------------------------------

def test_wide_block_projects_the_preactivated_input_like_the_official_code():
    torch.manual_seed(0)
    block = WideBasicBlock(4, 8, stride=2).train()
    bn1, conv1, bn2, conv2 = block.f[0], block.f[2], block.f[3], block.f[5]
    reference_bn = nn.BatchNorm2d(4)
    reference_bn.load_state_dict(bn1.state_dict())
    x = torch.randn(5, 4, 8, 8)

    # The official forward (xternalz / DIANet): o = relu(bn1(x)); out = conv2(relu(bn2(conv1(o)))); skip = conv(o).
    o = F.relu(reference_bn(x))
    skip = F.conv2d(o, block.projection.weight, stride=2)
    out = F.conv2d(F.relu(F.batch_norm(F.conv2d(o, conv1.weight, stride=2, padding=1), None, None,
                                       bn2.weight, bn2.bias, True)), conv2.weight, padding=1)

    torch.testing.assert_close(block.shortcut(x) + block.branch(x), skip + out)
    # BN_1 is shared, and its running statistics advance once per forward, as in the official code.
    assert bn1.num_batches_tracked.item() == 1
    torch.testing.assert_close(bn1.running_mean, reference_bn.running_mean)
    torch.testing.assert_close(bn1.running_var, reference_bn.running_var)

    block.eval()
    torch.testing.assert_close(block.shortcut(x), F.conv2d(F.relu(bn1(x)), block.projection.weight, stride=2))
    assert WideBasicBlock(8, 8).projection is None


# ---- any input, every attention, names --------------------------------------------------------------

@pytest.mark.parametrize("base", ["wrn16_2", "resnext29_8x64d"])
@pytest.mark.parametrize("attention", ["none", "se", "eca", "cbam", "shared", "dia"])
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 32, 32)])
def test_models_accept_any_input_size_and_channels(base, attention, shape):
    model = dia_ode.create_model(base, attention=attention, in_channels=shape[1], num_classes=7, base_width=4)
    maps = model.forward_stages(torch.randn(*shape))
    assert [(m.shape[1], shape[2] // m.shape[2]) for m in maps] == [(i.channels, i.stride) for i in model.feature_info]
    out = model(torch.randn(*shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_names_follow_the_scheme_and_bad_configurations_raise():
    wrn, resnext = dia_ode.list_models(family="wrn"), dia_ode.list_models(family="resnext")
    for name in ("wrn16_4", "wrn16_8", "wrn28_10", "wrn40_4", "wrn52_4", "dia_wrn52_4", "se_wrn28_10"):
        assert name in wrn
    for name in ("resnext29_8x64d", "resnext29_16x64d", "resnext101_8x32d", "se_resnext29_8x64d",
                 "dia_resnext101_8x32d", "cbam_resnext29_8x64d", "shared_resnext101_8x32d"):
        assert name in resnext
    assert isinstance(meta_model("eca_wrn40_4"), WideResNet)
    with pytest.raises(ValueError, match="dropout"):
        dia_ode.create_model("resnext29_8x64d", dropout=0.3)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(18, 2)
    with pytest.raises(ValueError, match="9n \\+ 2"):
        CifarResNeXt(30, 8, 4)
