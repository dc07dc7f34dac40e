import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

import dia_ode
from dia_ode.cli import main
from dia_ode.rundir import load_run
from dia_ode.models.blocks import BasicBlock
from dia_ode.solvers import ConstantStep, LearnedScalarStep, ResidualStage, create_stage_controller, trace


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


# --------------------------------------------------------------------------------------------------
# the learned scalar step (SkipInit / ReZero): model option h="learned"


@pytest.mark.parametrize("name", ["resnet20", "preresnet20"])
def test_a_learned_step_starts_every_block_on_its_skip_path(name):
    model = dia_ode.create_model(name, in_channels=1, base_width=4, h="learned")
    assert all(isinstance(s.controller, LearnedScalarStep) for s in model.stages)
    x = torch.randn(4, 1, 8, 8)
    for mode in (model.train, model.eval):
        mode()
        for stage, t in zip(model.stages, trace(model, x)):
            assert stage.controller.alpha.shape == (len(stage.blocks),) and not stage.controller.alpha.any()
            for k, block in enumerate(stage.blocks):
                assert t.updates[k].abs().sum() > 0  # the branch computes something; its contribution is 0
                assert t.steps[k].shape == ()
                torch.testing.assert_close(t.states[k + 1], stage.post(block.shortcut(t.states[k])),
                                           rtol=0, atol=0)


def test_a_learned_step_alone_is_learned_at_first():
    model = dia_ode.create_model("resnet20", in_channels=1, base_width=4, h="learned")
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    F.cross_entropy(model(x), y).backward()
    alphas = [s.controller.alpha for s in model.stages]
    assert all(a.grad is not None and (a.grad != 0).all() for a in alphas)
    # at alpha = 0 no loss reaches a branch (SkipInit's point): only the steps, stem and head learn first
    branch = [p for s in model.stages for b in s.blocks for p in b.f.parameters()]
    assert branch and all(p.grad is None or not p.grad.any() for p in branch)
    before = [a.detach().clone() for a in alphas]
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all((a != b).all() for a, b in zip(alphas, before))


def test_a_learned_step_round_trips_through_the_state_dict():
    torch.manual_seed(0)
    trained = dia_ode.create_model("resnet20", in_channels=1, base_width=4, h="learned").eval()
    for s in trained.stages:
        s.controller.alpha.data.uniform_(0.2, 0.8)
    state = trained.state_dict()
    assert [k for k in state if k.endswith("alpha")] == [f"stages.{i}.controller.alpha" for i in range(3)]
    torch.manual_seed(1)
    fresh = dia_ode.create_model("resnet20", in_channels=1, base_width=4, h="learned").eval()
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(fresh(x), trained(x))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="alpha"):  # a constant step has no alpha to take
        dia_ode.create_model("resnet20", in_channels=1, base_width=4).load_state_dict(state)


@pytest.mark.parametrize("value", ["learnd", "0.5", True, None, float("nan"), float("inf")])
def test_a_bad_step_is_refused_in_one_line_naming_the_option(value):
    with pytest.raises(ValueError, match="option 'h' takes") as err:
        dia_ode.create_model("resnet20", h=value)
    assert "\n" not in str(err.value) and "'learned'" in str(err.value)
    with pytest.raises(ValueError, match="option 'h' takes"):
        create_stage_controller("none", 8, 3, h=value)
    with pytest.raises(ValueError, match="takes no option 'h'"):  # only the plain network's step is an option
        dia_ode.create_model("dia_resnet20", h="learned")


def test_a_learned_step_trains_from_the_command_line_and_loads_back(tmp_path):
    args = ["train", "--model", "resnet20", "--model-option", "h=learned", "--model-option", "base_width=2",
            "--epochs", "1", "--no-progress", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run = load_run(next(p for p in tmp_path.iterdir() if p.is_dir()))
    assert run.model_spec["options"]["h"] == "learned"
    alphas = torch.cat([s.controller.alpha for s in run.model.stages])
    assert alphas.shape == (9,) and (alphas != 0).all()  # trained away from 0, and saved
    refused = CliRunner().invoke(main, [*args[:4], "h=learnd", *args[5:]])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    errors = [line for line in refused.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--model-option" in errors[0] and "option 'h' takes" in errors[0]
