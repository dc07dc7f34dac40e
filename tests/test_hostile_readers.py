"""Hostile run files and inputs: a FIFO, a hand-edited type, JSON nested past the recursion limit, a
checkpoint whose options would allocate terabytes, a controller that proposes NaN steps. Each is refused
in one line (or listed as unreadable) and quickly, never a hang or a traceback.

Every test that could hang on a regression runs under a deadline (SIGALRM raising in the blocked call),
so a regression fails instead of stalling the suite.
"""

import json
import os
import signal
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli_checks import assert_one_line_usage_error, deadline
from dia_ode import create_model
from dia_ode.cli import main
from dia_ode.engine import TrainConfig
from dia_ode.rundir import CheckpointError, read_config, read_jsonl, read_summary, save_checkpoint

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not hasattr(signal, "setitimer"),
                                reason="FIFOs and SIGALRM are POSIX")

DEEP = "[" * 100_000  # json.loads raises RecursionError on it





def invoke(*args):
    with deadline():
        return CliRunner().invoke(main, [str(a) for a in args])





def fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def listed_run(out: Path, name: str, epochs: int = 2, acc: float = 0.5) -> Path:
    """A finished training run as `ls runs` reads it (config, metrics, summary; no checkpoint needed)."""
    run_dir = out / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"command": "train", "model": "resnet20", "dataset": "digits",
                                                     "epochs": epochs}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1}) + "\n" for e in range(epochs)))
    (run_dir / "summary.json").write_text(json.dumps({"test_acc": acc}))
    return run_dir


def ls_rows(out: Path) -> dict[str, str]:
    result = invoke("ls", "runs", "--out", out)
    assert result.exit_code == 0 and result.exception is None, result.output
    return {line.split()[0]: line for line in result.output.splitlines()[1:]}


# ---------------------------------------------------------------- hangs: a FIFO where a run file belongs


@pytest.mark.parametrize("name", ["config.json", "summary.json", "metrics.jsonl", ".lock"])
def test_ls_runs_lists_a_run_whose_file_is_a_fifo_as_unreadable(tmp_path, name):
    listed_run(tmp_path, "00001-train-good", acc=0.75)
    fifo(listed_run(tmp_path, "00002-train-fifo") / name)
    rows = ls_rows(tmp_path)
    assert "test_acc=0.7500" in rows["00001-train-good"] and "finished" in rows["00001-train-good"]
    assert "unreadable" in rows["00002-train-fifo"] and name in rows["00002-train-fifo"]
    assert "not a regular file" in rows["00002-train-fifo"]


def test_the_lock_readers_call_a_fifo_lock_idle_and_unheld_without_blocking(tmp_path):
    from dia_ode.rundir.lock import holder, is_locked

    fifo(tmp_path / ".lock")
    with deadline(5.0):
        assert is_locked(tmp_path) is False and holder(tmp_path) is None


@pytest.mark.parametrize("name", ["config.json", "summary.json", "metrics.jsonl"])
def test_run_file_readers_refuse_a_fifo_in_one_line(tmp_path, name):
    path = fifo(tmp_path / name)
    read = {"config.json": lambda: read_config(tmp_path), "summary.json": lambda: read_summary(tmp_path),
            "metrics.jsonl": lambda: read_jsonl(path)}[name]
    with deadline(), pytest.raises(ValueError, match="not a regular file") as err:
        read()
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _checkpointed_run(run_dir: Path, options: dict | None = None, spec_options: dict | None = None) -> Path:
    """A training run directory with a real (untrained) resnet20 checkpoint of all its 2 epochs (so a resume
    reads summary.json to tell whether it is finished), written without training."""
    options = {"num_classes": 10, "in_channels": 1, **(options or {})}
    cfg = TrainConfig(model="resnet20", epochs=2, device="cpu")
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"command": "train", **asdict(cfg)}))
    model = create_model("resnet20", **options)
    save_checkpoint(run_dir / "checkpoints" / "last.pt", epoch=2, model=model.state_dict(), optimizer={},
                    history=[{"epoch": 1}, {"epoch": 2}], config={"command": "train", **asdict(cfg)},
                    model_spec={"name": "resnet20", "options": spec_options or options},
                    normalisation={"mean": [0.5], "std": [0.25]})
    return run_dir


@pytest.mark.parametrize("name", ["config.json", "summary.json"])
def test_resume_refuses_a_fifo_run_file_in_one_line(tmp_path, name):
    run_dir = _checkpointed_run(tmp_path / "00000-train-resnet20-digits")
    fifo(run_dir / name)
    assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--no-progress"), "--resume", name,
                                "not a regular file")


@pytest.mark.parametrize("command", [["compare", "--from"], ["stiffness"]], ids=["compare", "stiffness"])
def test_the_analyses_refuse_a_run_whose_metrics_file_is_a_fifo(tmp_path, command):
    run_dir = _checkpointed_run(tmp_path / "00000-train-resnet20-digits")
    fifo(run_dir / "metrics.jsonl")
    result = invoke(*command, run_dir, "--out", tmp_path / "out", "--samples", 2, "--no-progress")
    assert_one_line_usage_error(result, "metrics.jsonl", "not a regular file")


