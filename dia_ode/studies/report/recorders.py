"""Per-epoch recorders of the reproduction report: what a claim reads from a run besides its metrics.

A recorder is registered here by name as a factory `factory(run_dir) -> record(epoch, row)`; the
report's cache (cache.py) wires the recorders a RunSpec names as the trainer's on_epoch_end, which
runs after each epoch's checkpoint is written, so `record` reads the model of that epoch with
rundir.load_run(run_dir). Whatever dict it returns becomes one line of `<run>/records/<name>.jsonl`,
with the epoch (1-based, as in metrics.jsonl) added; None writes nothing for that epoch.

A claim that needs a recorder writes its factory in its own claim file and registers it there with ONE
line, `register_recorder(name, factory)`, run when the claims registry (studies/claims/__init__.py)
imports the claim. The framework never imports a claim module: a lookup of an unknown name imports the
registry first (in a launcher's child process nothing else may have), then looks again.

Resume: a run killed after a checkpoint but before its recorders ran misses that epoch's lines, and
lines written after the last checkpoint describe epochs the resume trains again. `sync_records`
repairs both before a resume: it drops lines past the checkpoint and records the checkpoint's epoch
again from the checkpoint on disk, which is exactly the model the missing line would have read.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Sequence

from dia_ode.rundir import append_jsonl, read_jsonl, write_jsonl

Record = Callable[[int, dict], "dict | None"]
Factory = Callable[[Path], Record]
RECORDERS: dict[str, Factory] = {}  # filled by the claim modules through register_recorder

RECORDS_DIR = "records"
CLAIMS_REGISTRY = "dia_ode.studies.claims"  # imported by name: the framework depends on no claim module


def register_recorder(name: str, factory: Factory) -> Factory:
    """Register `factory` as the recorder `name` (a claim module calls this once, at import)."""
    RECORDERS[name] = factory
    return factory


def check_recorders(names: Sequence[str]) -> None:
    """ValueError naming the first unknown recorder and listing the valid ones."""
    if any(name not in RECORDERS for name in names):
        importlib.import_module(CLAIMS_REGISTRY)  # its claim modules register their recorders
    for name in names:
        if name not in RECORDERS:
            raise ValueError(f"unknown recorder '{name}'; valid: {', '.join(RECORDERS) or 'none registered'}")


def records_path(run_dir: str | Path, name: str) -> Path:
    """`<run>/records/<name>.jsonl`."""
    return Path(run_dir) / RECORDS_DIR / f"{name}.jsonl"


def epoch_callback(names: Sequence[str], run_dir: str | Path) -> Callable[[int, dict], None] | None:
    """The trainer's on_epoch_end(epoch, row) running every recorder in `names`; None for no recorders."""
    check_recorders(names)
    if not names:
        return None
    recorders = {name: RECORDERS[name](Path(run_dir)) for name in names}

    def on_epoch_end(epoch: int, row: dict) -> None:
        for name, record in recorders.items():
            _write(run_dir, name, record(epoch, row), row["epoch"])

    return on_epoch_end


def sync_records(names: Sequence[str], run_dir: str | Path, history: list[dict]) -> None:
    """Make every recorder's lines match the checkpoint whose epoch rows are `history` (see the module doc)."""
    check_recorders(names)
    done = len(history)
    for name in names:
        path = records_path(run_dir, name)
        lines = [r for r in read_jsonl(path, partial_last=True) if r.get("epoch", 0) <= done]
        if path.is_file():
            write_jsonl(path, lines)
        if done and (not lines or lines[-1]["epoch"] < done):
            _write(run_dir, name, RECORDERS[name](Path(run_dir))(done - 1, history[-1]), done)


def _write(run_dir: str | Path, name: str, result: dict | None, epoch: int) -> None:
    if result is None:
        return
    path = records_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, {"epoch": epoch, **result})
