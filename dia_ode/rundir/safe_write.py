"""Writes that stay inside the run directory: a symbolic link where a file or folder of ours belongs is
refused, never written, truncated or deleted through.

A link in a run directory (`.lock -> ~/.bashrc`, `cmd.txt -> /etc/...`, a study's run folder pointing
at another run) would otherwise have a command overwrite, append to or clear the link's target. Files
replaced whole go through jsonio.atomic_write_bytes (temp file + os.replace), which replaces a link
itself and leaves its target as it was; files appended to or locked are opened here with O_NOFOLLOW,
and folders are checked before anything is made or cleared in them.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import IO

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # Windows has none: there the check before the open stands alone


class UnsafePath(ValueError):
    """A path dia_ode would write through is a symbolic link or not a plain file; the message is one line."""


def link_refusal(path: str | os.PathLike, what: str = "file") -> UnsafePath:
    """The one-line refusal of a link found where a `what` of the run belongs."""
    return UnsafePath(f"{path} is a symbolic link where a {what} belongs; dia_ode does not write or delete "
                      f"through links: remove the link (the file it points to is untouched)")


def refuse_link(path: str | os.PathLike, what: str = "file") -> None:
    """Raise UnsafePath if `path` is a symbolic link (a missing path is fine)."""
    if Path(path).is_symlink():
        raise link_refusal(path, what)


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """os.open(path, flags) that refuses a link and anything but a regular file (a FIFO would block).

    Raises:
        UnsafePath: `path` is a symbolic link, or not a regular file.
        OSError: the open itself failed otherwise.
    """
    path = Path(path)
    refuse_link(path)  # also where O_NOFOLLOW is missing; the flag closes the race after this check
    try:
        fd = os.open(path, flags | O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():  # EMLINK: FreeBSD's O_NOFOLLOW
            raise link_refusal(path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{path} is not a regular file; dia_ode writes only its own plain files there")
        if info.st_nlink > 1:  # a hard link: writing it writes the other name's file too
            raise UnsafePath(f"{path} is a hard link to another file; dia_ode does not write through links: "
                             f"remove it (the other file is untouched)")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: str | os.PathLike) -> IO[str]:
    """A text file opened for appending (made if missing), refusing a link (see open_nofollow)."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "a", encoding="utf-8")


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append `text` to `path` (made if missing) and flush it to disk; UnsafePath for a link."""
    with open_append(path) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def remove_entry(path: str | os.PathLike) -> None:
    """Remove a file or a folder tree at `path`; a link is removed itself, never what it points to."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)  # rmtree removes links inside the tree, never their targets
