"""Image classification: cross-entropy on the logits, accuracy, and the dataset's crop/flip."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from dia_ode.data import Dataset, Split, iterate_batches
from dia_ode.tasks.base import AbstractTask


class ClassificationTask(AbstractTask):
    """Batches are (images (B, C, H, W), labels (B,)); the model returns logits (B, num_classes)."""

    name = "classification"
    dataset_type = Dataset
    dataset_names = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
    metric_names = ("loss", "acc")
    selection_metric = "acc"

    def model_options(self, dataset: Dataset, accepted: Iterable[str]) -> dict[str, Any]:
        options = {"num_classes": dataset.num_classes, "in_channels": dataset.in_channels}
        if "image_size" in accepted:  # position embeddings (ViT) are sized by the input
            options["image_size"] = dataset.image_size
        return options

    def batches(self, split: Split, batch_size: int, *, dataset: Dataset, device: torch.device,
                shuffle: bool = False, generator: torch.Generator | None = None, augment: bool = False,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iterate_batches(split, batch_size, mean=dataset.mean, std=dataset.std, shuffle=shuffle,
                               generator=generator, augment=dataset.augment if augment else None, device=device,
                               shard=shard)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        logits = model(x)  # (B, num_classes)
        loss = F.cross_entropy(logits, y)
        n = len(y)
        sums = {"loss": loss.item() * n, "acc": (logits.argmax(dim=1) == y).sum().item(), "count": n}
        return self.add_regularization(model, loss, sums)

    def eval_sums(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        logits = model(x)
        return {"loss": F.cross_entropy(logits, y, reduction="sum").item(),
                "acc": (logits.argmax(dim=1) == y).sum().item(), "count": len(y)}
