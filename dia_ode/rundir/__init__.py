"""Run directories: creating them, their files (strict JSON, figures, checkpoints), and loading a run back."""

from dia_ode.rundir.checkpoints import CHECKPOINT, CheckpointError, load_checkpoint, load_state, save_checkpoint
from dia_ode.rundir.directory import create_run_dir, start_run, versions
from dia_ode.rundir.figures import save_figure
from dia_ode.rundir.jsonio import (append_jsonl, atomic_write_bytes, read_jsonl, to_jsonable, write_json,
                                   write_jsonl)
from dia_ode.rundir.loaded import LoadedRun, load_run

__all__ = ["CHECKPOINT", "CheckpointError", "LoadedRun", "append_jsonl", "atomic_write_bytes", "create_run_dir",
           "load_checkpoint", "load_run", "load_state", "read_jsonl", "save_checkpoint", "save_figure", "start_run",
           "to_jsonable", "versions", "write_json", "write_jsonl"]
