"""Writes stay inside the run directory (issue 26, item 5): a symbolic link where a file or folder of a run
or study belongs is refused with one line, or replaced itself by an atomic write, and the file it points
to is never truncated, appended to or cleared. The study cache's races and stale runs: a report holds a
run's lock from reading its state through training, and reuses only a run it can tell is its own and finished."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import assert_one_line_usage_error
from dia_ode.cli import main
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import (CHECKPOINT, RunLocked, atomic_write_bytes, read_jsonl, save_checkpoint, start_run,
                            write_json, write_jsonl)
from dia_ode.rundir.jsonio import append_jsonl, atomic_write_text
from dia_ode.rundir.lock import holder, is_locked, lock_run
from dia_ode.rundir.safe_write import UnsafePath
from dia_ode.studies.claims import CLAIMS
from dia_ode.studies.report import cache
from dia_ode.studies.report.cache import STALE, execute, open_study, run_path, run_state
from dia_ode.studies.report.claim import AbstractClaim, ClaimResult, RunSpec, Verdict

TINY = dict(model="resnet20", epochs=1, batch_size=256, augment=False, device="cpu", seed=0,
            model_options={"base_width": 2})
SECRET = "precious content of a file outside the run\n"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])





def victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    path = tmp_path / name
    path.write_text(SECRET)
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished one-epoch tiny training run (copied by each test that changes it)."""
    cfg = TrainConfig(**TINY)
    run_dir = start_run(tmp_path_factory.mktemp("runs"), "train", {"command": "train", **dataclasses.asdict(cfg)},
                        argv=["dia-ode", "train"])
    run_training(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture
def run_copy(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    return run_dir


class OneRunClaim(AbstractClaim):
    """One tiny run (or none); the measure reads nothing, so the tests see only what the cache did."""

    id = "fake"
    kind = "paper"
    statement = "the cache trains what it must"
    paper = "none: a test claim"

    def __init__(self, specs: list[RunSpec]) -> None:
        self.specs = specs

    def runs(self, budget):
        return list(self.specs)

    def measure(self, run_dirs, budget):
        return ClaimResult({}, {}, Verdict("reproduced", "a test claim"))


def report(monkeypatch, specs, *args):
    monkeypatch.setitem(CLAIMS, "fake", OneRunClaim(specs))
    return CliRunner().invoke(main, ["report", "--no-progress", "--claims", "fake", *map(str, args)])


# ---- train --resume: the lock and cmd.txt ---------------------------------------------------------

def test_resume_with_a_linked_lock_exits_2_and_leaves_the_links_target(run_copy, tmp_path):
    target = victim(tmp_path)
    (run_copy / ".lock").symlink_to(target)
    result = invoke("train", "--resume", run_copy, "--epochs", 2, "--no-progress")
    assert_one_line_usage_error(result, "--resume", str(run_copy / ".lock"), "symbolic link")
    assert target.read_text() == SECRET  # not truncated, no PID written into it
    assert (run_copy / ".lock").is_symlink()
    assert [r["epoch"] for r in read_jsonl(run_copy / "metrics.jsonl")] == [1]  # nothing trained


def test_the_lock_refuses_a_hard_link_and_a_linked_lock_reads_as_idle(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    target = victim(tmp_path)
    os.link(target, run_dir / ".lock")
    with pytest.raises(RunLocked, match="hard link"):
        lock_run(run_dir)
    assert target.read_text() == SECRET
    (run_dir / ".lock").unlink()
    (run_dir / ".lock").symlink_to(target)
    with pytest.raises(RunLocked, match="symbolic link"):
        lock_run(run_dir)
    assert not is_locked(run_dir) and holder(run_dir) is None and target.read_text() == SECRET


def test_resume_with_a_linked_cmd_txt_exits_2_and_leaves_the_links_target(run_copy, tmp_path):
    target = victim(tmp_path)
    (run_copy / "cmd.txt").unlink()
    (run_copy / "cmd.txt").symlink_to(target)
    result = invoke("train", "--resume", run_copy, "--epochs", 2, "--no-progress")
    assert_one_line_usage_error(result, "--resume", str(run_copy / "cmd.txt"), "symbolic link")
    assert target.read_text() == SECRET  # nothing appended
    assert [r["epoch"] for r in read_jsonl(run_copy / "metrics.jsonl")] == [1]
    assert not (run_copy / ".lock").exists()  # released


# ---- atomic writes replace a link; appends and a linked checkpoints/ folder are refused ---------------

@pytest.mark.parametrize("write", [
    lambda p: write_json(p, {"a": 1}),
    lambda p: write_jsonl(p, [{"a": 1}]),
    lambda p: atomic_write_text(p, "text\n"),
    lambda p: atomic_write_bytes(p, lambda f: f.write(b"bytes")),
    lambda p: save_checkpoint(p, epoch=1, model={}, optimizer={}, history=[], config={}),
], ids=["write_json", "write_jsonl", "atomic_write_text", "atomic_write_bytes", "save_checkpoint"])
def test_an_atomic_write_replaces_a_link_and_leaves_its_target(tmp_path, write):
    target = victim(tmp_path)
    link = tmp_path / "run" / "file"
    link.parent.mkdir()
    link.symlink_to(target)
    write(link)
    assert target.read_text() == SECRET
    assert link.is_file() and not link.is_symlink()


def test_an_append_refuses_a_link_and_leaves_its_target(tmp_path):
    target = victim(tmp_path)
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(target)
    with pytest.raises(UnsafePath, match=f"^{link} is a symbolic link where a file belongs"):
        append_jsonl(link, {"epoch": 1})
    assert target.read_text() == SECRET
    append_jsonl(tmp_path / "plain.jsonl", {"epoch": 1})  # a plain file is appended to as before
    assert read_jsonl(tmp_path / "plain.jsonl") == [{"epoch": 1}]


def test_a_linked_checkpoints_folder_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePath, match="checkpoints is a symbolic link where a folder belongs"):
        save_checkpoint(tmp_path / "run" / CHECKPOINT, epoch=1, model={}, optimizer={}, history=[], config={})
    assert not any(elsewhere.iterdir())


# ---- the report: report.md, the cache's lock, a linked run folder ---------------------------------

def test_a_linked_report_md_is_replaced_and_its_target_untouched(tmp_path, monkeypatch):
    study = open_study(tmp_path / "study", "smoke")
    target = victim(tmp_path)
    (study / "report.md").symlink_to(target)
    result = report(monkeypatch, [], "--study", study)
    assert result.exit_code == 0, result.output
    assert target.read_text() == SECRET
    assert not (study / "report.md").is_symlink() and "### fake" in (study / "report.md").read_text()


def test_the_report_cache_refuses_a_linked_lock_and_leaves_its_target(tmp_path, epochs_trained):
    spec = RunSpec(TrainConfig(**TINY))
    study = open_study(tmp_path / "study", "smoke")
    run_dir = run_path(spec, study)
    run_dir.mkdir(parents=True)
    target = victim(tmp_path)
    (run_dir / ".lock").symlink_to(target)
    with pytest.raises(RunLocked, match=f"{run_dir / '.lock'} is a symbolic link"):
        execute(spec, study)
    assert target.read_text() == SECRET and not epochs_trained


@pytest.mark.parametrize("linked", ["run folder", "runs folder"])
def test_a_linked_run_folder_of_a_study_is_refused_and_its_target_untouched(tmp_path, monkeypatch, linked,
                                                                             epochs_trained):
    spec = RunSpec(TrainConfig(**TINY))
    study = open_study(tmp_path / "study", "smoke")
    run_dir = run_path(spec, study)
    elsewhere = tmp_path / "elsewhere"
    other_run = elsewhere / run_dir.name if linked == "runs folder" else elsewhere
    (other_run / "records").mkdir(parents=True)
    files = {"metrics.jsonl": '{"epoch": 1}\n', "summary.json": '{"status": "interrupted"}\n',
             "records/probe.jsonl": '{"epoch": 1}\n'}
    for name, text in files.items():
        (other_run / name).write_text(text)
    link = run_dir if linked == "run folder" else run_dir.parent
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePath, match=f"^{link} is a symbolic link where a folder belongs"):
        execute(spec, study)
    assert {name: (other_run / name).read_text() for name in files} == files and not epochs_trained
    assert sorted(p.name for p in other_run.iterdir()) == ["metrics.jsonl", "records", "summary.json"]
    dry = report(monkeypatch, [spec], "--study", study, "--dry-run")
    assert_one_line_usage_error(dry, "--study", str(link), "symbolic link")
    assert run_state(run_dir) == "new"  # without a key (the report's measure): a linked run is never done


def test_a_resume_refuses_a_linked_records_folder(tmp_path, epochs_trained):
    spec = RunSpec(TrainConfig(**TINY))
    study = open_study(tmp_path / "study", "smoke")
    run_dir = execute(spec, study)
    (run_dir / "summary.json").unlink()  # killed after its checkpoint: state "resume"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run_dir / "records").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePath, match=f"^{run_dir / 'records'} is a symbolic link where a folder belongs"):
        execute(spec, study)
    assert not any(elsewhere.iterdir()) and len(epochs_trained) == 1


# ---- stale runs: no key in config.json, no status in summary.json ---------------------------------

@pytest.mark.parametrize("stale", ["no key", "no status"])
def test_a_run_the_cache_cannot_tell_is_its_own_and_finished_is_retrained_and_named(tmp_path, monkeypatch, stale,
                                                                                    epochs_trained):
    spec = RunSpec(TrainConfig(**TINY))
    study = open_study(tmp_path / "study", "smoke")
    run_dir = run_path(spec, study)
    run_dir.mkdir(parents=True)
    config = {"command": "train", **dataclasses.asdict(spec.config)}
    write_json(run_dir / "config.json", config if stale == "no key" else {**config, "key": spec.key()})
    summary = {"test_acc": 0.99}
    write_json(run_dir / "summary.json", summary if stale == "no status" else {"status": "finished", **summary})
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    result = report(monkeypatch, [spec], "--study", study)
    assert result.exit_code == 0, result.output
    assert len(epochs_trained) == 1  # not reused
    why = "config.json holds no cache key" if stale == "no key" else "summary.json has no status"
    assert [line for line in result.output.splitlines() if str(run_dir) in line and why in line
            and "trained afresh" in line], result.output
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "config.json").read_text())["key"] == spec.key()
    assert run_state(run_dir, spec.key()) == "done"
    write_json(run_dir / "summary.json", summary)  # a status-less summary again: read as stale
    assert run_state(run_dir, spec.key()) == STALE and run_state(run_dir) == STALE
    write_json(run_dir / "summary.json", {"status": "finished", **summary})
    again = report(monkeypatch, [spec], "--study", study)  # now its own and finished: reused
    assert again.exit_code == 0 and len(epochs_trained) == 1 and "trained afresh" not in again.output


