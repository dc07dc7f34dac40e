"""Reading the solver statistics of a model: NFE and steps of its continuous blocks and stages.

Every model is treated alike: a continuous block reports what its solve did
(ContinuousBlock.stats), a residual stage of L blocks is a discrete solver with L evaluations and
L accepted steps per forward and none in backward. Analysis code reads these functions, never a
block's private attributes. Keys are STAT_KEYS (solvers/continuous.py).
"""

from __future__ import annotations

import copy

from torch import nn

from dia_ode.solvers.continuous import STAT_KEYS, ContinuousBlock
from dia_ode.solvers.stage import ResidualStage

MODES = ("train", "eval")


def continuous_blocks(model: nn.Module) -> list[ContinuousBlock]:
    """The continuous blocks of a model, in order of registration."""
    return [m for m in model.modules() if isinstance(m, ContinuousBlock)]


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
    Divide by "passes" for per-forward means.

    Args:
        model: the model whose passes are counted.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._totals = self._zeros()
        self._pending: str | None = None  # mode of the pass whose statistics are not added yet
        self._handle = model.register_forward_pre_hook(self._on_forward)

    @staticmethod
    def _zeros() -> dict[str, dict[str, int]]:
        return {mode: dict.fromkeys(("passes",) + STAT_KEYS, 0) for mode in MODES}

    def _add_last_pass(self, totals: dict[str, dict[str, int]]) -> None:
        row = totals[self._pending]
        row["passes"] += 1
        for key, value in dynamics_stats(self.model).items():
            row[key] += value

    def _on_forward(self, module: nn.Module, args) -> None:
        if self._pending is not None:
            self._add_last_pass(self._totals)
        self._pending = "train" if module.training else "eval"

    def read(self) -> dict[str, dict[str, int]]:
        """{"train": {...}, "eval": {...}}: "passes" and the STAT_KEYS totals, the last pass included
        (read after its backward to include its nfe_backward)."""
        totals = copy.deepcopy(self._totals)
        if self._pending is not None:
            self._add_last_pass(totals)
        return totals

    def reset(self) -> None:
        """Start new totals (e.g. at an epoch boundary); the passes so far are dropped."""
        self._totals, self._pending = self._zeros(), None

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()

    def __enter__(self) -> "DynamicsMeter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
