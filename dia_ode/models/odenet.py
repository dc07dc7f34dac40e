"""ODE-Net and its discrete twins: one vector field, solved continuously, tied over L steps, or untied.

Follows the ODE-Net of "Neural Ordinary Differential Equations" (Chen et al., arXiv 1806.07366) and
torchdiffeq's odenet_mnist layout: a downsampling stem, one block over depth t in [0, T], then
GN-ReLU-GAP-linear. The vector field is f(t, x) = GN(conv_t(ReLU(GN(conv_t(ReLU(GN(x))))))) where
conv_t is a 3x3 convolution that sees t as one extra input channel; no BatchNorm inside f, since
adaptive solvers evaluate it at many points. Three readings of the block, each with attention
"none", "se" or "dia" (theory/continuous_dia.md):

    odenet      the continuous block (torchdiffeq: dopri5 by default, any method, adjoint optional)
    rknet       its weight-tied discrete twin: L explicit Euler steps h = T / L of the same dynamics
    untiednet   the ResNet-style counterpart: L blocks with their own f_k, h = 1 (or per-block SE,
                or the DIA controller of solvers.controllers), at a width whose parameter count
                matches the tied model's

Parameter counts at the defaults (width 32, L = 6, SE reduction 16, DIA reduction 4; 10 classes),
printed by `python -c "import dia_ode; from dia_ode.models.odenet import num_params;
print([(n, num_params(dia_ode.create_model(n, in_channels=1))) for n in dia_ode.list_models('*net')])"`
(tests/test_continuous.py checks that odenet == rknet and that the untied width is the best match):

    model                  in_channels 1 (digits)   in_channels 3 (CIFAR)
    odenet, rknet          52,938                   53,514
    untiednet (width 19)   54,046                   54,388
    se_odenet, se_rknet    53,100                   53,676
    se_untiednet (19)      54,394                   54,736
    dia_odenet, dia_rknet  55,770                   56,346
    dia_untiednet (19)     54,966                   55,308

Integer widths leave the untied models within 2.5% of the tied budget (widths 18 and 20 are further off).
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.models.backbone import AbstractBackbone, FeatureInfo
from dia_ode.models.registry import register_model
from dia_ode.solvers.backends import DEFAULT_BACKEND, DEFAULT_CONTROLLER
from dia_ode.solvers.continuous import ContinuousBlock
from dia_ode.solvers.continuous_attention import make_dynamics
from dia_ode.solvers.controllers import create_stage_controller
from dia_ode.solvers.stage import ResidualStage
from dia_ode.solvers.tied import FieldBlock, euler_stage


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with one group over (C, H, W), the same at every width.

    odenet_mnist's min(32, C) groups normalise each channel on its own; on the 2x2 maps that 8x8
    digits leave that erases most of the signal (stem and head alone, 5 epochs of digits: val acc
    0.25 with per-channel groups, 0.73 with one group).
    """
    return nn.GroupNorm(1, channels)


