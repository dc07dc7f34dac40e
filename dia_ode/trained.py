"""A finished (or interrupted) training run loaded back: its config, data and model weights.

Analysis commands (stiffness, stepsize, correlate) start from a run directory written by
`dia-ode train`; this is the one place that turns such a directory into objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dia_ode.checkpoint import CheckpointError, load_checkpoint, load_state
from dia_ode.data import Dataset, iterate_batches, load_dataset
from dia_ode.train import CHECKPOINT, TrainConfig, build_model


@dataclass
class TrainedRun:
    """A run directory's model (eval mode, last checkpoint), dataset and config."""

    run_dir: Path
    config: TrainConfig
    dataset: Dataset
    model: nn.Module
    epoch: int

    def test_batch(self, n: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The first n test samples, normalised like in training: (n, C, H, W) and (n,)."""
        x, y = next(iterate_batches(self.dataset.test, n, mean=self.dataset.mean, std=self.dataset.std,
                                    device=device))
        return x, y


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> TrainedRun:
    """Load a training run directory.

    Raises:
        CheckpointError: not a run directory, no checkpoint, or a checkpoint that does not fit.
        DataError: the run's dataset can no longer be loaded.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a training run directory (no config.json)")
    if not (run_dir / CHECKPOINT).is_file():
        raise CheckpointError(f"run directory {run_dir} has no checkpoint ({CHECKPOINT})")
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    ckpt = load_checkpoint(run_dir / CHECKPOINT, map_location=device)
    dataset = load_dataset(cfg.dataset, cfg.data_dir, val_fraction=cfg.val_fraction, split_seed=cfg.split_seed)
    model = build_model(cfg, dataset, device)
    load_state(model, ckpt["model"], run_dir / CHECKPOINT)
    return TrainedRun(run_dir, cfg, dataset, model.eval(), ckpt["epoch"])
