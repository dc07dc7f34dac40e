"""The residual stage as an explicit one-step ODE solver over depth.

    x_{k+1} = x_k + h_k * f_k(x_k)          k = 0 .. L-1

f_k is block k's residual branch (the vector field) and h_k the step chosen by the stage's
controller. The loop is written once for every controller. Post-activation ResNets apply a ReLU
after the add (x_{k+1} = relu(skip(x_k) + h_k f_k(x_k))), pre-activation ones do not; the first
block of a stage may change shape, so its skip is a projection instead of the identity.
"""

from __future__ import annotations

import abc
import torch
from torch import nn

from dia_ode.solvers.controllers import AbstractController


def euler_update(skip: torch.Tensor, h: torch.Tensor | float, f: torch.Tensor) -> torch.Tensor:
    """skip + h * f in one kernel; a number h (constant step) needs no tensor multiply in backward."""
    if isinstance(h, (int, float)):
        return torch.add(skip, f, alpha=h)
    return torch.addcmul(skip, h, f)


class AbstractBlock(nn.Module, abc.ABC):
    """A residual block split into its branch f_k and its shortcut; never instantiated."""

    @abc.abstractmethod
    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """The update f_k(x_k)."""

    @abc.abstractmethod
    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The skip path: x itself, or a projection when the block changes shape."""


class ResidualStage(nn.Module):
    """L blocks integrated with the steps of one controller.

    Args:
        blocks: the L blocks; each exposes branch() and shortcut().
        controller: chooses h_k; one object for the whole stage.
        post_activation: apply ReLU after each skip-add (original ResNet) or not (pre-activation).
    """

    def __init__(self, blocks: list[AbstractBlock], controller: AbstractController,
                 post_activation: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.controller = controller
        self.post_activation = post_activation
        self.recorder = None  # set by solvers.trace while it records; never saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.controller.init(x)
        for k, block in enumerate(self.blocks):
            f_k = block.branch(x)  # (B, C, H, W)
            h_k, state = self.controller(k, f_k, state)
            x_next = euler_update(block.shortcut(x), h_k, f_k)
            if self.post_activation:
                x_next = torch.relu_(x_next)
            if self.recorder is not None:
                self.recorder.record(x, f_k, h_k)
            x = x_next
        if self.recorder is not None:
            self.recorder.finish(x)
        return x
