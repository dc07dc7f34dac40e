"""Run directories: creating them, their files (strict JSON, figures, checkpoints), and loading a run back."""

from dia_ode.rundir.checkpoints import CHECKPOINT, CheckpointError, brief, load_checkpoint, load_state, save_checkpoint
from dia_ode.rundir.directory import (RUN_NAME, create_run_dir, current_run_name, failed_runs_cleanup, mark_failed,
                                      run_description, run_name, start_run, versions)
from dia_ode.rundir.figures import choose_scale, save_figure
from dia_ode.rundir.jsonio import (append_jsonl, atomic_write_bytes, read_jsonl, to_jsonable, write_json,
                                   write_jsonl)
from dia_ode.rundir.listing import RunInfo, list_runs, run_info, run_status
from dia_ode.rundir.loaded import LoadedRun, load_run
from dia_ode.rundir.lock import RunLock, RunLocked, lock_run
from dia_ode.rundir.summary import (SEED_GROUP_COMMAND, has_results, is_seed_group, load_run_config, read_config,
                                    read_summary, seed_group_refusal, summary_status)

__all__ = ["CHECKPOINT", "RUN_NAME", "SEED_GROUP_COMMAND", "CheckpointError", "LoadedRun", "RunInfo", "RunLock", "brief",
           "RunLocked", "append_jsonl", "atomic_write_bytes", "choose_scale", "create_run_dir", "current_run_name",
           "failed_runs_cleanup", "has_results", "is_seed_group", "list_runs", "load_checkpoint", "load_run",
           "load_run_config", "load_state", "lock_run", "mark_failed", "read_config", "read_jsonl", "read_summary", "run_description",
           "run_info", "run_name", "run_status", "save_checkpoint", "save_figure", "seed_group_refusal", "start_run",
           "summary_status", "to_jsonable", "versions", "write_json", "write_jsonl"]
