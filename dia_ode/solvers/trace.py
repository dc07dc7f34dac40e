"""Recording the trajectory (x_k, f_k, h_k) of every residual stage of a model.

Analysis code reads these traces and never a model's attributes. Recording only stores tensors the
stages computed anyway, so the model's output is unchanged (tests check it).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from dia_ode.solvers.stage import ResidualStage


@dataclass
class StageTrace:
    """The trajectory of one stage with L blocks.

    Attributes:
        states: L + 1 tensors x_0 .. x_L (x_0 is the stage input).
        updates: L tensors f_k(x_k).
        steps: L tensors h_k, broadcastable to updates[k] (0-d for a constant step).
    """

    detach: bool = True
    states: list[torch.Tensor] = field(default_factory=list)
    updates: list[torch.Tensor] = field(default_factory=list)
    steps: list[torch.Tensor] = field(default_factory=list)

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach() if self.detach else t

    def record(self, x_k: torch.Tensor, f_k: torch.Tensor, h_k: torch.Tensor | float) -> None:
        self.states.append(self._keep(x_k))
        self.updates.append(self._keep(f_k))
        h_k = h_k if torch.is_tensor(h_k) else f_k.new_full((), h_k)  # a constant step becomes 0-d
        self.steps.append(self._keep(h_k))

    def finish(self, x_last: torch.Tensor) -> None:
        self.states.append(self._keep(x_last))

    def __len__(self) -> int:
        return len(self.updates)


def stages_of(model: nn.Module) -> list[ResidualStage]:
    """The residual stages of a model, in forward order of registration."""
    return [m for m in model.modules() if isinstance(m, ResidualStage)]


@contextmanager
def recording(model: nn.Module, detach: bool = True) -> Iterator[list[StageTrace]]:
    """Context in which every forward of `model` appends to one StageTrace per stage."""
    stages = stages_of(model)
    traces = [StageTrace(detach=detach) for _ in stages]
    for stage, t in zip(stages, traces):
        stage.recorder = t
    try:
        yield traces
    finally:
        for stage in stages:
            stage.recorder = None


def trace(model: nn.Module, x: torch.Tensor, detach: bool = True, return_output: bool = False):
    """Run `model(x)` once and return the per-stage traces.

    Args:
        model: any model built from ResidualStage modules.
        x: an input batch.
        detach: store detached tensors (True) or keep them in the autograd graph.
        return_output: also return the model's output, as (traces, output).

    Returns:
        A list of StageTrace, one per stage (or (traces, output)).
    """
    with recording(model, detach=detach) as traces:
        out = model(x)
    return (traces, out) if return_output else traces
