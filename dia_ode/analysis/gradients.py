"""Gradient norms per stage: how strongly the loss reaches each stage's parameters.

DIANet (arXiv 1905.10671) argues that the shared DIA unit stabilises training where the backbone
alone degrades (skip connections or BatchNorm removed). A degrading deep network shows it in its
gradients first: the early stages receive vanishing (or exploding) gradients. This module measures
that without the trainer's help: on a fixed batch, the norm of d loss / d theta_i over the parameters
theta_i of each stage i named by the model's `feature_info` (the stages of a CIFAR ResNet, WRN or
ResNeXt; a DIA stage's shared controller is part of its stage).

The gradient is the one the optimiser would see: the model in train mode (BatchNorm with batch
statistics), on a deep copy so the caller's running statistics and .grad fields stay as they were.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from dia_ode.tasks import AbstractTask


def stage_gradient_norms(model: nn.Module, batch: Any, task: AbstractTask) -> dict[str, float]:
    """The L2 norm of the gradient of the task's loss on `batch` with respect to each stage's parameters.

    Args:
        model: a backbone with `feature_info` (models.backbone.AbstractBackbone), e.g. a LoadedRun's model
            or analysis.untrained_model(...).
        batch: one batch as the task's loss takes it (classification: (x, y), e.g. LoadedRun.test_batch(n)).
        task: the run's task (tasks.get_task(name)).

    Returns:
        feature_info name ("stages.0", ...) -> ||grad||_2 over that stage's parameters (nan when the
        loss is not finite; 0.0 for a stage without trainable parameters).

    Raises:
        ValueError: the model has no feature_info (nothing says where its stages are).
    """
    infos = getattr(model, "feature_info", None)
    if not infos:
        raise ValueError(f"{type(model).__name__} has no feature_info: its stages are unknown")
    net = copy.deepcopy(model).train()  # train mode: the gradient SGD sees; a copy: no running-stat updates leak
    net.zero_grad(set_to_none=True)
    loss, _ = task.loss(net, batch)
    if not torch.isfinite(loss):
        return {info.name: math.nan for info in infos}
    loss.backward()
    norms = {}
    for info in infos:
        grads = [p.grad.detach().flatten() for p in net.get_submodule(info.name).parameters() if p.grad is not None]
        norms[info.name] = float(torch.linalg.vector_norm(torch.cat(grads))) if grads else 0.0
    return norms
