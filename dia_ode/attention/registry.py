"""The attention table: one row per attention name, read by the discrete controllers and the
continuous dynamics alike (timm's create_attn, with the scope that the ODE reading needs).

A row says what the name means as a step-size controller: `constant` (h = 1, the plain network; its
option h sets another constant or a learned scalar per block),
`per_block` (one module per block: SE-ResNet), `shared` (one memoryless module per stage) or
`recurrent` (one module with memory per stage: DIA). solvers/ maps each scope to a controller
(discrete) and to a right-hand side (continuous); a new attention is one module file plus one row.
Unknown names and options raise ValueError listing the valid ones, so a typo never silently
trains the wrong model.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass

from torch import nn

from dia_ode.attention.cbam import CBAM
from dia_ode.attention.dia import DIA_SAMS, DIAUnit
from dia_ode.attention.eca import EfficientChannelAttention
from dia_ode.attention.se import SqueezeExcite
from dia_ode.util import did_you_mean, unknown_name

# A SAM maps a branch output f (images or tokens) to a multiplier broadcastable to f.
SAMS: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
}

SCOPES = ("constant", "per_block", "shared", "recurrent")

# The constant step's option, type and default: solvers.ConstantStep's argument, or LEARNED_STEP for
# solvers.LearnedScalarStep (solvers sit above attention/, so it is stated here rather than read from
# those classes).
LEARNED_STEP = "learned"
CONSTANT_STEP_OPTIONS: dict[str, tuple[object, float]] = {"h": (float | typing.Literal[LEARNED_STEP], 1.0)}


@dataclass(frozen=True)
class AttentionSpec:
    """One attention name.

    Attributes:
        name: the name (also the model-name prefix, except "none").
        description: one line for `dia-ode ls`.
        scope: one of SCOPES: who chooses h_k and whether it remembers.
        continuous: whether a continuous-depth right-hand side exists (CBAM's spatial gate has a
            BatchNorm, which must not sit inside a vector field that solvers evaluate many times).
    """

    name: str
    description: str
    scope: str
    continuous: bool = True

    def options(self, sam: str | None = None, continuous: bool = False) -> list[str]:
        """The keyword options this attention takes (besides channels); continuous: in a continuous-depth
        model, where "none" is dx/dt = f and has no step to set."""
        if self.scope == "constant":
            return [] if continuous else list(CONSTANT_STEP_OPTIONS)
        if self.scope == "recurrent":
            return _init_options(DIAUnit)
        if self.scope == "shared":
            return ["sam", *_init_options(SAMS[sam or "se"])]
        return _init_options(SAMS[self.name])

    def option_class(self, sam: str | None = None) -> type | None:
        """The module class whose constructor takes this attention's options (None for a constant step)."""
        return {"recurrent": DIAUnit, "shared": SAMS.get(sam or "se"), "per_block": SAMS.get(self.name)}.get(self.scope)

    def option_types(self, sam: str | None = None) -> dict[str, object]:
        """Type annotations of the options this attention takes (for value checks before building)."""
        if self.scope == "constant":
            return {name: kind for name, (kind, _) in CONSTANT_STEP_OPTIONS.items()}
        cls = self.option_class(sam)
        return {} if cls is None else typing.get_type_hints(cls.__init__)

    def option_defaults(self, sam: str | None = None) -> dict[str, object]:
        """Default values of the options this attention takes (those that have one)."""
        if self.scope == "constant":
            return {name: default for name, (_, default) in CONSTANT_STEP_OPTIONS.items()}
        cls = self.option_class(sam)
        parameters = {} if cls is None else inspect.signature(cls.__init__).parameters
        return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}

    def check(self, options: dict) -> None:
        """Raise ValueError naming an option this attention does not take."""
        if "sam" in options and self.scope not in ("shared", "recurrent"):
            raise ValueError(f"option 'sam' applies to shared and dia attention, not '{self.name}'")
        sam = options.get("sam")
        if sam is not None and sam not in (DIA_SAMS if self.scope == "recurrent" else SAMS):
            raise ValueError(f"{unknown_name('sam', sam, SAMS)} (for attention '{self.name}')")
        accepted = self.options(sam)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"attention '{self.name}' takes no option {', '.join(map(repr, unknown))}"
                             f"{did_you_mean(unknown, accepted)}; valid: {', '.join(accepted) or 'none'}")

    def module(self, channels: int, **options) -> nn.Module:
        """The attention module of one block (per_block) or of a whole stage (shared, recurrent)."""
        self.check(options)
        if self.scope == "constant":
            raise ValueError(f"attention '{self.name}' has no module: its step is a constant")
        if self.scope == "recurrent":
            return DIAUnit(channels, **options)
        if self.scope == "shared":
            options = dict(options)
            return SAMS[options.pop("sam", None) or "se"](channels, **options)
        return SAMS[self.name](channels, **options)


ATTENTIONS: dict[str, AttentionSpec] = {spec.name: spec for spec in (
    AttentionSpec("none", "constant step h = 1 (plain network); option h: another constant, or 'learned' "
                          "(one learned scalar per block, from 0: SkipInit/ReZero)", "constant"),
    AttentionSpec("se", "one Squeeze-and-Excitation module per block", "per_block"),
    AttentionSpec("eca", "one ECA module per block", "per_block"),
    AttentionSpec("cbam", "one CBAM module per block", "per_block", continuous=False),
    AttentionSpec("shared", "one SAM (sam=se|eca|cbam) shared by all blocks of a stage, no memory", "shared",
                  continuous=False),
    AttentionSpec("dia", "one SAM squeeze + DIA-LSTM cell shared by all blocks of a stage (DIANet)", "recurrent"),
)}


def _init_options(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "channels")]


def get_attention(name: str) -> AttentionSpec:
    """The table row of an attention name; ValueError lists the valid names."""
    if name not in ATTENTIONS:
        raise ValueError(unknown_name("attention", name, ATTENTIONS))
    return ATTENTIONS[name]


def list_attention() -> list[str]:
    """Names accepted by create_model's attention part ("none" is the plain model)."""
    return list(ATTENTIONS)


def create_sam(name: str, channels: int, **options) -> nn.Module:
    """Build one self-attention module by name.

    Args:
        name: "se", "eca" or "cbam".
        channels: C of the feature map it gates.
        **options: the module's own options (e.g. reduction for se and cbam, kernel_size for eca).
    """
    if name not in SAMS:
        raise ValueError(unknown_name("attention module", name, SAMS))
    return ATTENTIONS[name].module(channels, **options)
