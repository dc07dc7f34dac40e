"""COCO detection metrics through pycocotools' COCOeval (the evaluator detection papers report).

`coco_metrics(ground_truth, detections)` returns the twelve standard numbers (AP at IoU .50:.95, AP50,
AP75, AP for small / medium / large objects, AR at 1 / 10 / 100 detections, AR small / medium / large).
pycocotools prints its progress to stdout; it is silenced here, the numbers go to metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

METRICS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
           "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def coco_metrics(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
    """COCOeval's bbox summary of `detections` (COCO results: image_id, category_id, bbox xywh, score)
    against `ground_truth` (a COCO instances dict). Without any detection every metric is 0; a metric
    COCOeval cannot define (no ground truth of that size) is NaN, as COCOeval's -1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return dict.fromkeys(METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(ground_truth)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: (float(value) if value >= 0 else math.nan) for name, value in zip(METRICS, evaluator.stats)}
