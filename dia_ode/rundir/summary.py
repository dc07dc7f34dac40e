"""What a run directory's files say about its outcome: its summary, whether it has results, and
whether it is a group of seed runs rather than a run of its own.

summary.json holds either a command's results or, for a run that stopped early, {"status":
"failed" | "interrupted", "error": ...}; summaries written before the status field existed are results.
A seed group (`dia-ode train --seeds`) is a directory whose `runs/` holds one training run per seed;
its config.json says "command": "train-seeds", so nothing mistakes it for a training run.
"""

from __future__ import annotations

import os
from pathlib import Path

from dia_ode.rundir.checkpoints import CheckpointError
from dia_ode.util.files import UnreadableFile, read_json

SEED_GROUP_COMMAND = "train-seeds"
FINISHED = "finished"


def read_summary(run_dir: str | os.PathLike, strict: bool = False) -> dict:
    """The run's summary.json as a dict; {} when there is none, or (unless `strict`) when it holds no
    readable JSON object.

    Raises:
        UnreadableFile (a ValueError, one line naming the file): summary.json is not a regular file (a
            FIFO would block the read: it is never opened); with `strict`, also content that is not a
            JSON object (malformed, nested too deeply, not UTF-8).
    """
    return _read_dict(Path(run_dir) / "summary.json", strict)


def read_config(run_dir: str | os.PathLike, strict: bool = False) -> dict:
    """The run's config.json as a dict; {} when there is none, or (unless `strict`) when it holds no
    readable JSON object. Raises as read_summary."""
    return _read_dict(Path(run_dir) / "config.json", strict)


def load_run_config(run_dir: str | os.PathLike) -> dict:
    """The config.json of a run directory that must be one (for loading or resuming it).

    Raises:
        CheckpointError: no config.json, or one that cannot be read or is not a JSON object (one line).
    """
    path = Path(run_dir) / "config.json"
    try:
        config = read_json(path)  # a FIFO is refused, never opened for a blocking read
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} is not a training run directory (no config.json)") from None
    except UnreadableFile as err:  # not a regular file, malformed, nested too deeply, not UTF-8
        raise CheckpointError(str(err)) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a run configuration (not a training run's settings: not a JSON object)")
    return config


def summary_status(summary: dict) -> str | None:
    """"finished", "failed", "interrupted", ... as the summary says; None for no summary."""
    return summary.get("status", FINISHED) if summary else None


def has_results(summary: dict) -> bool:
    """The summary holds a command's results (not a failure or interruption record)."""
    return summary_status(summary) == FINISHED


def is_seed_group(config: dict) -> bool:
    """Whether a config.json is a seed group's (groups made before the command name had "seeds")."""
    return config.get("command") == SEED_GROUP_COMMAND or (config.get("command") == "train" and "seeds" in config)


def seed_group_refusal(group_dir: str | os.PathLike) -> str:
    """The one-line answer to resuming a seed group: which of its runs to resume instead."""
    runs = sorted(p for p in (Path(group_dir) / "runs").glob("*") if p.is_dir())
    open_runs = [str(p) for p in runs if not has_results(read_summary(p))]
    advice = (f"resume the seed's run that stopped: dia-ode train --resume {open_runs[0]}" if open_runs
              else "every seed's run has its results")
    return (f"{group_dir} is a group of seed runs (train --seeds), which is not resumed as a whole; {advice}, "
            f"then aggregate the runs with dia-ode compare --from RUN --from RUN ...")


def _read_dict(path: Path, strict: bool) -> dict:
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    except UnreadableFile as err:
        if strict or err.not_regular:
            raise
        return {}
    if not isinstance(data, dict):
        if strict:
            raise UnreadableFile(path, "not a JSON object")
        return {}
    return data
