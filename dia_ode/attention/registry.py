"""Name -> self-attention module registry (timm's create_attn, for the modules of this package).

A SAM maps a branch output f (B, C, H, W) to a multiplier broadcastable to f. Unknown names and
options raise ValueError listing the valid ones, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import inspect

from torch import nn

from dia_ode.attention.cbam import CBAM
from dia_ode.attention.eca import EfficientChannelAttention
from dia_ode.attention.se import SqueezeExcite

SAMS: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
}

# Attention names a model can be built with; see solvers.controllers.create_controller.
ATTENTIONS: dict[str, str] = {
    "none": "constant step h = 1 (plain ResNet)",
    "se": "one Squeeze-and-Excitation module per block",
    "eca": "one ECA module per block",
    "cbam": "one CBAM module per block",
    "shared": "one SAM (sam=se|eca|cbam) shared by all blocks of a stage, no memory",
    "dia": "one SAM squeeze + DIA-LSTM cell shared by all blocks of a stage (DIANet)",
}


def list_attention() -> list[str]:
    """Names accepted by create_model's attention part ("none" is the plain model)."""
    return list(ATTENTIONS)


def check_options(cls: type, options: dict, what: str) -> None:
    """Raise ValueError if `options` has a keyword that `cls.__init__` does not take."""
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "channels")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{what} takes no option {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(accepted) or 'none'}")


def create_sam(name: str, channels: int, **options) -> nn.Module:
    """Build one self-attention module by name.

    Args:
        name: "se", "eca" or "cbam".
        channels: C of the feature map it gates.
        **options: the module's own options (e.g. reduction for se and cbam, kernel_size for eca).
    """
    if name not in SAMS:
        raise ValueError(f"unknown attention module '{name}'; valid: {', '.join(SAMS)}")
    check_options(SAMS[name], options, f"attention '{name}'")
    return SAMS[name](channels, **options)
