"""Tests for engine/acceleration.py and its use by the trainer: --precision, --compile, --channels-last.

Every run here is tiny (base width 4, 64 digits, one or two steps an epoch). torch.compile's inductor takes
minutes to warm up on a CPU, so the trainer's compile tests trace with dynamo and run eagerly
(backend "eager"): what they test is that the DIA models trace without graph breaks and that the run
trains through the compiled module; the kernels are torch's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dia_ode.cli import main
from dia_ode.data import Split, load_dataset
from dia_ode.data.strides import has_standard_strides
from dia_ode.engine import ConfigError, TrainConfig, Trainer, resume_training
from dia_ode.engine import acceleration
from dia_ode.engine import trainer as trainer_module
from dia_ode.engine.acceleration import GradientStep, check_acceleration, to_channels_last
from dia_ode.engine.checkpoint import restore_training_state, save_training_state
from dia_ode.models import create_model
from dia_ode.rundir import CHECKPOINT, load_checkpoint, read_jsonl, start_run

TINY = {"base_width": 4}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    return replace(data, train=Split(data.train.images[:64], data.train.labels[:64]))


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    monkeypatch.setattr(trainer_module, "plot_history", lambda *args, **kwargs: None)


def _config(**fields) -> TrainConfig:
    values = dict(model="dia_resnet20", epochs=1, batch_size=32, lr=0.1, augment=False, device="cpu",
                  model_options=TINY)
    return TrainConfig(**{**values, **fields})


def _trainer(tmp_path, digits, name="run", **fields) -> Trainer:
    cfg = _config(**fields)
    run_dir = start_run(tmp_path / name, "train", {"command": "train", **asdict(cfg)}, argv=["test"])
    return Trainer(cfg, run_dir, dataset=digits, progress=False)


def _conv_output_dtypes(model: nn.Module) -> list[torch.dtype]:
    """Record the output dtype of every convolution's forward."""
    seen = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    return seen


# --------------------------------------------------------------------------------------------------
# the settings and their refusals


@pytest.mark.parametrize("fields, option", [
    ({"precision": "fp8"}, "precision"),
    ({"compile": True, "compile_mode": "fastest"}, "compile_mode"),
    ({"compile_mode": "max-autotune"}, "compile_mode"),  # a mode without compile
])
def test_validate_names_a_bad_acceleration_field(fields, option):
    with pytest.raises(ConfigError) as err:
        _config(**fields).validate()
    assert err.value.option == option and option.split("_")[0] in str(err.value)


@pytest.mark.parametrize("settings, option", [
    ({"precision": "fp16"}, "precision"),
    ({"compile": True, "compile_mode": "reduce-overhead"}, "compile_mode"),
])
def test_what_a_cpu_cannot_run_is_refused_and_a_gpu_would_take(settings, option):
    full = {"precision": "fp32", "compile": False, "compile_mode": "default", "channels_last": False, **settings}
    with pytest.raises(ConfigError) as err:
        check_acceleration(**full, device=CPU)
    assert err.value.option == option and "CUDA" in str(err.value)
    check_acceleration(**full, device=torch.device("cuda"))  # only the device's type is read: no GPU needed


def test_reduced_precision_is_refused_for_a_continuous_model():
    with pytest.raises(ConfigError, match="continuous-depth models train in fp32"):
        check_acceleration(precision="bf16", compile=False, compile_mode="default", channels_last=False,
                           device=CPU, continuous=True)


def test_the_trainer_refuses_fp16_on_the_cpu_before_any_work(tmp_path, digits):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        _trainer(tmp_path, digits, precision="fp16")


@pytest.mark.parametrize("args, hint", [
    (["--precision", "fp16"], "--precision"),
    (["--compile", "--compile-mode", "reduce-overhead"], "--compile-mode"),
    (["--compile-mode", "max-autotune"], "--compile-mode"),
    (["--model", "odenet", "--precision", "bf16"], "--precision"),
])
def test_the_cli_refuses_in_one_line_with_exit_code_2(tmp_path, args, hint):
    result = CliRunner().invoke(main, ["train", "--device", "cpu", "--out", str(tmp_path / "runs"), *args])
    assert result.exit_code == 2, result.output
    assert hint in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run directory left


# --------------------------------------------------------------------------------------------------
# bf16 on the CPU, and fp16's gradient scaler


def test_bf16_trains_under_autocast_with_fp32_weights_and_is_recorded(tmp_path, digits):
    trainer = _trainer(tmp_path, digits, precision="bf16")
    seen = _conv_output_dtypes(trainer.model)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    summary = trainer.fit()
    assert seen and set(seen) == {torch.bfloat16}  # training and evaluation forwards alike
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in read_jsonl(trainer.run_dir / "metrics.jsonl"))
    assert 0 <= summary["test_acc"] <= 1
    assert json.loads((trainer.run_dir / "config.json").read_text())["precision"] == "bf16"
    assert load_checkpoint(trainer.run_dir / CHECKPOINT)["config"]["precision"] == "bf16"

    fp32 = _trainer(tmp_path, digits, name="fp32")
    fp32.fit()
    moved = [(p - b).norm() for p, b in zip(trainer.model.parameters(), before)]
    apart = [(p - q).norm() for p, q in zip(trainer.model.parameters(), fp32.model.parameters())]
    # the same two SGD steps, rounded differently: close to the fp32 run, but not equal to it
    assert sum(apart) > 0
    assert sum(apart) < 0.2 * sum(moved)


