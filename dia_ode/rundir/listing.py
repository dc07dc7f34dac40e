"""What the run directories under a folder hold: command, model, progress, key metric and status.

A run's status is read from its files, never from a registry: "running" while a process holds its
lock, "finished" once summary.json has results, "interrupted" or "failed" as the trainer (or the
CLI's clean-up) wrote it, and "interrupted" for a run killed outright (a checkpoint, no summary).
A seed group (train --seeds) shows its seeds' progress and the mean of its key metric; it is
"running" while one of its runs is. A run whose files cannot be read (a FIFO where a file belongs,
malformed or deeply nested JSON, a value of the wrong type) is "unreadable", with the reason, and the
other runs are listed as ever: one broken folder never hides the rest.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dia_ode.rundir.checkpoints import CHECKPOINT, brief
from dia_ode.rundir.directory import RUN_NAME
from dia_ode.rundir.jsonio import read_jsonl
from dia_ode.rundir.lock import LOCK_FILE, is_locked
from dia_ode.rundir.summary import (SEED_GROUP_COMMAND, has_results, is_seed_group, read_config, read_summary,
                                    summary_status)
from dia_ode.util.files import UnreadableFile, file_kind

STATUSES = ("running", "finished", "interrupted", "failed", "incomplete", "unreadable")


@dataclass(frozen=True)
class RunInfo:
    """One run directory as `dia-ode ls runs` shows it.

    Attributes:
        path: the directory.
        command: the command that made it (train, compare, stepsize, ...).
        model: the trained or analysed model, if any.
        dataset: its dataset, if any.
        epochs_done: epochs in metrics.jsonl (training runs).
        epochs: epochs planned (training runs).
        metric: (name, value) of the key test metric, once finished (a seed group: its mean).
        status: one of STATUSES.
        seeds_done: a seed group's runs that have results.
        seeds: a seed group's number of seeds.
        reason: why an "unreadable" run could not be read (one line), else None.
    """

    path: Path
    command: str
    model: str | None
    dataset: str | None
    epochs_done: int | None
    epochs: int | None
    metric: tuple[str, float] | None
    status: str
    seeds_done: int | None = None
    seeds: int | None = None
    reason: str | None = None


def run_status(run_dir: str | os.PathLike, summary: dict | None = None) -> str:
    """The status of one run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    _refuse_odd_lock(run_dir)
    if is_locked(run_dir):
        return "running"
    summary = read_summary(run_dir) if summary is None else summary
    if summary:
        return _summary_status(run_dir, summary)
    return "interrupted" if (run_dir / CHECKPOINT).is_file() else "incomplete"


def _summary_status(run_dir: Path, summary: dict) -> str:
    """summary_status, refused (UnreadableFile) when summary.json's status is not a string."""
    status = summary_status(summary)
    if not isinstance(status, str):
        raise UnreadableFile(run_dir / "summary.json", "'status' is not a string")
    return status


def _refuse_odd_lock(run_dir: Path) -> None:
    """UnreadableFile when the run's .lock is there but not a regular file: peeking at a FIFO would block."""
    try:
        mode = os.stat(run_dir / LOCK_FILE).st_mode
    except OSError:  # none (the usual case), or a dangling link: the lock module's business
        return
    if not stat.S_ISREG(mode):
        raise UnreadableFile(run_dir / LOCK_FILE, file_kind(mode), not_regular=True)


def _group_status(group_dir: Path, seed_runs: list[Path], summary: dict) -> str:
    """A seed group's status: running while a seed's run is, else its own summary's, else its runs'."""
    statuses = [run_status(p) for p in seed_runs]
    if "running" in statuses:
        return "running"
    if summary:
        return _summary_status(group_dir, summary)
    return next((s for s in ("failed", "interrupted") if s in statuses), "incomplete")


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    """A RunInfo read from a run directory's config.json, summary.json and metrics.jsonl."""
    run_dir = Path(run_dir)
    config, summary = read_config(run_dir, strict=True), read_summary(run_dir, strict=True)
    where = run_dir / "config.json"
    command = _typed(config, "command", str, where, "a string") or "?"
    model = _typed(config, "model", str, where, "a string")
    dataset = _typed(config, "dataset", str, where, "a string")
    if is_seed_group(config):
        seed_runs = sorted(p for p in (run_dir / "runs").glob("*") if p.is_dir() and RUN_NAME.match(p.name))
        metrics = _typed(summary, "metrics", dict, run_dir / "summary.json", "a JSON object") or {}
        means = {k: v["mean"] for k, v in metrics.items()
                 if k.startswith("test_") and isinstance(v, dict) and _is_number(v.get("mean"))}
        key = _key_metric(means)
        return RunInfo(run_dir, SEED_GROUP_COMMAND, model, dataset, None, None,
                       (f"mean_{key}", means[key]) if key else None, _group_status(run_dir, seed_runs, summary),
                       seeds_done=sum(has_results(read_summary(p)) for p in seed_runs),
                       seeds=len(_typed(config, "seeds", list, where, "a list") or []))
    done = epochs = None
    if command == "train":
        done = len(read_jsonl(run_dir / "metrics.jsonl", partial_last=True))  # [] when there is none
        epochs = _typed(config, "epochs", int, where, "an integer")
    tests = {k: v for k, v in summary.items() if k.startswith("test_") and _is_number(v)}
    key = _key_metric(tests)
    return RunInfo(run_dir, command, model, dataset, done, epochs,
                   (key, summary[key]) if key else None, run_status(run_dir, summary))


def _typed(data: dict, key: str, kind: type, where: Path, expected: str):
    """data[key] (None when absent or null); UnreadableFile naming the file and key when it is not `kind`."""
    value = data.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise UnreadableFile(where, f"'{key}' is not {expected}")
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unreadable_run(run_dir: str | os.PathLike, err: Exception) -> RunInfo:
    """The RunInfo of a run directory that run_info cannot read: status "unreadable" and the reason
    (its files named relative to the run directory)."""
    run_dir = Path(run_dir)
    if isinstance(err, UnreadableFile):
        reason = str(err).replace(f"{run_dir}{os.sep}", "")
    else:
        reason = f"{type(err).__name__}: {brief(str(err))}".rstrip(": ")
    return RunInfo(run_dir, "?", None, None, None, None, None, "unreadable", reason=reason)


def _key_metric(values: dict[str, float]) -> str | None:
    """test_acc where there is one, else the first test metric by name."""
    return "test_acc" if "test_acc" in values else min(values, default=None)


def list_runs(out: str | os.PathLike) -> list[RunInfo]:
    """Every run directory directly under `out`, in name order: numbered ones (`NNNNN-...`) and any other
    folder with a config.json (a report study names its runs by cache key)."""
    out = Path(out)
    if not out.is_dir():
        return []
    dirs = sorted(p for p in out.iterdir()
                  if p.is_dir() and (RUN_NAME.match(p.name) or (p / "config.json").exists()))
    return [_run_info_or_unreadable(p) for p in dirs]


def _run_info_or_unreadable(run_dir: Path) -> RunInfo:
    try:
        return run_info(run_dir)
    except Exception as err:  # noqa: BLE001 -- a listing shows a broken run as such, whatever broke it
        return unreadable_run(run_dir, err)
