"""The `dia-ode` command line: thin Click layers over library functions.

Every command that computes something writes a run directory under --out (see runs.py). Wrong
input becomes a one-line usage error (exit code 2) naming the option, never a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click
import torch

from dia_ode.attention import ATTENTIONS, DIA_SAMS
from dia_ode.bench import bench_train_step
from dia_ode.checkpoint import CheckpointError
from dia_ode.data import DataError, list_datasets, load_dataset
from dia_ode.models import create_model, list_models
from dia_ode.runs import resolve_device, start_run, write_json
from dia_ode.train import TrainConfig, TrainingDiverged, resume_training, run_training

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


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="dia_ode")
def main() -> None:
    """Residual networks as ODE solvers, attention as their step-size controller."""


@main.command(context_settings=CONTEXT)
@click.option("--model", default=TrainConfig.model, help="Model name, see `dia-ode ls models`.")
@click.option("--dataset", type=click.Choice(list_datasets()), default=TrainConfig.dataset, help="Dataset.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with IDX files or CIFAR batches (fashion-mnist is found automatically).")
@click.option("--epochs", type=click.IntRange(min=1), default=TrainConfig.epochs, help="Epochs in total.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, help="Batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TrainConfig.lr, help="Peak learning rate.")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=TrainConfig.momentum,
              help="SGD momentum.")
@click.option("--nesterov/--no-nesterov", default=TrainConfig.nesterov, help="Nesterov momentum.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=TrainConfig.weight_decay, help="L2 weight decay.")
@click.option("--schedule", type=click.Choice(["cosine", "step"]), default=TrainConfig.schedule,
              help="lr schedule; step divides by 10 at 50% and 75% of the epochs.")
@click.option("--no-augment", is_flag=True, help="Train without random crop / flip.")
@click.option("--reduction", type=click.IntRange(min=1), default=None,
              help="Attention bottleneck ratio r (default: 4 for dia, 16 for se/cbam/shared).")
@click.option("--sam", type=click.Choice(DIA_SAMS), default=None,
              help="For shared/dia models: which module's squeeze is shared [default: se].")
@click.option("--no-cell-state", is_flag=True, help="DIA ablation: drop the cell state c.")
@click.option("--no-output-gate", is_flag=True, help="DIA ablation: drop the output gate o.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this directory from its last checkpoint (its saved options are used; "
                   "--epochs extends it).")
@common_options
@click.pass_context
def train(ctx: click.Context, model, dataset, data_dir, epochs, batch_size, lr, momentum, nesterov, weight_decay,
          schedule, no_augment, reduction, sam, no_cell_state, no_output_gate, resume_dir,
          seed, device, out, no_progress) -> None:
    """Train a model; by default dia_resnet20 on the embedded digits data."""
    check_device(device)
    if resume_dir is not None:
        ignored = [p.opts[0] for p in ctx.command.params if p.name not in _RESUME_OPTIONS
                   and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
        if ignored:
            raise click.UsageError(f"--resume continues with the run's saved options; drop {', '.join(ignored)}")
        _resume(ctx, resume_dir, epochs, device, no_progress)
        return
    model_options = {k: v for k, v in (("reduction", reduction), ("sam", sam)) if v is not None}
    model_options.update({k: False for k, flag in (("cell_state", no_cell_state), ("output_gate", no_output_gate))
                          if flag})
    check_model(model, model_options)
    try:
        data = load_dataset(dataset, data_dir)
    except DataError as err:
        raise click.BadParameter(str(err), param_hint="--data-dir/--dataset") from None
    cfg = TrainConfig(model=model, dataset=dataset, data_dir=str(data_dir) if data_dir else None, epochs=epochs,
                      batch_size=batch_size, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                      schedule=schedule, augment=not no_augment, seed=seed, device=device,
                      model_options=model_options)
    run_dir = start_run(out, f"train-{model}-{dataset}", {"command": "train", **asdict(cfg)})
    click.echo(f"run directory: {run_dir}")
    summary = _guarded(lambda: run_training(cfg, run_dir, progress=not no_progress, dataset=data), run_dir)
    _report(summary, run_dir)


_RESUME_OPTIONS = ("resume_dir", "epochs", "device", "no_progress")


def _resume(ctx: click.Context, run_dir: Path, epochs: int, device: str, no_progress: bool) -> None:
    explicit = ctx.get_parameter_source("epochs") == click.core.ParameterSource.COMMANDLINE
    if (run_dir / "cmd.txt").is_file():  # a run's history of commands, the resumes included
        with open(run_dir / "cmd.txt", "a") as f:
            f.write(" ".join(sys.argv) + "\n")
    try:
        summary = _guarded(lambda: resume_training(run_dir, epochs=epochs if explicit else None, device=device,
                                                   progress=not no_progress), run_dir)
    except CheckpointError as err:
        raise click.BadParameter(str(err), param_hint="--resume") from None
    _report(summary, run_dir)


def _guarded(job, run_dir: Path):
    """Run a training job; turn divergence and Ctrl-C into one-line messages."""
    try:
        return job()
    except TrainingDiverged as err:
        raise click.ClickException(f"training diverged: {err}; the last good checkpoint is kept in {run_dir}") \
            from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with: dia-ode train --resume {run_dir}", err=True)
        sys.exit(130)
    except DataError as err:
        raise click.BadParameter(str(err), param_hint="--data-dir/--dataset") from None


def _report(summary: dict, run_dir: Path) -> None:
    click.echo(f"{summary['model']} on {summary['dataset']}: test_acc={summary['test_acc']:.4f} "
               f"test_loss={summary['test_loss']:.4f} params={summary['params']:,} "
               f"train_time={summary['train_seconds']:.1f}s -> {run_dir}")


@main.command(name="ls", context_settings=CONTEXT)
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
        for name, text in ATTENTIONS.items():
            click.echo(f"  {name:<7} {text}")
    if what in ("all", "datasets"):
        click.echo("datasets:")
        for name in list_datasets():
            click.echo(f"  {name}")


@main.group(context_settings=CONTEXT, invoke_without_command=True)
@common_options
@click.pass_context
def bench(ctx: click.Context, seed, device, out, no_progress) -> None:
    """Benchmarks; without a subcommand runs `train-step` with its defaults."""
    shared = {"seed": seed, "device": device, "out": out, "no_progress": no_progress}
    ctx.default_map = {name: shared for name in bench.commands}  # a subcommand's own options still win
    if ctx.invoked_subcommand is None:
        ctx.invoke(bench_train_step_command, **shared)


@bench.command(name="train-step", context_settings=CONTEXT)
@click.option("--models", default="resnet56,se_resnet56,dia_resnet56",
              help="Comma-separated model names; ratios are relative to the first.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Batch size.")
@click.option("--image-size", type=click.IntRange(min=4), default=32, help="Input height = width.")
@click.option("--steps", type=click.IntRange(min=1), default=3, help="Timed SGD steps per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=7,
              help="Interleaved rounds; each model's fastest round is kept.")
@click.option("--channels-last", is_flag=True, help="Use the channels_last memory format.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch intra-op threads.")
@common_options
def bench_train_step_command(models, batch_size, image_size, steps, rounds, channels_last, threads,
                             seed, device, out, no_progress) -> None:
    """Train-step time of models (b=64, 32x32x3) and their ratios, measured in one process."""
    check_device(device)
    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        check_model(name, {})
    if threads:
        torch.set_num_threads(threads)
    config = {"command": "bench train-step", "models": names, "batch_size": batch_size, "image_size": image_size,
              "steps": steps, "rounds": rounds, "channels_last": channels_last, "threads": torch.get_num_threads(),
              "seed": seed, "device": str(resolve_device(device))}
    run_dir = start_run(out, "bench-train-step", config)
    rows = bench_train_step(names, batch_size=batch_size, image_size=image_size, steps=steps, rounds=rounds,
                            device=resolve_device(device), channels_last=channels_last, seed=seed)
    ratios = _named_ratios(rows)
    write_json(run_dir / "bench.json", rows)
    write_json(run_dir / "summary.json", {"rows": rows, "ratios": ratios})
    click.echo(f"{'model':<22}{'params':>12}{'step [ms]':>12}{'ratio':>8}")
    for r in rows:
        click.echo(f"{r['model']:<22}{r['params']:>12,}{1e3 * r['step_seconds']:>12.1f}{r['ratio_to_first']:>8.3f}")
    for label, value in ratios.items():
        click.echo(f"{label}: {value:.3f}")
    click.echo(f"-> {run_dir}")


def _named_ratios(rows: list[dict]) -> dict[str, float]:
    """dia/plain and dia/se for every backbone that has those variants in the rows."""
    step = {r["model"]: r["step_seconds"] for r in rows}
    ratios = {}
    for name in step:
        if name.startswith("dia_"):
            backbone = name[len("dia_"):]
            for other in (backbone, f"se_{backbone}"):
                if other in step:
                    ratios[f"{name}/{other}"] = step[name] / step[other]
    return ratios


if __name__ == "__main__":
    main()
