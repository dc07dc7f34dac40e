"""Restartable command lines: `dia-ode train --run-dir DIR` creates the run, and the same command run again
continues it (create-or-resume); torchrun --max-restarts survives a rank lost mid-epoch and ends at the
uninterrupted run's numbers; the report's Slurm jobs requeue themselves (submitit's checkpointing) and
continue their run.

The in-process tests train resnet20 at base width 2 on 128 digits (about a second each); the torchrun and
submitit tests start processes, hence their markers.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.engine import TrainConfig, Trainer
from dia_ode.rundir import CHECKPOINT, load_checkpoint, read_jsonl, read_summary
from dia_ode.studies.report.cache import execute, open_study, run_path, run_state
from dia_ode.studies.report.claim import RunSpec
from dia_ode.studies.report.launchers import RunJob

TINY = ["--model", "resnet20", "--model-option", "base_width=2", "--train-examples", "128", "--batch-size", "64",
        "--device", "cpu", "--no-progress"]
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def invoke(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def assert_usage_error(result, *needles):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], result.output


def assert_same_numbers(a: Path, b: Path) -> None:
    rows_a, rows_b = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for row_a, row_b in zip(rows_a, rows_b):
        for key in METRICS:
            assert row_a[key] == pytest.approx(row_b[key], rel=1e-5, abs=1e-6), (row_a["epoch"], key)
    summary_a, summary_b = read_summary(a), read_summary(b)
    assert summary_a["status"] == summary_b["status"] == "finished"
    for key in ("test_loss", "test_acc"):
        assert summary_a[key] == pytest.approx(summary_b[key], rel=1e-5, abs=1e-6), key
    weights_a, weights_b = (load_checkpoint(d / CHECKPOINT)["model"] for d in (a, b))
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch run made by --run-dir."""
    run_dir = tmp_path_factory.mktemp("runs") / "deep" / "run"
    result = invoke("--run-dir", run_dir, "--epochs", 2, *TINY)
    assert result.exit_code == 0, result.output
    return run_dir


def test_the_first_run_creates_the_directory_and_the_same_command_says_it_is_finished(finished):
    for name in ("config.json", "cmd.txt", "metrics.jsonl", "summary.json", "checkpoints/last.pt"):
        assert (finished / name).is_file(), name
    config = json.loads((finished / "config.json").read_text())
    assert config["command"] == "train" and config["epochs"] == 2 and "versions" in config
    assert len((finished / "cmd.txt").read_text().splitlines()) == 1
    before = {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()}
    again = invoke("--run-dir", finished, "--epochs", 2, *TINY)
    assert again.exit_code == 0, again.output
    assert again.output.strip() == f"run {finished} is finished (2 of 2 epochs); extend it with --epochs N (N > 2)"
    assert {p: p.read_bytes() for p in finished.rglob("*") if p.is_file()} == before  # nothing was written


@pytest.mark.parametrize("change, flag, shown", [
    (["--lr", "0.05"], "--lr", "lr=0.1, not 0.05"),
    (["--no-augment"], "--no-augment", "augment=True, not False"),
    (["--model-option", "base_width=4"], "--model-option", "model_options={'base_width': 2}"),
    (["--seed", "1"], "--seed", "seed=0, not 1"),
    (["--model", "resnet32"], "--model", "model='resnet20', not 'resnet32'"),
])
def test_a_command_that_describes_another_run_is_refused_naming_the_first_differing_option(finished, change,
                                                                                          flag, shown):
    args = list(TINY)
    if change[0] in args:  # replace the option's value rather than repeat the option
        i = args.index(change[0])
        args[i:i + len(change)] = change
    else:
        args += change
    before = (finished / "config.json").read_bytes()
    assert_usage_error(invoke("--run-dir", finished, "--epochs", 2, *args), f"Invalid value for {flag}:", shown,
                       str(finished))
    assert (finished / "config.json").read_bytes() == before


def test_fewer_epochs_are_refused_and_more_extend_the_run(tmp_path):
    run_dir = tmp_path / "run"
    assert invoke("--run-dir", run_dir, "--epochs", 1, *TINY).exit_code == 0
    assert_usage_error(invoke("--run-dir", run_dir, "--epochs", 1, "--lr", 0.2, *TINY), "--lr")
    longer = invoke("--run-dir", run_dir, "--epochs", 2, *TINY)
    assert longer.exit_code == 0, longer.output
    assert "extended from 1 to 2 epochs" in longer.output
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["extended_from"] == [1]
    assert_usage_error(invoke("--run-dir", run_dir, "--epochs", 1, *TINY), "Invalid value for --epochs", "fewer")
    assert invoke("--run-dir", run_dir, "--epochs", 2, *TINY).output.startswith(f"run {run_dir} is finished")


