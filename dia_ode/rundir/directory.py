"""Run directories: every command leaves a self-describing `<out>/<NNNNN>-<desc>/`.

Each holds config.json (resolved options, seed, versions), cmd.txt, and what the command adds:
metrics.jsonl (one flushed JSON object per line), summary.json, checkpoints/ and figures/.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from dia_ode.rundir.jsonio import write_json

_RUN_NAME = re.compile(r"^(\d{5})-")


def versions() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    try:  # from the installed metadata: importing the package root from here would be an upward import
        dia_ode_version = metadata.version("dia_ode")
    except metadata.PackageNotFoundError:
        dia_ode_version = "unknown (not installed)"
    return {"dia_ode": dia_ode_version, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def create_run_dir(out: str | os.PathLike, desc: str) -> Path:
    """Create `<out>/<NNNNN>-<desc>/` (with checkpoints/ and figures/), NNNNN one past the largest.

    mkdir without exist_ok makes two concurrent commands pick different numbers.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    safe_desc = re.sub(r"[^A-Za-z0-9_.+-]", "_", desc)
    while True:
        taken = [int(m.group(1)) for p in out.iterdir() if (m := _RUN_NAME.match(p.name))]
        run_dir = out / f"{max(taken, default=-1) + 1:05d}-{safe_desc}"
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    (run_dir / "checkpoints").mkdir()
    (run_dir / "figures").mkdir()
    return run_dir


def start_run(out: str | os.PathLike, desc: str, config: dict, argv: list[str] | None = None) -> Path:
    """Create a run directory and write config.json (config + versions) and cmd.txt."""
    run_dir = create_run_dir(out, desc)
    write_json(run_dir / "config.json", {**config, "versions": versions()})
    argv = sys.argv if argv is None else argv
    (run_dir / "cmd.txt").write_text(" ".join(argv) + "\n")
    return run_dir


