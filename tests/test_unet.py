"""The diffusion UNet: shapes, the timestep as `cond`, one controller per stage, traces."""

import pytest
import torch

from dia_ode.models import create_model
from dia_ode.solvers import DIAStageController, ResidualStage, trace


def _stages(model):
    return [m for m in model.modules() if isinstance(m, ResidualStage)]


@pytest.mark.parametrize("name, shape", [("unet_s", (2, 1, 8, 8)), ("dia_unet_s", (2, 1, 8, 8)),
                                         ("se_unet_m", (2, 1, 28, 28)), ("dia_unet_m", (2, 3, 32, 32))])
def test_the_unet_predicts_noise_of_the_input_shape_and_starts_at_zero(name, shape):
    model = create_model(name, in_channels=shape[1], base_width=8)
    x = torch.randn(*shape)
    out = model(x, torch.tensor([1, 900]))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0  # zero-initialised output convolution
    levels = model.levels
    assert len(_stages(model)) == 2 * levels + 1  # down, middle, up


def test_the_timestep_reaches_every_block():
    torch.manual_seed(0)
    model = create_model("dia_unet_s", in_channels=1, base_width=8)
    torch.nn.init.normal_(model.out[-1].weight)
    x = torch.randn(2, 1, 8, 8)
    early, late = model(x, torch.tensor([1, 1])), model(x, torch.tensor([900, 900]))
    assert not torch.allclose(early, late)
    for stage in _stages(model):
        for block in stage.blocks:
            if hasattr(block, "emb"):
                cond = torch.randn(2, block.emb.in_features)
                h_in = torch.randn(2, block.conv1.in_channels, 8, 8)
                assert not torch.allclose(block.branch(h_in, cond), block.branch(h_in, 2 * cond))


def test_dia_shares_one_cell_per_stage_whatever_the_number_of_blocks():
    def cell_params(blocks):
        model = create_model("dia_unet_s", in_channels=1, base_width=8, blocks=blocks)
        assert all(isinstance(stage.controller, DIAStageController) for stage in _stages(model))
        return sum(p.numel() for stage in _stages(model) for p in stage.controller.parameters())
    assert cell_params(2) == cell_params(4) > 0


def test_a_unet_is_traced_at_a_diffusion_time_and_refuses_an_indivisible_size():
    model = create_model("dia_unet_s", in_channels=1, base_width=8)
    traces = trace(model, torch.randn(3, 1, 8, 8), cond=torch.tensor([10, 10, 10]))
    assert len(traces) == 2 * model.levels + 1
    assert [len(t.steps) for t in traces] == [len(s.blocks) for s in _stages(model)]
    assert traces[0].steps[0].shape[:2] == (3, 8)  # per-sample, per-channel steps h_k
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(1, 1, 7, 7), torch.tensor([0]))