def test_a_run_stopped_mid_way_continues_to_the_uninterrupted_runs_numbers(tmp_path, monkeypatch):
    real = Trainer._train_epoch
    armed = {"on": True}

    def interrupted(self, net, epoch):
        if armed["on"] and epoch == 1:  # after epoch 1's checkpoint, within epoch 2 (Ctrl-C, or a SIGTERM)
            raise KeyboardInterrupt
        return real(self, net, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupted)
    stopped = invoke("--run-dir", tmp_path / "stopped", "--epochs", 3, *TINY)
    assert stopped.exit_code == 130, stopped.output
    assert "continue with: the same command" in stopped.output
    assert read_summary(tmp_path / "stopped")["status"] == "interrupted"
    armed["on"] = False
    resumed = invoke("--run-dir", tmp_path / "stopped", "--epochs", 3, *TINY)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed at epoch 1 of 3" in resumed.output
    assert invoke("--run-dir", tmp_path / "whole", "--epochs", 3, *TINY).exit_code == 0
    assert_same_numbers(tmp_path / "stopped", tmp_path / "whole")
    assert len((tmp_path / "stopped" / "cmd.txt").read_text().splitlines()) == 2


def test_a_run_killed_before_its_first_checkpoint_trains_from_the_start(tmp_path, monkeypatch):
    def killed(self, net, epoch):
        raise RuntimeError("the machine went away")  # no clean-up runs for a killed process: keep what it left

    monkeypatch.setattr(Trainer, "_train_epoch", killed)
    monkeypatch.setattr("dia_ode.rundir.directory.is_skeleton", lambda run_dir: False)
    assert invoke("--run-dir", tmp_path / "run", "--epochs", 1, *TINY).exit_code == 1
    assert (tmp_path / "run" / "config.json").is_file() and not (tmp_path / "run" / CHECKPOINT).exists()
    monkeypatch.undo()
    result = invoke("--run-dir", tmp_path / "run", "--epochs", 2, *TINY)  # its epochs may change: nothing trained
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet: trained from the start" in result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 2
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]


def test_a_recipes_warm_up_scaled_to_the_epochs_does_not_refuse_an_extension(tmp_path):
    vit = ["--model", "vit_tiny", "--model-option", "dim=8", "--model-option", "depth=1", "--model-option",
           "heads=2", "--train-examples", "128", "--device", "cpu", "--no-progress"]
    assert invoke("--run-dir", tmp_path / "run", "--epochs", 1, *vit).exit_code == 0
    longer = invoke("--run-dir", tmp_path / "run", "--epochs", 2, *vit)  # the recipe's warm-up is 5/150 of the epochs
    assert longer.exit_code == 0, longer.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["warmup_epochs"] == pytest.approx(5 / 150)


@pytest.mark.parametrize("make, needle", [
    (lambda d: (d / "notes.txt").write_text("mine"), "not a run directory (no config.json) and not empty (notes.txt)"),
    (lambda d: (d / "config.json").write_text(json.dumps({"command": "integrate"})), "dia-ode integrate"),
    (lambda d: (d / "config.json").write_text(json.dumps({"command": "train-seeds", "seeds": [0, 1]})),
     "group of seed runs"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "not a run configuration"),
])
def test_a_folder_that_holds_no_training_run_is_refused(tmp_path, make, needle):
    folder = tmp_path / "folder"
    folder.mkdir()
    make(folder)
    before = sorted(p.name for p in folder.iterdir())
    assert_usage_error(invoke("--run-dir", folder, "--epochs", 1, *TINY), "Invalid value for --run-dir", needle)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_an_empty_folder_becomes_the_run_and_a_file_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert invoke("--run-dir", tmp_path / "empty", "--epochs", 1, *TINY).exit_code == 0
    assert (tmp_path / "empty" / "summary.json").is_file()
    (tmp_path / "file").write_text("x")
    assert_usage_error(invoke("--run-dir", tmp_path / "file", "--epochs", 1, *TINY), "--run-dir")


