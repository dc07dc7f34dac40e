"""One process at a time per run directory: a lock that dies with its process.

A scheduler that requeues a job while the old one still runs would otherwise have two processes
train into one directory and write every epoch twice. The lock is `<run>/.lock`, taken with
fcntl.flock on an open file: the kernel drops it when the process ends however it ends (SIGKILL
included), so a file left behind by a dead process is simply taken over. The file holds
"pid host" of the holder, for the message the second process prints. flock works on local file
systems and on NFS (Linux emulates it with POSIX locks there); Windows has no fcntl and gets no lock.
A lock that cannot be taken at all (no lock daemon on an NFS mount: ENOLCK; a folder not writable)
is refused with RunLocked saying why, and `is_locked` reads such a run as not running. A `.lock` that
is a symbolic link (or a hard link, or not a plain file) is refused with RunLocked too: it is opened
without following links, so the file it points to is never truncated or written.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

from dia_ode.rundir.safe_write import O_NOFOLLOW, UnsafePath, open_nofollow
from dia_ode.util.files import open_regular

try:
    import fcntl
except ImportError:  # Windows: runs are not protected against a second process
    fcntl = None

LOCK_FILE = ".lock"
_held: dict[Path, "RunLock"] = {}  # this process's locks, so taking one twice is harmless (reentrant)


class RunLocked(RuntimeError):
    """Another process holds the run directory, or its lock cannot be taken; the message says which."""


class RunLock:
    """The held lock of one run directory; release() (or leaving a `with`) frees it."""

    def __init__(self, run_dir: Path, fd: int | None) -> None:
        self.run_dir, self._fd, self._count = run_dir, fd, 1

    def release(self) -> None:
        """Free the lock (after as many releases as acquisitions in this process)."""
        self._count -= 1
        if self._count > 0 or self._fd is None:
            return
        _held.pop(self.run_dir, None)
        (self.run_dir / LOCK_FILE).unlink(missing_ok=True)  # before unlocking: a waiter re-checks the inode
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run(run_dir: str | os.PathLike, wait: float = 1.0) -> RunLock:
    """Take the run directory's lock, or raise RunLocked naming the holder.

    Args:
        run_dir: the run directory (it must exist).
        wait: seconds to keep trying; covers `dia-ode ls runs` peeking at the lock for an instant.

    Raises:
        RunLocked: another process holds it, or the file system refuses the lock (the message says why).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir]._count += 1
        return _held[run_dir]
    if fcntl is None:
        return RunLock(run_dir, None)
    path, deadline = run_dir / LOCK_FILE, time.monotonic() + wait
    while True:
        try:
            fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
        except UnsafePath as err:
            raise RunLocked(f"cannot lock run {run_dir}: {err}") from None
        except OSError as err:
            raise _refused(run_dir, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise RunLocked(f"run {run_dir} is in use by {holder(run_dir) or 'another process'}") from None
            time.sleep(0.05)
            continue
        except OSError as err:  # ENOLCK (NFS without a lock daemon), EBADF, ...: not a holder
            os.close(fd)
            raise _refused(run_dir, err) from None
        if _same_file(fd, path):  # else the holder unlinked it between our open and flock: try the new one
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    except OSError:  # the holder's name is for messages only: a full disk must not stop the run here
        pass
    lock = _held[run_dir] = RunLock(run_dir, fd)
    return lock


def _refused(run_dir: Path, err: OSError) -> RunLocked:
    return RunLocked(f"cannot lock run {run_dir}: {err.strerror or err} (one process per run is not "
                     f"guaranteed on this file system)")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def holder(run_dir: str | os.PathLike) -> str | None:
    """"process PID on HOST" from the lock file, or None when there is none to read (or it is a link)."""
    path = Path(run_dir) / LOCK_FILE
    if path.is_symlink():
        return None
    try:
        with open_regular(path) as f:  # a FIFO named .lock would block a plain read forever
            pid, host = f.read(256).decode(errors="replace").split()[:2]
    except (OSError, ValueError):  # UnreadableFile is a ValueError
        return None
    return f"process {pid} on {host}"


def is_locked(run_dir: str | os.PathLike) -> bool:
    """Whether a live process holds the run directory (peeks with a shared lock for an instant)."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.exists():
        return False
    if Path(run_dir).resolve() in _held:
        return True
    try:
        # O_NONBLOCK: the open of a FIFO named .lock returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError:  # a link (ELOOP), gone, or another user's run we may not read: we cannot tell, and call it idle
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # not a lock file any process could hold
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no locks on this file system (ENOLCK): nobody can hold one
        return False
    finally:
        os.close(fd)
