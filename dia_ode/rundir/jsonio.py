"""Strict JSON files written atomically: what a user may rely on is never half written.

Files go to a temp file in the same folder, are fsynced, then renamed over the target (os.replace),
so an interrupted command never leaves half a file behind. NaN and infinities become null. The rename
replaces a symbolic link at the target itself, so a link's target is never written; appends refuse a
link (safe_write.open_append).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from dia_ode.rundir.safe_write import open_append
from dia_ode.util.files import read_json_lines


def atomic_write_bytes(path: str | os.PathLike, write: Any) -> None:
    """Call `write(file)` on a temp file next to `path`, fsync, then rename it onto `path`.

    A symbolic link at `path` is replaced by the file, never written through (its target stays as it was).
    """
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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, as atomic_write_bytes."""
    data = text.encode()
    atomic_write_bytes(path, lambda f: f.write(data))


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
    """Append one JSON object as a line and flush it to disk.

    Raises:
        UnsafePath: `path` is a symbolic link (or not a regular file): it is not written through.
    """
    with open_append(path) as f:
        f.write(_dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, partial_last: bool = False) -> list[dict]:
    """All objects of a JSON-lines file ([] if it does not exist); with `partial_last`, a last line cut
    short (a process killed during its append) is dropped instead of raising.

    Raises:
        UnreadableFile (a ValueError, one line naming the file): not a regular file (a FIFO is never
            opened for a blocking read), a line that is not JSON (nested too deeply included), or not UTF-8.
    """
    try:
        return read_json_lines(path, partial_last=partial_last)
    except FileNotFoundError:
        return []


