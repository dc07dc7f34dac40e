"""What the run directories under a folder hold: command, model, progress, key metric and status.

A run's status is read from its files, never from a registry: "running" while a process holds its
lock, "finished" once summary.json has results, "interrupted" or "failed" as the trainer (or the
CLI's clean-up) wrote it, and "interrupted" for a run killed outright (a checkpoint, no summary).
A seed group (train --seeds) shows its seeds' progress and the mean of its key metric; it is
"running" while one of its runs is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dia_ode.rundir.checkpoints import CHECKPOINT
from dia_ode.rundir.directory import RUN_NAME
from dia_ode.rundir.lock import is_locked
from dia_ode.rundir.summary import (SEED_GROUP_COMMAND, has_results, is_seed_group, read_config, read_summary,
                                    summary_status)

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
        metric: (name, value) of the key test metric, once finished (a seed group: its mean).
        status: one of STATUSES.
        seeds_done: a seed group's runs that have results.
        seeds: a seed group's number of seeds.
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


def run_status(run_dir: str | os.PathLike, summary: dict | None = None) -> str:
    """The status of one run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):
        return "running"
    summary = read_summary(run_dir) if summary is None else summary
    if summary:
        return summary_status(summary)
    return "interrupted" if (run_dir / CHECKPOINT).is_file() else "incomplete"


def _group_status(seed_runs: list[Path], summary: dict) -> str:
    """A seed group's status: running while a seed's run is, else its own summary's, else its runs'."""
    statuses = [run_status(p) for p in seed_runs]
    if "running" in statuses:
        return "running"
    if summary:
        return summary_status(summary)
    return next((s for s in ("failed", "interrupted") if s in statuses), "incomplete")


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    """A RunInfo read from a run directory's config.json, summary.json and metrics.jsonl."""
    run_dir = Path(run_dir)
    config, summary = read_config(run_dir), read_summary(run_dir)
    command = config.get("command", "?")
    if is_seed_group(config):
        seed_runs = sorted(p for p in (run_dir / "runs").glob("*") if p.is_dir() and RUN_NAME.match(p.name))
        means = {k: v["mean"] for k, v in summary.get("metrics", {}).items()
                 if k.startswith("test_") and isinstance(v, dict) and isinstance(v.get("mean"), (int, float))}
        key = _key_metric(means)
        return RunInfo(run_dir, SEED_GROUP_COMMAND, config.get("model"), config.get("dataset"), None, None,
                       (f"mean_{key}", means[key]) if key else None, _group_status(seed_runs, summary),
                       seeds_done=sum(has_results(read_summary(p)) for p in seed_runs),
                       seeds=len(config.get("seeds", [])))
    done = epochs = None
    if command == "train":
        metrics = run_dir / "metrics.jsonl"
        done = sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.is_file() else 0
        epochs = config.get("epochs")
    tests = {k: v for k, v in summary.items() if k.startswith("test_") and isinstance(v, (int, float))}
    key = _key_metric(tests)
    return RunInfo(run_dir, command, config.get("model"), config.get("dataset"), done, epochs,
                   (key, summary[key]) if key else None, run_status(run_dir, summary))


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
                  if p.is_dir() and (RUN_NAME.match(p.name) or (p / "config.json").is_file()))
    return [run_info(p) for p in dirs]
