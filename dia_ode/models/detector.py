"""An anchor-free single-stage detector on any backbone: CenterNet (Zhou, Wang & Krähenbühl, "Objects as
Points", arXiv 1904.07850) through a small FPN-like neck.

The backbone's multi-scale maps (`forward_stages`, one per `feature_info` entry) are merged onto one
grid at the output stride (Lin et al.'s FPN lateral 1x1 convolutions; coarser levels upsampled, finer
ones pooled; summed and smoothed), then three heads read the merged map: a heatmap per class (where object centres are), the
box size (w, h) and the sub-cell offset of the centre. Decoding takes the heatmap's local maxima
(3x3 max-pool), the top-k over all classes, their boxes, and non-maximum suppression per class
(models/boxes.py).

Why CenterNet rather than FCOS: one output level and one positive cell per object keep the target
assignment a few lines and the loss three terms, which suits small canvases and a CPU budget.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dia_ode.models.backbone import AbstractBackbone
from dia_ode.models.boxes import batched_nms

HEATMAP_PRIOR = 0.1  # initial sigmoid of the heatmap logits (CenterNet's bias -2.19): few cells are centres


class FPNNeck(nn.Module):
    """Every level through a 1x1 lateral convolution onto the output grid (coarser levels upsampled by
    nearest neighbour, as in FPN's top-down path; finer ones average-pooled), summed, then a 3x3
    convolution: one map of `channels` that sees every scale."""

    def __init__(self, level_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in level_channels)
        self.smooth = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        merged = 0
        for lateral, level in zip(self.lateral, maps):
            level = lateral(level)
            if level.shape[-1] > size[-1]:
                level = F.adaptive_avg_pool2d(level, size)
            elif level.shape[-1] < size[-1]:
                level = F.interpolate(level, size=size, mode="nearest")
            merged = merged + level
        return self.smooth(merged)


def _head(channels: int, outputs: int, bias: float = 0.0) -> nn.Sequential:
    last = nn.Conv2d(channels, outputs, 1)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), last)


class CenterNetDetector(nn.Module):
    """backbone -> FPNNeck -> heatmap / size / offset heads (module docstring).

    Args:
        backbone: any AbstractBackbone (its classifier_only modules are replaced by identities).
        num_classes: object classes K.
        neck_channels: channels of the merged map and the heads.
        out_stride: the output grid's stride (the nearest stride the backbone has): 4 puts a 14-28 pixel
            digit on 3-7 cells, and costs a sixteenth of stride 1's head.

    forward(x) -> {"heatmap": (B, K, h, w) logits, "size": (B, 2, h, w) box (w, h) in output cells,
    "offset": (B, 2, h, w) centre offset within its cell}, h = H / stride.
    """

    def __init__(self, backbone: AbstractBackbone, num_classes: int, neck_channels: int = 32,
                 out_stride: int = 4) -> None:
        super().__init__()
        for name in backbone.classifier_only:  # unused here: no parameter may go without a gradient (DDP)
            setattr(backbone, name, nn.Identity())
        self.backbone = backbone
        strides = [info.stride for info in backbone.feature_info]
        # the output grid: out_stride where a level has it, else the nearest level's stride
        self.stride = min(strides, key=lambda s: (abs(s - out_stride), -s))
        self.num_classes = num_classes
        self.neck = FPNNeck([info.channels for info in backbone.feature_info], neck_channels)
        self.heatmap = _head(neck_channels, num_classes, bias=-math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))
        self.size = _head(neck_channels, 2)
        self.offset = _head(neck_channels, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.backbone.forward_stages(x)
        merged = self.neck(maps, (x.shape[-2] // self.stride, x.shape[-1] // self.stride))
        return {"heatmap": self.heatmap(merged), "size": self.size(merged), "offset": self.offset(merged)}

    @torch.no_grad()
    def decode(self, outputs: dict[str, torch.Tensor], top_k: int = 50, score_threshold: float = 0.05,
               iou_threshold: float = 0.5) -> list[dict[str, torch.Tensor]]:
        """Per image {"boxes" (n, 4) xyxy in input pixels, "scores" (n,), "labels" (n,)}, best first."""
        heat = outputs["heatmap"].sigmoid()
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # local maxima only
        batch, classes, h, w = heat.shape
        scores, index = peaks.flatten(1).topk(min(top_k, classes * h * w))
        labels, cell = index // (h * w), index % (h * w)
        ys, xs = (cell // w).float(), (cell % w).float()
        results = []
        for b in range(batch):
            offset = outputs["offset"][b].flatten(1)[:, cell[b]]  # (2, k)
            size = outputs["size"][b].flatten(1)[:, cell[b]].clamp_min(0)
            cx, cy = xs[b] + offset[0], ys[b] + offset[1]
            boxes = torch.stack([cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2], dim=1)
            boxes = boxes * self.stride
            keep = scores[b] >= score_threshold
            boxes, kept_scores, kept_labels = boxes[keep], scores[b][keep], labels[b][keep]
            order = batched_nms(boxes, kept_scores, kept_labels, iou_threshold)
            results.append({"boxes": boxes[order], "scores": kept_scores[order], "labels": kept_labels[order]})
        return results
