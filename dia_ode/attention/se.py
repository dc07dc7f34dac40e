"""Squeeze-and-Excitation channel attention.

Follows "Squeeze-and-Excitation Networks" (Hu et al., arXiv 1709.01507): global average pooling
squeezes a feature map to one number per channel, a bottleneck MLP with reduction r excites it,
and a sigmoid turns it into a per-channel gate in (0, 1). Read as a step size, the gate is
h = sigmoid(W2 relu(W1 GAP(f))), one value per sample and channel.
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.attention.excite import bottleneck_mlp
from dia_ode.attention.layout import Layout


class SqueezeExcite(nn.Module):
    """SE gate: (B, C, H, W) -> (B, C, 1, 1) or tokens (B, N, C) -> (B, 1, C), in (0, 1).

    Args:
        channels: number of channels C of the gated feature map.
        reduction: bottleneck ratio r of the excitation MLP (C -> max(C // r, min_hidden) -> C).
        min_hidden: the fewest hidden units of the bottleneck. On narrow stages C // r is tiny (16
            channels with r = 16 give one unit): one ReLU unit that dies makes the gate the same for
            every input, so a study of what the gates learn can ask for a few units.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 1) -> None:
        super().__init__()
        self.excite = bottleneck_mlp(channels, reduction, min_hidden=min_hidden)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        layout = Layout.of(f)
        z = layout.squeeze(f)  # (B, C)
        return layout.expand(torch.sigmoid(self.excite(z)))  # (B, C, 1, 1) or (B, 1, C)
