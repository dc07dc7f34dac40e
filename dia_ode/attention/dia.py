"""The DIA unit: one squeeze, one DIA-LSTM cell (and for CBAM one spatial gate) per stage.

DIA ("A Generic Shared Attention Mechanism for Various Backbone Neural Networks", arXiv
2210.16101) keeps the squeeze of a chosen self-attention module (SAM) and replaces its
excitation by the shared recurrent cell. The squeeze per SAM is our reading, written down in
theory/dia.md:

    se    z = GAP(f)                          (B, C)
    eca   z = conv1d_k(GAP(f))                (B, C)   ECA's cross-channel interaction
    cbam  z = [GAP(f), GMP(f)]                (B, 2, C) both through the input path, summed,
          and the spatial gate is kept:  a = h * Ms(h * f)
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.attention.cbam import SpatialGate
from dia_ode.attention.dia_cell import DIALSTMCell, FusedWeights, State
from dia_ode.attention.eca import ChannelConv
from dia_ode.attention.layout import Layout

DIA_SAMS = ("se", "eca", "cbam")


class DIAUnit(nn.Module):
    """Shared DIA attention: (f_k, state) -> (a_k, state'), a_k broadcastable to f_k (images or tokens).

    Args:
        channels: C of the stage.
        sam: whose squeeze feeds the cell: "se", "eca" or "cbam".
        reduction: bottleneck ratio r of the cell (paper default 4).
        cell_state: DIALSTMCell ablation switch.
        output_gate: DIALSTMCell ablation switch.
        eca_kernel: odd kernel of ECA's channel conv (None = ECA's adaptive size).
        spatial_kernel: kernel of CBAM's spatial gate.
    """

    def __init__(self, channels: int, sam: str = "se", reduction: int = 4, cell_state: bool = True,
                 output_gate: bool = True, eca_kernel: int | None = None, spatial_kernel: int = 7) -> None:
        super().__init__()
        if sam not in DIA_SAMS:
            raise ValueError(f"unknown DIA squeeze '{sam}'; valid: {', '.join(DIA_SAMS)}")
        self.sam = sam
        self.cell = DIALSTMCell(channels, reduction, cell_state=cell_state, output_gate=output_gate)
        self.channel_conv = ChannelConv(channels, eca_kernel) if sam == "eca" else None
        self.spatial = SpatialGate(spatial_kernel) if sam == "cbam" else None

    def init_state(self, like: torch.Tensor) -> State:
        return self.cell.init_state(like)

    def pack(self, like: torch.Tensor) -> FusedWeights:
        """The cell's fused weights for this unit's squeeze (two descriptors for CBAM) and the batch of
        `like` (B, ...): build them once for the steps of a stage and pass them to every call."""
        return self.cell.pack(like.shape[0], 2 if self.sam == "cbam" else 1)

    def squeeze(self, f: torch.Tensor) -> torch.Tensor:
        """The cell input z for a branch output f, images (B, C, H, W) or tokens (B, N, C)."""
        layout = Layout.of(f)
        z = layout.squeeze(f)  # (B, C)
        if self.channel_conv is not None:
            z = self.channel_conv(z)  # (B, C)
        if self.sam == "cbam":
            z = torch.stack((z, layout.squeeze_max(f)), dim=1)  # (B, 2, C)
        return z

    def forward(self, f: torch.Tensor, state: State, weights: FusedWeights | None = None
                ) -> tuple[torch.Tensor, State]:
        """(a, (h', c')) for a branch output f; weights: `pack(f)`, or None to pack for this call alone."""
        h, c = self.cell(self.squeeze(f), state, weights)  # (B, C) each
        a = Layout.of(f).expand(h)  # (B, C, 1, 1) or (B, 1, C)
        if self.spatial is not None:
            a = a * self.spatial(a * f)  # (B, C, H, W)
        return a, (h, c)
