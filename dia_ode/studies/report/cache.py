"""The study directory of a reproduction report: every run it needs, cached by the hash of its config.

    <study>/study.json                    {"format": "dia_ode.study", "version": CACHE_VERSION, ...}
    <study>/runs/<key>-<description>/     one ordinary training run directory per RunSpec

A run's directory name starts with RunSpec.key(), so a rerun of the report finds it again; its state
decides what `execute` does. Unless the run is done (which nothing changes again), the state is read
under the run's lock (rundir/lock.py), held from that read through clearing and training: a second
report on the same study meets the lock and stops with RunLocked instead of training the run twice.

- finished (summary.json says "status": "finished") or stopped by one of claim.TERMINAL_ERRORS
  (TrainingDiverged, StepBudgetExceeded: resuming on CPU repeats the same epochs exactly and would
  fail again): reused as it is, nothing is written;
- a checkpoint: resumed with engine.resume_training (the records of the recorders repaired first,
  recorders.sync_records), so a killed report retrains at most the epoch it was in;
- otherwise (new, or killed before its first checkpoint): started afresh;
- stale (config.json holds no cache key, or summary.json has no status: not written by this cache's
  trainer, so nothing says it is this RunSpec's finished run): cleared and started afresh, with a log
  line naming it.

A run directory whose config.json holds another key than the RunSpec's (its name was found, its
content is another run's) is refused with a ValueError naming it: nothing is reused or overwritten.
A run folder (or the study's runs/ folder) that is a symbolic link is refused with
safe_write.UnsafePath (a ValueError): nothing is trained into, cleared in or read as done from the
folder it points to.

A study written by another CACHE_VERSION is refused (ValueError naming its study.json): the keys of
its runs hash configs whose meaning may have changed since.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import asdict
from pathlib import Path

from dia_ode.engine import resume_training, run_training
from dia_ode.rundir import (CHECKPOINT, load_checkpoint, lock_run, mark_failed, read_config, read_summary,
                            run_description, versions, write_json)
from dia_ode.rundir.jsonio import atomic_write_text
from dia_ode.rundir.safe_write import link_refusal, refuse_link, remove_entry
from dia_ode.studies.report.claim import CACHE_VERSION, DIVERGED, FINISHED, TERMINAL_ERRORS, RunSpec, run_outcome
from dia_ode.studies.report.command_line import train_command
from dia_ode.studies.report.recorders import RECORDS_DIR, epoch_callback, sync_records
from dia_ode.util.files import read_json

STUDY_FILE = "study.json"
STUDY_FORMAT = "dia_ode.study"
RUNS_DIR = "runs"
STALE = "stale"  # run_state: a run directory that is not verifiably this cache's (see the module docstring)

RUN_FOLDERS = (RECORDS_DIR, CHECKPOINT.parts[0], "figures")  # the folders a run's training writes into

log = logging.getLogger(__name__)


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
            study = read_json(path)  # a regular file only; malformed or too deeply nested JSON is one line
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} cannot be read as a study ({getattr(err, 'reason', type(err).__name__)})") from None
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
    """"done" (reuse), "resume" (has a checkpoint), "new" (start afresh) or "stale" (clear, start afresh);
    see the module docstring. Without `key` the config's key is not checked, and a linked run folder
    reads as "new" (never done).

    Raises:
        ValueError: `key` is given and the run's config.json holds another one.
        UnsafePath: `key` is given and the run folder or the study's runs/ folder is a symbolic link.
    """
    run_dir = Path(run_dir)
    linked = next((p for p in (run_dir, run_dir.parent) if p.is_symlink()), None)
    if linked is not None:
        if key is not None:
            raise link_refusal(linked, "folder")
        return "new"
    if stale_reason(run_dir, key) is not None:
        return STALE
    if run_outcome(run_dir) in (FINISHED, DIVERGED):
        return "done"
    return "resume" if (run_dir / CHECKPOINT).is_file() else "new"


def stale_reason(run_dir: str | Path, key: str | None = None) -> str | None:
    """Why the run directory cannot be this cache's run of `key` as it stands (None when it can).

    Raises:
        ValueError: its config.json holds another key than `key`.
    """
    run_dir = Path(run_dir)
    config, summary = read_config(run_dir), read_summary(run_dir)
    if key is not None and run_dir.exists():
        found = config.get("key")
        if found is not None and found != key:
            raise ValueError(f"{run_dir} holds the run of cache key {found}, not {key}: move it out of the study")
        if found is None and (config or summary or (run_dir / CHECKPOINT).exists()):
            return "its config.json holds no cache key"
    if summary and "status" not in summary:
        return "its summary.json has no status"
    return None


def execute(spec: RunSpec, study_dir: str | Path, progress: bool = False) -> Path:
    """Train, resume or reuse the run of `spec` in the study; return its run directory.

    Unless the run is done, its lock is taken before its state is read (again) and held through clearing
    and training, so two reports on one study never both train a run: the second stops with RunLocked
    (or, once the first has finished, reuses the run).

    Raises:
        ValueError: the run directory holds another key's run (run_state).
        UnsafePath: the run folder (or runs/) is a symbolic link, or a link sits where a file of the run belongs.
        RunLocked: another process holds the run.
        Whatever the training raises (TERMINAL_ERRORS, a data error); the run directory keeps its last
        checkpoint and summary.json says why it stopped.
    """
    run_dir = run_path(spec, study_dir)
    if run_state(run_dir, spec.key()) == "done":  # a link or another key's run is refused here, before anything
        return run_dir  # is made; a done run is never changed again, so reusing it needs no lock
    if not run_dir.exists():
        epoch_callback(spec.recorders, run_dir)  # unknown recorders fail before anything is made
    run_dir.mkdir(parents=True, exist_ok=True)
    with lock_run(run_dir):  # reentrant: resume_training and the trainer take it again inside
        state = run_state(run_dir, spec.key())
        if state == "done":
            return run_dir
        if state == "resume":
            for folder in RUN_FOLDERS:  # resumed into: a link would have it write into the folder it points to
                refuse_link(run_dir / folder, "folder")
            sync_records(spec.recorders, run_dir, list(load_checkpoint(run_dir / CHECKPOINT)["history"]))
            resume_training(run_dir, progress=progress, on_epoch_end=epoch_callback(spec.recorders, run_dir))
            return run_dir
        on_epoch_end = epoch_callback(spec.recorders, run_dir)
        if state == STALE:
            log.warning(f"run {run_dir}: {stale_reason(run_dir, spec.key())}; cleared and trained afresh")
        _start(spec, run_dir)
        try:
            run_training(spec.config, run_dir, progress=progress, on_epoch_end=on_epoch_end)
        except TERMINAL_ERRORS as err:
            if not read_summary(run_dir):  # stopped before its first checkpoint: the trainer wrote no record
                mark_failed(run_dir, err, epochs_done=0, epochs=spec.config.epochs)
            raise
    return run_dir


def _start(spec: RunSpec, run_dir: Path) -> None:
    """A fresh run directory, under the run's lock (execute holds it): what a killed or stale run left is
    cleared (a link among it is removed itself, never what it points to), then config.json and cmd.txt."""
    for leftover in ("metrics.jsonl", "summary.json", *RUN_FOLDERS):
        remove_entry(run_dir / leftover)
    write_json(run_dir / "config.json", {"command": "train", **asdict(spec.config), "key": spec.key(),
                                         "recorders": list(spec.recorders), "versions": versions()})
    atomic_write_text(run_dir / "cmd.txt", f"{train_command(spec.config)}\n# run of a dia-ode report study, "
                                           f"cache key {spec.key()}\n")
