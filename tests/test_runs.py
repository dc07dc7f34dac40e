"""Run management and logs: names, locks, failed commands, epoch lines, resume and extension, SIGTERM, `ls runs`.

One tiny run (resnet20 at base_width 4, one epoch of digits) is trained once for the module; two
tests start a subprocess (a lock holder, and a training run stopped by SIGTERM).
"""

import math
import json
import shutil
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.engine import TrainConfig, learning_rate, resume_training
from dia_ode.engine import report
from dia_ode.rundir import (CHECKPOINT, RunLocked, failed_runs_cleanup, list_runs, load_checkpoint, lock_run,
                            read_jsonl, run_description, run_status, start_run)

TINY = ["--model", "resnet20", "--model-option", "base_width=4", "--batch-size", "128", "--device", "cpu"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _env():
    return {**{k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(out, run_dir, output) of a one-epoch run."""
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", *TINY, "--epochs", 1, "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return out, run_dir, result.output


def test_default_name_shows_ablation_options_and_the_name_tag(tmp_path):
    result = invoke("train", "--model", "dia_resnet20", "--sam", "cbam", "--no-output-gate", "--model-option",
                    "base_width=2", "--batch-size", "256", "--device", "cpu", "--epochs", 1, "--no-progress",
                    "--out", tmp_path, "--name", "abl1")
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name == "00000-train-dia_resnet20-base_width=2-output_gate=False-sam=cbam-digits-abl1"
    assert json.loads((run_dir / "config.json").read_text())["name"] == "abl1"
    bad = invoke("train", "--name", "a/b", "--out", tmp_path)
    assert bad.exit_code == 2 and "--name" in bad.output and "Traceback" not in bad.output


def test_run_description_is_filesystem_safe_and_short():
    plain = run_description("train", "dia_resnet56", {}, "digits")
    assert plain == "train-dia_resnet56-digits"
    odd = run_description("train", "odenet", {"method": "a/b c"}, "digits")
    assert "/" not in odd and " " not in odd
    long_a = run_description("train", "vit_tiny", {f"option_{i}": 10 ** i for i in range(12)}, "fashion-mnist")
    long_b = run_description("train", "vit_tiny", {f"option_{i}": 10 ** i + 1 for i in range(12)}, "fashion-mnist")
    assert len(long_a) <= 100 and long_a.endswith("fashion-mnist") and long_a != long_b


def test_a_run_directory_has_no_empty_folders_and_a_failed_command_leaves_none(tmp_path, trained):
    run_dir = start_run(tmp_path / "a", "analysis", {"command": "x"}, argv=["t"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["cmd.txt", "config.json"]
    # compare --from a training run without a checkpoint fails after making its directory: none is left
    no_ckpt = start_run(tmp_path / "b", "train", {"command": "train"}, argv=["t"])
    result = invoke("compare", "--from", no_ckpt, "--out", tmp_path / "c", "--no-progress")
    assert result.exit_code == 2, result.output
    assert list((tmp_path / "c").iterdir()) == []
    # a failure after results were written marks the run failed instead of removing it
    with pytest.raises(OSError):
        with failed_runs_cleanup():
            kept = start_run(tmp_path / "d", "analysis", {"command": "x"}, argv=["t"])
            (kept / "result.json").write_text("{}")
            empty = start_run(tmp_path / "d", "analysis", {"command": "x"}, argv=["t"])
            raise OSError("disk full")
    assert not empty.exists()
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["status"] == "failed" and "disk full" in summary["error"]


def test_epoch_lines_print_with_or_without_progress_and_resume_says_so(trained):
    out, run_dir, output = trained
    lines = [line for line in output.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1  train_loss ") and " val_acc " in lines[0]
    assert " lr 0.1 " in lines[0] and "nfe" not in lines[0]  # discrete model: no NFE column
    finished = invoke("train", "--resume", run_dir)
    assert finished.exit_code == 0, finished.output
    assert f"run {run_dir} is finished (1 of 1 epochs); extend it with --epochs N" in finished.output
    assert "epoch " not in finished.output  # nothing trained


def test_extending_restarts_the_schedule_and_config_records_it(tmp_path):
    assert invoke("train", *TINY, "--epochs", 2, "--no-progress", "--out", tmp_path).exit_code == 0
    (run_dir,) = tmp_path.iterdir()
    refused = invoke("train", "--resume", run_dir, "--epochs", 1)
    assert refused.exit_code == 2 and "--epochs" in refused.output
    result = invoke("train", "--resume", run_dir, "--epochs", 3)  # progress on, but CliRunner's is no terminal
    assert result.exit_code == 0, result.output
    assert "it/s" not in result.output and "%|" not in result.output  # epoch lines, no bars in a log file
    assert "resumed at epoch 2 of 3" in result.output and "extended from 2 to 3 epochs" in result.output
    assert [line[:9] for line in result.output.splitlines() if line.startswith("epoch ")] == ["epoch 3/3"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 3 and config["extended_from"] == [2]
    lrs = [row["lr"] for row in read_jsonl(run_dir / "metrics.jsonl")]
    assert lrs == pytest.approx([0.1, 0.05, 0.1])  # cosine over 2, then a warm restart over the added one
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_schedule_segments_keep_planned_epochs_and_shortening_is_refused():
    cfg = TrainConfig(epochs=4, lr=0.2).extended(6).extended(9)
    assert cfg.extended_from == (4, 6)
    cfg.validate()
    lrs = [learning_rate(*cfg.schedule_segment(e)) for e in range(9)]
    plain4, plain2, plain3 = TrainConfig(epochs=4, lr=0.2), TrainConfig(epochs=2, lr=0.2), TrainConfig(epochs=3, lr=0.2)
    expected = [learning_rate(plain4, e) for e in range(4)] + [learning_rate(plain2, e) for e in range(2)] + \
        [learning_rate(plain3, e) for e in range(3)]
    assert lrs == pytest.approx(expected)
    warm = TrainConfig(epochs=10, schedule="warmup_cosine", warmup_epochs=2).extended(15)
    assert warm.schedule_segment(12)[0].warmup_epochs == pytest.approx(1.0) and warm.schedule_segment(12)[1] == 2
    with pytest.raises(ValueError, match="fewer"):
        TrainConfig(epochs=4).extended(3)
    with pytest.raises(ValueError, match="extended_from"):
        TrainConfig(epochs=4, extended_from=(5,)).validate()


def test_a_second_process_on_a_held_run_exits_2_naming_the_holder(trained):
    out, run_dir, _ = trained
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from dia_ode.rundir import lock_run; "
                               "lock_run(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(run_dir)],
                              stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = invoke("train", "--resume", run_dir, "--epochs", 2)
        assert result.exit_code == 2, result.output
        assert str(run_dir) in result.output and f"process {holder.pid} on " in result.output
        assert [i.status for i in list_runs(out)] == ["running"]
        with pytest.raises(RunLocked):
            lock_run(run_dir, wait=0)
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / ".lock").exists()  # left by a killed process: stale, and taken over
    with lock_run(run_dir):
        assert run_status(run_dir) == "running"
    assert not (run_dir / ".lock").exists() and run_status(run_dir) == "finished"
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 1  # nobody trained


def test_sigterm_keeps_the_checkpoint_prints_the_resume_command_and_resume_continues(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "dia_ode", "train", *TINY, "--epochs", "50", "--no-progress",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f"*/{CHECKPOINT}")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    (run_dir,) = tmp_path.iterdir()
    assert proc.returncode == 143, stderr[-2000:]
    assert f"dia-ode train --resume {run_dir}" in stderr and "Traceback" not in stderr
    done = load_checkpoint(run_dir / CHECKPOINT)["epoch"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_done"] == done >= 1
    assert [i.status for i in list_runs(tmp_path)] == ["interrupted"]
    assert not (run_dir / ".lock").exists()

    class Stop(Exception):
        pass

    def stop(epoch, row):
        raise Stop

    with pytest.raises(Stop):  # one more epoch is enough to show the resume continues
        resume_training(run_dir, progress=False, on_epoch_end=stop)
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, done + 2))
    assert load_checkpoint(run_dir / CHECKPOINT)["epoch"] == done + 1


def test_ls_runs_lists_runs_with_metrics_and_status(trained, tmp_path):
    out, run_dir, _ = trained
    result = invoke("ls", "runs", "--out", out)
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()[:2]
    assert header.split() == ["run", "command", "model", "dataset", "epochs", "test", "metric", "status"]
    test_acc = json.loads((run_dir / "summary.json").read_text())["test_acc"]
    assert row.split() == [run_dir.name, "train", "resnet20", "digits", "1/1", f"test_acc={test_acc:.4f}", "finished"]
    assert "no run directories" in invoke("ls", "runs", "--out", tmp_path).output
    study_run = tmp_path / "0123456789abcdef-train-resnet20-digits-seed0"  # a report study's run, named by key
    shutil.copytree(run_dir, study_run)
    (tmp_path / "notes").mkdir()  # neither numbered nor holding a config.json: not a run
    listed = invoke("ls", "runs", "--out", tmp_path).output.splitlines()[1:]
    assert [line.split()[0] for line in listed] == [study_run.name]


def test_training_figure_has_a_title_words_for_labels_nfe_and_fitting_scales(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, folder, name: figures.append(fig))
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "train_acc": 0.5 + e / 100,
                "val_acc": 0.5, "nfe_forward": 20.0 + e, "nfe_backward": 30.0} for e in (1, 2, 3)]
    report.plot_history(history, ("loss", "acc"), tmp_path, title="00007-train-odenet: odenet on digits", nfe=True)
    report.plot_history(history, ("loss", "acc"), tmp_path)
    with_nfe, without = figures
    assert with_nfe._suptitle.get_text() == "00007-train-odenet: odenet on digits"
    loss, acc, nfe = with_nfe.axes
    assert len(without.axes) == 2
    assert (loss.get_ylabel(), acc.get_ylabel()) == ("loss", "accuracy")
    assert [t.get_text() for t in nfe.get_legend().get_texts()] == ["forward", "backward (adjoint)"]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["train", "validation"]
    assert loss.get_yscale() == acc.get_yscale() == nfe.get_yscale() == "linear"  # all span less than a decade
    report.plot_history([{**r, "train_loss": 10.0 ** -r["epoch"]} for r in history], ("loss",), tmp_path)
    assert figures[-1].axes[0].get_yscale() == "log"


# --- review fixes: resume device, bench --name, interruptions, locks, signals, logs, figures, status ------

TINY_CFG = dict(model="resnet20", model_options={"base_width": 4}, epochs=1, batch_size=128)


class Stop(Exception):
    pass


def _stop(*args):
    raise Stop


def test_resume_training_without_dist_resolves_the_requested_device(tmp_path, monkeypatch):
    from dia_ode.engine import run_training, trainer

    run_dir = start_run(tmp_path, "train", {"command": "train", **TrainConfig(**TINY_CFG, device="auto").__dict__},
                        argv=["t"])
    with pytest.raises(Stop):  # after the first checkpoint: a resumable run
        run_training(TrainConfig(**{**TINY_CFG, "epochs": 2}, device="auto"), run_dir, progress=False,
                     on_epoch_end=_stop)
    asked = []

    def resolve(device):
        asked.append(device)
        raise Stop  # enough: the trainer is choosing its device

    monkeypatch.setattr(trainer, "resolve_device", resolve)
    with pytest.raises(Stop):
        resume_training(run_dir, epochs=2, device="cpu", progress=False)
    assert asked == ["cpu"]  # not a CPU context made for the lock and passed on
    assert not (run_dir / ".lock").exists()


def test_bench_group_name_reaches_the_subcommand_and_its_own_name_wins(tmp_path):
    bench = ["train-step", "--models", "resnet20", "--batch-size", 2, "--image-size", 8, "--steps", 1,
             "--rounds", 1, "--device", "cpu", "--out", tmp_path]
    assert invoke("bench", "--name", "grp", *bench).exit_code == 0
    assert invoke("bench", "--name", "grp", *bench, "--name", "own").exit_code == 0
    first, second = sorted(tmp_path.iterdir())
    assert first.name == "00000-bench-train-step-grp" and second.name == "00001-bench-train-step-own"
    assert json.loads((first / "config.json").read_text())["name"] == "grp"


def test_an_interrupted_seed_group_is_marked_interrupted_not_failed(tmp_path, monkeypatch):
    from dia_ode.studies import seeds

    def interrupted(cfg, run_dir, **kwargs):
        (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
        raise KeyboardInterrupt

    monkeypatch.setattr(seeds, "run_training", interrupted)
    result = invoke("train", *TINY, "--epochs", 1, "--seeds", "0,1", "--no-progress", "--out", tmp_path)
    assert result.exit_code == 130, result.output
    group = next(tmp_path.iterdir())
    (seed_run,) = (group / "runs").iterdir()  # the second seed never started
    for run in (group, seed_run):
        summary = json.loads((run / "summary.json").read_text())
        assert summary == {"status": "interrupted", "error": "interrupted (Ctrl-C)"}
    with pytest.raises(SystemExit):
        with failed_runs_cleanup():
            run = start_run(tmp_path / "t", "x", {"command": "x"}, argv=["t"])
            (run / "result.json").write_text("{}")
            raise SystemExit(143)
    assert json.loads((run / "summary.json").read_text())["error"] == "terminated (SIGTERM)"


def test_a_file_system_without_locks_is_a_one_line_refusal_and_reads_as_idle(tmp_path, monkeypatch):
    import errno
    import types

    from dia_ode.rundir import lock as lock_module

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    fake = types.SimpleNamespace(flock=no_locks, LOCK_EX=1, LOCK_SH=2, LOCK_NB=4)
    monkeypatch.setattr(lock_module, "fcntl", fake)
    run_dir = start_run(tmp_path, "train", {"command": "train"}, argv=["t"])
    with pytest.raises(RunLocked, match="cannot lock run .*No locks available"):
        lock_run(run_dir)
    (run_dir / ".lock").write_text("1 host\n")
    assert run_status(run_dir) == "incomplete"  # not "running", no traceback

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(lock_module.os, "open", unreadable)
    assert not lock_module.is_locked(run_dir)
    with pytest.raises(RunLocked, match="Permission denied"):
        lock_run(run_dir)


def test_sigterm_handler_restores_the_default_when_the_previous_one_is_unknown(monkeypatch):
    from dia_ode.cli import runtime

    calls = []

    def fake_signal(signum, handler):
        calls.append(handler)
        if handler is None:
            raise TypeError("signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object")
        return None  # what signal.signal returns for a handler installed outside Python

    monkeypatch.setattr(runtime.signal, "signal", fake_signal)
    with runtime.sigterm_as_interrupt():
        pass
    assert calls == [runtime._raise_terminated, signal.SIG_DFL]


def test_library_log_lines_print_once_even_with_a_root_handler(capsys):
    import logging

    from dia_ode.cli.runtime import library_log

    seen = []

    class Root(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root, handler = logging.getLogger(), Root()
    root.addHandler(handler)
    try:
        with library_log():
            logging.getLogger("dia_ode.engine.trainer").info("epoch 1/1")
        assert capsys.readouterr().out == "epoch 1/1\n" and seen == []
        assert logging.getLogger("dia_ode").propagate  # restored afterwards
    finally:
        root.removeHandler(handler)


def test_epoch_line_matches_its_docstring_example():
    row = {"epoch": 3, "train_loss": 0.412, "val_acc": 0.88, "lr": 0.095, "seconds": 8.1, "nfe_forward": 14,
           "nfe_backward": 0, "nfe_forward_max": 20, "rejected_steps": 0.1234, "stiff_fraction": 0.031,
           "h_lambda_median": 0.4104}
    example = report.epoch_line.__doc__.split("`")[1]
    assert report.epoch_line(row, 30, nfe=True) == example
    untested = {**row, "stiff_fraction": math.nan, "h_lambda_median": math.nan}  # a fixed-step method: no test
    assert report.epoch_line(untested, 30, nfe=True).endswith("nfe 14.0/0.0  max 20 rej 0.12")
    assert report.undefined_note(untested, set()) is None  # undefined by construction: nothing to explain


def test_choose_scale_is_the_one_rule_of_every_figure(monkeypatch, tmp_path):
    import math

    from dia_ode import analysis
    from dia_ode.rundir import choose_scale
    from dia_ode.studies import compare_figures

    assert choose_scale([6, 26]) == "linear"  # under a decade: discrete vs adaptive NFE
    assert choose_scale([8, 100]) == "log"
    assert choose_scale([1, 10]) == "linear"  # exactly a decade: not more
    assert choose_scale([0.0, 100]) == choose_scale([-1, 1e3]) == choose_scale([]) == "linear"
    assert choose_scale([1.0, 5.0, math.nan, math.inf, None]) == "linear"
    assert analysis.choose_scale is compare_figures.choose_scale is choose_scale
    assert not hasattr(report, "_scale")
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, folder, name: figures.append(fig))
    history = [{"epoch": e, "train_loss": v, "val_loss": v} for e, v in ((1, 1.0), (2, 10.0))]
    report.plot_history(history, ("loss",), tmp_path)
    assert figures[0].axes[0].get_yscale() == "linear"  # the training figure decides like the others


def test_one_reader_says_whether_a_run_has_results(tmp_path):
    from dia_ode.rundir import RUN_NAME, has_results, read_summary

    run_dir = start_run(tmp_path, "train", {"command": "train"}, argv=["t"])
    assert read_summary(run_dir) == {} and not has_results(read_summary(run_dir))
    for text, results, status in (("not json", False, "incomplete"), ('["a list"]', False, "incomplete"),
                                  ('{"status": "failed", "error": "x"}', False, "failed"),
                                  ('{"test_acc": 0.9}', True, "finished"),  # written before the status field
                                  ('{"status": "finished", "test_acc": 0.9}', True, "finished")):
        (run_dir / "summary.json").write_text(text)
        assert has_results(read_summary(run_dir)) is results and run_status(run_dir) == status
    assert RUN_NAME.match(run_dir.name)


def test_only_runs_started_inside_a_cleanup_are_recorded_and_only_there(tmp_path):
    import threading

    from dia_ode.rundir import directory

    start_run(tmp_path / "outside", "x", {"command": "x"}, argv=["t"])
    assert directory._started.get() is None  # nothing accumulates outside a command
    other = []
    with pytest.raises(OSError):
        with failed_runs_cleanup():
            mine = start_run(tmp_path / "a", "x", {"command": "x"}, argv=["t"])
            thread = threading.Thread(target=lambda: other.append(start_run(tmp_path / "b", "x", {}, argv=["t"])))
            thread.start()
            thread.join()
            raise OSError("disk full")
    assert not mine.exists() and other[0].exists()  # another thread's run is not this block's to remove
    assert directory._started.get() is None
