import copy

import pytest
import torch
from torch import nn

import dia_ode
from dia_ode.attention import (CBAM, DIALSTMCell, DIAUnit, EfficientChannelAttention, SqueezeExcite, create_sam)
from dia_ode.attention.dia_cell import zero_
from dia_ode.attention.eca import eca_kernel_size


def reference_step(cell, z, state):
    """The cell's documented equations written out without fusion, each MLP path run as its own
    nn.Sequential (Linear -> ReLU -> Linear): gates = W_ih(z) + W_hh(h), the descriptors of a (B, S, C)
    z summed after the input path, gates in the order i, f, g, o less the ablated ones."""
    h, c = state
    z_gates = cell.w_ih(z)
    gates = (z_gates if z.dim() == 2 else z_gates.sum(dim=1)) + cell.w_hh(h)
    parts = dict(zip(cell.gate_names, gates.chunk(len(cell.gate_names), dim=1)))
    c_ref = torch.sigmoid(parts["i"]) * torch.tanh(parts["g"])
    if cell.cell_state:
        c_ref = torch.sigmoid(parts["f"]) * c + c_ref
    h_ref = torch.sigmoid(c_ref)
    if cell.output_gate:
        h_ref = torch.sigmoid(parts["o"]) * h_ref
    return h_ref, c_ref


class UnfusedCell(nn.Module):
    """A cell that steps by `reference_step` on the parameters of `cell` (same order), packing nothing:
    swapped into a DIA unit, it gives the model as it computes without the fused step."""

    def __init__(self, cell: DIALSTMCell) -> None:
        super().__init__()
        self.cell = cell

    def init_state(self, like):
        return self.cell.init_state(like)

    def pack(self, batch_size, descriptors=1):
        return None

    def forward(self, z, state, weights=None):
        return reference_step(self.cell, z, state)


def with_unfused_cells(model: nn.Module) -> nn.Module:
    """A copy of `model` whose DIA units step the reference equations (same parameters, same order)."""
    model = copy.deepcopy(model)
    for unit in [m for m in model.modules() if isinstance(m, DIAUnit)]:
        unit.cell = UnfusedCell(unit.cell)
    return model


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


ABLATIONS = [(True, True), (False, True), (True, False), (False, False)]


@pytest.mark.parametrize("cell_state,output_gate", ABLATIONS)
@pytest.mark.parametrize("z_shape", [(3, 8), (3, 2, 8)], ids=["one_descriptor", "cbam_two_descriptors"])
def test_fused_cell_outputs_and_gradients_equal_the_reference_equations(cell_state, output_gate, z_shape):
    torch.manual_seed(0)
    cell = DIALSTMCell(8, reduction=2, cell_state=cell_state, output_gate=output_gate).double()
    for p in cell.parameters():  # the default init has zero biases; nonzero ones test their packing too
        nn.init.normal_(p, std=0.5)
    inputs = [torch.randn(z_shape, dtype=torch.float64), torch.rand(3, 8, dtype=torch.float64),
              torch.randn(3, 8, dtype=torch.float64)]
    leaves = [t.requires_grad_() for t in inputs] + list(cell.parameters())
    z, h, c = inputs
    weights = cell.pack(3, 1 if len(z_shape) == 2 else z_shape[1])
    # two steps with the same packed weights, as a stage runs them; the gradient flows through both
    (h1, c1), (h1_ref, c1_ref) = cell(z, (h, c), weights), reference_step(cell, z, (h, c))
    (h2, c2), (h2_ref, c2_ref) = cell(z.flip(0), (h1, c1), weights), reference_step(cell, z.flip(0), (h1_ref, c1_ref))
    for ours, ref in ((h1, h1_ref), (c1, c1_ref), (h2, h2_ref), (c2, c2_ref)):
        torch.testing.assert_close(ours, ref)
    probe = [torch.randn_like(t) for t in (h2, c2)]
    # allow_unused: without the cell state, c reaches neither output (None in both)
    grads = torch.autograd.grad([h2, c2], leaves, probe, allow_unused=True)
    grads_ref = torch.autograd.grad([h2_ref, c2_ref], leaves, probe, allow_unused=True)
    assert [g is None for g in grads] == [g is None for g in grads_ref] == [i == 2 and not cell_state
                                                                             for i in range(len(leaves))]
    for ours, ref in zip(grads, grads_ref):
        torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(cell(z, (h, c)), (h1, c1))  # packing per call is the same step


