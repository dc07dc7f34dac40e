"""Channel descriptors ("squeeze" operators) shared by the attention modules.

Every channel-attention module starts by summarising a feature map (B, C, H, W) into one or more
per-channel descriptors (B, C). Keeping these in one place lets the DIA cell take the squeeze of
any module as its input (see theory/dia.md).
"""

from __future__ import annotations

import torch


def global_avg_pool(f: torch.Tensor) -> torch.Tensor:
    """Mean over the spatial dimensions: (B, C, H, W) -> (B, C)."""
    # sum, then scale the small result: mean's backward divides a full (B, C, H, W) tensor, this
    # one only expands a view (measured with `dia-ode bench`, see README).
    return f.sum(dim=(2, 3)) * (1.0 / (f.shape[2] * f.shape[3]))


def global_max_pool(f: torch.Tensor) -> torch.Tensor:
    """Max over the spatial dimensions: (B, C, H, W) -> (B, C)."""
    return f.amax(dim=(2, 3))
