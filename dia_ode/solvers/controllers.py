"""Stage controllers: who chooses h_k in x_{k+1} = x_k + h_k * f_k(x_k), attention read as a step size.

One small interface, as in diffrax's step-size controllers: `init` creates the controller's
state at the start of a stage, and calling the controller with (k, f_k, state) returns the step
h_k (broadcastable to f_k) and the new state. A plain ResNet is a constant step; SE-ResNet and
friends are one attention module per block; a shared SAM is one module for the whole stage; DIA
is one module with memory for the whole stage. The stage loop (stage.py) never asks which. The
learned scalar step (SkipInit / ReZero) is the control between the constant step and attention: learned
like a gate, but one number per block, the same for every channel and every input.

A stage controller reads the state and is never told an error; the error controllers of the ODE lab
(numerics/controllers.py: I, PI, PID, the learned DIAErrorController) read an embedded error estimate
and accept or reject a step. The names say which: *StageController here, *ErrorController there.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import nn

from dia_ode.attention.dia import DIAUnit
from dia_ode.attention.dia_cell import FusedWeights, State
from dia_ode.attention.registry import LEARNED_STEP, get_attention


class AbstractStageController(nn.Module, abc.ABC):
    """Interface of a stage controller (the step h_k of every block of a residual stage); never instantiated."""

    def init(self, x0: torch.Tensor) -> Any:
        """Controller state before the first block, created like the stage input x0."""
        return None

    @abc.abstractmethod
    def forward(self, k: int, f_k: torch.Tensor, state: Any) -> tuple[torch.Tensor | float, Any]:
        """Step size h_k for block k given its update f_k(x_k) (images or tokens), and the new state.

        h_k is a tensor broadcastable to f_k, or a number for a constant step."""


class ConstantStep(AbstractStageController):
    """h_k = h for every block (h = 1 is the plain ResNet)."""

    def __init__(self, h: float = 1.0) -> None:
        super().__init__()
        self.h = h

    def forward(self, k: int, f_k: torch.Tensor, state: None) -> tuple[float, None]:
        return self.h, state  # a number, not a tensor: the update is then a plain add (see stage.py)


class LearnedScalarStep(AbstractStageController):
    """h_k = alpha_k, one learned scalar per block, every alpha_k initialised at 0.

    SkipInit (De & Smith, "Batch Normalization Biases Residual Blocks Towards the Identity Function in
    Deep Networks", arXiv 2002.10444) and ReZero (Bachlechner et al., "ReZero is All You Need", arXiv
    2003.04887): x_{k+1} = x_k + alpha_k f_k(x_k) with alpha_k = 0 at initialisation, so every block starts
    as its skip path and training grows the steps it needs. A control for attention read as a step size:
    it learns its step like a gate does, but neither per channel nor from the state.
    """

    def __init__(self, num_blocks: int, init: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((num_blocks,), float(init)))  # (L,): alpha_k of block k

    def forward(self, k: int, f_k: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.alpha[k], state  # 0-d: broadcasts over f_k, images or tokens


class PerBlockAttention(AbstractStageController):
    """One self-attention module per block: h_k = SAM_k(f_k) (SE-ResNet, ECA-ResNet, CBAM-ResNet)."""

    def __init__(self, sams: list[nn.Module]) -> None:
        super().__init__()
        self.sams = nn.ModuleList(sams)

    def forward(self, k: int, f_k: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.sams[k](f_k), state


class SharedAttention(AbstractStageController):
    """One self-attention module for the whole stage, no memory: h_k = SAM(f_k)."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, k: int, f_k: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.sam(f_k), state


class DIAStageController(AbstractStageController):
    """DIA: one shared unit with memory, (h_k, state_k) = DIA(f_k, state_{k-1}), h_0 = c_0 = 0.

    The controller's state is (weights, (h, c)): the cell's fused weights are packed once per stage
    forward and shared by its L steps, so their packing (and its backward) is paid once, not per block.
    """

    def __init__(self, unit: DIAUnit) -> None:
        super().__init__()
        self.unit = unit

    def init(self, x0: torch.Tensor) -> tuple[FusedWeights, State]:
        return self.unit.pack(x0), self.unit.init_state(x0)

    def forward(self, k: int, f_k: torch.Tensor, state: tuple[FusedWeights, State]
                ) -> tuple[torch.Tensor, tuple[FusedWeights, State]]:
        weights, memory = state
        a, memory = self.unit(f_k, memory, weights)
        return a, (weights, memory)


def create_stage_controller(attention: str, channels: int, num_blocks: int, **options) -> AbstractStageController:
    """Build the controller of one stage by attention name (a row of attention.ATTENTIONS).

    Args:
        attention: "none", "se", "eca", "cbam", "shared" or "dia".
        channels: C of the stage's updates f_k.
        num_blocks: L, the number of blocks of the stage (per-block attention builds L modules).
        **options: options of the attention (e.g. reduction; sam for "shared" and "dia" picks
            whose squeeze is shared, default "se"; h for "none": a number, or "learned" for
            LearnedScalarStep).

    Raises:
        ValueError: an unknown option, or a value of h that is neither a finite number nor "learned".
    """
    spec = get_attention(attention)
    spec.check(options)
    return _BY_SCOPE[spec.scope](spec, channels, num_blocks, options)


# scope -> controller; the table row decides, so no code path asks for an attention by name.
_BY_SCOPE = {
    "constant": lambda spec, C, L, options: _step(L, **options),
    "per_block": lambda spec, C, L, options: PerBlockAttention([spec.module(C, **options) for _ in range(L)]),
    "shared": lambda spec, C, L, options: SharedAttention(spec.module(C, **options)),
    "recurrent": lambda spec, C, L, options: DIAStageController(spec.module(C, **options)),
}


def _step(num_blocks: int, h: float | str = 1.0) -> ConstantStep | LearnedScalarStep:
    """The scope "constant": a number h is ConstantStep(h), h = LEARNED_STEP a LearnedScalarStep."""
    if h == LEARNED_STEP:
        return LearnedScalarStep(num_blocks)
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h):
        raise ValueError(f"option 'h' takes a finite number or '{LEARNED_STEP}', got {h!r}")
    return ConstantStep(h)
