"""Torch-only training augmentations (there is no CPU torchvision here): random crop and flip.

Every random draw comes from an explicit ``torch.Generator``, so one seed replays bit-identical
epochs (training resume relies on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dia_ode.data.strides import with_standard_strides


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding and random horizontal flip, applied to a whole batch at once.

    Draws, in order, from the given CPU generator: crop offsets ``torch.randint(0, 2 * pad + 1, (B, 2))``
    (row, column), then flips ``torch.rand(B) < 0.5``; nothing for a disabled part.

    Attributes:
        pad: Pixels of zero padding on each side before cropping back to H x W; 0 disables the crop.
        flip: Whether to flip each sample left-right with probability 0.5.
    """

    pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"Augment pad must be >= 0, got {self.pad}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the augmented batch, with the shape, dtype and device of ``x``.

        Args:
            x: Batch (B, C, H, W) float in [0, 1] units (so the padding is black), on any device.
            generator: CPU generator that supplies all randomness.
        """
        B, _, H, W = x.shape
        if self.pad > 0:
            p = self.pad
            offsets = torch.randint(0, 2 * p + 1, (B, 2), generator=generator).to(x.device)  # (B, 2)
            rows = offsets[:, :1] + torch.arange(H, device=x.device)  # (B, H)
            cols = offsets[:, 1:] + torch.arange(W, device=x.device)  # (B, W)
            padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
            b = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
            # Advanced indices split by the channel slice put the broadcast dims first: (B, H, W, C).
            x = padded[b, :, rows[:, :, None], cols[:, None, :]]
            # not .contiguous(): for C = 1 the permuted strides already count as contiguous (strides.py)
            x = with_standard_strides(x.permute(0, 3, 1, 2))  # (B, C, H, W)
        if self.flip:
            flip = (torch.rand(B, generator=generator) < 0.5).to(x.device)  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

