"""Standard (row-major) strides for every tensor the data layer hands a model.

Why this exists: a one-channel batch made by `x.permute(0, 3, 1, 2)` keeps strides such as
(64, 1, 8, 1). torch calls that tensor both "contiguous" and "channels-last" (the stride of a size-1
dimension is ignored), so `.contiguous()` returns it unchanged, and oneDNN's convolution picks its
layout from those strides. With torch 2.13.0 on one thread of an AMD EPYC, the convolution backward
on such input corrupts the heap (glibc aborts with "corrupted double-linked list"; where it does not
crash it may write wrong numbers). Every digits and Fashion-MNIST batch has one channel, so the data
layer forces the unambiguous layout instead of relying on what an operation happened to return.
"""

from __future__ import annotations

import torch


def standard_strides_of(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a freshly allocated row-major tensor of `shape` (size-1 dimensions included)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def has_standard_strides(x: torch.Tensor) -> bool:
    """Whether `x` is laid out exactly as torch.empty(x.shape) would be (not merely is_contiguous())."""
    return x.stride() == standard_strides_of(x.shape)


def with_standard_strides(x: torch.Tensor) -> torch.Tensor:
    """`x` itself when its strides are standard, else a row-major copy (same values, dtype, device)."""
    if has_standard_strides(x):
        return x
    return x.clone(memory_format=torch.contiguous_format)
