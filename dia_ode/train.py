"""Training and evaluation loop with atomic checkpoints and exact resume.

SGD with momentum (optionally Nesterov), weight decay, a cosine or step schedule set per epoch,
evaluation on the validation split every epoch and on the test split at the end. All randomness
of an epoch (shuffling and augmentation) comes from a generator seeded by (seed, epoch), and the
model, optimizer and history are checkpointed after every epoch, so `resume` reproduces an
uninterrupted run with the same seed exactly on CPU.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from dia_ode.checkpoint import CheckpointError, load_checkpoint, load_state, save_checkpoint
from dia_ode.data import Dataset, iterate_batches, load_dataset
from dia_ode.models import create_model
from dia_ode.runs import (append_jsonl, resolve_device, save_figure, seed_everything,
                          write_json, write_jsonl)
from dia_ode.solvers.statistics import DynamicsMeter

CHECKPOINT = Path("checkpoints") / "last.pt"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved as config.json)."""

    model: str = "dia_resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine" or "step"
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of the epochs
    gamma: float = 0.1  # step schedule: lr factor at each milestone
    augment: bool = True
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.1
    device: str = "auto"
    model_options: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.milestones = tuple(cfg.milestones)
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"unknown schedule '{self.schedule}'; valid: cosine, step")


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """The lr of epoch `epoch` (0-based) under the configured schedule."""
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    passed = sum(epoch >= round(m * cfg.epochs) for m in cfg.milestones)
    return cfg.lr * cfg.gamma ** passed


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's shuffling and augmentation; independent of earlier epochs."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # 1_000_003: a prime, no overlap


def build_model(cfg: TrainConfig, dataset: Dataset, device: torch.device | str) -> nn.Module:
    """The config's model, sized for the dataset (classes, input channels), on `device`."""
    return create_model(cfg.model, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                        **cfg.model_options).to(device)


