"""A stage controller made of several that take turns: sub-step k goes to controller k mod m.

A Transformer block is two Euler sub-steps (attention, then MLP: the Lie–Trotter splitting of Lu et
al., arXiv 1906.02762), so the encoder's sub-steps alternate between two different vector fields.
One controller for all of them is DIA's default (one cell per stage); `AlternatingStageController` is
the other choice, one controller per kind of sub-step, each with its own state and its own count:

    h_k, s^(j) = C_j(k // m, f_k, s^(j))        j = k mod m,  the other states unchanged

The stage loop (stage.py) does not change: this is just another controller.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from dia_ode.solvers.controllers import AbstractStageController


class AlternatingStageController(AbstractStageController):
    """Routes sub-step k to controllers[k % m] with that controller's own state and index k // m.

    Args:
        controllers: the m >= 1 controllers, in the order of the sub-steps they serve (for a
            Transformer encoder: [attention sub-steps, MLP sub-steps]).
    """

    def __init__(self, controllers: Sequence[AbstractStageController]) -> None:
        super().__init__()
        if len(controllers) < 1:
            raise ValueError("AlternatingStageController needs at least one controller")
        self.controllers = nn.ModuleList(controllers)

    def init(self, x0: torch.Tensor) -> tuple[Any, ...]:
        return tuple(c.init(x0) for c in self.controllers)

    def forward(self, k: int, f_k: torch.Tensor, state: tuple[Any, ...]) -> tuple[torch.Tensor | float, tuple]:
        m = len(self.controllers)
        j = k % m
        h_k, s_j = self.controllers[j](k // m, f_k, state[j])  # controller j's own k-th call
        return h_k, state[:j] + (s_j,) + state[j + 1:]


__all__ = ["AlternatingStageController"]
