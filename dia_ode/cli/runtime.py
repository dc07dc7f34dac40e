"""What every command gets around its body: --name, clean-up of failed runs, log lines, SIGTERM.

- `--name TAG` reaches rundir.start_run through rundir.run_name, so no command passes it along.
- A command that fails leaves no half-made run directory (rundir.failed_runs_cleanup).
- The library's log lines (the trainer's epoch lines, "resumed at epoch 2 of 30") print on stdout.
- SIGTERM, what cluster schedulers send before a kill, raises Terminated (a KeyboardInterrupt), so
  it unwinds like Ctrl-C: the trainer keeps its last checkpoint and the command says how to resume;
  exit code 143 (128 + 15) as the shell gives a process killed by SIGTERM. The previous handler is
  restored afterwards, and only the CLI installs one: a library must not take over signals.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from typing import Iterator

import click

from dia_ode.rundir import failed_runs_cleanup, run_name
from dia_ode.rundir.directory import NAME_PATTERN

SIGTERM_EXIT = 143


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


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
        signal.signal(signal.SIGTERM, previous)


class _EchoHandler(logging.Handler):
    """Log records as plain lines through click.echo (which the test runner captures)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record))


@contextlib.contextmanager
def library_log() -> Iterator[None]:
    """The package's INFO log lines on stdout for the duration of a command."""
    logger, handler = logging.getLogger("dia_ode"), _EchoHandler()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def check_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not NAME_PATTERN.match(value):
        raise click.BadParameter(f"{value!r} must be 1-40 letters, digits or _.+=- (it becomes part of a "
                                 f"directory name)")
    return value


name_option = click.option("--name", "run_tag", default=None, callback=check_name, metavar="TAG",
                           help="A tag for the run directory's name and config.json.")


def command_runtime(command):
    """Wrap a command callback (see the module docstring); consumes its `run_tag` argument."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        tag = kwargs.pop("run_tag", None)
        try:
            with contextlib.ExitStack() as stack:
                if tag:  # no tag keeps an enclosing group's (`dia-ode bench --name T train-step`)
                    stack.enter_context(run_name(tag))
                stack.enter_context(library_log())
                stack.enter_context(sigterm_as_interrupt())
                stack.enter_context(failed_runs_cleanup())
                return command(*args, **kwargs)
        except Terminated:  # a command that does not handle it itself (train does)
            click.echo("terminated (SIGTERM)", err=True)
            sys.exit(SIGTERM_EXIT)
    return wrapper
