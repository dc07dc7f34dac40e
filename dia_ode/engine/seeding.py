"""Seeds: one for the whole process at start, one generator per epoch for shuffling and augmentation."""

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
