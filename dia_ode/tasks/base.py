"""What a task is: its data batches, its loss, its evaluation and the names of its metrics.

One trainer (engine/trainer.py) serves every task because a task owns everything that differs
between classification, diffusion and detection. Metrics travel as *sums* with a "count", so the
trainer can add them over batches and over data-parallel ranks before dividing once. A model
that regularises itself in training (an ODE block's RNODE penalty) hands its penalty to the task
through solvers.regularization_loss, so the trainer needs to know nothing about it.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Iterable, Iterator

import torch
from torch import nn

from dia_ode.data import DataError, Dataset, Split
from dia_ode.models import model_entry
from dia_ode.solvers import regularization_loss


class AbstractTask(abc.ABC):
    """A learning task; never instantiated.

    Class attributes:
        name: the task's name (`dia-ode train --task NAME`).
        dataset_type, dataset_names: the dataset class it trains on and the names of such datasets.
        metric_names: the per-sample means a split reports, e.g. ("loss", "acc") -> val_loss, val_acc.
        selection_metric: the metric whose best validation value the summary reports.
        higher_is_better: the direction of selection_metric.
    """

    name: ClassVar[str]
    dataset_type: ClassVar[type]
    dataset_names: ClassVar[tuple[str, ...]]
    metric_names: ClassVar[tuple[str, ...]]
    selection_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        """A task's own settings (`dia-ode train --task-option KEY=VALUE`); this one takes none.

        Raises:
            ValueError: an option the task does not take, or a bad value (the message names it).
        """
        if options:
            raise ValueError(f"task '{self.name}' takes no options, got {', '.join(sorted(options))}")

    def normalisation(self, dataset: Dataset) -> dict[str, list[float]]:
        """The per-channel {"mean", "std"} (in [0, 1] pixel units) the model sees its images through;
        saved with the checkpoint. Default: the training split's statistics."""
        return {"mean": list(dataset.mean), "std": list(dataset.std)}

    def epoch_figures(self, model: nn.Module, dataset: Dataset, epoch: int, epochs: int) -> dict[str, Any]:
        """Figures to save after epoch `epoch` (1-based) of `epochs`, as {name: matplotlib Figure} (the
        name may hold a folder: "samples/epoch_0010"); called on rank 0 with the evaluated model (the
        weights' moving average where the run keeps one). Default: none."""
        return {}

    def check_dataset(self, dataset: Any) -> None:
        """DataError (naming the dataset and the task) when the dataset is not of this task's kind."""
        if not isinstance(dataset, self.dataset_type):
            raise DataError(f"dataset '{dataset.name}' is not a {self.name} dataset; {self.name} takes: "
                            f"{', '.join(self.dataset_names)}")

    @abc.abstractmethod
    def model_options(self, dataset: Dataset, accepted: Iterable[str]) -> dict[str, Any]:
        """The constructor options a model needs from the data (e.g. num_classes, in_channels);
        `accepted` lists the options the model takes, so optional ones (image_size) are passed only there."""

    @abc.abstractmethod
    def batches(self, split: Split, batch_size: int, *, dataset: Dataset, device: torch.device,
                shuffle: bool = False, generator: torch.Generator | None = None, augment: bool = False,
                shard: tuple[int, int] = (0, 1)) -> Iterator[Any]:
        """One epoch of batches of a split on `device`; with shard=(rank, world) this rank's part of each
        global batch (the global batch is drawn and augmented exactly as one process would)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to backpropagate (a mean over the batch) and the batch's metric sums with "count"."""

    @staticmethod
    def add_regularization(model: nn.Module, loss: torch.Tensor,
                           sums: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        """loss + the model's regularisation penalty of its last forward, reported as the sum "reg"
        (train_reg in metrics.jsonl); unchanged when the model has none. "loss" stays the data loss,
        comparable with val_loss."""
        penalty = regularization_loss(model)
        if penalty is None:
            return loss, sums
        return loss + penalty, {**sums, "reg": penalty.item() * sums["count"]}

    @abc.abstractmethod
    def eval_sums(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Metric sums of one evaluation batch, with "count"."""

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any], dist: Any = None) -> dict[str, float]:
        """Per-sample means of metric_names over all batches (and all ranks when `dist` is given)."""
        model.eval()
        totals: dict[str, float] = dict.fromkeys((*self.metric_names, "count"), 0.0)
        for batch in batches:
            for key, value in self.eval_sums(model, batch).items():
                totals[key] += value
        if dist is not None:
            totals = dist.all_reduce_sums(totals)
        return means(totals)


def model_spec(model: str, options: dict, task: AbstractTask, dataset: Dataset) -> dict:
    """What rebuilds a model: its registry name and every constructor option (data-derived ones included).

    Raises:
        ValueError: the model does not serve the task.
    """
    entry = model_entry(model)
    if task.name not in entry.tasks:
        raise ValueError(f"model '{model}' does not support task '{task.name}' (it serves: {', '.join(entry.tasks)})")
    return {"name": model, "options": {**task.model_options(dataset, entry.options()), **options}}


def means(sums: dict[str, float]) -> dict[str, float]:
    """{metric: sum / count} for every key but "count" (0 where nothing was counted)."""
    count = sums.get("count", 0.0)
    return {key: value / count if count else float("nan") for key, value in sums.items() if key != "count"}
