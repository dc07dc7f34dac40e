"""Checks several test files share: a command's one-line usage error, and a deadline that turns a hang into
a failure."""

from __future__ import annotations

import contextlib
import signal


def assert_one_line_usage_error(result, *needles) -> None:
    """`result` (click's CliRunner) exited 2 with exactly one `Error:` line holding every needle, and no
    traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in errors[0], result.output


@contextlib.contextmanager
def deadline(seconds: float = 20.0):
    """Fail (TimeoutError in whatever call blocks) unless the block ends within `seconds`: a hang."""
    fired = []

    def alarm(signum, frame):
        fired.append(True)
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired, f"still running after {seconds} s: a hang"  # CliRunner swallows the TimeoutError
