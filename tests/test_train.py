import json
import math

import pytest
import torch

from dia_ode.tasks import classification as train_module
from dia_ode.rundir import CheckpointError, load_checkpoint, save_checkpoint
from dia_ode.rundir import atomic_write_bytes, read_jsonl, start_run
from dia_ode.engine import ConfigError, TrainConfig, TrainingDiverged, learning_rate, resume_training, run_training
from dia_ode.rundir import CHECKPOINT

TINY = dict(model="dia_resnet20", epochs=3, batch_size=128, device="cpu", model_options={"base_width": 4})


class Crash(Exception):
    pass


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _start(tmp_path, name, cfg):
    from dataclasses import asdict
    return start_run(tmp_path / name, "train", {"command": "train", **asdict(cfg)}, argv=["test"])


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path):
    full_dir = _start(tmp_path, "full", TrainConfig(**TINY))
    full = run_training(TrainConfig(**TINY), full_dir, progress=False)

    crashed_dir = _start(tmp_path, "crashed", TrainConfig(**TINY))

    def crash_after_first_epoch(epoch, row):
        if epoch == 0:
            raise Crash

    with pytest.raises(Crash):
        run_training(TrainConfig(**TINY), crashed_dir, progress=False, on_epoch_end=crash_after_first_epoch)
    assert len(read_jsonl(crashed_dir / "metrics.jsonl")) == 1
    resumed = resume_training(crashed_dir, progress=False)

    for key in ("test_acc", "test_loss", "final_val_acc", "best_val_acc", "params"):
        assert resumed[key] == full[key], key
    assert _without_timing(read_jsonl(crashed_dir / "metrics.jsonl")) == _without_timing(
        read_jsonl(full_dir / "metrics.jsonl"))
    a, b = load_checkpoint(full_dir / CHECKPOINT), load_checkpoint(crashed_dir / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_extends_a_finished_run_and_rewrites_config(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    run_dir = _start(tmp_path, "runs", cfg)
    run_training(cfg, run_dir, progress=False)
    summary = resume_training(run_dir, epochs=2, progress=False)
    assert summary["epochs"] == 2
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    run_dir = _start(tmp_path, "runs", cfg)
    run_training(cfg, run_dir, progress=False)
    before = (run_dir / CHECKPOINT).read_bytes()

    real = train_module.F.cross_entropy
    monkeypatch.setattr(train_module.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 2, step 1"):
        resume_training(run_dir, epochs=2, progress=False)
    assert (run_dir / CHECKPOINT).read_bytes() == before
    assert load_checkpoint(run_dir / CHECKPOINT)["epoch"] == 1


def test_learning_rate_schedules():
    cos = TrainConfig(lr=0.2, epochs=10)
    assert learning_rate(cos, 0) == pytest.approx(0.2)
    assert learning_rate(cos, 5) == pytest.approx(0.1)
    assert all(learning_rate(cos, e) > learning_rate(cos, e + 1) for e in range(9))
    step = TrainConfig(lr=0.1, epochs=8, schedule="step")
    assert [learning_rate(step, e) for e in (0, 3, 4, 5, 6, 7)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0), ("lr", -1.0), ("schedule", "linear"),
                                         ("lr", float("inf")), ("weight_decay", float("nan")),
                                         ("clip_grad", float("inf")), ("train_examples", 0)])
def test_bad_config_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field) as err:
        TrainConfig(**{field: value}).validate()
    assert err.value.option == field


