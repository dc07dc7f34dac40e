"""The residual stage as an explicit one-step ODE solver over depth.

    x_{k+1} = x_k + h_k * f_k(x_k)          k = 0 .. L-1

f_k is block k's residual branch (the vector field) and h_k the step chosen by the stage's
controller. The loop is written once for every controller and every backbone (CNN, ViT, UNet):
a post-op module follows each skip-add (ReLU for post-activation ResNets, identity otherwise), an
optional conditioning input `cond` (a UNet's timestep embedding) reaches every branch, and the
first block of a stage may change shape, so its skip is a projection instead of the identity.
"""

from __future__ import annotations

import abc
import torch
from torch import nn

from dia_ode.solvers.controllers import AbstractStageController


def euler_update(skip: torch.Tensor, h: torch.Tensor | float, f: torch.Tensor) -> torch.Tensor:
    """skip + h * f; a number h (constant step) is one add that needs no tensor multiply in backward.

    A tensor h is a mul and an add rather than addcmul: addcmul saves one forward op, but its backward
    multiplies each of its two gradients by its scalar factor as well, two more full-size ops per step.
    """
    if isinstance(h, (int, float)):
        return torch.add(skip, f, alpha=h)
    return skip + h * f


class AbstractBlock(nn.Module, abc.ABC):
    """A residual block split into its branch f_k and its shortcut; never instantiated."""

    @abc.abstractmethod
    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The update f_k(x_k), optionally conditioned (e.g. on a diffusion timestep embedding)."""

    @abc.abstractmethod
    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The skip path: x itself, or a projection when the block changes shape."""


class ResidualStage(nn.Module):
    """L blocks integrated with the steps of one controller.

    Args:
        blocks: the L blocks; each exposes branch() and shortcut().
        controller: chooses h_k; one object for the whole stage.
        post: applied after each skip-add: nn.ReLU (original ResNet) or None for the identity
            (pre-activation ResNet, Transformer, continuous twins).
    """

    def __init__(self, blocks: list[AbstractBlock], controller: AbstractStageController,
                 post: nn.Module | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.controller = controller
        self.post = post if post is not None else nn.Identity()
        self.recorder = None  # set by solvers.trace while it records; never saved

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        state = self.controller.init(x)
        for k, block in enumerate(self.blocks):
            f_k = block.branch(x, cond)  # (B, C, H, W) or (B, N, C)
            h_k, state = self.controller(k, f_k, state)
            x_next = self.post(euler_update(block.shortcut(x), h_k, f_k))
            if self.recorder is not None:
                self.recorder.record(x, f_k, h_k)
            x = x_next
        if self.recorder is not None:
            self.recorder.finish(x)
        return x