def test_loading_a_dia_controller_refuses_a_fifo_config(tmp_path):
    from dia_ode.numerics.dia_controller import load_dia_controller

    fifo(tmp_path / "config.json")
    with deadline(), pytest.raises(ValueError, match="not a regular file"):
        load_dia_controller(tmp_path)


def _coco_folder(root: Path) -> None:
    for split in ("train2017", "val2017"):
        (root / split).mkdir(parents=True)
        images = []
        for i in range(3):
            Image.fromarray((torch.rand(20, 30, 3) * 255).byte().numpy()).save(root / split / f"{i}.png")
            images.append({"id": i, "file_name": f"{i}.png"})
        coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def test_a_coco_folder_skips_a_fifo_image_like_an_undecodable_one(tmp_path, caplog):
    from dia_ode.data.coco_folder import load_coco_folder

    _coco_folder(tmp_path)
    fifo(tmp_path / "train2017" / "1.png")
    with deadline():
        data = load_coco_folder(tmp_path, val_fraction=0.0, image_size=16)
    assert len(data.train) == 2 and len(data.test) == 3
    assert "skipped 1 image" in caplog.text and "1.png" in caplog.text and "not a regular file" in caplog.text


def test_a_coco_folder_refuses_a_fifo_or_deeply_nested_annotation_file(tmp_path):
    from dia_ode.data import DataError
    from dia_ode.data.coco_folder import load_coco_folder

    _coco_folder(tmp_path)
    annotations = tmp_path / "annotations" / "instances_val2017.json"
    fifo(annotations)
    with deadline(), pytest.raises(DataError, match="instances_val2017.json.*not a regular file"):
        load_coco_folder(tmp_path)
    annotations.unlink()
    annotations.write_text(DEEP)
    with deadline(), pytest.raises(DataError, match="instances_val2017.json.*nested"):
        load_coco_folder(tmp_path)


# ---------------------------------------------------------------- a controller that proposes NaN steps


class _Broken:
    """An error controller whose factor is `value` (NaN, Inf) on every step."""

    def __init__(self, value: float) -> None:
        from dia_ode.numerics import PIController

        self.base, self.value = PIController(), value
        self.limits = self.base.limits

    def init(self, batch):
        return self.base.init(batch)

    def adapt(self, state, h, error_ratio, k, stiffness=None):
        accept, factor, state = self.base.adapt(state, h, error_ratio, k)
        return accept, torch.full_like(factor, self.value), state


def _nan_dia_controller():
    from dia_ode.numerics import DIAErrorController

    controller = DIAErrorController()
    with torch.no_grad():
        for p in controller.cell.parameters():
            p.fill_(float("nan"))
    return controller


@pytest.mark.parametrize("make", [lambda: _Broken(float("nan")), lambda: _Broken(float("inf")), _nan_dia_controller],
                         ids=["nan", "inf", "dia-with-nan-weights"])
def test_a_non_finite_proposed_step_ends_the_solve_with_its_result_code(make):
    from dia_ode.numerics import RESULTS, solve
    from dia_ode.numerics.solution import NON_FINITE_STEP

    f = lambda t, y: -y  # noqa: E731
    y0 = torch.ones(3, 2, dtype=torch.float64)
    with deadline(30):
        sol = solve(f, y0, 0.0, 10.0, controller=make(), rtol=1e-6, atol=1e-6)
    assert sol.result.tolist() == [NON_FINITE_STEP] * 3
    assert RESULTS[NON_FINITE_STEP] == "non-finite step size"
    assert int(sol.stats["num_steps"].max()) <= 3


def test_a_non_finite_first_step_ends_the_solve_before_any_step():
    from dia_ode.numerics import solve
    from dia_ode.numerics.solution import NON_FINITE_STEP

    with deadline(30):
        sol = solve(lambda t, y: -y, torch.ones(2, 1, dtype=torch.float64), 0.0, 1.0, first_step=float("nan"))
    assert sol.result.tolist() == [NON_FINITE_STEP] * 2 and sol.stats["num_steps"].tolist() == [0, 0]


# ---------------------------------------------------------------- a checkpoint's options sized before allocation


def _spy_real_builds(monkeypatch, hostile: dict) -> list[str]:
    """Record where load_run builds its models; building the hostile options off the meta device fails the
    test at once (before any memory is taken)."""
    from dia_ode.rundir import loaded

    built, real = [], loaded.create_model

    def spy(name, **options):
        device = torch.get_default_device().type
        built.append(device)
        if device != "meta" and all(options.get(k) == v for k, v in hostile.items()):
            raise AssertionError(f"load_run allocated a model of {hostile} before checking it")
        return real(name, **options)

    monkeypatch.setattr(loaded, "create_model", spy)
    return built


