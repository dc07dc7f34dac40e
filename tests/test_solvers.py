import pytest
import torch
from torch.nn import functional as F

import dia_ode
from dia_ode.models.blocks import BasicBlock
from dia_ode.solvers import ConstantStep, ResidualStage, create_stage_controller, trace


def _bn(x, sd, prefix):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-5)


def reference_resnet20(x, sd):
    """Plain CIFAR ResNet-20 written out with functional ops on a state dict (the official layout)."""
    x = F.relu(_bn(F.conv2d(x, sd["stem.0.weight"], padding=1), sd, "stem.1"))
    for s in range(3):
        for k in range(3):
            p = f"stages.{s}.blocks.{k}"
            stride = 2 if (s > 0 and k == 0) else 1
            out = F.relu(_bn(F.conv2d(x, sd[f"{p}.f.0.weight"], stride=stride, padding=1), sd, f"{p}.f.1"))
            out = _bn(F.conv2d(out, sd[f"{p}.f.3.weight"], padding=1), sd, f"{p}.f.4")
            skip = x
            if f"{p}.projection.0.weight" in sd:
                skip = _bn(F.conv2d(x, sd[f"{p}.projection.0.weight"], stride=stride), sd, f"{p}.projection.1")
            x = F.relu(out + skip)
    return x.mean((2, 3)) @ sd["head.weight"].T + sd["head.bias"]


def _randomise_bn_statistics(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)


def test_constant_step_stage_reproduces_the_plain_resnet():
    model = dia_ode.create_model("resnet20", in_channels=3, num_classes=10, base_width=8).eval()
    _randomise_bn_statistics(model)
    assert all(isinstance(s.controller, ConstantStep) for s in model.stages)
    x = torch.randn(3, 3, 12, 12)
    torch.testing.assert_close(model(x), reference_resnet20(x, model.state_dict()))


def test_constant_step_h_scales_the_update():
    blocks = [BasicBlock(4, 4) for _ in range(2)]
    stage = ResidualStage(blocks, ConstantStep(0.5)).eval()
    x = torch.randn(2, 4, 5, 5)
    expected = x
    for b in blocks:
        expected = expected + 0.5 * b.branch(expected)
    torch.testing.assert_close(stage(x), expected)


@pytest.mark.parametrize("name", ["resnet20", "se_resnet20", "cbam_resnet20", "shared_resnet20", "dia_resnet20",
                                  "dia_preresnet20"])
def test_trace_does_not_change_the_output_and_has_l_plus_one_states(name):
    model = dia_ode.create_model(name, in_channels=1, base_width=4)
    x = torch.randn(4, 1, 8, 8)
    for mode in (model.train, model.eval):
        mode()
        torch.manual_seed(1)
        plain = model(x)
        torch.manual_seed(1)
        traces, traced = trace(model, x, return_output=True)
        assert torch.equal(plain, traced)
    assert len(traces) == 3
    for t in traces:
        assert len(t.states) == len(t.updates) + 1 == len(t.steps) + 1 == 4
        for k in range(len(t)):
            torch.broadcast_shapes(t.steps[k].shape, t.updates[k].shape)  # raises if not broadcastable
            assert t.states[k + 1].shape == t.updates[k].shape
    assert all(s.recorder is None for s in model.stages)  # recording switched off afterwards


def test_trace_steps_are_the_stage_update_rule():
    model = dia_ode.create_model("dia_preresnet20", in_channels=1, base_width=4).eval()
    for t in trace(model, torch.randn(2, 1, 8, 8)):
        for k in range(1, len(t)):  # block 0 projects its skip, the others are x + h f exactly
            torch.testing.assert_close(t.states[k + 1], t.states[k] + t.steps[k] * t.updates[k])


def test_dia_steps_start_from_zero_memory_in_each_stage():
    model = dia_ode.create_model("dia_resnet20", in_channels=1, base_width=4).eval()
    x = torch.randn(2, 1, 8, 8)
    for stage, t in zip(model.stages, trace(model, x)):
        unit = stage.controller.unit
        h0, _ = unit(t.updates[0], unit.init_state(t.updates[0]))
        torch.testing.assert_close(t.steps[0], h0)
        assert t.steps[0].shape == (2, stage.blocks[0].f[-1].num_features, 1, 1)


def test_create_stage_controller_rejects_unknown_attention():
    with pytest.raises(ValueError, match="valid: none, se, eca, cbam, shared, dia"):
        create_stage_controller("gc", 8, 3)
