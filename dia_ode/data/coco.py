"""COCO-format annotations: export of a detection split (the evaluator's ground truth, a user's file).

COCO's conventions: boxes as [x, y, width, height] in pixels, category ids from 1 (label l has id l + 1
here), every annotation with an id, its image's id, area and iscrowd = 0.
"""

from __future__ import annotations

from typing import Sequence

from dia_ode.data.scenes import DetectionSplit
from dia_ode.models.boxes import box_area, xyxy_to_xywh


def category_id(label: int) -> int:
    """COCO category id of a 0-based class index."""
    return label + 1


def to_coco(split: DetectionSplit, categories: Sequence[str], file_names: Sequence[str] | None = None) -> dict:
    """The split as a COCO instances dict: images (id = index + 1), annotations, categories."""
    height, width = split.images.shape[-2:]
    images = [{"id": i + 1, "width": int(width), "height": int(height),
               "file_name": file_names[i] if file_names is not None else f"{i + 1:06d}.png"}
              for i in range(len(split))]
    annotations = []
    for i, (boxes, labels) in enumerate(zip(split.boxes, split.labels)):
        for box, area, label in zip(xyxy_to_xywh(boxes).tolist(), box_area(boxes).tolist(), labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category_id(label),
                                "bbox": [float(v) for v in box], "area": float(area), "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": category_id(k), "name": name} for k, name in enumerate(categories)]}