# ---- two reports on one study train a run once -----------------------------------------------------

SECOND_REPORT = """
import sys
from dia_ode.engine import Trainer, TrainConfig
from dia_ode.rundir import RunLocked
from dia_ode.studies.report.cache import execute
from dia_ode.studies.report.claim import RunSpec
count = []
original = Trainer._train_epoch
def counted(self, net, epoch):
    count.append(epoch)
    return original(self, net, epoch)
Trainer._train_epoch = counted
try:
    execute(RunSpec(TrainConfig(**{tiny!r})), {study!r})
    print("trained", len(count))
except RunLocked:
    print("locked", len(count))
"""


@pytest.mark.parametrize("moment", ["run_state", "_start"])
def test_two_reports_on_one_study_train_a_run_once(tmp_path, monkeypatch, moment, epochs_trained):
    """A second report starts at the worst moment of the first: just after it read the run's state, or just
    after it cleared the run folder. Exactly one of them trains the run, and metrics.jsonl has each epoch once."""
    spec = RunSpec(TrainConfig(**TINY))
    study = open_study(tmp_path / "study", "smoke")
    second = []
    original = getattr(cache, moment)

    def then_the_second_report(*args, **kwargs):
        value = original(*args, **kwargs)
        if not second:
            code = SECOND_REPORT.format(tiny=TINY, study=str(study))
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
            assert out.returncode == 0, out.stderr
            second.append(out.stdout.split())
        return value

    monkeypatch.setattr(cache, moment, then_the_second_report)
    run_dir = execute(spec, study)
    (outcome, second_epochs), = second
    assert len(epochs_trained) + int(second_epochs) == 1, (outcome, epochs_trained)
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [1]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
