"""Options and checks shared by every `dia-ode` command."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from dia_ode.models import create_model, list_models
from dia_ode.runs import resolve_device

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"]}


def common_options(command):
    """--seed, --device, --out and --no-progress, defined once for every command."""
    options = [
        click.option("--seed", type=click.IntRange(min=0), default=0, help="Random seed."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     help="Where to compute; auto picks cuda when available."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                     help="Parent folder of the run directories."),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_device(device: str) -> None:
    try:
        resolve_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None


def check_model(model: str, options: dict) -> None:
    """Build the model on the meta device (no memory) so bad names and options fail before any work."""
    if model not in list_models():
        raise click.BadParameter(f"unknown model '{model}' (see `dia-ode ls models`)", param_hint="--model")
    try:
        with torch.device("meta"):
            create_model(model, **options)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--model") from None
