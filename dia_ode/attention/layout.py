"""Where the channels of a feature tensor are: images (B, C, H, W) or tokens (B, N, C).

Channel attention squeezes a feature map to one number per sample and channel and broadcasts a
per-channel step h back over it. Only the position of the channel axis differs between a CNN and
a Transformer, so every attention module asks `Layout.of(f)` instead of assuming (B, C, H, W):
the same SE, ECA or DIA instance then serves a ResNet stage and a ViT encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    """The channel axis of a feature tensor and the axes that a squeeze averages over.

    Attributes:
        name: "images" or "tokens".
        channel_dim: 1 for images (B, C, H, W), -1 for tokens (B, N, C).
        ndim: the rank of a feature tensor of this layout.
    """

    name: str
    channel_dim: int
    ndim: int

    @staticmethod
    def of(f: torch.Tensor) -> "Layout":
        """The layout of a feature tensor, by its rank (4: images, 3: tokens)."""
        if f.dim() == IMAGES.ndim:
            return IMAGES
        if f.dim() == TOKENS.ndim:
            return TOKENS
        raise ValueError(f"channel attention takes images (B, C, H, W) or tokens (B, N, C), "
                         f"got a tensor of shape {tuple(f.shape)}")

    def squeeze(self, f: torch.Tensor) -> torch.Tensor:
        """Mean over space (images) or tokens: -> (B, C)."""
        if self is IMAGES:
            # sum, then scale the small result: mean's backward divides a full (B, C, H, W) tensor,
            # this one only expands a view (measured with `dia-ode bench`, see README).
            return f.sum(dim=(2, 3)) * (1.0 / (f.shape[2] * f.shape[3]))  # (B, C)
        return f.sum(dim=1) * (1.0 / f.shape[1])  # (B, C)

    def squeeze_max(self, f: torch.Tensor) -> torch.Tensor:
        """Max over space or tokens: -> (B, C)."""
        return f.amax(dim=(2, 3)) if self is IMAGES else f.amax(dim=1)  # (B, C)

    def expand(self, h: torch.Tensor) -> torch.Tensor:
        """A per-channel (B, C) step broadcastable to a feature tensor: (B, C, 1, 1) or (B, 1, C)."""
        # one view op (indexing with None would be one unsqueeze per new axis, and as many in backward)
        return h.view(*h.shape, 1, 1) if self is IMAGES else h.unsqueeze(1)

    def per_channel(self, h: torch.Tensor) -> torch.Tensor:
        """Inverse of expand for a broadcast step: (B, C, 1, 1) or (B, 1, C) -> (B, C)."""
        return h.flatten(1) if self is IMAGES else h[:, 0, :]


IMAGES = Layout("images", channel_dim=1, ndim=4)
TOKENS = Layout("tokens", channel_dim=-1, ndim=3)

__all__ = ["IMAGES", "TOKENS", "Layout"]
