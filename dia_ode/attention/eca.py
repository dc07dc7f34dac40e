"""Efficient Channel Attention.

Follows "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks" (Wang et al.,
arXiv 1910.03151): instead of SE's bottleneck MLP, a 1-D convolution of odd kernel size k over the
channel axis of GAP(f) models local cross-channel interaction, with k chosen from C by
k = |log2(C) / gamma + b / gamma| rounded to the nearest odd number (gamma = 2, b = 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dia_ode.attention.layout import Layout


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel size: the odd integer nearest to log2(C)/gamma + b/gamma (at least 1)."""
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 == 1 else t + 1


class ChannelConv(nn.Module):
    """ECA's cross-channel interaction: a bias-free 1-D conv over the channel axis, (B, C) -> (B, C)."""

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA kernel_size must be odd and >= 1, got {k}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(z[:, None, :])[:, 0, :]  # (B, C)


class EfficientChannelAttention(nn.Module):
    """ECA gate: (B, C, H, W) -> (B, C, 1, 1) or tokens (B, N, C) -> (B, 1, C), in (0, 1).

    Args:
        channels: number of channels C.
        kernel_size: odd 1-D kernel size; None picks ECA's adaptive size from C.
    """

    def __init__(self, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        self.channel_conv = ChannelConv(channels, kernel_size)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        layout = Layout.of(f)
        z = self.channel_conv(layout.squeeze(f))  # (B, C)
        return layout.expand(torch.sigmoid(z))  # (B, C, 1, 1) or (B, 1, C)
