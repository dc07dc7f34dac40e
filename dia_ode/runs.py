"""Run directories, JSON output, seeding and device resolution.

Every command leaves a self-describing directory `<out>/<NNNNN>-<desc>/` with config.json,
cmd.txt, metrics.jsonl (one flushed JSON object per line), summary.json, checkpoints/ and
figures/. Files a user may rely on are written atomically (temp file in the same folder, then
os.replace), so an interrupted command never leaves half a file behind.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

import dia_ode

_RUN_NAME = re.compile(r"^(\d{5})-")


def resolve_device(name: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" to a torch.device; "cuda" without a GPU raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{name}'; valid: auto, cpu, cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Versions that decide whether a run can be reproduced."""
    return {"dia_ode": dia_ode.__version__, "torch": torch.__version__, "numpy": np.__version__,
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


def atomic_write_bytes(path: str | os.PathLike, write: Any) -> None:
    """Call `write(file)` on a temp file next to `path`, fsync, then rename it onto `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data from nested dicts, lists, tuples, numpy and torch values.

    NaN and infinities become null: strict JSON has no spelling for them (Python's json writes
    `NaN`, which jq and browsers reject). Complex numbers become [real, imag].
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, complex):
        return [to_jsonable(obj.real), to_jsonable(obj.imag)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)  # paths, devices, dtypes


def _dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented strict JSON (see to_jsonable), atomically."""
    data = (_dumps(obj, indent=2) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Replace a JSON-lines file with `rows`, atomically."""
    data = "".join(_dumps(r) + "\n" for r in rows).encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON object as a line and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All objects of a JSON-lines file ([] if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_run(out: str | os.PathLike, desc: str, config: dict, argv: list[str] | None = None) -> Path:
    """Create a run directory and write config.json (config + versions) and cmd.txt."""
    run_dir = create_run_dir(out, desc)
    write_json(run_dir / "config.json", {**config, "versions": versions()})
    argv = sys.argv if argv is None else argv
    (run_dir / "cmd.txt").write_text(" ".join(argv) + "\n")
    return run_dir


def save_figure(fig: Any, figures_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save a matplotlib Figure (built without pyplot, so nothing needs closing) as PNG and PDF."""
    paths = [Path(figures_dir) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    return paths
