"""`dia-ode ls`: what can be built and loaded, and the runs under a folder."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from dia_ode.attention import ATTENTIONS
from dia_ode.cli.options import CONTEXT, NameChoice
from dia_ode.data import list_datasets
from dia_ode.models import list_models, model_entry
from dia_ode.models.registry import KINDS, resolve
from dia_ode.rundir import RunInfo, list_runs
from dia_ode.tasks import TASKS, list_tasks


@click.command(name="ls", context_settings=CONTEXT)
@click.argument("what", type=NameChoice(["all", "models", "attention", "datasets", "tasks", "runs"]), default="all")
@click.option("--pattern", default="*", help="fnmatch pattern for model names, e.g. 'dia_*'.")
@click.option("--family", default=None, help="Only models of this family (resnet, preresnet, wrn, resnext, vit, odenet).")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Only discrete or continuous-depth models.")
@click.option("--attention", type=NameChoice(list(ATTENTIONS)), default=None, help="Only models with this attention.")
@click.option("--task", type=NameChoice(list_tasks()), default=None, help="Only models that serve this task.")
@click.option("--options", "options_of", metavar="MODEL", default=None,
              help="Print one model's options (type and default), for --model-option.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              help="`ls runs`: the folder whose run directories to list.")
def ls(what: str, pattern: str, family, kind, attention, task, options_of, out: Path) -> None:
    """List models (with family, kind, tasks and recipe), attention modules, datasets and tasks; `ls runs`
    lists the run directories under --out with their progress, key test metric and status (prints only)."""
    if what == "runs":
        _list_runs(out)
        return
    if options_of is not None:
        try:
            entry, attention_of = resolve(options_of)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--options") from None
        click.echo(f"options of {options_of} (--model-option KEY=VALUE; num_classes, in_channels and "
                   f"image_size come from the dataset):")
        for name, kind_name, default in entry.describe_options(attention_of):
            click.echo(f"  {name:<18} {kind_name:<20} {default!r}")
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
            click.echo(f"  {name:<26} {entry.family:<10} {entry.kind:<11} {','.join(entry.tasks):<25} "
                       f"{'recipe: ' + recipe if recipe else ''}".rstrip())
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
            click.echo(f"  {name:<15} options: {_task_options(name) or 'none'}")


def _task_options(name: str) -> str:
    """`schedule='linear', timesteps=1000`: the task's --task-option names and defaults."""
    parameters = inspect.signature(TASKS[name].__init__).parameters.values()
    return ", ".join(f"{p.name}={p.default!r}" for p in parameters
                     if p.name != "self" and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _list_runs(out: Path) -> None:
    runs = list_runs(out)
    if not runs:
        click.echo(f"no run directories under {out}")
        return
    rows = [("run", "command", "model", "dataset", "epochs", "test metric", "status")]
    rows += [_row(info) for info in runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _row(info: RunInfo) -> tuple[str, ...]:
    epochs = f"{info.epochs_done}/{info.epochs}" if info.epochs is not None else "-"
    if info.seeds is not None:  # a seed group: its seeds' runs with results
        epochs = f"{info.seeds_done}/{info.seeds} seeds"
    metric = f"{info.metric[0]}={info.metric[1]:.4f}" if info.metric else "-"
    status = info.status if info.reason is None else f"{info.status}: {info.reason}"  # a run that cannot be read
    return (info.path.name, info.command, info.model or "-", info.dataset or "-", epochs, metric, status)
