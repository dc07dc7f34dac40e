"""Convolutional Block Attention Module: channel gate followed by spatial gate.

Follows "CBAM: Convolutional Block Attention Module" (Woo et al., arXiv 1807.06521). The channel
gate feeds both GAP(f) and GMP(f) through one shared MLP and sums the logits; the spatial gate
convolves the channel-wise mean and max maps (7x7) into one map per sample. Applied in sequence,
f' = Mc(f) * f and f'' = Ms(f') * f', so the whole module is one multiplier on f:
h = Mc(f) * Ms(Mc(f) * f), of shape (B, C, H, W).
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.attention.excite import bottleneck_mlp
from dia_ode.attention.layout import IMAGES, Layout


class CBAMChannelGate(nn.Module):
    """CBAM's channel gate: sigmoid(MLP(GAP f) + MLP(GMP f)), (B, C, H, W) -> (B, C, 1, 1) (tokens: (B, 1, C))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.mlp = bottleneck_mlp(channels, reduction)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        layout = Layout.of(f)
        z = torch.stack((layout.squeeze(f), layout.squeeze_max(f)), dim=1)  # (B, 2, C)
        return layout.expand(torch.sigmoid(self.mlp(z).sum(dim=1)))  # (B, C, 1, 1) or (B, 1, C)


class SpatialGate(nn.Module):
    """CBAM's spatial gate: sigmoid(BN(conv_k([mean_c f, max_c f]))), (B, C, H, W) -> (B, 1, H, W)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if Layout.of(f) is not IMAGES:
            raise ValueError("CBAM's spatial gate needs images (B, C, H, W); tokens have no 2-D grid "
                             "(use se or eca attention on a Transformer)")
        maps = torch.cat((f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)), dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.bn(self.conv(maps)))  # (B, 1, H, W)


class CBAM(nn.Module):
    """Full CBAM multiplier h = Mc(f) * Ms(Mc(f) * f): (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: number of channels C.
        reduction: bottleneck ratio of the channel MLP.
        spatial_kernel: kernel size of the spatial convolution.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7) -> None:
        super().__init__()
        self.channel = CBAMChannelGate(channels, reduction)
        self.spatial = SpatialGate(spatial_kernel)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        a = self.channel(f)  # (B, C, 1, 1)
        return a * self.spatial(a * f)  # (B, C, H, W)