@pytest.mark.parametrize("hostile, needle", [
    # differs from the checkpoint's tensors: the first differing key named
    ({"base_width": 32}, r"stem\.0\.weight has shape \(16, 1, 3, 3\) in the checkpoint"),
    ({"base_width": 200_000}, "base_width"),  # terabytes: refused by its parameter count, naming the options
])
def test_load_run_sizes_a_checkpoints_model_on_the_meta_device_before_allocating(tmp_path, monkeypatch, hostile,
                                                                                    needle):
    from dia_ode.rundir import load_run

    run_dir = _checkpointed_run(tmp_path / "run", spec_options={"num_classes": 10, "in_channels": 1, **hostile})
    built = _spy_real_builds(monkeypatch, hostile)
    with deadline(60), pytest.raises(CheckpointError, match=needle) as err:
        load_run(run_dir)
    assert "\n" not in str(err.value) and "last.pt" in str(err.value)
    assert built == ["meta"]


def test_load_run_still_loads_a_checkpoint_that_fits(tmp_path, monkeypatch):
    from dia_ode.rundir import load_run

    run_dir = _checkpointed_run(tmp_path / "run")
    built = _spy_real_builds(monkeypatch, {"never": "matched"})
    run = load_run(run_dir)
    assert built == ["meta", "cpu"] and next(run.model.parameters()).device.type == "cpu"


# ---------------------------------------------------------------- one line where a traceback was


@pytest.mark.parametrize("key, value, expected", [
    ("epochs", "5", "an integer"),
    ("lr", "0.1", "a number"),
    ("model_options", [1, 2], "a JSON object"),
    ("milestones", "0.5", "a list of numbers"),
    ("augment", "yes", "true or false"),
    ("data_dir", 3, "a string or null"),
])
def test_resume_names_a_hand_edited_config_key_of_the_wrong_type(tmp_path, key, value, expected):
    run_dir = _checkpointed_run(tmp_path / "00000-train-resnet20-digits")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, key: value}))
    assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--no-progress"), "--resume", "config.json",
                                key, expected)


def test_train_config_from_dict_checks_types_and_keeps_old_configs_loading():
    from dia_ode.engine.config import ConfigError

    cfg = TrainConfig.from_dict({"epochs": 3, "lr": 1, "milestones": [0.5, 1], "clip_grad": None, "versions": {}})
    assert (cfg.epochs, cfg.lr, cfg.milestones, cfg.clip_grad) == (3, 1, (0.5, 1), None)
    for bad in ({"epochs": True}, {"epochs": 2.0}, {"extended_from": [1.5]}, {"task_options": "x"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            TrainConfig.from_dict(bad)


@pytest.mark.parametrize("name", ["config.json", "summary.json", "metrics.jsonl"])
def test_deeply_nested_json_in_a_run_file_is_refused_in_one_line(tmp_path, name):
    path = tmp_path / name
    path.write_text(DEEP + "\n")
    read = {"config.json": lambda: read_config(tmp_path), "summary.json": lambda: read_summary(tmp_path),
            "metrics.jsonl": lambda: read_jsonl(path)}[name]
    if name == "metrics.jsonl":
        with pytest.raises(ValueError, match="nested too deeply") as err:
            read()
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    else:  # the lenient readers read an unreadable file as none, as they read broken JSON
        assert read() == {}


def test_resume_refuses_a_deeply_nested_config_in_one_line(tmp_path):
    run_dir = _checkpointed_run(tmp_path / "00000-train-resnet20-digits")
    (run_dir / "config.json").write_text(DEEP)
    assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--no-progress"), "--resume", "config.json",
                                "nested too deeply")


@pytest.mark.parametrize("break_it, reason", [
    (lambda d: (d / "summary.json").write_text(DEEP), "nested too deeply"),
    (lambda d: (d / "config.json").write_text(DEEP), "nested too deeply"),
    (lambda d: (d / "metrics.jsonl").write_bytes(b'{"epoch": 1}\n\xff\xfe\n'), "metrics.jsonl"),
    (lambda d: (d / "config.json").write_text(json.dumps({"command": "train", "model": 5, "epochs": 2})), "model"),
    (lambda d: (d / "summary.json").write_text(json.dumps({"status": 7})), "status"),
    (lambda d: (d / "config.json").write_text(json.dumps({"command": "train-seeds", "seeds": 3})), "seeds"),
    (lambda d: ((d / "config.json").write_text(json.dumps({"command": "train-seeds", "seeds": [1]})),
                (d / "summary.json").write_text(json.dumps({"metrics": [1]}))), "metrics"),
], ids=["deep-summary", "deep-config", "undecodable-metrics", "model-not-a-string", "status-not-a-string",
        "seeds-not-a-list", "group-metrics-not-an-object"])
def test_one_malformed_run_is_listed_as_unreadable_and_the_others_still_are(tmp_path, break_it, reason):
    listed_run(tmp_path, "00001-train-good", acc=0.75)
    break_it(listed_run(tmp_path, "00002-train-bad"))
    listed_run(tmp_path, "00003-train-also-good", acc=0.25)
    rows = ls_rows(tmp_path)
    assert "test_acc=0.7500" in rows["00001-train-good"] and "test_acc=0.2500" in rows["00003-train-also-good"]
    assert "unreadable" in rows["00002-train-bad"] and reason in rows["00002-train-bad"], rows["00002-train-bad"]