def test_checkpoint_round_trip_and_rejections(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, epoch=2, model={"w": torch.ones(2)}, optimizer={"state": {}, "param_groups": []},
                    history=[{"epoch": 1}], config={"model": "resnet20"})
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 2 and torch.equal(ckpt["model"]["w"], torch.ones(2))

    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "garbage.pt")
    path.write_bytes(path.read_bytes()[:100])  # truncated by a crash
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_checkpoint(path)
    reason = str(err.value).rpartition("(")[2].rstrip(")")
    assert reason.endswith((".", " ...")) and "\n" not in reason, reason  # a sentence, never cut mid-word
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a dia_ode checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"obj": Crash()}, tmp_path / "code.pt")  # unpickling would need code: refused
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def failing_writer(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_bytes(path, failing_writer)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_training_learns_digits(tmp_path):
    cfg = TrainConfig(model="resnet20", epochs=4, device="cpu", model_options={"base_width": 8})
    run_dir = _start(tmp_path, "runs", cfg)
    summary = run_training(cfg, run_dir, progress=False)
    assert summary["test_acc"] > 0.8  # chance is 0.1
    assert math.isfinite(summary["test_loss"])
    # a discrete model evaluates its 3 x 3 residual branches once per forward and none in backward
    assert summary["nfe_test"] == 9 and summary["nfe_backward_train"] == 0
    assert all(r["nfe_forward"] == 9 and r["nfe_eval"] == 9 for r in read_jsonl(run_dir / "metrics.jsonl"))
    assert summary["peak_memory_mb"] > 0


def test_training_records_the_adaptive_solvers_nfe(tmp_path):
    cfg = TrainConfig(model="odenet", epochs=1, device="cpu", batch_size=256, model_options={"width": 8})
    run_dir = _start(tmp_path, "runs", cfg)
    summary = run_training(cfg, run_dir, progress=False)
    (row,) = read_jsonl(run_dir / "metrics.jsonl")
    for value in (row["nfe_forward"], row["nfe_eval"], summary["nfe_test"]):
        assert value >= 8  # dopri5: 2 + 6 x (attempted steps) per solve, at least one step
    assert row["nfe_backward"] == 0  # direct backprop replays the graph, it does not evaluate f


def test_json_output_is_strict_and_plain(tmp_path):
    import numpy as np

    from dia_ode.rundir import write_json

    write_json(tmp_path / "x.json", {"nan": float("nan"), "inf": np.float32("inf"), "arr": np.arange(3),
                                     "t": torch.tensor([0.5]), "z": complex(1, -2), "path": tmp_path})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "arr": [0, 1, 2], "t": [0.5], "z": [1.0, -2.0],
                                "path": str(tmp_path)}


def test_train_from_python_leaves_the_run_the_command_leaves_and_load_run_reads_it(tmp_path):
    from click.testing import CliRunner

    import dia_ode
    from dia_ode.cli import main
    from dia_ode.engine.start import FIELDS

    tiny = dict(epochs=1, train_examples=64, device="cpu", model_options={"base_width": 4})
    run_dir = dia_ode.train(out=tmp_path / "py", progress=False, **tiny)
    assert run_dir.name == "00000-train-dia_resnet20-base_width=4-digits"
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 1
    run = dia_ode.load_run(run_dir)
    assert run.model_name == "dia_resnet20" and run.epoch == 1
    assert run.model(run.test_batch(4)[0]).shape == (4, 10)

    result = CliRunner().invoke(main, ["train", "--epochs", 1, "--train-examples", 64, "--device", "cpu",
                                       "--model-option", "base_width=4", "--no-progress", "--out", tmp_path / "cli"])
    assert result.exit_code == 0, result.output
    (cli_dir,) = (tmp_path / "cli").iterdir()
    python_config, cli_config = (json.loads((d / "config.json").read_text()) for d in (run_dir, cli_dir))
    assert {k: python_config[k] for k in FIELDS} == {k: cli_config[k] for k in FIELDS}


def test_train_from_python_refuses_a_bad_call_and_leaves_no_run(tmp_path):
    import dia_ode

    with pytest.raises(TypeError, match="did you mean 'epochs'"):
        dia_ode.train(epoch=1, out=tmp_path)
    with pytest.raises(TypeError, match="not both"):
        dia_ode.train(TrainConfig(**TINY), epochs=1, out=tmp_path)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        dia_ode.train(lr=-1.0, out=tmp_path)
    with pytest.raises(ValueError, match="did you mean 'reduction'"):  # found once the dataset is known
        dia_ode.train(epochs=1, device="cpu", model_options={"reducton": 2}, out=tmp_path, progress=False)
    assert not any(path.is_dir() for path in tmp_path.rglob("*"))
