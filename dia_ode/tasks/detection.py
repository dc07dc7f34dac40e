"""Object detection: a CenterNet detector on any detection-ready backbone, COCO metrics by pycocotools.

Batches are (images, targets) (data/detection_batches.py); the model is the backbone wrapped by
models/detector.py (model option head="detection"). Training reports the loss; every evaluation (val
each epoch, test at the end) decodes the detections, gathers them over the ranks and scores them with
COCOeval against the split's boxes: ap (IoU .50:.95), ap50, ap75, ap_small / medium / large, ar100.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import nn

from dia_ode.data.coco import annotation_dicts, category_id
from dia_ode.data.detection_batches import BoxAugment, iterate_detection_batches
from dia_ode.data.scenes import DetectionDataset
from dia_ode.models.boxes import xyxy_to_xywh
from dia_ode.tasks.base import AbstractTask
from dia_ode.tasks.centernet_loss import centernet_loss
from dia_ode.tasks.coco_eval import coco_metrics

REPORTED = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar100")


class DetectionTask(AbstractTask):
    """CenterNet training and COCO evaluation (module docstring)."""

    name = "detection"
    dataset_type = DetectionDataset
    dataset_names = ("digit-scenes", "fashion-scenes", "coco")
    metric_names = ("loss", *REPORTED)
    selection_metric = "ap"

    def model_options(self, dataset, accepted: Iterable[str]) -> dict[str, Any]:
        options = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels, "head": "detection"}
        if "image_size" in accepted:
            options["image_size"] = dataset.image_size
        return options

    def batches(self, split, batch_size: int, *, dataset, device: torch.device, shuffle: bool = False,
                generator: torch.Generator | None = None, augment: bool = False,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, list[dict]]]:
        jitter = BoxAugment(flip=getattr(dataset, "flip", False)) if augment else None
        return iterate_detection_batches(split, batch_size, mean=dataset.mean, std=dataset.std, shuffle=shuffle,
                                         generator=generator, augment=jitter, device=device, shard=shard)

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        x, targets = batch
        loss, _ = centernet_loss(model(x), targets, _stride(model))
        n = len(targets)
        return self.add_regularization(model, loss, {"loss": loss.item() * n, "count": n})

    def eval_sums(self, model: nn.Module, batch) -> dict[str, float]:
        x, targets = batch
        loss, _ = centernet_loss(model(x), targets, _stride(model))
        return {"loss": loss.item() * len(targets), "count": len(targets)}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any], dist: Any = None) -> dict[str, float]:
        """The mean loss and the COCO metrics of the decoded detections over every batch (and rank)."""
        model.eval()
        loss_sum, count, detections, truth = 0.0, 0, [], []
        for x, targets in batches:
            outputs = model(x)
            loss, _ = centernet_loss(outputs, targets, _stride(model))
            loss_sum, count = loss_sum + loss.item() * len(targets), count + len(targets)
            found_results, found_truth, _ = decoded(_module(model), outputs, targets)
            detections.extend(found_results)
            truth.extend(found_truth)
        if dist is not None and dist.enabled:
            sums = dist.all_reduce_sums({"loss": loss_sum, "count": float(count)})
            loss_sum, count = sums["loss"], int(sums["count"])
            detections = [d for part in dist.gather_objects(detections) for d in part]
            truth = [t for part in dist.gather_objects(truth) for t in part]
        metrics = coco_metrics(ground_truth(truth, _module(model).num_classes), detections)
        return {"loss": loss_sum / count if count else float("nan"), **{k: metrics[k] for k in REPORTED}}


def decoded(detector: nn.Module, outputs: dict[str, torch.Tensor], targets: list[dict]
            ) -> tuple[list[dict], list[tuple[int, torch.Tensor, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """(COCO results, (image_id, boxes, labels) ground truth on the CPU, per-image detections) of one batch."""
    found = detector.decode(outputs)
    results = [d for target, image_found in zip(targets, found) for d in detection_dicts(target["image_id"], image_found)]
    truth = [(target["image_id"], target["boxes"].cpu(), target["labels"].cpu()) for target in targets]
    return results, truth, found


def detection_dicts(image_id: int, found: dict[str, torch.Tensor]) -> list[dict]:
    """COCO results of one image's decoded detections."""
    return [{"image_id": int(image_id), "category_id": category_id(label), "bbox": [float(v) for v in box],
             "score": float(score)}
            for box, score, label in zip(xyxy_to_xywh(found["boxes"]).tolist(), found["scores"].tolist(),
                                         found["labels"].tolist())]


def ground_truth(truth: list[tuple[int, torch.Tensor, torch.Tensor]], num_classes: int) -> dict:
    """A COCO instances dict of (image_id, boxes, labels) triples."""
    annotations: list[dict] = []
    for image_id, boxes, labels in truth:
        annotations.extend(annotation_dicts(image_id, boxes, labels, first_id=len(annotations) + 1))
    return {"images": [{"id": int(image_id)} for image_id, _, _ in truth], "annotations": annotations,
            "categories": [{"id": category_id(k)} for k in range(num_classes)]}


def _module(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _stride(model: nn.Module) -> int:
    return _module(model).stride