def test_a_resumed_run_keeps_its_precision_and_layout(tmp_path, digits, monkeypatch):
    trainer = _trainer(tmp_path, digits, precision="bf16", channels_last=True)
    trainer.fit()
    used = []
    real = trainer_module.autocast
    monkeypatch.setattr(trainer_module, "autocast", lambda precision, device: used.append(precision) or
                        real(precision, device))
    made = []
    real_layout = trainer_module.to_channels_last
    monkeypatch.setattr(trainer_module, "to_channels_last", lambda module: made.append(1) or real_layout(module))
    resume_training(trainer.run_dir, epochs=2, progress=False)
    assert used and set(used) == {"bf16"} and made == [1]
    assert [row["epoch"] for row in read_jsonl(trainer.run_dir / "metrics.jsonl")] == [1, 2]


def test_the_fp16_gradient_step_unscales_skips_non_finite_updates_and_round_trips_its_state(tmp_path):
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = GradientStep("fp16", CPU)  # torch's scaler runs on the CPU too; the trainer refuses fp16 there
    x = torch.ones(2, 3)
    step.backward(model(x).sum())
    step.unscale(optimizer)
    assert torch.allclose(model.weight.grad, torch.full((1, 3), 2.0))  # the true gradient, after unscaling
    weight = model.weight.detach().clone()
    step.step(optimizer)
    assert not torch.equal(model.weight, weight)
    scale = step.scaler.get_scale()
    optimizer.zero_grad()
    step.backward(model(torch.full((2, 3), float("inf"))).sum())
    weight = model.weight.detach().clone()
    step.step(optimizer)
    assert torch.equal(model.weight, weight) and step.scaler.get_scale() == scale / 2  # skipped, scale halved

    cfg = _config()
    save_training_state(tmp_path / "ckpt.pt", epoch=1, model=model, optimizer=optimizer, history=[{}], cfg=cfg,
                        model_spec={}, normalisation={}, scaler=step.state_dict())
    fresh = GradientStep("fp16", CPU)
    monkey = replace(cfg, model=cfg.model)
    restore_training_state(tmp_path / "ckpt.pt", monkey, model, optimizer, CPU, scaler=fresh)
    assert fresh.scaler.get_scale() == scale / 2
    assert GradientStep("bf16", CPU).state_dict() == {}  # nothing to save without fp16


# --------------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("name, options", [("dia_resnet20", TINY), ("dia_resnet20", {**TINY, "sam": "cbam"}),
                                           ("dia_resnet20", {**TINY, "sam": "eca"}), ("dia_vit_tiny", {})])
def test_the_dia_stage_loop_compiles_without_graph_breaks(name, options):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, **options)
    x = torch.randn(2, 1, 8, 8)
    # fullgraph: a graph break raises; aot_eager traces the backward too (AOT autograd) without inductor
    graph = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = graph(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager = model(x)
    eager.square().sum().backward()
    assert torch.allclose(out, eager, atol=1e-5)
    assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, model.parameters()))


def test_compile_trains_through_the_compiled_module_with_its_mode(tmp_path, digits, monkeypatch):
    modes, real_compile = [], torch.compile

    def eager_compile(module, *, mode=None, **kwargs):  # dynamo traces, nothing is generated (see module doc)
        modes.append(mode)
        return real_compile(module, backend="eager", **kwargs)

    monkeypatch.setattr(acceleration.torch, "compile", eager_compile)
    trainer = _trainer(tmp_path, digits, compile=True, compile_mode="max-autotune-no-cudagraphs")
    trainer.fit()
    monkeypatch.setattr(acceleration.torch, "compile", real_compile)
    eager = _trainer(tmp_path, digits, name="eager")
    eager.fit()
    assert modes == ["max-autotune-no-cudagraphs"]
    for p, q in zip(trainer.model.parameters(), eager.model.parameters()):  # the compiled step is the eager step
        assert torch.allclose(p, q, atol=1e-5)
    rows, eager_rows = read_jsonl(trainer.run_dir / "metrics.jsonl"), read_jsonl(eager.run_dir / "metrics.jsonl")
    assert rows[0]["nfe_forward"] == eager_rows[0]["nfe_forward"] > 0  # the meter's hooks still count


# --------------------------------------------------------------------------------------------------
# channels-last


def test_to_channels_last_converts_kernels_and_keeps_ambiguous_tensors_standard():
    model = to_channels_last(create_model("cbam_resnet20", num_classes=10, in_channels=1, **TINY))
    four_d = [p for p in model.parameters() if p.dim() == 4]
    stem = next(p for p in four_d if p.shape[1] == 1)
    assert has_standard_strides(stem)  # one input channel: both formats, so standard strides
    wide = [p for p in four_d if p.shape[1] > 1 and p.shape[2:] != (1, 1)]
    assert wide and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in wide)
    one_by_one = [p for p in four_d if p.shape[2:] == (1, 1)]
    assert all(has_standard_strides(p) for p in one_by_one)


@pytest.mark.parametrize("name, options", [("dia_resnet20", TINY), ("cbam_resnet20", TINY), ("se_resnet20", TINY),
                                           ("dia_resnet20", {**TINY, "sam": "cbam"})])
def test_channels_last_trains_one_channel_digits_and_computes_the_same_function(tmp_path, digits, name, options):
    torch.manual_seed(0)
    plain = create_model(name, num_classes=10, in_channels=1, **options)
    last = to_channels_last(create_model(name, num_classes=10, in_channels=1, **options))
    last.load_state_dict(plain.state_dict())
    x = torch.randn(8, 1, 8, 8)
    assert torch.allclose(plain(x), last(x), atol=1e-5)
    trainer = _trainer(tmp_path, digits, name=name, model=name, model_options=options, channels_last=True)
    trainer.fit()  # forwards and backwards of one-channel batches through channels_last weights: no abort
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
