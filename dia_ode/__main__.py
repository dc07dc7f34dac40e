"""`python -m dia_ode` is the `dia-ode` command."""

from dia_ode.cli import run

run()
