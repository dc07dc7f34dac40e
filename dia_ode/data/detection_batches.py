"""Detection batches on the target device, and augmentation that moves the boxes with the pixels.

A batch is (images (B, C, H, W) float32 normalised, targets): targets[i] = {"boxes": (k, 4) xyxy in
pixels, "labels": (k,), "image_id": int}. Every random draw comes from an explicit generator, so one
seed replays bit-identical epochs (resume relies on it), and under torchrun the whole global batch is
drawn and augmented before each rank keeps its part, as for classification (batching.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.nn import functional as F

from dia_ode.data.batching import global_batches, normalise
from dia_ode.data.scenes import DetectionSplit
from dia_ode.models.boxes import box_area, clip_boxes, flip_boxes

Targets = list[dict]


@dataclass(frozen=True)
class BoxAugment:
    """Scale jitter and optional left-right flip of images and their boxes, image by image.

    Scale jitter zooms an image by s ~ U[scale]: zoomed in, a random H x W window is kept; zoomed out,
    the image sits at a random place on a zero canvas. Boxes are scaled, shifted and clipped with it; a
    box that keeps less than `min_visible` of its area is dropped (a sliver of an object is no target).
    Draws per image, in order: s, the window or place (2 integers), then the flip.
    """

    scale: tuple[float, float] = (0.75, 1.25)
    flip: bool = False
    min_visible: float = 0.6

    def __call__(self, images: torch.Tensor, targets: Targets, generator: torch.Generator
                 ) -> tuple[torch.Tensor, Targets]:
        out, moved = torch.empty_like(images), []
        _, _, height, width = images.shape
        for i, target in enumerate(targets):
            s = self.scale[0] + (self.scale[1] - self.scale[0]) * float(torch.rand(1, generator=generator))
            side_h, side_w = max(1, round(height * s)), max(1, round(width * s))
            zoomed = F.interpolate(images[i:i + 1], size=(side_h, side_w), mode="bilinear", align_corners=False)[0]
            dy = int(torch.randint(0, abs(side_h - height) + 1, (1,), generator=generator))
            dx = int(torch.randint(0, abs(side_w - width) + 1, (1,), generator=generator))
            boxes = target["boxes"] * torch.tensor([side_w / width, side_h / height] * 2, device=images.device)
            if s >= 1:  # keep the window starting at (dy, dx)
                out[i] = zoomed[:, dy:dy + height, dx:dx + width]
                shift = torch.tensor([-dx, -dy, -dx, -dy], dtype=boxes.dtype, device=boxes.device)
            else:  # paste at (dy, dx) on a zero canvas
                out[i] = 0.0
                out[i, :, dy:dy + side_h, dx:dx + side_w] = zoomed
                shift = torch.tensor([dx, dy, dx, dy], dtype=boxes.dtype, device=boxes.device)
            area = box_area(boxes)
            boxes = clip_boxes(boxes + shift, height, width)
            keep = box_area(boxes) >= self.min_visible * area.clamp_min(1e-6)
            boxes, labels = boxes[keep], target["labels"][keep]
            if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
                out[i] = out[i].flip(-1)
                boxes = flip_boxes(boxes, width)
            moved.append({**target, "boxes": boxes, "labels": labels})
        return out, moved


def iterate_detection_batches(split: DetectionSplit, batch_size: int, *, mean: Sequence[float],
                              std: Sequence[float], shuffle: bool = False, generator: torch.Generator | None = None,
                              augment: BoxAugment | None = None, device: torch.device | str = "cpu",
                              shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, Targets]]:
    """One epoch of (images, targets) batches (module docstring); shard as in batching.iterate_batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = generator if generator is not None else torch.default_generator
    order = torch.randperm(len(split), generator=gen) if shuffle else torch.arange(len(split))
    # resident images (DetectionSplit.to) are indexed where they live, with the order moved once an
    # epoch; the per-image annotations stay on the host and are read with `order` itself
    order_at = order.to(split.images.device)
    rank, world = shard
    for start, size in global_batches(len(split), batch_size, world):
        index, at = order[start:start + size], order_at[start:start + size]
        if augment is None:
            index, at = index.tensor_split(world)[rank], at.tensor_split(world)[rank]
        x = split.images[at].to(device).float() / 255.0
        targets = [{"boxes": split.boxes[i].to(device), "labels": split.labels[i].to(device),
                    "image_id": int(split.ids[i])} for i in index.tolist()]
        if augment is not None:
            x, targets = augment(x, targets, gen)
            parts = torch.arange(len(targets)).tensor_split(world)[rank].tolist()
            x, targets = x[parts[0]:parts[-1] + 1] if parts else x[:0], [targets[i] for i in parts]
        yield normalise(x, mean, std), targets
