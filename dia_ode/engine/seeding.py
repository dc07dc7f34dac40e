"""Seeds: one for the whole process at start, then per epoch: a generator for shuffling and augmentation,
and torch's global generator for what a model draws itself (STEER's end time, Hutchinson's noise, dropout)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's shuffling and augmentation; independent of earlier epochs, so a
    resumed run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # 1_000_003: a prime, no overlap


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed torch's global generator (all devices) for one epoch, apart from epoch_generator's stream,
    so a resumed run's model draws exactly what an uninterrupted one's would."""
    torch.manual_seed(seed * 1_000_003 + epoch + 500_000)  # + 500_000: a stream other than epoch_generator's
