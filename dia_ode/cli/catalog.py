"""`dia-ode ls`: what can be built and loaded."""

from __future__ import annotations

import click

from dia_ode.attention import ATTENTIONS
from dia_ode.cli.options import CONTEXT
from dia_ode.data import list_datasets
from dia_ode.models import list_models, model_entry
from dia_ode.models.registry import KINDS, resolve
from dia_ode.tasks import list_tasks


@click.command(name="ls", context_settings=CONTEXT)
@click.argument("what", type=click.Choice(["all", "models", "attention", "datasets", "tasks"]), default="all")
@click.option("--pattern", default="*", help="fnmatch pattern for model names, e.g. 'dia_*'.")
@click.option("--family", default=None, help="Only models of this family (resnet, preresnet, wrn, resnext, vit, odenet).")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only discrete or continuous-depth models.")
@click.option("--attention", type=click.Choice(list(ATTENTIONS)), default=None, help="Only models with this attention.")
@click.option("--task", type=click.Choice(list_tasks()), default=None, help="Only models that serve this task.")
@click.option("--options", "options_of", metavar="MODEL", default=None,
              help="Print one model's options (type and default), for --model-option.")
def ls(what: str, pattern: str, family, kind, attention, task, options_of) -> None:
    """List models (with family, kind and recipe), attention modules, datasets and tasks (prints only)."""
    if options_of is not None:
        try:
            entry, attention_of = resolve(options_of)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--options") from None
        click.echo(f"options of {options_of} (--model-option KEY=VALUE; num_classes, in_channels and "
                   f"image_size come from the dataset):")
        for name, kind_name, default in entry.describe_options(attention_of):
            click.echo(f"  {name:<18} {kind_name:<16} {default!r}")
        return
    if what in ("all", "models"):
        filters = {k: v for k, v in (("family", family), ("kind", kind), ("attention", attention), ("task", task))
                   if v is not None}
        try:
            names = list_models(pattern, **filters)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--family") from None
        click.echo(f"models ({len(names)}):")
        for name in names:
            entry = model_entry(name)
            recipe = ", ".join(f"{k}={v}" for k, v in entry.recipe)
            click.echo(f"  {name:<26} {entry.family:<10} {entry.kind:<11} {'recipe: ' + recipe if recipe else ''}".rstrip())
    if what in ("all", "attention"):
        click.echo("attention (model name prefix):")
        for name, spec in ATTENTIONS.items():
            click.echo(f"  {name:<7} {spec.description}")
    if what in ("all", "datasets"):
        click.echo("datasets:")
        for name in list_datasets():
            click.echo(f"  {name}")
    if what in ("all", "tasks"):
        click.echo("tasks:")
        for name in list_tasks():
            click.echo(f"  {name}")
