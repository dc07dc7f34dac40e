"""One trainer for every task: epochs, atomic checkpoints, exact resume, metrics, data parallelism.

The task (tasks/) owns batches, loss and evaluation; the trainer owns the loop: the lr schedule per epoch or
step, optional gradient clipping, the NaN/Inf stop, validation every epoch and the test at the end, one
atomic checkpoint per epoch, metrics.jsonl, summary.json and figures (a continuous model's rows add the
solver record of its training forwards: solvers.solver_record), one logged line per epoch, an optional
moving average of the weights (engine/ema.py: evaluated in the weights' place and saved beside them), a
task's own figures after an epoch, the run's precision, compile and memory layout (engine/acceleration.py:
forward, loss and evaluation under autocast, an fp16 run's gradient scaler in the checkpoint), and the run
directory's lock (rundir/lock.py: one process per run). All
randomness of an epoch (shuffling and augmentation from a generator, what the model draws from torch's
global one) is seeded by (seed, epoch), so a resumed run reproduces an uninterrupted one exactly on CPU.
Under torchrun (engine/distributed.py) each rank trains on its part of every global batch, metric sums are
all-reduced (the nfe_* columns are rank 0's own), evaluation uses rank 0's BatchNorm statistics, and only
rank 0 writes (and holds the lock).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from dia_ode.data import Dataset, global_batches, keeps_data_on, load_dataset, shard_split
from dia_ode.engine.acceleration import GradientStep, autocast, check_acceleration, compiled, to_channels_last
from dia_ode.engine.checkpoint import restore_training_state, save_training_state
from dia_ode.engine.config import ConfigError, TrainConfig
from dia_ode.engine.device import peak_memory_mb, resolve_device
from dia_ode.engine.distributed import DistContext
from dia_ode.engine.ema import averaged_module, make_ema
from dia_ode.engine.optim import build_optimizer, learning_rate
from dia_ode.engine.report import epoch_line, plot_history, undefined_note
from dia_ode.engine.seeding import epoch_generator, seed_epoch, seed_everything
from dia_ode.models import create_model, model_entry
from dia_ode.rundir import (CHECKPOINT, CheckpointError, RunLock, RunLocked, append_jsonl, brief, has_results,
                            is_seed_group, load_checkpoint, load_run_config, lock_run, mark_failed, read_summary, save_figure,
                            seed_group_refusal, write_json, write_jsonl)
from dia_ode.rundir.safe_write import append_text
from dia_ode.solvers.statistics import SOLVER_RECORD, DynamicsMeter, solver_record
from dia_ode.tasks import get_task, means, model_spec

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class RunFinished(Exception):
    """A resume of a run that has done all its epochs and has its results: nothing to do."""


class ResumeMismatch(ConfigError):
    """What a resume was asked for does not fit the saved run; `option` names the config field."""


def build_model(spec: dict, device: torch.device | str) -> nn.Module:
    """The model of a spec (see model_spec), on `device`."""
    return create_model(spec["name"], **spec["options"]).to(device)


class Trainer:
    """Trains one config into one run directory.

    Args:
        cfg: the run's configuration (for a resume: the saved one, possibly with more epochs).
        run_dir: a directory made by rundir.start_run (rank 0's; other ranks write nothing).
        dataset: the loaded dataset of cfg, when the caller has it already.
        dist: the data-parallel context (engine.distributed.from_environment); None: one process on cfg.device.
        progress: show tqdm progress bars (rank 0 only, and only on a terminal: a log file gets the
            epoch lines instead).
        on_epoch_end: called as on_epoch_end(epoch, row) after each checkpoint is written.
    """

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, dataset: Dataset | None = None,
                 dist: DistContext | None = None, progress: bool = True,
                 on_epoch_end: Callable[[int, dict], None] | None = None) -> None:
        cfg.validate()
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.task = get_task(cfg.task, cfg.task_options)
        dist = dist or DistContext(resolve_device(cfg.device))
        self.dist, self.device = dist, dist.device
        check_acceleration(precision=cfg.precision, compile=cfg.compile, compile_mode=cfg.compile_mode,
                           channels_last=cfg.channels_last, device=self.device,
                           continuous=model_entry(cfg.model).kind == "continuous")
        if cfg.batch_size % dist.world_size:
            raise ValueError(f"batch_size={cfg.batch_size} is not divisible by the world size {dist.world_size}")
        self.dataset = dataset or load_dataset(cfg.dataset, cfg.data_dir, val_fraction=cfg.val_fraction,
                                               split_seed=cfg.split_seed, train_examples=cfg.train_examples)
        self.task.check_dataset(self.dataset)
        if keeps_data_on(self.device):  # batches are cut, augmented and normalised where the model computes
            self.dataset = self.dataset.to(self.device)
        self.progress = progress and dist.is_main
        self.on_epoch_end = on_epoch_end
        self.spec = model_spec(cfg.model, cfg.model_options, self.task, self.dataset)
        seed_everything(cfg.seed)
        self.model = build_model(self.spec, self.device)  # the raw model: what is saved and analysed
        if cfg.channels_last:
            to_channels_last(self.model)
        self.optimizer = build_optimizer(cfg, self.model)
        self.gradient_step = GradientStep(cfg.precision, self.device)
        self.ema = None if cfg.ema_decay is None else make_ema(self.model, cfg.ema_decay)
        self.history: list[dict] = []
        self.epochs_saved = 0  # epochs in the checkpoint on disk
        self._training = False  # set once the state is restored: from then on a failure is the run's
        self._failure: Exception | None = None  # a forward error held back for the other ranks

    @property
    def normalisation(self) -> dict:
        return self.task.normalisation(self.dataset)

    @property
    def evaluated(self) -> nn.Module:
        """The model that evaluation, load_run and the task's epoch_figures see: the weights' moving
        average where the run keeps one."""
        return averaged_module(self.ema, self.model)

    def fit(self, resume: bool = False) -> dict:
        """Train the remaining epochs, test, write summary.json and figures; return the summary.

        Raises:
            CheckpointError: resume=True and the checkpoint is missing, corrupt or foreign.
            TrainingDiverged: a non-finite loss; the last good checkpoint is left untouched.
        """
        lock = hold_run(self.run_dir, self.dist)
        try:
            return self._fit(resume)
        except BaseException as err:
            # only once training went on (a refused resume leaves the run as it was), and only with a
            # checkpoint to resume from (else the CLI removes the empty run directory)
            if self.dist.is_main and self._training and (self.run_dir / CHECKPOINT).is_file():
                mark_failed(self.run_dir, err, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                            epochs_done=self.epochs_saved, epochs=self.cfg.epochs)
            raise
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, resume: bool) -> dict:
        cfg, dist = self.cfg, self.dist
        if resume:
            self.history = restore_training_state(self.run_dir / CHECKPOINT, cfg, self.model, self.optimizer,
                                                  self.device, self.ema, self.gradient_step)
            self.epochs_saved = len(self.history)
            if dist.is_main:
                write_jsonl(self.run_dir / "metrics.jsonl", self.history)  # drop lines written after the checkpoint
                log.info(f"resumed at epoch {len(self.history)} of {cfg.epochs}")
        else:
            (self.run_dir / CHECKPOINT).parent.mkdir(parents=True, exist_ok=True)
        self._training = True
        continuous = model_entry(cfg.model).kind == "continuous"  # its NFE is worth a column and a panel
        net = dist.wrap(self.model, cfg.sync_bn)
        if cfg.compile:  # training forwards only: evaluation's batch size and no-grad mode would be a second graph
            net = compiled(net, cfg.compile_mode)
        meter = DynamicsMeter(self.model)  # NFE of every forward/backward, for discrete and continuous models alike
        eval_meter = meter if self.ema is None else DynamicsMeter(self.evaluated)
        undefined: set[str] = set()  # NaN metrics named so far (undefined_note)
        for epoch in range(len(self.history), cfg.epochs):
            start = time.perf_counter()
            meter.reset()
            eval_meter.reset()
            row = {"epoch": epoch + 1, **self._train_epoch(net, epoch)}
            row.update(self._evaluate("val"))
            row["seconds"] = time.perf_counter() - start
            row.update(nfe_means(meter, eval_meter))
            if continuous:  # the solver record of the epoch's training forwards
                row.update(solver_record(meter))
            self.history.append(row)
            if dist.is_main:
                save_training_state(self.run_dir / CHECKPOINT, epoch=epoch + 1, model=self.model,
                                    optimizer=self.optimizer, history=self.history, cfg=cfg, model_spec=self.spec,
                                    normalisation=self.normalisation, ema=self.ema,
                                    scaler=self.gradient_step.state_dict())
                self.epochs_saved = epoch + 1
                append_jsonl(self.run_dir / "metrics.jsonl", row)
                log.info(epoch_line(row, cfg.epochs, nfe=continuous))
                if note := undefined_note(row, undefined):
                    log.info(note)
                for name, figure in self.task.epoch_figures(self.evaluated, self.dataset, epoch + 1,
                                                            cfg.epochs).items():
                    save_figure(figure, (self.run_dir / "figures" / name).parent, Path(name).name)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, row)
        eval_meter.reset()
        test = self._evaluate("test")
        nfe_test = nfe_means(meter, eval_meter)["nfe_eval"]
        meter.close()
        eval_meter.close()
        summary = self._summary(test, nfe_test)
        if continuous:
            last = self.history[-1]  # a row of this run's code: a resumed run trains at least one epoch here
            summary["solver"] = {"epoch": len(self.history), "nfe_forward": last["nfe_forward"],
                                 **{key: last.get(key, math.nan) for key in SOLVER_RECORD}}
        if dist.is_main:
            write_json(self.run_dir / "summary.json", summary)
            plot_history(self.history, self.task.metric_names, self.run_dir / "figures",
                         title=f"{self.run_dir.name}: {cfg.model} on {cfg.dataset}", nfe=continuous)
        return summary

    def _train_epoch(self, net: nn.Module, epoch: int) -> dict[str, float]:
        cfg, dist = self.cfg, self.dist
        # what the model draws from torch's global generator (STEER's end time, Hutchinson's noise,
        # dropout) is seeded per epoch too, so a resumed run draws what an uninterrupted one would
        seed_epoch(cfg.seed, epoch)
        net.train()
        n = len(self.dataset.train)
        sizes = [size for _, size in global_batches(n, cfg.batch_size, dist.world_size)]
        batches = self.task.batches(self.dataset.train, cfg.batch_size,
                                    dataset=self.dataset, device=self.device, shuffle=True,
                                    generator=epoch_generator(cfg.seed, epoch), augment=cfg.augment, shard=dist.shard)
        # disable=None: tqdm draws only on a terminal, so a redirected log is not flooded with bars
        bar = tqdm(batches, total=len(sizes), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if self.progress else True)
        segment, local_epoch = cfg.schedule_segment(epoch)  # an extended run restarts its schedule
        totals: dict[str, float] = {}
        for step, batch in enumerate(bar):
            lr = learning_rate(segment, local_epoch, step, len(sizes))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with autocast(cfg.precision, self.device):
                loss, sums = self._loss(net, batch)
            if dist.enabled:
                # DDP averages gradients over ranks; weight each rank's mean by its share of the global
                # batch so an uneven last batch gives exactly the single-process gradient.
                loss = loss * (sums["count"] * dist.world_size / sizes[step])
            self._check_finite(sums, epoch, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.gradient_step.backward(loss)
            if cfg.clip_grad is not None:
                self.gradient_step.unscale(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
            self.gradient_step.step(self.optimizer)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + value
            if not bar.disable:
                bar.set_postfix(loss=f"{totals['loss'] / totals['count']:.4f}")
        row = {f"train_{k}": v for k, v in means(dist.all_reduce_sums(totals)).items()}
        row["lr"] = learning_rate(segment, local_epoch, 0, len(sizes))  # at the epoch's first step
        return row

    def _loss(self, net: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The task's loss; under torchrun an error of this rank's forward (an ODE step budget blown
        on its data, say) is held back until every rank has heard of it in _check_finite."""
        if not self.dist.enabled:
            return self.task.loss(net, batch)
        try:
            return self.task.loss(net, batch)
        except Exception as err:  # noqa: BLE001 -- re-raised on this rank right after the all-reduce
            self._failure = err
            return torch.zeros((), device=self.device), {"loss": 0.0, "count": 0}

    def _check_finite(self, sums: dict[str, float], epoch: int, step: int) -> None:
        loss_sum, failed = sums["loss"], 0.0
        if self.dist.enabled:  # every rank must stop together, or the others wait forever in all-reduce
            failure = self._failure
            reduced = self.dist.all_reduce_sums({"loss": loss_sum, "failed": float(failure is not None)})
            loss_sum, failed = reduced["loss"], reduced["failed"]
            if failure is not None:
                raise failure
        if failed:
            raise TrainingDiverged(f"another process failed at epoch {epoch + 1}, step {step + 1} "
                                   f"(its error is in rank 0's or that rank's output)")
        if not math.isfinite(loss_sum):
            raise TrainingDiverged(f"loss is {loss_sum} at epoch {epoch + 1}, step {step + 1}")

    def _evaluate(self, split: str) -> dict[str, float]:
        # Each rank's BatchNorm statistics moved with its own part of the batches: evaluate, like the
        # checkpoint rank 0 writes, with rank 0's.
        self.dist.broadcast_buffers(self.model)
        if self.ema is not None:  # averaged from each rank's own statistics: rank 0's, as saved
            self.dist.broadcast_buffers(self.ema.module)
        data = shard_split(getattr(self.dataset, split), *self.dist.shard)
        batches = self.task.batches(data, 256, dataset=self.dataset, device=self.device)
        with autocast(self.cfg.precision, self.device):
            metrics = self.task.evaluate(self.evaluated, batches, self.dist)
        return {f"{split}_{k}": v for k, v in metrics.items()}

    def _summary(self, test: dict[str, float], nfe_test: float) -> dict:
        cfg, history, best = self.cfg, self.history, max if self.task.higher_is_better else min
        key = f"val_{self.task.selection_metric}"
        seconds = sum(row["seconds"] for row in history)
        return {"status": "finished", "model": cfg.model, "task": cfg.task, "dataset": cfg.dataset,
                "params": sum(p.numel() for p in self.model.parameters()), "epochs": cfg.epochs, **test,
                f"final_{key}": history[-1][key], f"best_{key}": best(row[key] for row in history),
                "nfe_test": nfe_test, "nfe_backward_train": history[-1]["nfe_backward"],
                "train_seconds": seconds, "seconds_per_epoch": seconds / len(history),
                "peak_memory_mb": peak_memory_mb(self.device), "device": str(self.device),
                "world_size": self.dist.world_size}


def nfe_means(meter: DynamicsMeter, eval_meter: DynamicsMeter | None = None) -> dict[str, float]:
    """Mean vector-field evaluations per batch: forward and backward in training (`meter`), forward in
    eval (`eval_meter`, the evaluated model's where that is the moving average; default `meter`)."""
    train, evals = meter.read()["train"], (eval_meter or meter).read()["eval"]
    return {"nfe_forward": train["nfe_forward"] / max(train["passes"], 1),
            "nfe_backward": train["nfe_backward"] / max(train["passes"], 1),
            "nfe_eval": evals["nfe_forward"] / max(evals["passes"], 1)}


def hold_run(run_dir: Path, dist: DistContext) -> RunLock | None:
    """Rank 0 takes the run directory's lock; every rank learns of a refusal, or the others would wait
    in their first collective forever. None on the other ranks.

    Raises:
        RunLocked: another process holds the run.
    """
    lock, refusal = None, None
    if dist.is_main:
        try:
            lock = lock_run(run_dir)
        except RunLocked as err:
            refusal = str(err)
    refusal = dist.broadcast(refusal)
    if refusal is not None:
        raise RunLocked(refusal)
    return lock


def run_training(cfg: TrainConfig, run_dir: str | Path, *, progress: bool = True, resume: bool = False,
                 on_epoch_end: Callable[[int, dict], None] | None = None, dataset: Dataset | None = None,
                 dist: DistContext | None = None) -> dict:
    """Train `cfg` into `run_dir` (fresh, or continuing its checkpoint) and return the summary (see Trainer)."""
    return Trainer(cfg, run_dir, dataset=dataset, dist=dist, progress=progress, on_epoch_end=on_epoch_end).fit(resume)


def resume_training(run_dir: str | Path, *, epochs: int | None = None, device: str | None = None,
                    progress: bool = True, on_epoch_end: Callable[[int, dict], None] | None = None,
                    command: str | None = None, dist: DistContext | None = None, task: str | None = None) -> dict:
    """Continue the run in `run_dir` from its last checkpoint, with its saved config.

    More epochs than planned extend the run: the old schedule runs to its end and the added epochs
    restart it (see TrainConfig.extended); config.json then records the new total and, in
    extended_from, the old ones. Fewer are refused.

    Args:
        run_dir: a directory written by a previous `dia-ode train`.
        epochs: a new total number of epochs (to extend the run); None keeps the saved one.
        device: override the saved device ("auto", "cpu", "cuda").
        progress: show tqdm progress bars.
        on_epoch_end: as in Trainer.
        command: the command line that resumes, appended to cmd.txt once the resume is validated.
        dist: the data-parallel context, as in Trainer.
        task: the task the caller expects the run to train; None accepts the saved one.

    Raises:
        CheckpointError: not a run directory, a seed group (the message names the run to resume), or a
            config or checkpoint that cannot be read.
        ResumeMismatch: fewer epochs than planned or done, or another task than the saved one.
        RunLocked: another process is training the run.
        RunFinished: the run has done all its epochs and has its results (epochs extends it).
        ValueError: the Trainer refuses the config (DataError: its data is gone or malformed; an
            acceleration the device lacks); config.json and cmd.txt are then left as they were.
    """
    run_dir = Path(run_dir)
    saved, cfg = saved_config(run_dir)
    if task is not None and task != cfg.task:
        raise ResumeMismatch("task", f"the run in {run_dir} trains task '{cfg.task}', not '{task}'")
    # the lock's context only: the caller's dist (None: Trainer resolves cfg.device) goes on to the training
    lock_dist = dist or DistContext(torch.device("cpu"))
    lock = hold_run(run_dir, lock_dist)  # before anything is read for writing: a second process stops here
    try:
        done = load_checkpoint(run_dir / CHECKPOINT)["epoch"]  # fail early, before loading data
        if epochs is not None and epochs < done:
            raise ResumeMismatch("epochs", f"epochs={epochs} is fewer than the {done} epochs the checkpoint has done")
        if (epochs or cfg.epochs) == done == cfg.epochs and has_results(read_summary(run_dir)):
            raise RunFinished(f"run {run_dir} is finished ({done} of {cfg.epochs} epochs); "
                              f"extend it with --epochs N (N > {cfg.epochs})")
        planned = cfg.epochs
        try:
            cfg = cfg.extended(epochs or planned)
        except ValueError as err:
            raise ResumeMismatch("epochs", str(err)) from None
        cfg.device = device or cfg.device
        # the Trainer first: it can still refuse (config, device, precision, dataset, model), and a refused
        # extension already written to config.json would be performed by the next plain resume
        trainer = Trainer(cfg, run_dir, dist=dist, progress=progress, on_epoch_end=on_epoch_end)
        if cfg.epochs > planned and lock_dist.is_main:
            log.info(f"extended from {planned} to {cfg.epochs} epochs: the added epochs restart the "
                     f"{cfg.schedule} schedule (for one schedule over all epochs start a new run)")
        if lock_dist.is_main:
            write_json(run_dir / "config.json", {**saved, **asdict(cfg)})
            if command is not None:
                append_text(run_dir / "cmd.txt", command + "\n")  # UnsafePath (one line) for a link
        return trainer.fit(resume=True)
    finally:
        if lock is not None:
            lock.release()


# what a command that continues a run may change (check_same_run): where it computes, and more epochs
# (an extension, recorded in extended_from)
CONTINUABLE = ("device", "epochs", "extended_from")


def saved_config(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig]:
    """config.json of a training run and its TrainConfig.

    Raises:
        CheckpointError: not a run directory, a seed group (the message names the run to resume), or a
            config that is not a training run's.
    """
    saved = load_run_config(run_dir)
    if is_seed_group(saved):
        raise CheckpointError(seed_group_refusal(run_dir))
    if saved.get("command", "train") != "train":
        command = brief(str(saved["command"]), 40)
        raise CheckpointError(f"{run_dir} holds a run of `dia-ode {command}`, not a training run")
    try:
        return saved, TrainConfig.from_dict(saved)
    except TypeError as err:  # a dict, but not of our fields' types
        raise CheckpointError(f"{Path(run_dir) / 'config.json'} is not a run configuration "
                              f"({brief(str(err))})") from None


def check_same_run(saved: TrainConfig, cfg: TrainConfig, run_dir: str | os.PathLike) -> None:
    """Whether `cfg` describes the run saved in `run_dir` (create-or-resume: `dia-ode train --run-dir`).

    Every field but CONTINUABLE's is compared, in TrainConfig's order; epochs are the caller's to check
    (more extend the run, as resume_training's do).

    Raises:
        ResumeMismatch: the first field that differs, its saved and its new value.
    """
    for f in fields(TrainConfig):
        old, new = _plain(getattr(saved, f.name)), _plain(getattr(cfg, f.name))
        if f.name not in CONTINUABLE and old != new:
            raise ResumeMismatch(f.name, f"{run_dir} holds a run with {f.name}={old!r}, not {new!r}: a different "
                                         f"configuration trains in another directory")


def _plain(value):
    """A config value as JSON gives it back (tuples are lists), so a saved value compares with a new one."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
