"""The bottleneck MLP that SE, CBAM and the DIA cell use to turn channel descriptors into logits."""

from __future__ import annotations

from torch import nn


def bottleneck_mlp(channels: int, reduction: int, out_features: int | None = None,
                   min_hidden: int = 1) -> nn.Sequential:
    """Linear(C, H) -> ReLU -> Linear(H, out_features), with biases, H = max(C // r, min_hidden)
    (out_features = C by default)."""
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    if min_hidden < 1:
        raise ValueError(f"min_hidden must be >= 1, got {min_hidden}")
    hidden = max(channels // reduction, min_hidden)
    return nn.Sequential(
        nn.Linear(channels, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features or channels),
    )