@pytest.mark.parametrize("extra, needle", [
    (["--out", "elsewhere"], "--run-dir names the run directory itself; drop --run-dir or --out"),
    (["--resume", "elsewhere"], "drop --run-dir or --resume"),
    (["--seeds", "0,1"], "drop --run-dir or --seeds"),
])
def test_options_that_name_other_directories_are_refused_with_run_dir(tmp_path, extra, needle):
    assert_usage_error(invoke("--run-dir", tmp_path / "run", *extra, "--epochs", 1, *TINY), needle)
    assert not any(tmp_path.iterdir())


def test_torchrun_restarts_sharing_its_store_are_refused_before_anything_starts(tmp_path, monkeypatch):
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "TORCHELASTIC_MAX_RESTARTS": "2",
                       "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        monkeypatch.setenv(key, value)
    assert_usage_error(invoke("--run-dir", tmp_path / "run", "--epochs", 1, *TINY), "--max-restarts",
                       "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1")
    assert not any(tmp_path.iterdir())


# ---- torchrun --max-restarts: a rank lost mid-epoch ------------------------------------------------------------

KILL_ONCE = Path(__file__).with_name("kill_once.py")
# vit_tiny (no BatchNorm) at a toy size, augmentation off, as tests/test_distributed.py: 6 steps of 32 an epoch
VIT = ["--model", "vit_tiny", "--model-option", "dim=16", "--model-option", "depth=1", "--model-option", "heads=2",
       "--batch-size", "32", "--train-examples", "192", "--no-augment", "--optimizer", "sgd", "--lr", "0.05",
       "--schedule", "cosine", "--device", "cpu", "--no-progress", "--epochs", "3"]


def _torchrun(run_dir: Path, kill_at: str | None):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "DIA_ODE_TEST_KILL_AT")}
    env.update(OMP_NUM_THREADS="1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", **({"DIA_ODE_TEST_KILL_AT": kill_at}
                                                                              if kill_at else {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=2",
           str(KILL_ONCE), "train", "--run-dir", str(run_dir), *VIT]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.dist
@pytest.mark.slow
def test_torchrun_max_restarts_survives_a_rank_killed_mid_epoch_and_ends_at_the_uninterrupted_numbers(tmp_path):
    killed = _torchrun(tmp_path / "killed", "2,3,1")  # rank 1 dies at epoch 2, step 3 of 6
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert "kill_once: rank 1 exits at epoch 2, step 3" in killed.stderr
    assert "resumed at epoch 1 of 3" in killed.stdout and killed.stdout.count("run directory:") == 1
    whole = _torchrun(tmp_path / "whole", None)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "kill_once" not in whole.stderr and "resumed" not in whole.stdout
    assert_same_numbers(tmp_path / "killed", tmp_path / "whole")
    assert read_summary(tmp_path / "killed")["world_size"] == 2


# ---- the report's Slurm jobs: requeued on preemption, continued from their checkpoint ------------------------

def _spec(epochs: int) -> RunSpec:
    return RunSpec(TrainConfig(model="resnet20", epochs=epochs, batch_size=256, augment=False, device="cpu",
                               model_options={"base_width": 2}))


def test_a_slurm_jobs_checkpoint_resubmits_the_same_job(tmp_path):
    submitit = pytest.importorskip("submitit")
    job = RunJob(_spec(1), str(tmp_path), 1)
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is job and again.args == () and again.kwargs == {}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the local job's task in /proc (Linux)")
def test_a_preempted_slurm_job_is_requeued_and_continues_its_run(tmp_path):
    submitit = pytest.importorskip("submitit")
    spec = _spec(8)
    study = open_study(tmp_path / "s", "smoke")
    executor = submitit.AutoExecutor(folder=study / "submitit", cluster="local")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(RunJob(spec, str(study), 1))
    run_dir, deadline = run_path(spec, study), time.monotonic() + 120
    while not (run_dir / CHECKPOINT).exists():  # the first epoch is saved
        assert not job.done() and time.monotonic() < deadline, job.stderr()
        time.sleep(0.01)
    # Slurm's notice of a preemption (or of the time limit): SIGUSR2 to the job's tasks, which submitit's
    # handler answers by calling the job's checkpoint() and requeueing what it returns. The local executor's
    # job is a controller process whose child is the task.
    (task,) = Path(f"/proc/{job._process.pid}/task/{job._process.pid}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)
    assert Path(job.result()) == run_dir
    log = job.stdout()
    assert "Calling checkpoint method" in log and "Requeued job" in log and log.count("Starting with") == 2
    assert run_state(run_dir, spec.key()) == "done"
    whole = execute(spec, open_study(tmp_path / "whole", "smoke"))  # the same run, never interrupted
    assert_same_numbers(run_dir, whole)
