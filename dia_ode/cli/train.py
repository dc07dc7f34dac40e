"""`dia-ode train`: train a model, or resume a run from its last checkpoint."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import click

from dia_ode.attention import DIA_SAMS
from dia_ode.checkpoint import CheckpointError
from dia_ode.cli.options import CONTEXT, check_device, check_model, common_options, model_option, parse_model_options
from dia_ode.data import DataError, list_datasets, load_dataset
from dia_ode.runs import start_run
from dia_ode.solvers import StepBudgetExceeded
from dia_ode.train import TrainConfig, TrainingDiverged, resume_training, run_training


@click.command(context_settings=CONTEXT)
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
@model_option
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this directory from its last checkpoint (its saved options are used; "
                   "--epochs extends it).")
@common_options
@click.pass_context
def train(ctx: click.Context, model, dataset, data_dir, epochs, batch_size, lr, momentum, nesterov, weight_decay,
          schedule, no_augment, reduction, sam, no_cell_state, no_output_gate, model_option_pairs, resume_dir,
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
    model_options.update(parse_model_options(model_option_pairs))
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
    def given(name: str) -> bool:  # only options typed on this command line override the saved run
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    try:
        summary = _guarded(lambda: resume_training(run_dir, epochs=epochs if given("epochs") else None,
                                                   device=device if given("device") else None,
                                                   progress=not no_progress, command=" ".join(sys.argv)), run_dir)
    except CheckpointError as err:
        raise click.BadParameter(str(err), param_hint="--resume") from None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--epochs") from None
    _report(summary, run_dir)


def _guarded(job, run_dir: Path):
    """Run a training job; turn divergence and Ctrl-C into one-line messages."""
    try:
        return job()
    except (TrainingDiverged, StepBudgetExceeded) as err:
        what = "training diverged" if isinstance(err, TrainingDiverged) else "the ODE solver gave up"
        raise click.ClickException(f"{what}: {err}; the last good checkpoint (if any) is kept in {run_dir}; "
                                   f"continue with: dia-ode train --resume {run_dir}") from None
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; continue with: dia-ode train --resume {run_dir}", err=True)
        sys.exit(130)
    except DataError as err:
        raise click.BadParameter(str(err), param_hint="--data-dir/--dataset") from None


def _report(summary: dict, run_dir: Path) -> None:
    click.echo(f"{summary['model']} on {summary['dataset']}: test_acc={summary['test_acc']:.4f} "
               f"test_loss={summary['test_loss']:.4f} params={summary['params']:,} "
               f"train_time={summary['train_seconds']:.1f}s -> {run_dir}")
