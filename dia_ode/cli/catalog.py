"""`dia-ode ls`: what can be built and loaded."""

from __future__ import annotations

import click

from dia_ode.attention import ATTENTIONS
from dia_ode.cli.options import CONTEXT
from dia_ode.data import list_datasets
from dia_ode.models import list_models


@click.command(name="ls", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["all", "models", "attention", "datasets"]), default="all")
@click.option("--pattern", default="*", help="fnmatch pattern for model names, e.g. 'dia_*'.")
def ls(what: str, pattern: str) -> None:
    """List models, attention modules and datasets (prints only; writes no run directory)."""
    if what in ("all", "models"):
        names = list_models(pattern)
        click.echo(f"models ({len(names)}):")
        for name in names:
            click.echo(f"  {name}")
    if what in ("all", "attention"):
        click.echo("attention (model name prefix):")
        for name, spec in ATTENTIONS.items():
            click.echo(f"  {name:<7} {spec.description}")
    if what in ("all", "datasets"):
        click.echo("datasets:")
        for name in list_datasets():
            click.echo(f"  {name}")
