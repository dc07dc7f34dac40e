"""What every command gets around its body: --name, --threads, clean-up of failed runs, log lines, SIGTERM.

- `--name TAG` reaches rundir.start_run through rundir.run_name, so no command passes it along; a
  group's tag (`dia-ode bench --name T train-step`) is kept in the click context's meta, which its
  subcommands share, and applies to a subcommand that has no tag of its own.
- `--threads N` sets torch's intra-op threads for the command and restores them after it (a command
  run in-process, as the tests and a notebook do, must not change its caller's setting); a group's
  value reaches its subcommands like its tag. Without it torch's default stands: all cores, or
  OMP_NUM_THREADS where set. start_run records the number in config.json.
- A command that fails leaves no half-made run directory (rundir.failed_runs_cleanup).
- `check_memory`: a size option whose estimated memory exceeds this machine's (integrate --points,
  sample --num) is one line naming the option and the estimate, before anything is allocated.
- The library's log lines (the trainer's epoch lines, "resumed at epoch 2 of 30") print on stdout,
  once: they do not also propagate to a root handler a caller may have configured.
- SIGTERM, what cluster schedulers send before a kill, raises Terminated (a KeyboardInterrupt), so
  it unwinds like Ctrl-C: the trainer keeps its last checkpoint and the command says how to resume;
  exit code 143 (128 + 15) as the shell gives a process killed by SIGTERM. The previous handler is
  restored afterwards, and only the CLI installs one: a library must not take over signals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from typing import Iterator

import click
import torch

from dia_ode.rundir import failed_runs_cleanup, run_name
from dia_ode.rundir.directory import CTRL_C_EXIT, INTERRUPT_EXITS, NAME_PATTERN, SIGTERM_EXIT


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def interrupt_exit(err: KeyboardInterrupt) -> tuple[str, int]:
    """What stopped the command ("interrupted (Ctrl-C)" / "terminated (SIGTERM)") and its exit code."""
    code = SIGTERM_EXIT if isinstance(err, Terminated) else CTRL_C_EXIT
    return INTERRUPT_EXITS[code], code


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises Terminated (main thread only: Python's rule for handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        # None: the previous handler was not installed from Python (an embedding C program); the
        # default is the best we can restore, and signal.signal refuses None
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class _EchoHandler(logging.Handler):
    """Log records as plain lines through click.echo (which the test runner captures)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record))


@contextlib.contextmanager
def library_log() -> Iterator[None]:
    """The package's INFO log lines on stdout for the duration of a command."""
    logger, handler = logging.getLogger("dia_ode"), _EchoHandler()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a root handler (logging.basicConfig) would print every line a second time
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    # fullmatch: the pattern's `$` also matches before a trailing newline, so match() took "abc\n"
    if value is not None and not NAME_PATTERN.fullmatch(value):
        raise click.BadParameter(f"{value!r} must be 1-40 letters, digits or _.+=- (it becomes part of a "
                                 f"directory name)")
    return value


# where os.sysconf cannot tell this machine's memory: a bound no laptop or GPU node of today exceeds
MEMORY_FALLBACK_BYTES = 1 << 40


def memory_bytes() -> int:
    """This machine's physical memory in bytes (MEMORY_FALLBACK_BYTES where os.sysconf cannot tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or a name this system lacks
        return MEMORY_FALLBACK_BYTES


def check_memory(needed: float, option: str, what: str) -> None:
    """BadParameter naming `option` when `needed` bytes, the estimate of what the command would hold for
    `what`, exceed this machine's memory: one line before anything is allocated, where the allocator
    would end in a traceback (or, overcommitted, in the OOM killer)."""
    total = memory_bytes()
    if needed > total:
        raise click.BadParameter(f"{what} would need about {_gigabytes(needed)} of memory, more than this "
                                 f"machine's {_gigabytes(total)}: lower {option}", param_hint=option)


def _gigabytes(size: float) -> str:
    return f"{size / 1e9:,.0f} GB" if size >= 1e10 else f"{size / 1e9:.3g} GB"


name_option = click.option("--name", "run_tag", default=None, callback=check_name, metavar="TAG",
                           help="A tag for the run directory's name and config.json.")


threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                              help="torch intra-op threads of this command (default: all cores, or "
                                   "OMP_NUM_THREADS); give each of several jobs on one machine its share.")


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """Within the block torch uses `threads` intra-op threads (None: leave the setting as it is)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# keys in click's Context.meta, shared by a group and its subcommands
_GROUP_TAG, _GROUP_THREADS = "dia_ode.run_tag", "dia_ode.threads"


def _group_value(ctx: click.Context | None, key: str, value):
    """A group's callback returns before its subcommand runs, so its blocks are over by then: the value
    waits in meta for the subcommand; a subcommand's own value wins."""
    if ctx is None:
        return value
    value = value or ctx.meta.get(key)
    if value:
        ctx.meta[key] = value
    return value


def command_runtime(command):
    """Wrap a command callback (see the module docstring); consumes its `run_tag` and `threads` arguments."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context(silent=True)
        tag = _group_value(ctx, _GROUP_TAG, kwargs.pop("run_tag", None))
        threads = _group_value(ctx, _GROUP_THREADS, kwargs.pop("threads", None))
        try:
            with contextlib.ExitStack() as stack:
                if tag:
                    stack.enter_context(run_name(tag))
                stack.enter_context(intra_op_threads(threads))
                stack.enter_context(library_log())
                stack.enter_context(sigterm_as_interrupt())
                stack.enter_context(failed_runs_cleanup())
                return command(*args, **kwargs)
        except Terminated:  # a command that does not handle it itself (train does)
            click.echo("terminated (SIGTERM)", err=True)
            sys.exit(SIGTERM_EXIT)
    return wrapper