def build(cfg: TrainConfig, dataset: Dataset, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Seeded model and optimizer for a config."""
    seed_everything(cfg.seed)
    model = build_model(cfg, dataset, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    return model, optimizer


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, split: str, device: torch.device,
             batch_size: int = 256) -> dict[str, float]:
    """Mean cross-entropy and accuracy of `model` on one split ("train", "val" or "test")."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in iterate_batches(getattr(dataset, split), batch_size, mean=dataset.mean, std=dataset.std,
                                device=device):
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        n += len(y)
    return {f"{split}_loss": loss_sum / max(n, 1), f"{split}_acc": correct / max(n, 1)}


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, cfg: TrainConfig,
                    epoch: int, device: torch.device, progress: bool) -> dict[str, float]:
    """One pass over the training split; raises TrainingDiverged on a non-finite loss."""
    model.train()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, epoch)
    batches = iterate_batches(dataset.train, cfg.batch_size, mean=dataset.mean, std=dataset.std, shuffle=True,
                              generator=epoch_generator(cfg.seed, epoch),
                              augment=dataset.augment if cfg.augment else None, device=device)
    total = math.ceil(len(dataset.train) / cfg.batch_size)
    bar = tqdm(batches, total=total, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
    loss_sum, correct, n = 0.0, 0, 0
    for step, (x, y) in enumerate(bar):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"loss is {loss_value} at epoch {epoch + 1}, step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss_value * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        n += len(y)
        bar.set_postfix(loss=f"{loss_sum / n:.4f}")
    return {"train_loss": loss_sum / n, "train_acc": correct / n, "lr": learning_rate(cfg, epoch)}


def run_training(cfg: TrainConfig, run_dir: str | Path, *, progress: bool = True, resume: bool = False,
                 on_epoch_end: Callable[[int, dict], None] | None = None, dataset: Dataset | None = None) -> dict:
    """Train `cfg` into `run_dir` (fresh, or continuing its checkpoint) and return the summary.

    Args:
        cfg: the run's configuration (for a resume: the saved one, possibly with more epochs).
        run_dir: a directory made by runs.start_run.
        progress: show tqdm progress bars.
        resume: continue from run_dir/checkpoints/last.pt instead of starting fresh.
        on_epoch_end: called as on_epoch_end(epoch, metrics) after each checkpoint is written.
        dataset: the loaded dataset of cfg, when the caller has it already.

    Raises:
        ValueError: bad configuration or data (DataError), unknown model.
        CheckpointError: resume=True and the checkpoint is missing, corrupt or foreign.
        TrainingDiverged: a non-finite loss; the last good checkpoint is left untouched.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    if dataset is None:
        dataset = load_dataset(cfg.dataset, cfg.data_dir, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)
    model, optimizer = build(cfg, dataset, device)
    history: list[dict] = []
    if resume:
        history = _restore(run_dir / CHECKPOINT, cfg, model, optimizer, device)
        write_jsonl(run_dir / "metrics.jsonl", history)  # drop lines written after the checkpoint
    num_params = sum(p.numel() for p in model.parameters())
    seconds = sum(row["seconds"] for row in history)
    meter = DynamicsMeter(model)  # NFE of every forward/backward, for discrete and continuous models alike
    for epoch in range(len(history), cfg.epochs):
        start = time.perf_counter()
        meter.reset()
        row = {"epoch": epoch + 1, **train_one_epoch(model, optimizer, dataset, cfg, epoch, device, progress)}
        row.update(evaluate(model, dataset, "val", device))
        row["seconds"] = time.perf_counter() - start
        row.update(nfe_means(meter))
        seconds += row["seconds"]
        history.append(row)
        save_checkpoint(run_dir / CHECKPOINT, epoch=epoch + 1, model=model.state_dict(),
                        optimizer=optimizer.state_dict(), history=history, config=asdict(cfg))
        append_jsonl(run_dir / "metrics.jsonl", row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    meter.reset()
    test = evaluate(model, dataset, "test", device)
    meter.close()
    summary = {"model": cfg.model, "dataset": cfg.dataset, "params": num_params, "epochs": cfg.epochs, **test,
               "final_val_acc": history[-1]["val_acc"], "best_val_acc": max(r["val_acc"] for r in history),
               "nfe_test": nfe_means(meter)["nfe_eval"], "nfe_backward_train": history[-1]["nfe_backward"],
               "train_seconds": seconds, "seconds_per_epoch": seconds / len(history),
               "peak_memory_mb": peak_memory_mb(device), "device": str(device)}
    write_json(run_dir / "summary.json", summary)
    _plot_history(history, run_dir / "figures")
    return summary


def nfe_means(meter: DynamicsMeter) -> dict[str, float]:
    """Mean vector-field evaluations per batch: forward and backward in training, forward in eval."""
    totals = meter.read()
    train, evals = totals["train"], totals["eval"]
    return {"nfe_forward": train["nfe_forward"] / max(train["passes"], 1),
            "nfe_backward": train["nfe_backward"] / max(train["passes"], 1),
            "nfe_eval": evals["nfe_forward"] / max(evals["passes"], 1)}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: torch's allocator on CUDA; on CPU, where torch has no such counter, the process's
    peak resident set (interpreter, libraries and data included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _restore(path: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             device: torch.device) -> list[dict]:
    ckpt = load_checkpoint(path, map_location=device)
    if ckpt["config"].get("model") != cfg.model:
        raise CheckpointError(f"checkpoint {path} is for model '{ckpt['config'].get('model')}', "
                              f"the run is '{cfg.model}'")
    load_state(model, ckpt["model"], path)
    load_state(optimizer, ckpt["optimizer"], path)
    if ckpt["epoch"] > cfg.epochs:
        raise ValueError(f"the checkpoint has {ckpt['epoch']} epochs done, more than epochs={cfg.epochs}")
    return list(ckpt["history"])


def _plot_history(history: list[dict], figures_dir: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state in a library

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.5))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "val"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        ax_acc.plot(epochs, [r[f"{split}_acc"] for r in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, figures_dir, "training")


def resume_training(run_dir: str | Path, *, epochs: int | None = None, device: str | None = None,
                    progress: bool = True, on_epoch_end: Callable[[int, dict], None] | None = None,
                    command: str | None = None) -> dict:
    """Continue the run in `run_dir` from its last checkpoint, with its saved config.

    Args:
        run_dir: a directory written by a previous `dia-ode train`.
        epochs: a new total number of epochs (to extend a finished run); None keeps the saved one.
        device: override the saved device ("auto", "cpu", "cuda").
        progress: show tqdm progress bars.
        on_epoch_end: as in run_training.
        command: the command line that resumes, appended to cmd.txt once the resume is validated.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a training run directory (no config.json)")
    saved = json.loads(config_path.read_text())
    cfg = TrainConfig.from_dict(saved)
    cfg.epochs = epochs or cfg.epochs
    cfg.device = device or cfg.device
    done = load_checkpoint(run_dir / CHECKPOINT)["epoch"]  # fail early, before loading data
    if cfg.epochs < done:
        raise ValueError(f"epochs={cfg.epochs} is fewer than the {done} epochs the checkpoint has done")
    write_json(config_path, {**saved, **asdict(cfg)})
    if command is not None:
        with open(run_dir / "cmd.txt", "a") as f:
            f.write(command + "\n")
    return run_training(cfg, run_dir, progress=progress, resume=True, on_epoch_end=on_epoch_end)