# The state dict of DIALSTMCell(8, reduction=2): two nn.Sequential paths Linear(8, 4) -> ReLU -> Linear(4, 32).
PINNED_CELL_STATE = {"w_ih.0.weight": (4, 8), "w_ih.0.bias": (4,), "w_ih.2.weight": (32, 4), "w_ih.2.bias": (32,),
                     "w_hh.0.weight": (4, 8), "w_hh.0.bias": (4,), "w_hh.2.weight": (32, 4), "w_hh.2.bias": (32,)}


def test_cell_state_dict_is_the_pinned_layout_and_loads_a_reference_modules():
    cell = DIALSTMCell(8, reduction=2)
    assert {k: tuple(v.shape) for k, v in cell.state_dict().items()} == PINNED_CELL_STATE
    unit_state = DIAUnit(8, reduction=2).state_dict()
    assert {k: tuple(v.shape) for k, v in unit_state.items()} == {f"cell.{k}": v for k, v in PINNED_CELL_STATE.items()}
    # a module holding only the two official paths, as checkpoints were saved, loads strictly and steps alike
    reference = nn.Module()
    reference.w_ih = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 32))
    reference.w_hh = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 32))
    reference.gate_names, reference.cell_state, reference.output_gate = ("i", "f", "g", "o"), True, True
    cell.load_state_dict(reference.state_dict())
    z, state = torch.randn(2, 8), (torch.rand(2, 8), torch.randn(2, 8))
    torch.testing.assert_close(cell(z, state), reference_step(reference, z, state))


@pytest.mark.parametrize("sam", ["se", "eca", "cbam"])
def test_a_dia_model_computes_the_reference_equations_function_and_gradients(sam):
    torch.manual_seed(0)
    model = dia_ode.create_model("dia_resnet20", sam=sam, base_width=4, in_channels=3, num_classes=5).double()
    for unit in [m for m in model.modules() if isinstance(m, DIAUnit)]:
        for p in unit.cell.parameters():
            nn.init.normal_(p, std=0.3)
    reference = with_unfused_cells(model)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    out, out_ref = model(x), reference(x)  # train mode: BatchNorm uses the batch, in both alike
    torch.testing.assert_close(out, out_ref)
    probe = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(model.parameters()), probe)
    grads_ref = torch.autograd.grad(out_ref, list(reference.parameters()), probe)
    assert len(grads) == len(grads_ref)
    for ours, ref in zip(grads, grads_ref):
        torch.testing.assert_close(ours, ref)


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
    torch.testing.assert_close(z, torch.stack((f.mean((2, 3)), f.amax((2, 3))), dim=1))
    state = (torch.rand(2, 8), torch.randn(2, 8))
    _, (h, c) = unit(f, state)
    # reference_step sums W_ih(avg) + W_ih(max) before adding W_hh(h)
    torch.testing.assert_close((h, c), reference_step(unit.cell, z, state))


def test_unknown_names_and_options_are_value_errors_listing_valid_ones():
    with pytest.raises(ValueError, match="valid: se, eca, cbam"):
        create_sam("nope", 8)
    with pytest.raises(ValueError, match="reduction"):
        create_sam("eca", 8, reduction=4)
    with pytest.raises(ValueError, match="valid: se, eca, cbam"):
        DIAUnit(8, sam="gc")
