"""`dia-ode train`: train a model for a task, or resume a run; data-parallel under torchrun.

`--run-dir DIR` makes the command restartable: the first time it creates DIR as the run directory and
trains; run again (torchrun's --max-restarts after a lost process, a preempted job requeued by a
scheduler) it continues the run from its last checkpoint, or says that it is finished (exit 0). The
command must describe the run DIR holds: its options are resolved as a new run's and compared with
config.json (engine.check_same_run), and the first option that differs is refused in one line; only
--device may change, and more --epochs extend the run as `--resume --epochs` does.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict
from pathlib import Path

import click

from dia_ode.attention.dia import DIA_SAMS
from dia_ode.cli.options import (CONTEXT, FiniteFloat, NameChoice, check_device, check_model, check_seeds,
                                common_options, model_option, option_targets, parse_model_options, parse_task_options,
                                seeds_option, task_option)
from dia_ode.cli.runtime import interrupt_exit
from dia_ode.data import DataError, list_datasets, load_dataset
from dia_ode.engine import (COMPILE_MODES, OPTIMIZERS, PRECISIONS, SCHEDULES, ConfigError, DistContext, ResumeMismatch, RunFinished,
                            TrainConfig, TrainingDiverged, from_environment, recipe_config, resume_training,
                            run_training)
from dia_ode.engine.trainer import check_same_run, saved_config
from dia_ode.engine.acceleration import check_acceleration
from dia_ode.models import model_entry
from dia_ode.rundir import (CHECKPOINT, CheckpointError, RunLocked, load_run_config, lock_run, run_description,
                            start_run, write_json)
from dia_ode.rundir.directory import start_run_at
from dia_ode.rundir.safe_write import append_text
from dia_ode.solvers import StepBudgetExceeded
from dia_ode.studies.seeds import seeds_markdown, start_seed_group, summarize_seeds, train_seeds
from dia_ode.tasks import get_task, list_tasks

DEFAULTS = TrainConfig()


@click.command(context_settings=CONTEXT)
@click.option("--model", default=DEFAULTS.model, help="Model name, see `dia-ode ls models`.")
@click.option("--task", type=NameChoice(list_tasks()), default=DEFAULTS.task, help="What is learned.")
@click.option("--dataset", type=NameChoice(list_datasets()), default=DEFAULTS.dataset, help="Dataset.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with IDX files or CIFAR batches (fashion-mnist is found automatically).")
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, help="Epochs in total.")
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size,
              help="Global batch size (split over the processes under torchrun).")
@click.option("--train-examples", type=click.IntRange(min=1), default=None,
              help="Train on a seeded random subset of this many training examples [default: all].")
@click.option("--val-fraction", type=FiniteFloat(0, 1, max_open=True), default=DEFAULTS.val_fraction,
              help="Fraction of the training data held out for validation (never trained on).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=DEFAULTS.optimizer, help="Optimizer.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=DEFAULTS.lr, help="Peak learning rate.")
@click.option("--momentum", type=FiniteFloat(0, 1, max_open=True), default=DEFAULTS.momentum,
              help="SGD momentum.")
@click.option("--nesterov/--no-nesterov", default=DEFAULTS.nesterov, help="Nesterov momentum (SGD).")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=DEFAULTS.weight_decay, help="Weight decay.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=DEFAULTS.schedule,
              help="lr schedule; step divides by 10 at 50% and 75% of the epochs; warmup_cosine ramps up "
                   "linearly for --warmup-epochs, then decays by a cosine, per step.")
@click.option("--warmup-epochs", type=FiniteFloat(min=0), default=DEFAULTS.warmup_epochs,
              help="Linear warm-up length (schedule warmup_cosine).")
@click.option("--clip-grad", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Clip the global gradient norm to this value.")
@click.option("--no-augment", is_flag=True, help="Train without random crop / flip.")
@click.option("--ema-decay", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=DEFAULTS.ema_decay,
              help="Keep a moving average of the weights with this decay; it is evaluated, saved and sampled "
                   "(the diffusion recipe: 0.999).")
@click.option("--sync-bn", is_flag=True, help="Under torchrun: convert BatchNorm to SyncBatchNorm.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULTS.precision,
              help="Forward and loss under autocast: bf16 (CPU and CUDA), fp16 (CUDA, with a gradient scaler).")
@click.option("--compile", "compile_model", is_flag=True,
              help="Train through torch.compile of the model (the first steps compile: minutes on a CPU).")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default=DEFAULTS.compile_mode,
              help="torch.compile's mode (with --compile); reduce-overhead records CUDA graphs.")
@click.option("--channels-last", is_flag=True, help="Weights and activations in the channels_last memory format.")
@click.option("--reduction", type=click.IntRange(min=1), default=None,
              help="Attention bottleneck ratio r (default: 4 for dia, 16 for se/cbam/shared).")
@click.option("--sam", type=click.Choice(DIA_SAMS), default=None,
              help="For shared/dia models: which module's squeeze is shared [default: se].")
@click.option("--no-cell-state", is_flag=True, help="DIA ablation: drop the cell state c.")
@click.option("--no-output-gate", is_flag=True, help="DIA ablation: drop the output gate o.")
@model_option
@task_option
@seeds_option
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The run directory itself: created by the first run of the command, continued from its "
                   "checkpoint by the same command run again (restarts, preemption); replaces --out.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
              help="Continue the run in this directory from its last checkpoint (its saved options are used; "
                   "--epochs extends it).")
@common_options
@click.pass_context
def train(ctx: click.Context, model, task, dataset, data_dir, epochs, batch_size, train_examples, val_fraction,
          optimizer, lr, momentum, nesterov, weight_decay, schedule, warmup_epochs, clip_grad, no_augment, ema_decay,
          sync_bn, precision, compile_model, compile_mode, channels_last, reduction, sam, no_cell_state, no_output_gate, model_option_pairs, task_option_pairs, seeds,
          run_dir, resume_dir, seed, device, out, no_progress) -> None:
    """Train a model; by default dia_resnet20 on the embedded digits data.

    Models carry a training recipe (`dia-ode ls models --pattern NAME` shows it; the ViTs use AdamW with
    warm-up and cosine); options given here override it.
    """
    check_device(device)
    check_seeds(ctx, seeds)

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    if run_dir is not None:
        for name, hint in (("resume_dir", "--resume continues a run by its directory"),
                           ("out", "--run-dir names the run directory itself"),
                           ("seeds", "--run-dir holds one run; --seeds makes a group of runs")):
            if given(name):
                raise click.UsageError(f"{hint}; drop --run-dir or {_flag(ctx, name)}")
    _check_restarts()
    continued = resume_dir or run_dir
    dist = _join(device if continued is None or given("device") else resume_device(continued, device))
    try:
        if resume_dir is not None:
            ignored = [p.opts[0] for p in ctx.command.params if p.name not in _RESUME_OPTIONS and given(p.name)]
            if ignored:
                raise click.UsageError(f"--resume continues with the run's saved options; drop {', '.join(ignored)}")
            _resume(resume_dir, epochs if given("epochs") else None, device if given("device") else None,
                    task if given("task") else None, dist, no_progress)
            return
        model_options = {k: v for k, v in (("reduction", reduction), ("sam", sam)) if v is not None}
        model_options.update({k: False for k, flag in (("cell_state", no_cell_state),
                                                        ("output_gate", no_output_gate)) if flag})
        model_options.update(parse_model_options(model_option_pairs, model))
        others = option_targets(model_option_pairs) - {model}
        if others:
            raise click.BadParameter(f"options target {', '.join(sorted(others))}, but --model is {model}",
                                     param_hint="--model-option")
        check_model(model, model_options)
        values = dict(model=model, task=task, dataset=dataset, data_dir=str(data_dir) if data_dir else None,
                      epochs=epochs, batch_size=batch_size, train_examples=train_examples,
                      val_fraction=val_fraction, optimizer=optimizer, lr=lr, momentum=momentum, nesterov=nesterov,
                      weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                      clip_grad=clip_grad, augment=not no_augment, ema_decay=ema_decay, sync_bn=sync_bn,
                      precision=precision, compile=compile_model, compile_mode=compile_mode,
                      channels_last=channels_last, seed=seed,
                      device=device, model_options=model_options, task_options=parse_task_options(task_option_pairs))
        chosen = {k for k in values if given({"augment": "no_augment", "compile": "compile_model"}.get(k, k))}
        try:
            get_task(task, values["task_options"])
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--task-option") from None
        cfg = recipe_config(values, chosen | ({"model_options"} if model_options else set()))
        if cfg.sync_bn and dist.enabled and dist.device.type != "cuda":
            raise click.BadParameter("SyncBatchNorm runs on CUDA devices only (torch's rule); on CPU leave it off",
                                     param_hint="--sync-bn")
        if cfg.batch_size % dist.world_size:
            raise click.BadParameter(f"{cfg.batch_size} is not divisible by the {dist.world_size} processes "
                                     f"torchrun started", param_hint="--batch-size")
        try:
            cfg.validate()
            check_acceleration(precision=cfg.precision, compile=cfg.compile, compile_mode=cfg.compile_mode,
                               channels_last=cfg.channels_last, device=dist.device,
                               continuous=model_entry(cfg.model).kind == "continuous")
        except ConfigError as err:
            raise click.BadParameter(str(err), param_hint=f"--{err.option.replace('_', '-')}") from None
        try:
            data = load_dataset(cfg.dataset, data_dir, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed,
                                train_examples=cfg.train_examples)
            get_task(cfg.task).check_dataset(data)
        except DataError as err:
            hint = f"--{err.option.replace('_', '-')}" if err.option else "--data-dir/--dataset"
            raise click.BadParameter(str(err), param_hint=hint) from None
        check_model(model, model_options, data, cfg.task)
        if seeds:
            _train_seeds(cfg, seeds, data, dist, out, no_progress)
            return
        if run_dir is not None:
            _train_in(run_dir, cfg, lambda n: recipe_config({**values, "epochs": n}, chosen | {"epochs"}),
                      data, dist, no_progress, given("device"))
            return
        run_dir = None
        if dist.is_main:
            run_dir = start_run(out, run_description("train", model, model_options, cfg.dataset),
                                {"command": "train", **asdict(cfg)})
            click.echo(f"run directory: {run_dir}")
        run_dir = dist.broadcast(run_dir)
        summary = _guarded(lambda: run_training(cfg, run_dir, progress=not no_progress, dataset=data, dist=dist),
                           run_dir)
        if dist.is_main:
            _report(summary, run_dir)
    finally:
        dist.close()


_RESUME_OPTIONS = ("resume_dir", "epochs", "device", "no_progress", "task")


def resume_device(run_dir: Path, default: str) -> str:
    """The device a resumed run trains on when --device is not given: the one it was started with.

    Under torchrun the process group is joined before the run is read; joining on --device's default
    ("auto") put a CPU run's ranks on NCCL and on GPUs that were never asked for (found on a one-GPU
    machine: the resume failed with 'torchrun started 2 processes ... 1 GPU(s)'). A run that cannot be
    read keeps the default: resuming reports that."""
    try:
        saved = load_run_config(run_dir).get("device", default)
    except (CheckpointError, OSError):
        return default
    return saved if saved in ("auto", "cpu", "cuda") else default


def _check_restarts() -> None:
    """Refuse torchrun's --max-restarts where its restarted processes could wait forever.

    torchrun (c10d rendezvous, torch >= 2.5) shares its own TCP store with the processes it starts and
    keeps it across restarts, and no key of the process group is scoped to an attempt: a restarted rank
    can read the dead attempt's address of another rank and wait in init_process_group forever (seen
    with gloo on torch 2.13; pytorch/pytorch#135712). TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives every
    attempt a store of its own (rank 0's). A process of such a torchrun sees
    TORCHELASTIC_USE_AGENT_STORE=True and TORCHELASTIC_MAX_RESTARTS > 0."""
    if (int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
            and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"):
        raise click.UsageError("torchrun --max-restarts keeps one TCP store across restarts, where a restarted "
                               "process can wait forever for a rank of the failed attempt (pytorch/pytorch#135712): "
                               "start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment")


def _join(device: str) -> DistContext:
    """This process's data-parallel context (one process unless started by torchrun)."""
    try:
        return from_environment(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None


def _resume(run_dir: Path, epochs: int | None, device: str | None, task: str | None, dist: DistContext,
            no_progress: bool, option: str = "--resume") -> None:
    try:
        summary = _guarded(lambda: resume_training(run_dir, epochs=epochs, device=device, progress=not no_progress,
                                                   command=" ".join(sys.argv), dist=dist, task=task), run_dir,
                           lock_hint=option)
    except RunFinished as err:  # not an error: the work is done
        if dist.is_main:
            click.echo(str(err))
        return
    except ResumeMismatch as err:
        raise click.BadParameter(str(err), param_hint=f"--{err.option}") from None
    except ValueError as err:  # CheckpointError, or a saved config that no longer builds
        raise click.BadParameter(str(err), param_hint=option) from None
    if dist.is_main:
        _report(summary, run_dir)


# config fields whose option's parameter has another name
_FIELD_PARAMS = {"augment": "no_augment", "compile": "compile_model", "model_options": "model_option_pairs",
                 "task_options": "task_option_pairs"}


def _train_in(run_dir: Path, cfg: TrainConfig, resolve, data, dist: DistContext, no_progress: bool,
              device_given: bool) -> None:
    """--run-dir: create the run, or continue the one DIR holds (create-or-resume).

    Rank 0 takes the run's lock, reads DIR, and makes it a run directory if it is new or empty; every
    rank then learns rank 0's decision or refusal (as hold_run does with the lock), so no rank waits
    alone in a collective. `resolve(epochs)` is this command's config resolved for another number of
    epochs: a recipe's warm-up scales with them, so the comparison is made at the run's first length.
    """
    lock, decision = None, None
    if dist.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = lock_run(run_dir)  # held through the training: the trainer takes it again (reentrant)
            decision = _decide(run_dir, cfg, resolve)
        except ResumeMismatch as err:
            decision = ("refused", _flag(click.get_current_context(), _FIELD_PARAMS.get(err.option, err.option)),
                        str(err))
        except (RunLocked, OSError, ValueError) as err:  # CheckpointError: DIR is no run (or another command's)
            decision = ("refused", "--run-dir", str(err))
    try:
        kind, *detail = dist.broadcast(decision)
        if kind == "refused":
            raise click.BadParameter(detail[1], param_hint=detail[0])
        if kind == "resume":
            _resume(run_dir, cfg.epochs, cfg.device if device_given else None, None, dist, no_progress, "--run-dir")
            return
        summary = _guarded(lambda: run_training(cfg, run_dir, progress=not no_progress, dataset=data, dist=dist),
                           run_dir, lock_hint="--run-dir", again="the same command")
        if dist.is_main:
            _report(summary, run_dir)
    finally:
        if lock is not None:
            lock.release()


def _decide(run_dir: Path, cfg: TrainConfig, resolve) -> tuple[str]:
    """Rank 0's reading of --run-dir DIR under its lock: ("new",) after making it a run directory,
    ("resume",) for a run with a checkpoint, ("restart",) for one killed before its first checkpoint
    (trained afresh in place). Raises what refuses DIR."""
    if not (run_dir / "config.json").exists():
        start_run_at(run_dir, {"command": "train", **asdict(cfg)})  # FileExistsError: DIR holds something else
        click.echo(f"run directory: {run_dir}")
        return ("new",)
    saved, old = saved_config(run_dir)
    check_same_run(old, resolve((*old.extended_from, old.epochs)[0]), run_dir)
    if (run_dir / CHECKPOINT).exists():
        return ("resume",)
    # nothing trained yet: this command's config (its epochs and device) replaces the saved one
    for leftover in ("metrics.jsonl", "summary.json"):
        (run_dir / leftover).unlink(missing_ok=True)
    write_json(run_dir / "config.json", {**saved, **asdict(cfg)})
    append_text(run_dir / "cmd.txt", " ".join(sys.argv) + "\n")
    click.echo(f"run directory: {run_dir} (no checkpoint yet: trained from the start)")
    return ("restart",)


def _flag(ctx: click.Context, name: str) -> str:
    """The option of parameter `name`; --run-dir for a config field no option sets (split_seed, milestones)."""
    return next((p.opts[0] for p in ctx.command.params if p.name == name), "--run-dir")


def _train_seeds(cfg: TrainConfig, seeds: tuple[int, ...], data, dist: DistContext, out: Path,
                 no_progress: bool) -> None:
    """One run per seed in a group run directory, then the table over seeds (studies.seeds)."""
    if dist.enabled:
        raise click.UsageError("--seeds trains the seeds one after another in one process; under torchrun "
                               "start one train per --seed")
    group = start_seed_group(out, cfg, seeds)
    click.echo(f"run directory: {group}")
    run_dirs = train_seeds(cfg, seeds, group, progress=not no_progress, dataset=data, guard=_guarded,
                           on_run_end=_report)
    click.echo(seeds_markdown(summarize_seeds(group, run_dirs, n_test=len(data.test))), nl=False)
    click.echo(f"-> {group}")


def _guarded(job, run_dir: Path, lock_hint: str = "--out", again: str | None = None):
    """Run a training job; turn divergence, Ctrl-C and a refused run lock into one-line messages.
    `again` is how the run continues (default: dia-ode train --resume RUN)."""
    again = again or f"dia-ode train --resume {run_dir}"
    try:
        return job()
    except RunLocked as err:  # a scheduler's requeue while the old job still runs, or a file system without locks
        raise click.BadParameter(str(err), param_hint=lock_hint) from None
    except (TrainingDiverged, StepBudgetExceeded) as err:
        kept = (Path(run_dir) / CHECKPOINT).is_file()  # else the run directory is removed (cli/runtime.py)
        if isinstance(err, TrainingDiverged):  # a resume would replay the same batches into the same NaN
            what, advice = "training diverged", "start a new run with a lower --lr or with --clip-grad"
        else:
            what, advice = "the ODE solver gave up", "loosen the solver (--model-option rtol=..., max_num_steps=...)"
            if kept:
                advice = f"continue with: {again}, or {advice}"
        where = f"the last good checkpoint is kept in {run_dir}" if kept else "no epoch finished, nothing is kept"
        raise click.ClickException(f"{what}: {err}; {where}; {advice}") from None
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM from a scheduler (cli/runtime.py)
        what, code = interrupt_exit(err)
        if (Path(run_dir) / CHECKPOINT).is_file():
            click.echo(f"\n{what}; the last checkpoint is kept; continue with: {again}", err=True)
        else:
            click.echo(f"\n{what} before the first checkpoint: nothing to resume", err=True)
        sys.exit(code)
    except DataError as err:
        raise click.BadParameter(str(err), param_hint="--data-dir/--dataset") from None


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _report(summary: dict, run_dir: Path) -> None:
    # the task's metrics; one the test split cannot define (NaN: no large objects in digit scenes) stays
    # in summary.json and out of the line, as in the epoch lines
    tests = " ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.startswith("test_") and not _undefined(v))
    click.echo(f"{summary['model']} on {summary['dataset']}: {tests} params={summary['params']:,} "
               f"train_time={summary['train_seconds']:.1f}s -> {run_dir}")
