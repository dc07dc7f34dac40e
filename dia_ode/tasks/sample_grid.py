"""A grid of generated (or real) images as a figure: what a diffusion run draws after its epochs."""

from __future__ import annotations

import math

import torch


def sample_grid(images: torch.Tensor, title: str = ""):
    """A matplotlib Figure of up to 100 images (N, C, H, W) in [0, 1] on a square grid, 1-pixel gaps."""
    from matplotlib.figure import Figure  # not pyplot: no global figure state in a library

    images = images[:100].detach().float().cpu()
    side = math.ceil(math.sqrt(len(images)))
    c, h, w = images.shape[1:]
    canvas = torch.ones(c, side * (h + 1) - 1, side * (w + 1) - 1)
    for k, image in enumerate(images):
        row, col = divmod(k, side)
        canvas[:, row * (h + 1):row * (h + 1) + h, col * (w + 1):col * (w + 1) + w] = image
    inches = max(3.0, side * 0.45)
    fig = Figure(figsize=(inches, inches + 0.3), layout="constrained")
    ax = fig.subplots()
    pixels = canvas[0] if c == 1 else canvas.permute(1, 2, 0)
    ax.imshow(pixels.numpy(), cmap="gray" if c == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return fig
