"""`dia-ode bench train-step` in settings (precision, eager or compiled): rows, ratios, refusals, and that
each setting's step is the trainer's (autocast, channels-last layout, torch.compile in the mode asked)."""

import json

import pytest
import torch
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.data.strides import has_standard_strides
from dia_ode.engine import acceleration
from dia_ode.studies.bench_train_step import Setting, bench_batch_and_models, bench_train_step

TINY = ("--models", "resnet20,dia_resnet20", "--batch-size", 4, "--image-size", 8, "--in-channels", 1,
        "--rounds", 1, "--steps", 1)


def invoke(*args):
    return CliRunner().invoke(main, ["bench", "train-step", *(str(a) for a in args)])


def run_dir(out):
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def test_each_precision_is_a_block_of_rows_with_its_ratios_and_images_per_second(tmp_path):
    result = invoke(*TINY, "--precision", "fp32,bf16", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    for label in ("fp32 eager", "bf16 eager"):
        assert f"{label}: dia_resnet20/resnet20:" in result.output
    assert "bf16 eager/fp32 eager: resnet20" in result.output
    rows = json.loads((run_dir(tmp_path) / "bench.json").read_text())
    assert [(r["precision"], r["compiled"], r["model"]) for r in rows] == [
        ("fp32", False, "resnet20"), ("fp32", False, "dia_resnet20"),
        ("bf16", False, "resnet20"), ("bf16", False, "dia_resnet20")]
    for r in rows:
        assert r["images_per_second"] == pytest.approx(4 / r["step_seconds"])
    summary = json.loads((run_dir(tmp_path) / "summary.json").read_text())
    assert set(summary["ratios"]) == {"fp32 eager", "bf16 eager"}
    assert set(summary["ratios"]["bf16 eager"]) == {"dia_resnet20/resnet20"}
    assert summary["setting_ratios"]["bf16 eager/fp32 eager"]["resnet20"] == pytest.approx(
        rows[2]["step_seconds"] / rows[0]["step_seconds"])


def _assert_refused(result, option):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], result.output


@pytest.mark.parametrize("args,option", [
    (("--precision", "fp32,fp16"), "--precision"),  # fp16 needs CUDA
    (("--compile", "--compile-mode", "reduce-overhead"), "--compile-mode"),  # CUDA graphs
    (("--compile-mode", "max-autotune"), "--compile-mode"),  # a mode without --compile
])
def test_settings_that_cannot_run_on_the_cpu_are_refused_before_any_run(tmp_path, args, option):
    _assert_refused(invoke(*TINY, *args, "--device", "cpu", "--out", tmp_path / "runs"), option)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.fixture
def traced_compile(monkeypatch):
    """torch.compile running dynamo's graphs as traced (inductor takes minutes on a CPU): ([modes asked], [graphs])."""
    real_compile, modes, graphs = torch.compile, [], []

    def traced(graph, inputs):
        graphs.append(graph)
        return graph.forward

    def compile_traced(module, mode=None, **options):
        modes.append(mode)
        return real_compile(module, backend=traced)

    monkeypatch.setattr(acceleration.torch, "compile", compile_traced)
    yield modes, graphs
    torch._dynamo.reset()


def test_compile_measures_each_setting_eager_and_compiled_in_the_mode_asked(tmp_path, traced_compile):
    result = invoke(*TINY, "--models", "resnet20", "--compile", "--compile-mode", "max-autotune-no-cudagraphs",
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    modes, graphs = traced_compile
    assert modes == ["max-autotune-no-cudagraphs"] and graphs  # the compiled rows ran dynamo's graphs
    rows = json.loads((run_dir(tmp_path) / "bench.json").read_text())
    assert [(r["precision"], r["compiled"]) for r in rows] == [("fp32", False), ("fp32", True)]
    assert "fp32 compiled/fp32 eager: resnet20" in result.output


def test_each_compiled_model_and_setting_gets_a_lone_runs_recompile_budget(traced_compile, monkeypatch):
    # the models share CifarResNet.forward: past dynamo's limit the second would run eager, silently
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    models = ["resnet20", "dia_resnet20"]
    bench_train_step(models, batch_size=2, image_size=8, in_channels=1, steps=1, rounds=1,
                     settings=[Setting("fp32", compiled=True)], model_options={m: {"base_width": 4} for m in models})
    assert len(traced_compile[1]) == 2


def test_under_bf16_the_timed_forward_computes_in_bfloat16(tmp_path):
    dtypes = set()

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = invoke(*TINY, "--models", "resnet20", "--precision", "bf16", "--out", tmp_path)
    finally:
        handle.remove()
    assert result.exit_code == 0, result.output
    assert dtypes == {torch.bfloat16}


@pytest.mark.parametrize("in_channels", [1, 3])
def test_channels_last_lays_out_batch_and_model_as_the_trainer_does(in_channels):
    x, _, built = bench_batch_and_models(["resnet20"], batch_size=4, image_size=8, in_channels=in_channels,
                                         channels_last=True)
    first_conv = next(m for m in built["resnet20"].modules() if isinstance(m, torch.nn.Conv2d)).weight
    if in_channels == 1:  # ambiguous strides would crash oneDNN's convolution backward (data/strides.py)
        assert has_standard_strides(x) and has_standard_strides(first_conv)
    else:
        assert x.is_contiguous(memory_format=torch.channels_last) and not has_standard_strides(x)
        assert first_conv.is_contiguous(memory_format=torch.channels_last)
