"""Run directories: creating them, their files (strict JSON, figures, checkpoints), and loading a run back."""

from dia_ode.rundir.checkpoints import CHECKPOINT, CheckpointError, load_checkpoint, load_state, save_checkpoint
from dia_ode.rundir.directory import (create_run_dir, failed_runs_cleanup, mark_failed, run_description, run_name,
                                      start_run, versions)
from dia_ode.rundir.figures import save_figure
from dia_ode.rundir.jsonio import (append_jsonl, atomic_write_bytes, read_jsonl, to_jsonable, write_json,
                                   write_jsonl)
from dia_ode.rundir.listing import RunInfo, list_runs, run_info, run_status
from dia_ode.rundir.loaded import LoadedRun, load_run
from dia_ode.rundir.lock import RunLock, RunLocked, lock_run

__all__ = ["CHECKPOINT", "CheckpointError", "LoadedRun", "RunInfo", "RunLock", "RunLocked", "append_jsonl",
           "atomic_write_bytes", "create_run_dir", "failed_runs_cleanup", "list_runs", "load_checkpoint", "load_run",
           "load_state", "lock_run", "mark_failed", "read_jsonl", "run_description", "run_info", "run_name",
           "run_status", "save_checkpoint", "save_figure", "start_run", "to_jsonable", "versions", "write_json",
           "write_jsonl"]
