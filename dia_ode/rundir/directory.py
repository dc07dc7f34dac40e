"""Run directories: every command leaves a self-describing `<out>/<NNNNN>-<desc>[-<name>]/`.

Each holds config.json (resolved options, seed, versions), cmd.txt, and what the command adds:
metrics.jsonl (one flushed JSON object per line), summary.json, checkpoints/ and figures/ (made
when the first file goes in, so a directory never holds empty folders). A command that fails leaves
no half-made directory behind (see failed_runs_cleanup): one that holds nothing yet is removed, one
that holds results is marked {"status": "failed"} in summary.json.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import platform
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from dia_ode.rundir.checkpoints import brief
from dia_ode.rundir.jsonio import atomic_write_text, write_json
from dia_ode.rundir.lock import LOCK_FILE

RUN_NAME = re.compile(r"^(\d{5})-")  # a run directory's name starts with its number
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]")
MAX_DESC = 80  # characters of the generated part of a directory name; longer ones end in a hash
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.+=-]{1,40}$")  # what --name TAG may be
_SKELETON = {"config.json", "cmd.txt", LOCK_FILE}  # what a run holds before it has produced anything

_run_name: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_name", default=None)
# the run directories start_run made inside failed_runs_cleanup (None outside it): a context variable, so
# nothing accumulates outside a command and a thread's runs are never cleaned up by another's failure
_started: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("started_runs", default=None)
# exit codes of a command stopped by Ctrl-C (128 + SIGINT) or SIGTERM (128 + SIGTERM): an interruption
CTRL_C_EXIT, SIGTERM_EXIT = 130, 143  # the shell's 128 + SIGINT / SIGTERM
INTERRUPT_EXITS = {CTRL_C_EXIT: "interrupted (Ctrl-C)", SIGTERM_EXIT: "terminated (SIGTERM)"}


def versions() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    try:  # from the installed metadata: importing the package root from here would be an upward import
        dia_ode_version = metadata.version("dia_ode")
    except metadata.PackageNotFoundError:
        dia_ode_version = "unknown (not installed)"
    return {"dia_ode": dia_ode_version, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def run_description(command: str, model: str, options: dict, dataset: str) -> str:
    """`command-model[-key=value...]-dataset`: the options a user set show in the name, so ablations
    (sam=cbam, output_gate=False) do not look like the plain model; a hash keeps a long one short."""
    parts = [command, model, *(f"{k}={v}" for k, v in sorted(options.items())), dataset]
    desc = _UNSAFE.sub("_", "-".join(parts))
    if len(desc) > MAX_DESC:
        digest = hashlib.sha1(desc.encode()).hexdigest()[:8]
        desc = f"{desc[:MAX_DESC - 10]}~{digest}-{_UNSAFE.sub('_', dataset)}"[:MAX_DESC + len(dataset)]
    return desc


def current_run_name() -> str | None:
    """The tag run_name() set for this context, if any (to hand on to a child process)."""
    return _run_name.get()


@contextlib.contextmanager
def run_name(name: str | None) -> Iterator[None]:
    """Within the block, start_run adds `name` to directory names and configs (the CLI's --name)."""
    token = _run_name.set(name)
    try:
        yield
    finally:
        _run_name.reset(token)


def create_run_dir(out: str | os.PathLike, desc: str) -> Path:
    """Create `<out>/<NNNNN>-<desc>/`, NNNNN one past the largest.

    mkdir without exist_ok makes two concurrent commands pick different numbers.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    safe_desc = _UNSAFE.sub("_", desc)
    while True:
        taken = [int(m.group(1)) for p in out.iterdir() if (m := RUN_NAME.match(p.name))]
        run_dir = out / f"{max(taken, default=-1) + 1:05d}-{safe_desc}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue


def start_run(out: str | os.PathLike, desc: str, config: dict, argv: list[str] | None = None,
              name: str | None = None) -> Path:
    """Create a run directory and write config.json (config + name + threads + versions) and cmd.txt.

    `threads` is torch's intra-op thread count when the run starts (the CLI's --threads), unless the
    config gives its own.

    Args:
        name: a tag for the directory name and config.json; None takes the one of run_name(), if any.
    """
    name = _checked_name(name)
    run_dir = create_run_dir(out, f"{desc}-{name}" if name else desc)
    _write_skeleton(run_dir, config, argv, name)
    return run_dir


def start_run_at(run_dir: str | os.PathLike, config: dict, argv: list[str] | None = None,
                 name: str | None = None) -> Path:
    """start_run at an exact path (the CLI's --run-dir): `run_dir` is made (with its parents) or must be an
    empty folder; a run's lock file (rundir/lock.py) counts as empty, so the caller may hold the lock.

    Raises:
        FileExistsError: `run_dir` holds something already (one line naming it).
    """
    name, run_dir = _checked_name(name), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    held = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    if held:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise FileExistsError(f"{run_dir} is not a run directory (no config.json) and not empty ({shown})")
    _write_skeleton(run_dir, config, argv, name)
    return run_dir


def _checked_name(name: str | None) -> str | None:
    name = name or _run_name.get()
    if name is not None and not NAME_PATTERN.match(name):
        raise ValueError(f"run name {name!r} must be 1-40 letters, digits or _.+=-")
    return name


def _write_skeleton(run_dir: Path, config: dict, argv: list[str] | None, name: str | None) -> None:
    """config.json and cmd.txt of a new run; the run is one failed_runs_cleanup removes if its command fails."""
    write_json(run_dir / "config.json", {**config, **({"name": name} if name else {}),
                                         "threads": config.get("threads", torch.get_num_threads()), "versions": versions()})
    argv = sys.argv if argv is None else argv
    atomic_write_text(run_dir / "cmd.txt", " ".join(argv) + "\n")  # never through a link planted meanwhile
    started = _started.get()
    if started is not None:
        started.append(run_dir)


def mark_failed(run_dir: str | os.PathLike, error: BaseException | str, status: str = "failed", **extra) -> None:
    """Write summary.json {"status": status, "error": one line, **extra} for a run that stopped early."""
    message = error if isinstance(error, str) else (f"{type(error).__name__}: {error}".strip().rstrip(":"))
    message = brief(message, 300) or status
    write_json(Path(run_dir) / "summary.json", {"status": status, "error": message, **extra})


def is_skeleton(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory holds nothing but what start_run wrote (and empty folders)."""
    for path in Path(run_dir).rglob("*"):
        if path.is_file() and path.relative_to(run_dir).as_posix() not in _SKELETON:
            return False
    return True


@contextlib.contextmanager
def failed_runs_cleanup() -> Iterator[None]:
    """If the block fails, no run directory it started is left half made.

    One that holds nothing but config.json and cmd.txt is removed; one that holds results but no
    summary.json gets {"status": "failed", "error": ...} (the trainer writes its own, richer one).
    A clean exit (also SystemExit(0)) leaves everything as it is; Ctrl-C, SIGTERM and their exit codes
    (SystemExit(130), SystemExit(143): how the CLI ends after reporting them) mark it "interrupted".
    Nested blocks share the outermost one's record.
    """
    started, token = _started.get(), None
    if started is None:
        started = []
        token = _started.set(started)
    first = len(started)
    try:
        yield
    except BaseException as err:
        if not (isinstance(err, SystemExit) and err.code in (0, None)):
            status, error = _failure(err)
            for run_dir in started[first:]:
                if not run_dir.is_dir():
                    continue
                if is_skeleton(run_dir):
                    shutil.rmtree(run_dir, ignore_errors=True)
                elif not (run_dir / "summary.json").exists():
                    mark_failed(run_dir, error, status)
        raise
    finally:
        del started[first:]
        if token is not None:
            _started.reset(token)


def _failure(err: BaseException) -> tuple[str, BaseException | str]:
    """(status, error) for the summary of a run a failed block leaves behind."""
    if isinstance(err, SystemExit) and err.code in INTERRUPT_EXITS:
        return "interrupted", INTERRUPT_EXITS[err.code]
    return ("interrupted" if isinstance(err, KeyboardInterrupt) else "failed"), err