class TimeConv2d(nn.Module):
    """3x3 convolution of [t, x]: the time enters as one constant extra input channel.

    t is one time for the batch (a float or a 0-d tensor, as torchdiffeq gives it) or one per sample
    (B,) (dia_ode's per-sample steps)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in + 1, c_out, kernel_size=3, padding=1)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)  # (1 or B, 1, 1, 1)
        tt = t.expand(x.shape[0], 1, *x.shape[2:])  # (B, 1, H, W), in x's dtype
        return self.conv(torch.cat([tt, x], dim=1))


class ConvField(nn.Module):
    """The vector field f(t, x): GN -> ReLU -> conv_t -> GN -> ReLU -> conv_t -> GN, C -> C channels.

    Args:
        channels: C.
        zero_init: start the last GN's scale at 0, so f = 0 and every block starts as the identity
            (the zero-gamma rule of arXiv 1706.02677). Without it the unit-variance update of a random
            f swamps x: 5 epochs of digits at lr 0.1 reach val acc 0.29 (rknet) instead of 0.85.
    """

    def __init__(self, channels: int, zero_init: bool = True) -> None:
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = TimeConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = TimeConv2d(channels, channels)
        self.norm3 = group_norm(channels)
        if zero_init:
            nn.init.zeros_(self.norm3.weight)

    def forward(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)  # (B, C, H, W)


class ODENet(AbstractBackbone):
    """Stem (conv3x3, then `downsample` x [GN-ReLU-conv4x4 stride 2]) -> block -> GN-ReLU-GAP-linear.

    Args:
        block: the depth part: a ContinuousBlock or a ResidualStage on `width` channels.
        num_classes: size of the head.
        in_channels: input channels.
        width: channels of the stem and the block.
        downsample: number of stride-2 convolutions (2: 8x8 digits -> 2x2, 28x28 -> 7x7, 32x32 -> 8x8).
    """

    def __init__(self, block: nn.Module, num_classes: int, in_channels: int, width: int, downsample: int) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, kernel_size=3, padding=1)]
        for _ in range(downsample):
            layers += [group_norm(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, kernel_size=4, stride=2, padding=1)]
        self.stem = nn.Sequential(*layers)
        self.block = block
        self.final_act = nn.Sequential(group_norm(width), nn.ReLU(inplace=True))
        self.head = nn.Linear(width, num_classes)
        self.feature_info = [FeatureInfo("block", width, 2 ** downsample)]

    def forward_stages(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        return [self.block(self.stem(x))]  # (B, width, H / 2^downsample, W / 2^downsample)

    def forward_features(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.final_act(self.block(self.stem(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))  # (B, num_classes)


def odenet(attention: str = "none", num_classes: int = 10, in_channels: int = 3, width: int = 32,
           T: float = 1.0, method: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
           step_size: float | None = None, adjoint: bool = False, max_num_steps: int | None = 1000,
           downsample: int = 2, adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
           adjoint_seminorm: bool = False, kinetic_energy: float = 0.0, jacobian_norm: float = 0.0,
           steer: float = 0.0, hutchinson_noise: str = "gaussian", backend: str = DEFAULT_BACKEND,
           controller: str = DEFAULT_CONTROLLER, per_sample: bool = False, **attention_options) -> ODENet:
    """The continuous ODE-Net: dynamics (attention "none", "se" or "dia") integrated over [0, T].

    Solver arguments are those of solvers.ContinuousBlock, the adjoint's (adjoint_rtol, adjoint_atol,
    adjoint_seminorm), the training-time regularisers (kinetic_energy, jacobian_norm: RNODE's λ_K
    and λ_J; hutchinson_noise: λ_J's probe, "gaussian" or "rademacher"; steer: STEER's b) and the
    engine's (backend "torchdiffeq" or "dia_ode"; on dia_ode the error controller "i", "pi",
    "pid[:PRESET]" or "dia:RUN", and per_sample steps; solvers/backends.py) included; attention_options
    go to make_dynamics.
    """
    dynamics = make_dynamics(attention, ConvField(width), width, **attention_options)
    block = ContinuousBlock(dynamics, T=T, method=method, rtol=rtol, atol=atol, step_size=step_size,
                            adjoint=adjoint, max_num_steps=max_num_steps, adjoint_rtol=adjoint_rtol,
                            adjoint_atol=adjoint_atol, adjoint_seminorm=adjoint_seminorm,
                            kinetic_energy=kinetic_energy, jacobian_norm=jacobian_norm, steer=steer,
                            hutchinson_noise=hutchinson_noise, backend=backend, controller=controller,
                            per_sample=per_sample)
    return ODENet(block, num_classes, in_channels, width, downsample)


def rknet(attention: str = "none", num_classes: int = 10, in_channels: int = 3, width: int = 32,
          T: float = 1.0, num_steps: int = 6, downsample: int = 2, **attention_options) -> ODENet:
    """The weight-tied discrete twin: num_steps Euler steps of size T / num_steps of the same dynamics.

    With T = num_steps (step 1) dia_rknet is exactly the tied discrete DIA stage.
    """
    dynamics = make_dynamics(attention, ConvField(width), width, **attention_options)
    return ODENet(euler_stage(dynamics, T, num_steps), num_classes, in_channels, width, downsample)


def untiednet(attention: str = "none", num_classes: int = 10, in_channels: int = 3, width: int | None = None,
              num_steps: int = 6, match_width: int = 32, downsample: int = 2, **attention_options) -> ODENet:
    """The untied ResNet-style counterpart: num_steps blocks with their own f_k (t_k = k) and step 1.

    Args:
        attention: "none" (h = 1), "se" (one SE per block) or "dia" (the shared DIA controller).
        width: channels; None picks the width whose parameter count is closest to the tied model
            (rknet with the same attention and options at width `match_width`).
        num_steps: L, the number of blocks.
        match_width: width of the tied model whose budget is matched when width is None.
        (others as in odenet)
    """
    if width is None:
        width = matched_width(attention, num_classes, in_channels, num_steps, match_width, downsample,
                              **attention_options)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    blocks = [FieldBlock(ConvField(width), float(k)) for k in range(num_steps)]
    controller = create_stage_controller(attention, width, num_steps, **attention_options)
    return ODENet(ResidualStage(blocks, controller), num_classes, in_channels, width,
                  downsample)


def num_params(model: nn.Module) -> int:
    """Number of distinct parameters (a tied f counts once)."""
    return sum(p.numel() for p in model.parameters())


def matched_width(attention: str, num_classes: int, in_channels: int, num_steps: int, match_width: int,
                  downsample: int, **attention_options) -> int:
    """The untiednet width whose parameter count is closest to rknet's at width match_width."""
    target = num_params(rknet(attention, num_classes, in_channels, match_width, num_steps=num_steps,
                              downsample=downsample, **attention_options))

    def count(w: int) -> int:
        return num_params(untiednet(attention, num_classes, in_channels, w, num_steps, downsample=downsample,
                                    **attention_options))

    lo, hi = 1, match_width  # L >= 1 untied fields at the same width hold at least the tied budget
    while hi - lo > 1:  # the count grows with the width: bisect for count(lo) <= target < count(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target else (lo, mid)
    return min((lo, hi), key=lambda w: abs(count(w) - target))


_ODE_ATTENTIONS = ("none", "se", "dia")
register_model(family="odenet", kind="continuous", attentions=_ODE_ATTENTIONS)(odenet)
register_model(family="odenet", kind="discrete", attentions=_ODE_ATTENTIONS)(rknet)
register_model(family="odenet", kind="discrete", attentions=_ODE_ATTENTIONS)(untiednet)
