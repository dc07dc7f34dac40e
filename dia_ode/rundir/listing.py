"""What the run directories under a folder hold: command, model, progress, key metric and status.

A run's status is read from its files, never from a registry: "running" while a process holds its
lock, "finished" once summary.json has results, "interrupted" or "failed" as the trainer (or the
CLI's clean-up) wrote it, and "interrupted" for a run killed outright (a checkpoint, no summary).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from dia_ode.rundir.checkpoints import CHECKPOINT
from dia_ode.rundir.directory import _RUN_NAME
from dia_ode.rundir.lock import is_locked

STATUSES = ("running", "finished", "interrupted", "failed", "incomplete")


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
        metric: (name, value) of the key test metric, once finished.
        status: one of STATUSES.
    """

    path: Path
    command: str
    model: str | None
    dataset: str | None
    epochs_done: int | None
    epochs: int | None
    metric: tuple[str, float] | None
    status: str


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_status(run_dir: str | os.PathLike, summary: dict | None = None) -> str:
    """The status of one run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return "running"
    summary = _read(run_dir / "summary.json") if summary is None else summary
    if summary:
        return summary.get("status", "finished")  # summaries written before the field existed are results
    return "interrupted" if (run_dir / CHECKPOINT).is_file() else "incomplete"


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    """A RunInfo read from a run directory's config.json, summary.json and metrics.jsonl."""
    run_dir = Path(run_dir)
    config, summary = _read(run_dir / "config.json"), _read(run_dir / "summary.json")
    command = config.get("command", "?")
    done = epochs = None
    if command == "train":
        metrics = run_dir / "metrics.jsonl"
        done = sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.is_file() else 0
        epochs = config.get("epochs")
    tests = sorted(k for k, v in summary.items() if k.startswith("test_") and isinstance(v, (int, float)))
    key = next((k for k in ("test_acc",) if k in tests), tests[0] if tests else None)
    return RunInfo(run_dir, command, config.get("model"), config.get("dataset"), done, epochs,
                   (key, summary[key]) if key else None, run_status(run_dir, summary))


def list_runs(out: str | os.PathLike) -> list[RunInfo]:
    """Every run directory directly under `out`, in number order."""
    out = Path(out)
    if not out.is_dir():
        return []
    dirs = sorted(p for p in out.iterdir() if p.is_dir() and _RUN_NAME.match(p.name))
    return [run_info(p) for p in dirs]
