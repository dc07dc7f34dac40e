import json

import pytest
import torch

from dia_ode.models import create_model
from dia_ode.studies.bench_ops import OpCounter, bench_ops, count_ops, count_train_step
from dia_ode.studies.bench_train_step import bench_optimizer, train_step
from tests.test_attention import with_unfused_cells
from tests.test_inputs import assert_usage_error, invoke

TINY = {"batch_size": 2, "image_size": 8, "in_channels": 3}  # resnet20 at base_width 4: a step in milliseconds
TINY_OPTIONS = {"base_width": 4}


def _tiny(name: str) -> torch.nn.Module:
    return create_model(name, num_classes=10, in_channels=3, **TINY_OPTIONS)


def _batch():
    torch.manual_seed(0)
    return torch.randn(2, 3, 8, 8), torch.randint(10, (2,))


def test_the_counter_sees_exactly_the_ops_of_a_tiny_forward():
    x = torch.randn(4, 3)
    assert count_ops(lambda: x * 2 + 1).by_op() == {"mul": 1, "add": 1}
    linear = torch.nn.Linear(3, 2)
    assert count_ops(lambda: linear(x)).by_op() == {"t": 1, "addmm": 1}  # linear reaches the backend as W^T, addmm


def test_backward_runs_through_the_dispatcher_and_is_counted():
    x = torch.randn(4, 3, requires_grad=True)
    y = (x * 2 + 1).sum()
    seed = torch.tensor(1.0)  # made outside: backward() would count the ones_like of its own seed
    counter = count_ops(lambda: y.backward(seed))
    # SumBackward expands, MulBackward multiplies by 2, AddBackward passes through, AccumulateGrad detaches
    assert counter.by_op() == {"expand": 1, "mul": 1, "detach": 1}
    assert counter.total_views() == 2  # expand and detach alias their input
    assert torch.equal(x.grad, torch.full((4, 3), 2.0))


def test_phases_split_the_count_and_add_up_to_the_total():
    x = torch.randn(3)
    with OpCounter() as counter:
        x + 1
        with counter.phase("inner"):
            x * 2
            x * 3
        x - 1
    assert counter.total("inner") == 2 and counter.total("all") == 2 and counter.total() == 4
    assert counter.by_op("inner") == {"mul": 2} and counter.by_op() == {"add": 1, "mul": 2, "sub": 1}


def test_train_step_counts_are_deterministic():
    x, y = _batch()
    model = _tiny("dia_resnet20")
    first, again = count_train_step(model, x, y), count_train_step(model, x, y)
    other = count_train_step(_tiny("dia_resnet20"), x, y)
    assert first.counts == again.counts == other.counts


def test_a_step_counts_its_forward_backward_and_update():
    x, y = _batch()
    model = _tiny("resnet20")
    counter = count_train_step(model, x, y)
    forward, backward = counter.by_op("model"), counter.by_op("backward")
    assert counter.total() > counter.total("model") > 0
    assert backward["convolution_backward"] == forward["convolution"] == 19 + 2  # 19 3x3 convs + 2 projections
    assert counter.total("optimizer") >= 3 * len(list(model.parameters()))  # momentum: mul_, add_, then add_
    assert {"_log_softmax", "nll_loss_forward"} <= set(counter.by_op("forward"))  # the loss, not the model's
    assert not {"convolution", "_log_softmax"} & set(counter.by_op("model")) & set(counter.by_op("forward"))
    assert counter.total("all") == 0  # every call of the step falls in a phase


def test_the_warm_up_keeps_the_first_steps_buffer_creation_out_of_the_count():
    x, y = _batch()
    model = _tiny("resnet20")
    optimizer = bench_optimizer(model)
    with OpCounter() as first:
        train_step(model, optimizer, x, y, phase=first.phase)
    warm = count_train_step(model, x, y)
    # the first step clones each gradient into a new momentum buffer; later steps update the buffer
    assert "clone" in first.by_op("optimizer") and "clone" not in warm.by_op("optimizer")
    assert first.by_op("backward") == warm.by_op("backward")


