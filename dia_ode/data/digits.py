"""scikit-learn's embedded 8x8 digits (1,797 images, no download): the default dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dia_ode.data.dataset import Official, Split


def load_digits_official(_: Path | None, with_train: bool = True) -> Official:
    # No official test split: the whole set comes back as train and load_dataset holds the test out.
    from sklearn.datasets import load_digits  # ships its data inside the wheel
    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    return Split(torch.from_numpy(pixels)[:, None], torch.from_numpy(bunch.target).long()), None

