import pytest
import torch

import dia_ode
from dia_ode.attention import DIALSTMCell


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet164_matches_the_official_parameter_count():
    assert n_params(dia_ode.create_model("resnet164", num_classes=100)) == 1_727_284


def test_dia_overhead_is_one_cell_per_stage_and_independent_of_depth():
    def overhead(depth, backbone="resnet"):
        plain = n_params(dia_ode.create_model(f"{backbone}{depth}", num_classes=100))
        return n_params(dia_ode.create_model(f"dia_{backbone}{depth}", num_classes=100)) - plain

    cells = sum(n_params(DIALSTMCell(c)) for c in (16, 32, 64))
    assert {overhead(d) for d in (20, 32, 44, 56, 110)} == {cells}
    assert overhead(164) == sum(n_params(DIALSTMCell(c)) for c in (64, 128, 256))
    assert overhead(164, "preresnet") == overhead(164)
    assert overhead(29) == overhead(164)  # the CPU-sized bottleneck network has resnet164's stage widths


def test_resnet29_is_three_bottlenecks_per_stage_at_resnet164s_widths():
    from dia_ode.models.blocks import Bottleneck
    from dia_ode.models.resnet import blocks_per_stage

    assert blocks_per_stage(29) == (3, True) and blocks_per_stage(164) == (18, True)
    model = dia_ode.create_model("resnet29", num_classes=10, in_channels=1)
    assert sum(isinstance(m, Bottleneck) for m in model.modules()) == 9
    assert [info.channels for info in model.feature_info] == [64, 128, 256]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_per_block_se_overhead_grows_with_depth():
    def overhead(depth):
        return n_params(dia_ode.create_model(f"se_resnet{depth}")) - n_params(dia_ode.create_model(f"resnet{depth}"))

    assert overhead(56) == pytest.approx(overhead(20) * 9 / 3)


def test_every_block_of_a_stage_uses_the_same_cell_object():
    model = dia_ode.create_model("dia_resnet20", in_channels=1)
    cells = [m for m in model.modules() if isinstance(m, DIALSTMCell)]
    assert len(cells) == 3  # one per stage, not one per block
    calls = {id(c): 0 for c in cells}
    for cell in cells:
        cell.register_forward_hook(lambda mod, inp, out: calls.__setitem__(id(mod), calls[id(mod)] + 1))
    model(torch.randn(2, 1, 8, 8))
    assert list(calls.values()) == [3, 3, 3]  # each cell stepped once per block of its stage


@pytest.mark.parametrize("name", ["resnet20", "se_resnet20", "eca_resnet20", "cbam_resnet20", "shared_resnet20",
                                  "dia_resnet20", "dia_preresnet20"])
@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 1, 28, 28), (2, 3, 32, 32)])
def test_models_accept_any_input_size_and_channels(name, shape):
    model = dia_ode.create_model(name, in_channels=shape[1], num_classes=7, base_width=4)
    out = model(torch.randn(*shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_bottleneck_models_run_on_small_inputs():
    for name in ("dia_resnet164", "dia_preresnet164"):
        out = dia_ode.create_model(name, in_channels=1, base_width=2)(torch.randn(2, 1, 8, 8))
        assert out.shape == (2, 10)


@pytest.mark.parametrize("sam", ["se", "eca", "cbam"])
def test_dia_and_shared_work_with_every_sam(sam):
    for attention in ("dia", "shared"):
        model = dia_ode.create_model(f"{attention}_resnet20", sam=sam, in_channels=1, base_width=4)
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_list_models_filters_with_wildcards_and_names_follow_the_scheme():
    assert "resnet20" in dia_ode.list_models() and "dia_preresnet164" in dia_ode.list_models()
    dia = dia_ode.list_models("dia_*")
    assert dia and all(n.startswith("dia_") for n in dia)
    assert dia_ode.list_models("*_resnet56") == sorted(
        ["se_resnet56", "eca_resnet56", "cbam_resnet56", "shared_resnet56", "dia_resnet56"])


def test_unknown_model_and_option_raise_value_error():
    with pytest.raises(ValueError, match="unknown model 'dia_resnet21'"):
        dia_ode.create_model("dia_resnet21")
    with pytest.raises(ValueError, match="reduction"):
        dia_ode.create_model("resnet20", reduction=4)
    with pytest.raises(ValueError, match="'sam' applies to shared and dia"):
        dia_ode.create_model("se_resnet20", sam="eca")


def test_preresnet_branch_bn_adds_one_batchnorm_per_block():
    with torch.device("meta"):
        plain = dia_ode.create_model("dia_preresnet164", num_classes=100)
        official = dia_ode.create_model("dia_preresnet164", num_classes=100, branch_bn=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    # 18 bottlenecks per stage ending on 64, 128, 256 channels, each BN with a scale and a shift
    assert count(official) - count(plain) == 2 * 18 * (64 + 128 + 256) == 16_128
    last = [stage.blocks[0].f[-1] for stage in official.stages]
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in last)
    with pytest.raises(ValueError, match="branch_bn"):
        dia_ode.create_model("dia_resnet20", branch_bn=True)


@pytest.mark.parametrize("name, low, high", [("dia_resnet56", 0.2, 0.3), ("se_resnet56", 0.4, 0.6)])
def test_attention_gates_start_as_a_smaller_step(name, low, high):
    """At initialisation a DIA gate is about 1/4 (sigmoid(o) * sigmoid(c) with c near 0) and an SE gate
    about 1/2: the step h_k every residual branch is scaled by (theory/dia.md, the stabilisation finding)."""
    from dia_ode.solvers import trace

    for seed in range(3):
        torch.manual_seed(seed)
        model = dia_ode.create_model(name, num_classes=10, in_channels=1, base_width=16).eval()
        with torch.no_grad():
            stages = trace(model, torch.randn(16, 1, 8, 8))
        gates = torch.stack([h.float().mean() for stage in stages for h in stage.steps])
        assert low < float(gates.mean()) < high
