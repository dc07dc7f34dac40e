"""The `dia-ode` command line: thin Click layers over library functions.

Every command that computes something writes a run directory under --out (see dia_ode/rundir). Wrong
input becomes a one-line usage error (exit code 2) naming the option, never a traceback.
"""

from __future__ import annotations

import os
import sys
import time

import click

from dia_ode.cli.analyze import stepsize, stiffness
from dia_ode.cli.bench import bench
from dia_ode.cli.catalog import ls
from dia_ode.cli.compare import compare
from dia_ode.cli.controllers import controllers
from dia_ode.cli.correlate import correlate
from dia_ode.cli.detect import detect
from dia_ode.cli.integrate import integrate
from dia_ode.cli.options import CONTEXT
from dia_ode.cli.report import report
from dia_ode.cli.sample import sample
from dia_ode.cli.train import train


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="dia_ode")
def main() -> None:
    """Residual networks as ODE solvers, attention as their step-size controller."""


for command in (train, ls, bench, correlate, stepsize, stiffness, compare, report, integrate,
                controllers, detect, sample):
    main.add_command(command)


# How long another rank waits before it prints its own usage error: when rank 0 failed the same way,
# torchrun (which polls its children every 0.1 s) has ended this process by then.
RANK_ERROR_DELAY_S = 3.0


def run() -> None:
    """The console script: `main`, with usage errors printed by torchrun's rank 0.

    Every rank validates the same command line; without this a bad option would be reported once
    per process. An error of another rank alone (rank 0 then waits in a collective until torchrun
    ends it) is printed as one line naming the rank, after RANK_ERROR_DELAY_S.
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        main()
        return
    try:
        main(standalone_mode=False)
    except click.ClickException as err:
        time.sleep(RANK_ERROR_DELAY_S)
        click.echo(f"rank {rank}: Error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except click.Abort:
        sys.exit(1)
