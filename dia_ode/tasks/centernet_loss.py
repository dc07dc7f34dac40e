"""CenterNet's training targets and loss (Zhou et al., arXiv 1904.07850, section 3).

Targets on the detector's output grid (stride s): for a box with centre c = ((x0 + x1) / 2s, (y0 + y1) / 2s)
the cell p = floor(c) of its class's heatmap is 1 and its neighbours follow a Gaussian around p; the
size head learns (w, h) / s and the offset head c - p, both at p only. Loss: the penalty-reduced focal
loss of CornerNet on the heatmap (alpha = 2, beta = 4) plus 0.1 x L1 on sizes plus L1 on offsets, each
normalised by the number of objects.

The Gaussian is elliptical with sigma = max(side / 6, 0.5) cells per axis (a box's sides in cells):
our own simple rule instead of CornerNet's overlap-based radius, so that an elongated digit's heatmap
follows its shape; the peak sits exactly on p, as in CenterNet.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0


def centernet_targets(targets: list[dict], num_classes: int, height: int, width: int, stride: int
                      ) -> dict[str, torch.Tensor]:
    """Heatmap (B, K, h, w) and, per object, its image, cell (flat index), size and offset targets."""
    device = targets[0]["boxes"].device if targets else "cpu"
    boxes = torch.cat([t["boxes"] for t in targets]).float() / stride if targets else torch.zeros(0, 4)
    labels = torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.int64)
    image = torch.cat([torch.full((len(t["labels"]),), i, device=device) for i, t in enumerate(targets)]) \
        if targets else torch.zeros(0, dtype=torch.int64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    cell = centre.floor().clamp_min(0)
    cell = torch.minimum(cell, torch.tensor([width - 1, height - 1], device=cell.device, dtype=cell.dtype))
    size = boxes[:, 2:] - boxes[:, :2]
    sigma = (size / 6).clamp_min(0.5)
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    gx = torch.exp(-((xs[None, :] - cell[:, :1]) ** 2) / (2 * sigma[:, :1] ** 2))  # (N, w)
    gy = torch.exp(-((ys[None, :] - cell[:, 1:]) ** 2) / (2 * sigma[:, 1:] ** 2))  # (N, h)
    gauss = gy[:, :, None] * gx[:, None, :]  # (N, h, w), 1 at the cell
    heat = torch.zeros(len(targets) * num_classes, height * width, device=device)
    if len(boxes):
        rows = (image * num_classes + labels)[:, None].expand(-1, height * width)
        heat.scatter_reduce_(0, rows, gauss.flatten(1), "amax")  # overlapping Gaussians: the larger value
    flat = (cell[:, 1] * width + cell[:, 0]).long()
    return {"heatmap": heat.view(len(targets), num_classes, height, width), "image": image.long(), "cell": flat,
            "size": size, "offset": centre - cell}


def centernet_loss(outputs: dict[str, torch.Tensor], targets: list[dict], stride: int
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss (a mean over objects) and its parts as floats: heatmap, size, offset."""
    logits = outputs["heatmap"]
    batch, classes, height, width = logits.shape
    t = centernet_targets(targets, classes, height, width, stride)
    n = max(len(t["cell"]), 1)
    pred = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    positive = t["heatmap"] == 1
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    focal_pos = ((1 - pred) ** FOCAL_ALPHA * log_p)[positive].sum()
    focal_neg = ((1 - t["heatmap"]) ** FOCAL_BETA * pred ** FOCAL_ALPHA * log_not_p)[~positive].sum()
    heat_loss = -(focal_pos + focal_neg) / n
    at = (t["image"], slice(None), t["cell"])  # (N, 2) predictions at the objects' cells
    size_pred = outputs["size"].flatten(2)[at]
    offset_pred = outputs["offset"].flatten(2)[at]
    size_loss = F.l1_loss(size_pred, t["size"], reduction="sum") / n
    offset_loss = F.l1_loss(offset_pred, t["offset"], reduction="sum") / n
    total = heat_loss + SIZE_WEIGHT * size_loss + OFFSET_WEIGHT * offset_loss
    return total, {"heatmap": heat_loss.item(), "size": size_loss.item(), "offset": offset_loss.item()}
