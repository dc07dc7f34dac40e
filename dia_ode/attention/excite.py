"""The bottleneck MLP that SE, CBAM and the DIA cell use to turn channel descriptors into logits."""

from __future__ import annotations

from torch import nn


def bottleneck_mlp(channels: int, reduction: int, out_features: int | None = None) -> nn.Sequential:
    """Linear(C, C // r) -> ReLU -> Linear(C // r, out_features), with biases (out_features = C by default)."""
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    hidden = max(channels // reduction, 1)
    return nn.Sequential(
        nn.Linear(channels, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features or channels),
    )
