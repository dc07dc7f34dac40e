"""Data-parallel training under torchrun: 2 gloo processes on CPU train the same model as one process.

vit_tiny (no BatchNorm) at a toy size, augmentation off: the global batch is split over the ranks
and DDP averages the gradients, so the weights after an epoch must equal the single-process ones up
to float rounding; resume under torchrun continues exactly; a batch the world size does not divide
is a usage error. Each torchrun start costs a few seconds, hence the markers.
"""

import subprocess
import sys

import pytest
import torch

from dia_ode.rundir import CHECKPOINT, load_checkpoint, read_jsonl

pytestmark = [pytest.mark.dist, pytest.mark.slow]

ARGS = ["--model", "vit_tiny", "--model-option", "dim=16", "--model-option", "depth=1", "--model-option", "heads=2",
        "--batch-size", "32", "--no-augment", "--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine",
        "--device", "cpu", "--no-progress"]


def _torchrun(*args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dia_ode", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **_env()}, timeout=300)


def _single(*args):
    cmd = [sys.executable, "-m", "dia_ode", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **_env()}, timeout=300)


def _why(done) -> str:
    """The lines of a failed torchrun that say why: the ranks' own errors first, then the tail."""
    lines = [line for line in done.stderr.splitlines()
             if any(word in line for word in ("Error", "terminate", "what()", "Exception", "abort"))]
    return "\n".join(lines[:20]) + "\n...\n" + done.stderr[-1500:]


def _env():
    import os
    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}


def _weights(out):
    (run_dir,) = out.iterdir()
    return run_dir, load_checkpoint(run_dir / CHECKPOINT)["model"]


def test_two_gloo_processes_train_the_model_of_one_process_and_resume(tmp_path):
    done = _torchrun(*ARGS, "--epochs", "1", "--out", str(tmp_path / "ddp"))
    assert done.returncode == 0, _why(done)
    assert done.stdout.count("run directory:") == 1  # only rank 0 speaks and writes
    assert "Grad strides" not in done.stderr  # DDP's note on a size-1 weight dimension is silenced
    epoch_line = next(line for line in done.stdout.splitlines() if line.startswith("epoch 1/1"))
    assert epoch_line.index("train_loss") < epoch_line.index("train_acc")  # the single-process order
    resumed = _torchrun("--resume", str(next((tmp_path / "ddp").iterdir())), "--epochs", "2")
    assert resumed.returncode == 0, _why(resumed)
    single = _single(*ARGS, "--epochs", "1", "--out", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr[-2000:]
    single = _single("--resume", str(next((tmp_path / "one").iterdir())), "--epochs", "2")  # the same restart
    assert single.returncode == 0, single.stderr[-2000:]

    ddp_dir, ddp = _weights(tmp_path / "ddp")
    one_dir, one = _weights(tmp_path / "one")
    assert ddp.keys() == one.keys()
    for key in ddp:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    rows_ddp, rows_one = read_jsonl(ddp_dir / "metrics.jsonl"), read_jsonl(one_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows_ddp] == [1, 2]
    for a, b in zip(rows_ddp, rows_one):  # all-reduced metrics are those of the whole data
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    summary = __import__("json").loads((ddp_dir / "summary.json").read_text())
    assert summary["world_size"] == 2


def test_evaluation_under_torchrun_uses_the_saved_models_batchnorm_statistics(tmp_path):
    from dia_ode.rundir import load_run
    from dia_ode.tasks import get_task

    done = _torchrun("--model", "resnet20", "--model-option", "base_width=4", "--epochs", "1", "--batch-size", "64",
                     "--no-augment", "--device", "cpu", "--no-progress", "--out", str(tmp_path))
    assert done.returncode == 0, _why(done)
    (run_dir,) = tmp_path.iterdir()
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    run = load_run(run_dir)  # rank 0's checkpoint, evaluated in this process on the whole test split
    again = get_task("classification").evaluate(run.model, run.test_batches())
    assert summary["test_acc"] == pytest.approx(again["acc"], abs=1e-12)
    assert summary["test_loss"] == pytest.approx(again["loss"], rel=1e-5)


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "33"], "Error: Invalid value for --batch-size: 33 is not divisible by the 2 processes"),
    (["--sync-bn"], "Error: Invalid value for --sync-bn: SyncBatchNorm runs on CUDA devices only"),
])
def test_bad_data_parallel_options_are_usage_errors_printed_once(tmp_path, args, message):
    done = _torchrun(*ARGS, "--epochs", "1", *args, "--out", str(tmp_path))
    assert done.returncode != 0
    assert done.stderr.count(message) == 1, done.stderr[-2000:]  # rank 0 only
    assert "exitcode: 2" in done.stderr  # torchrun reports the usage error's exit code
    assert not any(tmp_path.iterdir())  # no run directory was made


def test_two_gloo_processes_train_a_detector_and_score_every_test_scene_once(tmp_path):
    done = _torchrun("--task", "detection", "--model", "resnet20", "--model-option", "base_width=4", "--epochs", "1",
                     "--train-examples", "16", "--batch-size", "8", "--device", "cpu", "--no-progress",
                     "--out", str(tmp_path))
    assert done.returncode == 0, _why(done)
    (run_dir,) = tmp_path.iterdir()
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["task"] == "detection"
    from dia_ode.rundir import load_run
    from dia_ode.analysis.detections import detect_split
    _, metrics, found = detect_split(load_run(run_dir))  # one process, the whole split: the same COCO numbers
    assert len(found) == 500
    assert summary["test_ap50"] == pytest.approx(metrics["ap50"], abs=1e-9)
    assert summary["test_ar100"] == pytest.approx(metrics["ar100"], abs=1e-9)


def test_two_gloo_processes_train_a_diffusion_unet_with_its_moving_average(tmp_path):
    done = _torchrun("--task", "diffusion", "--model", "dia_unet_s", "--model-option", "base_width=8",
                     "--model-option", "blocks=1", "--epochs", "1", "--train-examples", "32", "--batch-size", "16",
                     "--task-option", "timesteps=20", "--device", "cpu", "--no-progress", "--out", str(tmp_path))
    assert done.returncode == 0, _why(done)
    (run_dir,) = tmp_path.iterdir()
    summary = __import__("json").loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["task"] == "diffusion"
    assert load_checkpoint(run_dir / CHECKPOINT)["ema"]["updates"] == 2  # one per global step, rank 0's
    assert (run_dir / "figures" / "samples" / "epoch_0001.png").is_file()  # drawn by rank 0 alone
