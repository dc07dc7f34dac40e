"""Per-epoch recorders of the reproduction report: what a claim reads from a run besides its metrics.

A recorder is registered here by name as a factory `factory(run_dir) -> record(epoch, row)`; the
report's cache (cache.py) wires the recorders a RunSpec names as the trainer's on_epoch_end, which
runs after each epoch's checkpoint is written, so `record` reads the model of that epoch with
rundir.load_run(run_dir). Whatever dict it returns becomes one line of `<run>/records/<name>.jsonl`,
with the epoch (1-based, as in metrics.jsonl) added; None writes nothing for that epoch.

A claim that needs a recorder writes its factory in its own claim file and adds ONE line to RECORDERS.

Resume: a run killed after a checkpoint but before its recorders ran misses that epoch's lines, and
lines written after the last checkpoint describe epochs the resume trains again. `sync_records`
repairs both before a resume: it drops lines past the checkpoint and records the checkpoint's epoch
again from the checkpoint on disk, which is exactly the model the missing line would have read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from dia_ode.rundir import append_jsonl, write_jsonl
from dia_ode.studies.claims.correlation import attention_correlation_recorder

Record = Callable[[int, dict], "dict | None"]
RECORDERS: dict[str, Callable[[Path], Record]] = {
    "attention_correlation": attention_correlation_recorder,
}

RECORDS_DIR = "records"


def check_recorders(names: Sequence[str]) -> None:
    """ValueError naming the first unknown recorder and listing the valid ones."""
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
        lines = [r for r in _read_lines(path) if r.get("epoch", 0) <= done]
        if path.is_file():
            write_jsonl(path, lines)
        if done and (not lines or lines[-1]["epoch"] < done):
            _write(run_dir, name, RECORDERS[name](Path(run_dir))(done - 1, history[-1]), done)


def _read_lines(path: Path) -> list[dict]:
    """The complete lines of a records file; a line cut short by a kill during its append is dropped."""
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _write(run_dir: str | Path, name: str, result: dict | None, epoch: int) -> None:
    if result is None:
        return
    path = records_path(run_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, {"epoch": epoch, **result})
