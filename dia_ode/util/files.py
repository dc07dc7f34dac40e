"""Reading files a user (or anyone with write access to a folder) may have replaced: only regular files
are opened for reading, and JSON that cannot be parsed, however it fails, is one line naming the file.

A FIFO where config.json, a metrics file or an image belongs would block a plain open() until some
process writes to it, which is never: `dia-ode ls runs`, a resume or a dataset load would hang. Files
are therefore opened with O_NONBLOCK (the open of a FIFO returns at once) and checked with fstat on the
open descriptor (no race between a check and the open) before a byte is read. JSON nested deeper than
the parser's recursion limit ('[' * 100000) raises RecursionError in json.loads; here it is refused as
unreadable JSON like any other malformed file.
"""

from __future__ import annotations

import json
import os
import stat
from typing import IO, Any

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnreadableFile(ValueError):
    """A file that is not a regular file, or whose content cannot be read as what it should hold; the
    message is one line naming the file. `not_regular` tells the first case (nothing was read); `reason`
    is the message without the file ("JSONDecodeError: ...", "JSON nested too deeply", ...)."""

    def __init__(self, where: object, reason: str, not_regular: bool = False) -> None:
        super().__init__(f"{where} is not a regular file ({reason}): not read" if not_regular
                         else f"{where} cannot be read ({reason})")
        self.reason, self.not_regular = reason, not_regular


def file_kind(mode: int) -> str:
    """"a FIFO", "a directory", ...: what a file of this st_mode is, for a refusal."""
    return next((name for test, name in _KINDS if test(mode)), "not a plain file")


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """`path` opened for reading in binary mode, if it is a regular file (links to one are followed).

    Raises:
        FileNotFoundError: there is no such file.
        UnreadableFile: it is a FIFO, a device, a socket or a directory (not_regular; nothing was read),
            or it cannot be opened (permissions, ...).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except OSError as err:  # a socket (ENXIO), a directory where the system refuses its open, permissions, ...
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            raise _not_regular(path, mode) from None
        raise UnreadableFile(path, err.strerror or type(err).__name__) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _not_regular(path: str | os.PathLike, mode: int) -> UnreadableFile:
    return UnreadableFile(path, file_kind(mode), not_regular=True)


def read_regular(path: str | os.PathLike) -> bytes:
    """The bytes of a regular file (open_regular's errors; a failed read is UnreadableFile too)."""
    with open_regular(path) as f:
        try:
            return f.read()
        except OSError as err:
            raise UnreadableFile(path, err.strerror or type(err).__name__) from None


def parse_json(data: bytes | str, where: str) -> Any:
    """json.loads of UTF-8 `data`; UnreadableFile naming `where` (a path, or "PATH line N") on any failure."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text)
    except UnicodeDecodeError:
        raise UnreadableFile(where, "not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise UnreadableFile(where, f"JSONDecodeError: {err}") from None
    except RecursionError:
        raise UnreadableFile(where, "JSON nested too deeply") from None


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in a regular file.

    Raises:
        FileNotFoundError: there is no such file.
        UnreadableFile: not a regular file, unreadable, or not JSON (malformed, not UTF-8, nested too deeply).
    """
    return parse_json(read_regular(path), str(path))


def read_json_lines(path: str | os.PathLike, partial_last: bool = False) -> list[Any]:
    """The JSON value of every non-blank line of a regular file; with `partial_last`, a last line cut short
    (malformed, as a process killed during its append leaves it) is dropped instead of raising.

    Raises:
        FileNotFoundError: there is no such file.
        UnreadableFile: as read_json, naming the line.
    """
    try:
        text = read_regular(path).decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableFile(path, "not UTF-8 text") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for k, (n, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if partial_last and k == len(lines) - 1:
                break
            raise UnreadableFile(f"{path} line {n}", f"JSONDecodeError: {err}") from None
        except RecursionError:
            raise UnreadableFile(f"{path} line {n}", "JSON nested too deeply") from None
    return rows
