"""A run directory loaded back: its config, its model with the last weights, and its test split.

Analysis, sampling and `compare --from` start from a run directory; this is the one place that turns
one into objects. It rebuilds the model from the checkpoint's model_spec and normalises with the
checkpoint's statistics, so it imports neither the trainer nor the training set (IDX and CIFAR read
only their test files; the embedded digits are read whole, having no official test split).

A checkpoint's model options are sized before anything is allocated: the model is first built on the
meta device (no memory), its parameter count bounded (MAX_PARAMETERS) and its state-dict shapes compared
with the checkpoint's tensors; options that would allocate terabytes (base_width=200000) or weights that
do not fit are refused in one line, and only then is the model built for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dia_ode.data import Split, iterate_batches, load_dataset, load_test_split
from dia_ode.models import create_model
from dia_ode.tasks import get_task, model_spec
from dia_ode.rundir.checkpoints import CHECKPOINT, CheckpointError, brief, load_checkpoint, load_state
from dia_ode.rundir.summary import load_run_config


MAX_PARAMETERS = 2 ** 31  # 8 GiB of float32 weights: far beyond any model here, far below a hostile option


@dataclass
class LoadedRun:
    """A run directory's model (eval mode, last checkpoint), config and test data.

    Attributes:
        run_dir: the directory.
        config: config.json as written by the run (model, task, dataset, options, ...).
        model: the model with the checkpoint's weights (their moving average where the run kept one,
            engine/ema.py), in eval mode.
        model_spec: {"name", "options"}: what rebuilt the model.
        epoch: epochs done.
        mean: per-channel normalisation mean of the training data.
        std: per-channel normalisation std.
        test: the raw test split.
    """

    run_dir: Path
    config: dict
    model: nn.Module
    model_spec: dict
    epoch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test: Split

    @property
    def model_name(self) -> str:
        return self.model_spec["name"]

    @property
    def dataset_name(self) -> str:
        return self.config["dataset"]

    @property
    def task(self) -> str:
        return self.config.get("task", "classification")

    def test_batch(self, n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The first n test samples, normalised like in training: (n, C, H, W) and (n,)."""
        return next(self.test_batches(n, device))

    def test_batches(self, batch_size: int = 256, device: torch.device | str = "cpu"):
        """The whole test split in order, normalised like in training."""
        return iterate_batches(self.test, batch_size, mean=self.mean, std=self.std, device=device)


def _spec_from_config(config: dict) -> tuple[dict, dict]:
    """model_spec and normalisation of a checkpoint written before they were saved (format version 1):
    rebuilt from the config and the dataset, as the training code did then."""
    dataset = load_dataset(config["dataset"], config.get("data_dir"), val_fraction=config.get("val_fraction", 0.1),
                           split_seed=config.get("split_seed", 0), train_examples=config.get("train_examples"))
    task = get_task(config.get("task", "classification"))
    return (model_spec(config["model"], config.get("model_options", {}), task, dataset),
            {"mean": dataset.mean, "std": dataset.std})


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Load a training run directory.

    Raises:
        CheckpointError: not a run directory, no checkpoint, or a checkpoint that does not fit.
        DataError: the run's test data can no longer be loaded.
    """
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    if not isinstance(config.get("dataset"), str):  # what the test split is loaded from
        raise CheckpointError(f"{run_dir / 'config.json'} is not a training run's configuration: it names no dataset")
    if not (run_dir / CHECKPOINT).is_file():
        raise CheckpointError(f"run directory {run_dir} has no checkpoint ({CHECKPOINT})")
    ckpt = load_checkpoint(run_dir / CHECKPOINT, map_location=device)
    if "model_spec" in ckpt:
        spec, normalisation = ckpt["model_spec"], ckpt["normalisation"]
    else:
        spec, normalisation = _spec_from_config(ckpt["config"])
    path = run_dir / CHECKPOINT
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("options"), dict)):
        raise CheckpointError(f"checkpoint {path} has no usable model_spec (a dict of a name and its options)")
    if config.get("model") != spec["name"]:
        raise CheckpointError(f"checkpoint {path} holds model '{spec['name']}', "
                              f"but config.json names '{config.get('model')}'")
    # a run that kept a moving average of the weights evaluates (and samples) with it
    ema = [ckpt["ema"].get("weights")] if isinstance(ckpt.get("ema"), dict) else []
    model = build_checked_model(spec, path, ckpt["model"], *ema, device=device)
    for state in (ckpt["model"], *ema):
        load_state(model, state, path)
    test = load_test_split(config["dataset"], config.get("data_dir"), split_seed=config.get("split_seed", 0))
    return LoadedRun(run_dir, config, model.eval(), spec, ckpt["epoch"], tuple(normalisation["mean"]),
                     tuple(normalisation["std"]), test)


def build_checked_model(spec: dict, path: str | Path, *states: dict, device: torch.device | str = "cpu") -> nn.Module:
    """The model of a checkpoint's spec ({"name", "options"}) on `device`, sized on the meta device first.

    Args:
        spec: the registry name and every constructor option.
        path: the checkpoint, for the messages.
        states: the state dicts that will be loaded into it (weights, their moving average).

    Raises:
        CheckpointError (one line): the options build no model, build more than MAX_PARAMETERS parameters,
            or a model whose state-dict keys or shapes differ from a state's (the first differing key named);
            nothing but the meta model has been allocated then.
    """
    try:
        with torch.device("meta"):  # no memory, no initialisation: a hostile option costs nothing here
            skeleton = create_model(spec["name"], **spec["options"])
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} names a model this version cannot build ({brief(str(err))})") \
            from None
    count = sum(p.numel() for p in skeleton.parameters())
    if count > MAX_PARAMETERS:
        options = ", ".join(f"{k}={v!r}" for k, v in spec["options"].items())
        raise CheckpointError(f"checkpoint {path}: model {spec['name']} with options {brief(options, limit=160)} "
                              f"would have {count:,} parameters (more than {MAX_PARAMETERS:,}); not built")
    expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
    for state in states:
        difference = _first_difference(expected, state)
        if difference:
            raise CheckpointError(f"checkpoint {path} does not fit model {spec['name']} as its options build it "
                                  f"({difference}); not built")
    return create_model(spec["name"], **spec["options"]).to(device)


def _first_difference(expected: dict[str, tuple[int, ...]], state) -> str | None:
    """The first key whose presence or shape differs between the model's state dict and `state`, in words."""
    if not isinstance(state, dict):
        return "its weights are not a state dict"
    for key, shape in expected.items():
        if key not in state:
            return f"{key} is missing from the checkpoint"
        saved = getattr(state[key], "shape", None)
        if saved is not None and tuple(saved) != shape:
            return f"{key} has shape {tuple(saved)} in the checkpoint, {shape} in the model"
    extra = next((key for key in state if key not in expected), None)
    return None if extra is None else f"the checkpoint holds {extra}, which the model has not"
