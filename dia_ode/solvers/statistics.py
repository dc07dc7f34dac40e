"""Reading the solver statistics of a model: NFE and steps of its continuous blocks and stages.

Every model is treated alike: a continuous block reports what its solve did
(ContinuousBlock.stats), a residual stage of L blocks is a discrete solver with L evaluations and
L accepted steps per forward and none in backward. Analysis code reads these functions, never a
block's private attributes. Keys are STAT_KEYS (solvers/continuous.py).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from dia_ode.solvers.continuous import STAT_KEYS, ContinuousBlock
from dia_ode.solvers.stage import ResidualStage

MODES = ("train", "eval")
MAX_KEYS = ("nfe_forward_max",)  # DynamicsMeter keeps the largest over passes, not the sum
# the solver record of training: metrics.jsonl's columns of a continuous model, in the epoch line's order
SOLVER_RECORD = ("nfe_forward_max", "rejected_steps", "stiff_fraction", "h_lambda_median")


def continuous_blocks(model: nn.Module) -> list[ContinuousBlock]:
    """The continuous blocks of a model, in order of registration."""
    return [m for m in model.modules() if isinstance(m, ContinuousBlock)]


def accepted_h_lambda(model: nn.Module) -> torch.Tensor:
    """Hairer's h·λ of every sample's accepted steps in the model's last forward, all its continuous blocks
    pooled (1-d float64 on the CPU; empty where no block ran the stiffness test)."""
    values = [m.h_lambda for m in continuous_blocks(model)]
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)


def dynamics_stats(model: nn.Module) -> dict[str, float]:
    """Solver statistics of the model's last forward (and its backward), summed over its blocks.

    Continuous blocks contribute their `stats` (reset by each forward; backward adds nfe_backward and
    num_steps_backward; per-sample means on dia_ode); every residual stage of L blocks contributes
    nfe_forward = nfe_forward_max = num_steps = num_accepted = L and nothing else. Keys: STAT_KEYS
    (nfe_forward_max summed over blocks bounds one sample's total from above).
    """
    total = dict.fromkeys(STAT_KEYS, 0)
    for m in model.modules():
        if isinstance(m, ContinuousBlock):
            counts = m.stats
        elif isinstance(m, ResidualStage):
            L = len(m.blocks)
            counts = {"nfe_forward": L, "nfe_forward_max": L, "num_steps": L, "num_accepted": L}
        else:
            continue
        for key, value in counts.items():
            total[key] += value
    return total


class DynamicsMeter:
    """Running totals of dynamics_stats over many passes of one model, split by train/eval mode.

    A forward pre-hook on the model adds the statistics of the previous pass when the next one
    starts (its backward, if any, has run by then), so a plain training loop needs no change.
    Divide by "passes" for per-forward means; nfe_forward_max is the largest of the passes' (the most one
    sample needed in any pass), not a sum. The h·λ of the accepted steps are kept for `solver_record`.

    Args:
        model: the model whose passes are counted.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._totals = self._zeros()
        self._h_lambda = self._no_values()
        self._pending: str | None = None  # mode of the pass whose statistics are not added yet
        self._handle = model.register_forward_pre_hook(self._on_forward)

    @staticmethod
    def _zeros() -> dict[str, dict[str, int]]:
        return {mode: dict.fromkeys(("passes",) + STAT_KEYS, 0) for mode in MODES}

    @staticmethod
    def _no_values() -> dict[str, list[torch.Tensor]]:
        return {mode: [] for mode in MODES}

    def _add_last_pass(self, totals: dict[str, dict[str, int]]) -> None:
        row = totals[self._pending]
        row["passes"] += 1
        for key, value in dynamics_stats(self.model).items():
            row[key] = max(row[key], value) if key in MAX_KEYS else row[key] + value

    def _on_forward(self, module: nn.Module, args) -> None:
        if self._pending is not None:
            self._add_last_pass(self._totals)
            self._h_lambda[self._pending].append(accepted_h_lambda(self.model))
        self._pending = "train" if module.training else "eval"

    def read(self) -> dict[str, dict[str, int]]:
        """{"train": {...}, "eval": {...}}: "passes" and the STAT_KEYS totals, the last pass included
        (read after its backward to include its nfe_backward)."""
        totals = copy.deepcopy(self._totals)
        if self._pending is not None:
            self._add_last_pass(totals)
        return totals

    def h_lambda(self, mode: str) -> torch.Tensor:
        """The h·λ of every accepted step of the passes in `mode` so far, the last pass included (1-d)."""
        values = self._h_lambda[mode] + ([accepted_h_lambda(self.model)] if self._pending == mode else [])
        return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)

    def reset(self) -> None:
        """Start new totals (e.g. at an epoch boundary); the passes so far are dropped."""
        self._totals, self._h_lambda, self._pending = self._zeros(), self._no_values(), None

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()

    def __enter__(self) -> "DynamicsMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def solver_record(meter: DynamicsMeter, mode: str = "train") -> dict[str, float]:
    """What the solves of the passes in `mode` did, per sample (SOLVER_RECORD; NaN where undefined).

    nfe_forward_max: the most evaluations one sample needed in any pass (summed over the blocks: a bound);
    rejected_steps: rejected steps per sample and pass; stiff_fraction: the accepted steps Hairer's test
    found stability-limited over those it tested (NaN where none was tested: a fixed-step method, a
    residual network); h_lambda_median: the median h·λ of the tested steps, how close the steps of the
    learned dynamics come to the method's stability bound (NaN without a test).
    """
    row = meter.read()[mode]
    passes = max(row["passes"], 1)
    tested = row["num_tested_steps"]
    h_lambda = meter.h_lambda(mode)
    return {"nfe_forward_max": float(row["nfe_forward_max"]), "rejected_steps": row["num_rejected"] / passes,
            "stiff_fraction": row["num_stiff_steps"] / tested if tested else math.nan,
            "h_lambda_median": float(h_lambda.median()) if h_lambda.numel() else math.nan}
