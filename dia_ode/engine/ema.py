"""An exponential moving average of the weights (torch.optim.swa_utils), saved beside them.

The average is what a run evaluates and what `load_run` gives back (a diffusion model samples with it:
Ho et al. 2020 found the averaged weights' samples clearly better). torch's AveragedModel does the
averaging; this file only decides how it lives in a checkpoint: the averaged module's own state dict
and the number of updates, so a resume continues the same average and a loaded run needs no trainer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` averaged by w <- d w + (1 - d) w_model at the n-th update, d = min(decay,
    (1 + n) / (10 + n)); floating-point buffers (BatchNorm's running statistics) are averaged too, integer
    ones copied. Its first update copies the model.

    Why the warm-up (TensorFlow's ExponentialMovingAverage with num_updates): with a fixed 0.999 the
    average of a run of a few hundred steps is still mostly its random initialisation.
    """
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1 - d)
            else:  # an integer buffer (BatchNorm's num_batches_tracked) is a count, not a statistic
                a.copy_(c)
    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def ema_state(ema: AveragedModel) -> dict:
    """What a checkpoint keeps of the average: {"weights": the module's state dict, "updates": n}."""
    return {"weights": ema.module.state_dict(), "updates": int(ema.n_averaged)}


def averaged_module(ema: AveragedModel | None, model: nn.Module) -> nn.Module:
    """The module to evaluate: the average where there is one, else the model itself."""
    return model if ema is None else ema.module


__all__ = ["averaged_module", "ema_state", "make_ema"]
