"""COCO-format annotations: export of a detection split (the evaluator's ground truth, a user's file).

COCO's conventions: boxes as [x, y, width, height] in pixels, category ids from 1 (label l has id l + 1
here), every annotation with an id, its image's id, area and iscrowd = 0.
"""

from __future__ import annotations

from typing import Sequence

import torch

from dia_ode.data.scenes import DetectionSplit
from dia_ode.models.boxes import box_area, xyxy_to_xywh


def category_id(label: int) -> int:
    """COCO category id of a 0-based class index."""
    return label + 1


def to_coco(split: DetectionSplit, categories: Sequence[str], file_names: Sequence[str] | None = None) -> dict:
    """The split as a COCO instances dict: images (the split's ids), annotations, categories."""
    height, width = split.images.shape[-2:]
    ids = split.ids.tolist()
    images = [{"id": image_id, "width": int(width), "height": int(height),
               "file_name": file_names[i] if file_names is not None else f"{image_id:06d}.png"}
              for i, image_id in enumerate(ids)]
    annotations = []
    for image_id, boxes, labels in zip(ids, split.boxes, split.labels):
        annotations.extend(annotation_dicts(image_id, boxes, labels, first_id=len(annotations) + 1))
    return {"images": images, "annotations": annotations,
            "categories": [{"id": category_id(k), "name": name} for k, name in enumerate(categories)]}


def annotation_dicts(image_id: int, boxes: torch.Tensor, labels: torch.Tensor, first_id: int) -> list[dict]:
    """COCO annotations of one image's xyxy boxes and 0-based labels, ids from first_id."""
    return [{"id": first_id + k, "image_id": int(image_id), "category_id": category_id(label),
             "bbox": [float(v) for v in box], "area": float(area), "iscrowd": 0}
            for k, (box, area, label) in enumerate(zip(xyxy_to_xywh(boxes).tolist(), box_area(boxes).tolist(),
                                                      labels.tolist()))]
