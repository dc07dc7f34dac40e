"""The in-memory dataset: three splits of raw uint8 images and what a model needs to know about them.

The datasets are small, so whole splits live in memory as uint8 (Fashion-MNIST train is 47 MB) and
batches are converted, augmented and normalised on the target device (batching.py). On a GPU the whole
dataset can be made resident there once (`Dataset.to`, `keeps_data_on`), so the batch loop indexes on
the device instead of copying every batch from the host.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dia_ode.data.augment import Augment
from dia_ode.data.strides import with_standard_strides


class DataError(ValueError):
    """Bad data input: unknown dataset, missing folder or file, malformed file, bad split sizes.

    `option` names the setting at fault where it is not the dataset or its folder (e.g.
    "train_examples"), so a command line can name its own option.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split held in memory.

    Attributes:
        images: Raw pixels, (N, C, H, W) uint8.
        labels: Class indices, (N,) int64.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or y.dtype != torch.int64 or y.shape != x.shape[:1]:
            raise DataError(f"a split needs (N, C, H, W) uint8 images and (N,) int64 labels, got "
                            f"{tuple(x.shape)} {x.dtype} and {tuple(y.shape)} {y.dtype}")
        if x.device != y.device:  # the batch loop indexes both with one index on the images' device
            raise DataError(f"a split's images and labels must share a device, got {x.device} and {y.device}")
        object.__setattr__(self, "images", with_standard_strides(x))  # indexing keeps a stored layout

    @property
    def device(self) -> torch.device:
        """Where the images and labels live."""
        return self.images.device

    def to(self, device: torch.device | str) -> "Split":
        """This split with its images and labels on `device` (same dtype, shape and standard strides)."""
        return Split(self.images.to(device), self.labels.to(device))

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __repr__(self) -> str:  # the dataclass repr would print every pixel
        return f"Split(images={tuple(self.images.shape)} uint8, labels={tuple(self.labels.shape)} int64)"


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset's three splits and what a model and the train loop need to know about it.

    Attributes:
        name: Canonical dataset name (see :func:`list_datasets`).
        train: Training split.
        val: Validation split, carved from the training data with a fixed seed.
        test: Official test split, or a seeded hold-out where the dataset has none.
        num_classes: Number of classes.
        in_channels: Image channels C.
        image_size: Image height H (= width W).
        mean: Per-channel mean of the train split in [0, 1] units.
        std: Per-channel (population) standard deviation of the train split in [0, 1] units.
        augment: The dataset's default training augmentation.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment

    def to(self, device: torch.device | str) -> "Dataset":
        """This dataset with all three splits resident on `device` (see :func:`keeps_data_on`)."""
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))


def keeps_data_on(device: torch.device | str) -> bool:
    """Whether a run on `device` should make its dataset resident there with `Dataset.to`.

    True for a CUDA device: batches are then indexed, converted and augmented on the GPU without a host
    copy per step, so the GPU does not wait on the CPU loop. False otherwise: a CPU run already has the
    data where it computes. The whole train split then takes GPU memory as uint8 (CIFAR's is 150 MB).
    """
    return torch.device(device).type == "cuda"


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())



def checked_split(images: torch.Tensor, labels: torch.Tensor, num_classes: int, source: Path) -> Split:
    labels = labels.to(torch.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels in {source} outside 0..{num_classes - 1}")
    return Split(images, labels)  # Split stores standard strides



def held_out(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (kept, held out) index sets, each sorted, held out = round(fraction * n)."""
    perm = torch.randperm(n, generator=generator)
    n_out = int(round(fraction * n))
    return perm[n_out:].sort().values, perm[:n_out].sort().values


def subset(split: Split, index: torch.Tensor) -> Split:
    index = index.to(split.device)
    return Split(split.images[index], split.labels[index])


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std in [0, 1] units of (N, C, H, W) uint8 images."""
    # A 256-bin histogram per channel is exact in float64 and never makes a float copy of the images.
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()  # (256,)
        m = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - m) ** 2).sum() / counts.sum())
        mean.append(m)
        std.append(var ** 0.5 if var > 0 else 1.0)  # a constant channel: std 1 keeps to_float finite
    return tuple(mean), tuple(std)




Official = tuple[Split | None, Split | None]  # (train or None when not asked for, official test or None)
