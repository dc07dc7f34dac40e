"""Optimizers and learning-rate schedules.

SGD with momentum is the CIFAR ResNet recipe that DIANet follows (and this project's default);
AdamW with linear warm-up and cosine decay is the usual Vision Transformer recipe (ViT, arXiv
2010.11929; DeiT, arXiv 2012.12877). Schedules are pure functions of (epoch, step), so a resumed
run sets exactly the lr an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dia_ode.engine.config import TrainConfig


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over the model's parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    # AdamW: no decay on biases, norm scales and embeddings-as-vectors (the 1-d parameters), as in
    # the ViT/DeiT recipes; decaying a LayerNorm scale towards 0 only fights the normalisation.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def learning_rate(cfg: TrainConfig, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The lr of step `step` of epoch `epoch` (both 0-based) under the configured schedule.

    cosine and step change the lr once per epoch (the step arguments are ignored); warmup_cosine
    ramps linearly over warmup_epochs, reaching cfg.lr at the end of the warm-up, then follows a
    cosine from cfg.lr to 0 at the end of training, per step.
    """
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "step":
        passed = sum(epoch >= round(m * cfg.epochs) for m in cfg.milestones)
        return cfg.lr * cfg.gamma ** passed
    t = epoch + step / steps_per_epoch  # progress in epochs
    if t < cfg.warmup_epochs:  # step 0 starts above 0; min: a warm-up of W*S steps not whole must not overshoot
        return min(cfg.lr, cfg.lr * (t + 1.0 / steps_per_epoch) / cfg.warmup_epochs)
    progress = (t - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * progress))
