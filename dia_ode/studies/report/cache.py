"""The study directory of a reproduction report: every run it needs, cached by the hash of its config.

    <study>/study.json                    {"format": "dia_ode.study", "version": CACHE_VERSION, ...}
    <study>/runs/<key>-<description>/     one ordinary training run directory per RunSpec

A run's directory name starts with RunSpec.key(), so a rerun of the report finds it again; its state
decides what `execute` does:

- finished (summary.json has results) or stopped by one of claim.TERMINAL_ERRORS (TrainingDiverged,
  StepBudgetExceeded: resuming on CPU repeats the same epochs exactly and would fail again): reused as
  it is, nothing is written;
- a checkpoint: resumed with engine.resume_training (the records of the recorders repaired first,
  recorders.sync_records), so a killed report retrains at most the epoch it was in;
- otherwise (new, or killed before its first checkpoint): started afresh.

A run directory whose config.json holds another key than the RunSpec's (its name was found, its
content is another run's) is refused with a ValueError naming it: nothing is reused or overwritten.

A study written by another CACHE_VERSION is refused (ValueError naming its study.json): the keys of
its runs hash configs whose meaning may have changed since.
"""

from __future__ import annotations

import datetime
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from dia_ode.engine import resume_training, run_training
from dia_ode.rundir import (CHECKPOINT, load_checkpoint, lock_run, mark_failed, read_config, read_summary,
                            run_description, versions, write_json)
from dia_ode.studies.report.claim import CACHE_VERSION, DIVERGED, FINISHED, TERMINAL_ERRORS, RunSpec, run_outcome
from dia_ode.studies.report.command_line import train_command
from dia_ode.studies.report.recorders import RECORDS_DIR, epoch_callback, sync_records

STUDY_FILE = "study.json"
STUDY_FORMAT = "dia_ode.study"
RUNS_DIR = "runs"


def open_study(study_dir: str | Path, budget: str, create: bool = True) -> Path:
    """The study directory, checked (or made, with its study.json, when `create` and it has none).

    Raises:
        ValueError: study.json is not a study's, or was written by another cache version; or the
            directory has files but no study.json (it is something else); or it has none and not create.
    """
    study_dir = Path(study_dir)
    path = study_dir / STUDY_FILE
    if path.is_file():
        try:
            study = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} cannot be read as a study ({type(err).__name__})") from None
        if not isinstance(study, dict) or study.get("format") != STUDY_FORMAT:
            raise ValueError(f"{path} is not a dia_ode study file")
        if study.get("version") != CACHE_VERSION:
            raise ValueError(f"{path} was written by study cache version {study.get('version')}, this dia_ode "
                             f"reads version {CACHE_VERSION}: start a new study")
        return study_dir
    if study_dir.is_dir() and any(p.name not in ("config.json", "cmd.txt", ".lock") for p in study_dir.iterdir()):
        raise ValueError(f"{study_dir} is not a study directory (no {STUDY_FILE})")
    if not create:
        raise ValueError(f"{study_dir} is not a study directory (no {STUDY_FILE})")
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"format": STUDY_FORMAT, "version": CACHE_VERSION, "budget": budget,
                      "created": datetime.datetime.now().isoformat(timespec="seconds"), "versions": versions()})
    return study_dir


def run_path(spec: RunSpec, study_dir: str | Path) -> Path:
    """`<study>/runs/<key>-train-<model>[-options]-<dataset>-seed<S>`: the key finds it, the rest is for people."""
    cfg = spec.config
    desc = run_description("train", cfg.model, cfg.model_options, cfg.dataset)
    return Path(study_dir) / RUNS_DIR / f"{spec.key()}-{desc}-seed{cfg.seed}"


def run_state(run_dir: str | Path, key: str | None = None) -> str:
    """"done" (reuse), "resume" (has a checkpoint) or "new" (start afresh); see the module docstring.

    Raises:
        ValueError: `key` is given and the run's config.json holds another one.
    """
    run_dir = Path(run_dir)
    if key is not None:
        found = read_config(run_dir).get("key")
        if found is not None and found != key:
            raise ValueError(f"{run_dir} holds the run of cache key {found}, not {key}: move it out of the study")
    if run_outcome(run_dir) in (FINISHED, DIVERGED):
        return "done"
    return "resume" if (run_dir / CHECKPOINT).is_file() else "new"


def execute(spec: RunSpec, study_dir: str | Path, progress: bool = False) -> Path:
    """Train, resume or reuse the run of `spec` in the study; return its run directory.

    Raises:
        ValueError: the run directory holds another key's run (run_state).
        Whatever the training raises (TERMINAL_ERRORS, RunLocked, a data error); the run directory
        keeps its last checkpoint and summary.json says why it stopped.
    """
    run_dir = run_path(spec, study_dir)
    state = run_state(run_dir, spec.key())
    if state == "done":
        return run_dir
    if state == "resume":
        with lock_run(run_dir):  # held from the records' repair through the resume (the lock is reentrant):
            sync_records(spec.recorders, run_dir, list(load_checkpoint(run_dir / CHECKPOINT)["history"]))
            resume_training(run_dir, progress=progress, on_epoch_end=epoch_callback(spec.recorders, run_dir))
        return run_dir
    on_epoch_end = epoch_callback(spec.recorders, run_dir)  # unknown recorders fail before anything is made
    _start(spec, run_dir)
    try:
        run_training(spec.config, run_dir, progress=progress, on_epoch_end=on_epoch_end)
    except TERMINAL_ERRORS as err:
        if not read_summary(run_dir):  # stopped before its first checkpoint: the trainer wrote no record
            mark_failed(run_dir, err, epochs_done=0, epochs=spec.config.epochs)
        raise
    return run_dir


def _start(spec: RunSpec, run_dir: Path) -> None:
    """A fresh run directory: what a run killed before its first checkpoint left is cleared, under the
    run's lock (a second report training the same run stops here with RunLocked)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with lock_run(run_dir):
        for leftover in ("metrics.jsonl", "summary.json"):
            (run_dir / leftover).unlink(missing_ok=True)
        shutil.rmtree(run_dir / RECORDS_DIR, ignore_errors=True)
        write_json(run_dir / "config.json", {"command": "train", **asdict(spec.config), "key": spec.key(),
                                             "recorders": list(spec.recorders), "versions": versions()})
        (run_dir / "cmd.txt").write_text(f"{train_command(spec.config)}\n# run of a dia-ode report study, "
                                         f"cache key {spec.key()}\n")