def test_foreach_counts_one_optimizer_call_for_many_parameters():
    x, y = _batch()
    model = _tiny("resnet20")
    loop, foreach = count_train_step(model, x, y), count_train_step(model, x, y, foreach=True)
    assert foreach.total("optimizer") < 10 < len(list(model.parameters())) < loop.total("optimizer")
    assert foreach.total("backward") == loop.total("backward")


def test_dia_counts_more_ops_than_plain_and_rows_carry_the_breakdown():
    rows = bench_ops(["resnet20", "dia_resnet20"], **TINY,
                     model_options={"resnet20": TINY_OPTIONS, "dia_resnet20": TINY_OPTIONS})
    plain, dia = rows
    assert dia["step_ops"] > plain["step_ops"] and dia["forward_ops"] > plain["forward_ops"]
    assert plain["ratio_to_first"] == plain["forward_ratio_to_first"] == 1.0
    assert dia["ratio_to_first"] == dia["step_ops"] / plain["step_ops"]
    assert sum(dia["step_ops_by_phase"].values()) == dia["step_ops"] == sum(dia["step_ops_by_op"].values())
    assert sum(dia["forward_ops_by_op"].values()) == dia["forward_ops"] == dia["step_ops_by_phase"]["model"]
    counts = [n for _, n in dia["top_ops"]]
    assert len(counts) == 10 and counts == sorted(counts, reverse=True)
    assert 0 < dia["step_view_ops"] < dia["step_ops"]


@pytest.mark.parametrize("sam", ["se", "cbam"])
def test_the_fused_dia_cell_cuts_the_ops_of_a_step(sam):
    x, y = _batch()
    plain = count_train_step(_tiny("resnet20"), x, y)
    model = create_model("dia_resnet20", sam=sam, num_classes=10, in_channels=3, **TINY_OPTIONS)
    unfused = count_train_step(with_unfused_cells(model), x, y)  # the cell's equations one op at a time
    fused = count_train_step(model, x, y)
    for phase in ("model", "backward"):
        assert fused.total(phase) < unfused.total(phase), phase
    blocks = sum(len(stage.blocks) for stage in model.stages)
    assert unfused.by_op("model")["sigmoid"] - fused.by_op("model")["sigmoid"] == 2 * blocks  # one for i, f, o
    # what DIA adds to a step: under 4/5 of what the unfused cell adds, with only 3 steps to share the packing
    assert fused.total() - plain.total() < 0.8 * (unfused.total() - plain.total())


def test_cli_prints_the_table_and_writes_bench_json(tmp_path):
    result = invoke("bench", "--out", tmp_path, "ops", "--models", "resnet20,dia_resnet20", "--batch-size", 2,
                    "--image-size", 8, "--model-option", "base_width=4")
    assert result.exit_code == 0, result.output
    assert "forward ops" in result.output and "dia_resnet20/resnet20:" in result.output
    (run_dir,) = tmp_path.iterdir()
    bench = json.loads((run_dir / "bench.json").read_text())
    assert [r["model"] for r in bench["rows"]] == ["resnet20", "dia_resnet20"]
    for field in ("forward_ops", "step_ops", "step_ops_by_phase", "top_ops", "step_ops_by_op", "ratio_to_first"):
        assert field in bench["rows"][1], field
    assert bench["ratios"]["dia_resnet20/resnet20"] == bench["rows"][1]["ratio_to_first"] > 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["command"] == "bench ops" and config["model_options"]["resnet20"] == {"base_width": 4}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step_ops"]["resnet20"] == bench["rows"][0]["step_ops"]


@pytest.mark.parametrize("args,needles", [
    (["--models", "resnet20,nope"], ["--models", "nope"]),
    (["--models", "vit_tiny", "--image-size", "30", "--model-option", "patch_size=4"], ["vit_tiny", "patch_size"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needles):
    assert_usage_error(invoke("bench", "ops", *args, "--out", tmp_path), *needles)
    assert not any(tmp_path.iterdir())  # refused before a run directory is made
