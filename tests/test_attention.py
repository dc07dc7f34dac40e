import pytest
import torch

from dia_ode.attention import (CBAM, DIALSTMCell, DIAUnit, EfficientChannelAttention, SqueezeExcite, create_sam)
from dia_ode.attention.dia_cell import zero_
from dia_ode.attention.eca import eca_kernel_size


def test_zero_cell_gives_attention_one_quarter_at_every_step():
    cell = zero_(DIALSTMCell(8))
    z = torch.randn(5, 8)
    state = cell.init_state(z)
    for _ in range(4):  # the memory stays at c = 0, so every step gives 0.5 * sigmoid(0)
        z = torch.randn(5, 8) * 10
        h, c = cell(z, state)
        state = (h, c)
        assert torch.equal(h, torch.full_like(h, 0.25))
        assert torch.equal(c, torch.zeros_like(c))


def test_cell_matches_the_lstm_equations_written_out():
    cell = DIALSTMCell(8, reduction=2)
    z, h, c = torch.randn(3, 8), torch.rand(3, 8), torch.randn(3, 8)

    def mlp(seq, v):  # Linear -> ReLU -> Linear, written with the raw weights
        return torch.relu(v @ seq[0].weight.T + seq[0].bias) @ seq[2].weight.T + seq[2].bias

    gates = mlp(cell.w_ih, z) + mlp(cell.w_hh, h)
    i, f, g, o = gates[:, :8], gates[:, 8:16], gates[:, 16:24], gates[:, 24:]
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.sigmoid(c_ref)
    h_new, c_new = cell(z, (h, c))
    torch.testing.assert_close(c_new, c_ref)
    torch.testing.assert_close(h_new, h_ref)
    assert ((h_new > 0) & (h_new < 1)).all()


def test_cell_parameter_count_is_two_bottleneck_mlps():
    C, r = 64, 4
    mlp = (C * (C // r) + C // r) + ((C // r) * 4 * C + 4 * C)
    assert sum(p.numel() for p in DIALSTMCell(C, r).parameters()) == 2 * mlp


@pytest.mark.parametrize("cell_state,output_gate,n_gates", [(False, True, 3), (True, False, 3), (False, False, 2)])
def test_cell_ablations_drop_their_gates(cell_state, output_gate, n_gates):
    cell = DIALSTMCell(8, cell_state=cell_state, output_gate=output_gate)
    assert cell.w_ih[2].out_features == n_gates * 8
    zero_(cell)
    z = torch.randn(2, 8)
    h, c = cell(z, (torch.zeros(2, 8), torch.ones(2, 8)))
    # zero weights: i = 0.5, g = 0, so c' = 0.5 * c if the forget path exists, else 0
    torch.testing.assert_close(c, torch.full_like(c, 0.5 if cell_state else 0.0))
    expected_h = torch.sigmoid(c) * (0.5 if output_gate else 1.0)
    torch.testing.assert_close(h, expected_h)


def test_cell_state_follows_input_dtype_and_device():
    cell = DIALSTMCell(4).double()
    h, c = cell.init_state(torch.randn(3, 4, 2, 2, dtype=torch.float64))
    assert h.shape == (3, 4) and h.dtype == torch.float64 and h.device == torch.device("cpu")


@pytest.mark.parametrize("sam_cls", [SqueezeExcite, EfficientChannelAttention])
def test_channel_gates_are_per_channel_and_in_unit_interval(sam_cls):
    f = torch.randn(2, 16, 5, 5)
    a = sam_cls(16)(f)
    assert a.shape == (2, 16, 1, 1)
    assert ((a > 0) & (a < 1)).all()


def test_cbam_is_channel_then_spatial_multiplier():
    cbam = CBAM(16, reduction=4).eval()
    f = torch.randn(2, 16, 6, 6)
    mc = cbam.channel(f)
    torch.testing.assert_close(cbam(f), mc * cbam.spatial(mc * f))
    assert cbam(f).shape == f.shape


def test_eca_kernel_size_is_odd_and_grows_with_channels():
    sizes = [eca_kernel_size(c) for c in (16, 64, 256, 1024)]
    assert all(k % 2 == 1 for k in sizes)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


@pytest.mark.parametrize("sam", ["se", "eca", "cbam"])
def test_dia_unit_takes_each_sams_squeeze(sam):
    unit = DIAUnit(16, sam=sam)
    f = torch.randn(3, 16, 4, 4)
    a, (h, c) = unit(f, unit.init_state(f))
    assert h.shape == c.shape == (3, 16)
    assert a.shape == ((3, 16, 4, 4) if sam == "cbam" else (3, 16, 1, 1))
    expected_z_shape = (3, 2, 16) if sam == "cbam" else (3, 16)
    assert unit.squeeze(f).shape == expected_z_shape


def test_dia_unit_cbam_sums_avg_and_max_through_the_input_path():
    unit = DIAUnit(8, sam="cbam")
    f = torch.randn(2, 8, 3, 3)
    z = unit.squeeze(f)
    torch.testing.assert_close(unit.cell.input_gates(z), unit.cell.w_ih(f.mean((2, 3))) + unit.cell.w_ih(f.amax((2, 3))))


def test_unknown_names_and_options_are_value_errors_listing_valid_ones():
    with pytest.raises(ValueError, match="valid: se, eca, cbam"):
        create_sam("nope", 8)
    with pytest.raises(ValueError, match="reduction"):
        create_sam("eca", 8, reduction=4)
    with pytest.raises(ValueError, match="valid: se, eca, cbam"):
        DIAUnit(8, sam="gc")
