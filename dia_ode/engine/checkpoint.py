"""The training state in a checkpoint: what resume needs, and what rebuilds the model without the trainer.

The file format (atomic write, validation) is rundir/checkpoints.py; this file decides the content:
weights, optimizer, history, config, the weights' moving average (if kept) and the fp16 gradient scaler's
state (if used) for an exact resume,
plus `model_spec` (registry name and every constructor option) and the data normalisation for loading
the run elsewhere (rundir.load_run, which takes the moving average where there is one).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from torch.optim.swa_utils import AveragedModel

from dia_ode.engine.acceleration import GradientStep
from dia_ode.engine.config import TrainConfig
from dia_ode.engine.ema import ema_state
from dia_ode.rundir.checkpoints import CheckpointError, load_checkpoint, load_state, save_checkpoint


def save_training_state(path: Path, *, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                        history: list[dict], cfg: TrainConfig, model_spec: dict, normalisation: dict,
                        ema: AveragedModel | None = None, scaler: dict | None = None) -> None:
    """Write the state after `epoch` epochs atomically (the previous checkpoint survives a crash);
    with `ema`, the weights' moving average too (engine/ema.py), with `scaler` the gradient scaler's state."""
    extra = {} if ema is None else {"ema": ema_state(ema)}
    if scaler:
        extra["scaler"] = scaler
    save_checkpoint(path, epoch=epoch, model=model.state_dict(), optimizer=optimizer.state_dict(),
                    history=history, config=asdict(cfg), task=cfg.task, model_spec=model_spec,
                    normalisation=normalisation, **extra)


def restore_training_state(path: Path, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                           device: torch.device, ema: AveragedModel | None = None,
                           scaler: GradientStep | None = None) -> list[dict]:
    """Load weights and optimizer state into `model` and `optimizer` (the moving average into `ema`, the
    gradient scaler's state into `scaler`); return the history so far.

    Raises:
        CheckpointError: missing, corrupt or foreign checkpoint, or one of another model or task.
        ValueError: the checkpoint has more epochs done than cfg.epochs.
    """
    ckpt = load_checkpoint(path, map_location=device)
    saved = ckpt["config"]
    if saved.get("model") != cfg.model:
        raise CheckpointError(f"checkpoint {path} is for model '{saved.get('model')}', the run is '{cfg.model}'")
    if saved.get("task", "classification") != cfg.task:
        raise CheckpointError(f"checkpoint {path} is for task '{saved.get('task')}', the run is '{cfg.task}'")
    load_state(model, ckpt["model"], path)
    load_state(optimizer, ckpt["optimizer"], path)
    if ema is not None:
        state = ckpt.get("ema")
        if not isinstance(state, dict) or not isinstance(state.get("weights"), dict):
            raise CheckpointError(f"checkpoint {path} holds no moving average of the weights, but the run keeps one")
        load_state(ema.module, state["weights"], path)
        ema.n_averaged.fill_(int(state.get("updates", 0)))
    if scaler is not None and isinstance(ckpt.get("scaler"), dict):
        scaler.load_state_dict(ckpt["scaler"])
    if ckpt["epoch"] > cfg.epochs:
        raise ValueError(f"the checkpoint has {ckpt['epoch']} epochs done, more than epochs={cfg.epochs}")
    return list(ckpt["history"])
