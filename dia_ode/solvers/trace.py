"""Recording the trajectory (t_k, x_k, f_k, h_k) of every residual stage and continuous block of a model.

One recorder for both readings of depth: a residual stage records each block's step (t_k = k), a
continuous block each *accepted* solver step (t_k the step's start in float64, f_k the vector field
there, h_k = dt_k * a(t_k) with the attention a, or dt_k without one). Analysis code reads these
traces and never a model's attributes. Recording does not change the output: a stage stores tensors
it computed anyway, a continuous block evaluates f and a at the accepted points outside the solve
(not counted in its NFE statistics). Tests check both.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from dia_ode.solvers.continuous import ContinuousBlock
from dia_ode.solvers.stage import ResidualStage


@dataclass
class StageTrace:
    """The trajectory of one stage with L blocks, or of one continuous block with L accepted steps.

    Attributes:
        kind: "discrete" (a ResidualStage: x_{k+1} = post(skip(x_k) + h_k f_k)) or "continuous" (a
            ContinuousBlock: x_{k+1} = x(t_k + dt_k), which Euler's x_k + h_k f_k only approximates).
        states: L + 1 tensors x_0 .. x_L (x_0 is the input, x_L the output).
        updates: L tensors f_k(x_k).
        steps: L tensors h_k, broadcastable to updates[k] (0-d for a constant step).
        times: L float64 0-d tensors t_k (the block index k for a stage).
    """

    detach: bool = True
    kind: str = "discrete"
    states: list[torch.Tensor] = field(default_factory=list)
    updates: list[torch.Tensor] = field(default_factory=list)
    steps: list[torch.Tensor] = field(default_factory=list)
    times: list[torch.Tensor] = field(default_factory=list)

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach() if self.detach else t

    def record(self, x_k: torch.Tensor, f_k: torch.Tensor, h_k: torch.Tensor | float,
               t_k: torch.Tensor | float | None = None) -> None:
        t_k = len(self.updates) if t_k is None else t_k
        self.times.append(torch.as_tensor(t_k, dtype=torch.float64).detach())  # float64: time accumulates
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


def recorded_modules(model: nn.Module) -> list[ResidualStage | ContinuousBlock]:
    """Everything `trace` records: residual stages and continuous blocks, in order of registration."""
    return [m for m in model.modules() if isinstance(m, (ResidualStage, ContinuousBlock))]


@contextmanager
def recording(model: nn.Module, detach: bool = True) -> Iterator[list[StageTrace]]:
    """Context in which every forward of `model` appends to one StageTrace per stage or continuous block."""
    stages = recorded_modules(model)
    traces = [StageTrace(detach=detach, kind="continuous" if isinstance(stage, ContinuousBlock) else "discrete")
              for stage in stages]
    for stage, t in zip(stages, traces):
        stage.recorder = t
    try:
        yield traces
    finally:
        for stage in stages:
            stage.recorder = None


def trace(model: nn.Module, x: torch.Tensor, cond: torch.Tensor | None = None, detach: bool = True,
          return_output: bool = False):
    """Run `model(x)` (or `model(x, cond)`) once and return the per-stage traces.

    Args:
        model: any model built from ResidualStage or ContinuousBlock modules.
        x: an input batch.
        cond: a conditioning input passed on to the model (e.g. a diffusion timestep); None: model(x).
        detach: store detached tensors (True) or keep a stage's tensors in the autograd graph (a
            continuous block's records are always computed without a graph, outside the solve).
        return_output: also return the model's output, as (traces, output).

    Returns:
        A list of StageTrace, one per stage or continuous block (or (traces, output)): a continuous
        block's trace holds its accepted solver steps (kind "continuous").

    Raises:
        ValueError: the model has neither a ResidualStage nor a ContinuousBlock (nothing to record;
            an empty list would look like a model with no steps).
    """
    if not recorded_modules(model):
        raise ValueError(f"{type(model).__name__} has no ResidualStage or ContinuousBlock: nothing to trace")
    with recording(model, detach=detach) as traces:
        out = model(x) if cond is None else model(x, cond)
    return (traces, out) if return_output else traces
