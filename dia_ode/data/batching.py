"""Batches on the target device: uint8 -> float, augmentation, normalisation, and data-parallel shards.

All draws come from an explicit generator, so one seed replays bit-identical batches.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from dia_ode.data.augment import Augment
from dia_ode.data.dataset import Split
from dia_ode.data.strides import with_standard_strides


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel of a (B, C, H, W) batch, returned with standard strides.

    Every batch a model sees passes through here, so this is where the layout is forced: element-wise
    operations keep their input's strides, and one-channel strides can be ambiguous (strides.py).
    """
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return with_standard_strides((x - m) / s)


def to_float(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Convert raw (B, C, H, W) uint8 pixels to float32 (x / 255 - mean) / std on their device.

    Args:
        images: Raw pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
    """
    return normalise(images.float() / 255.0, mean, std)


def iterate_batches(split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                    shuffle: bool = False, generator: torch.Generator | None = None,
                    augment: Augment | None = None, device: torch.device | str = "cpu",
                    drop_last: bool = False, shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield one epoch of (images, labels) batches.

    All draws come from ``generator``: the epoch's ``torch.randperm(N)`` when shuffling, then each
    batch's augmentation; a fresh generator with the same seed replays bit-identical batches.

    Args:
        split: The split to iterate over.
        batch_size: Samples per batch (the last batch may be smaller unless ``drop_last``).
        mean: Per-channel mean in [0, 1] units (normalisation).
        std: Per-channel standard deviation in [0, 1] units.
        shuffle: Whether to visit the samples in random order.
        generator: CPU generator for shuffling and augmentation; None uses torch's global generator.
        augment: Augmentation applied in [0, 1] units before normalisation; None for none.
        device: Where the yielded tensors live. The split may live there already (Split.to): the
            batches are the same, without a host-to-device copy per batch.
        drop_last: Whether to drop a final batch smaller than ``batch_size``.
        shard: (rank, world) of data-parallel training: every rank draws and augments the same global
            batch (so the run equals one process with the same batch size) and keeps its contiguous
            part (``tensor_split``). A final global batch with fewer than ``world`` samples is dropped,
            since some rank would get none.

    Yields:
        Normalised images (B, C, H, W) float32 and labels (B,) int64, both on ``device``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = generator if generator is not None else torch.default_generator
    n = len(split)
    # Drawn on the CPU wherever the split lives, so a resident split (Split.to) replays the host's draws;
    # its order then moves to the split's device once an epoch, and batches are indexed there.
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    order = order.to(split.device)
    rank, world = shard
    for start, size in global_batches(n, batch_size, world, drop_last):
        index = order[start:start + size]
        if augment is None:  # nothing random per batch: convert only this rank's part
            index = index.tensor_split(world)[rank]
        # A host split moves uint8 (4x fewer bytes than float) and converts on the device.
        x = split.images[index].to(device).float() / 255.0  # (B, C, H, W) in [0, 1]
        if augment is not None:  # the whole global batch draws its augmentation, then this rank keeps its part
            x, index = augment(x, gen).tensor_split(world)[rank], index.tensor_split(world)[rank]
        yield normalise(x, mean, std), split.labels[index].to(device)


def global_batches(n: int, batch_size: int, world: int = 1, drop_last: bool = False) -> list[tuple[int, int]]:
    """(start, size) of every global batch of an epoch over n samples (see iterate_batches' shard)."""
    stop = n - n % batch_size if drop_last else n
    sizes = [(start, min(batch_size, stop - start)) for start in range(0, stop, batch_size)]
    return [(start, size) for start, size in sizes if size >= world]


def shard_split(split, rank: int, world: int):
    """This rank's contiguous part of a split (evaluation: every sample on exactly one rank); a split
    type with its own `subset` (detection) keeps what it carries beside the images."""
    index = torch.arange(len(split)).tensor_split(world)[rank]
    if hasattr(split, "subset"):
        return split.subset(index)
    index = index.to(split.device)  # a resident split stays where it is
    return Split(split.images[index], split.labels[index])
