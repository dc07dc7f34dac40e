"""The UNet of a diffusion model, built from residual stages: each resolution's blocks are an Euler solver
over depth conditioned on the diffusion time, and an attention controller chooses their steps.

    x_{k+1} = x_k + h_k * f_k(x_k, emb(t))

A sinusoidal embedding of the timestep t (Vaswani et al.; Ho et al. 2020) goes through a two-layer MLP and
reaches every block's branch as `cond` (added per channel after the first convolution). Blocks use
GroupNorm and SiLU (Ho et al.'s UNet). On the way down each resolution is one ResidualStage followed by a
stride-2 convolution; the lowest resolution has a middle stage (block, optional self-attention over the
pixels, block); on the way up each resolution concatenates the skip of its twin and runs one stage, then
upsamples (nearest, then a 3x3 convolution). Attention none / se / shared / dia / ... has the meaning
it has for the ResNets: one controller per stage (dia: one cell shared by the stage's blocks). The
network predicts the noise eps of x_t, so its output has the input's shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dia_ode.models.registry import register_model
from dia_ode.solvers import ResidualStage, create_stage_controller
from dia_ode.solvers import AbstractBlock


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B, dim) sinusoidal embedding of timesteps t (B,): cos and sin of t at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 where they divide the channels (tiny test widths included), else 1."""
    return 8 if channels % 8 == 0 else 1


class TimeResBlock(AbstractBlock):
    """f(x, emb) = conv(dropout(silu(GN(conv(silu(GN(x))) + W emb)))); shortcut x or a 1x1 projection."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(_groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(_groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if cond is not None:
            h = h + self.emb(F.silu(cond))[:, :, None, None]
        return self.conv2(self.dropout(F.silu(self.norm2(h))))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.projection is None else self.projection(x)


class SelfAttentionBlock(AbstractBlock):
    """f(x) = multi-head self-attention over the H x W pixels of GN(x), projected back; shortcut x."""

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        out, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x


class UNet(nn.Module):
    """The noise-prediction UNet (module docstring).

    Args:
        attention: the stages' step-size controller ("none", "se", "dia", ...).
        in_channels: image channels (the output has as many).
        base_width: channels at the highest resolution; level i has base_width * channel_mult[i].
        channel_mult: one entry per resolution (each after the first halves H and W).
        blocks: residual blocks per stage.
        self_attention: a self-attention block in the middle stage (lowest resolution).
        dropout: inside each block's branch.
        **attention_options: the attention's own options (reduction, ...).

    forward(x (B, C, H, W), t (B,) timesteps) -> eps prediction (B, C, H, W); H and W divisible by
    2^(len(channel_mult) - 1).
    """

    def __init__(self, attention: str = "none", in_channels: int = 1, base_width: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), blocks: int = 2, self_attention: bool = True,
                 dropout: float = 0.0, **attention_options) -> None:
        super().__init__()
        if blocks < 1 or not channel_mult:
            raise ValueError(f"a UNet needs blocks >= 1 and at least one level, got {blocks}, {channel_mult}")
        emb_dim = 4 * base_width
        self.base_width, self.levels = base_width, len(channel_mult)
        self.time_mlp = nn.Sequential(nn.Linear(base_width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(in_channels, base_width, 3, padding=1)

        def stage(block_list: list[AbstractBlock], channels: int) -> ResidualStage:
            controller = create_stage_controller(attention, channels, len(block_list), **attention_options)
            return ResidualStage(block_list, controller)

        self.down, self.downsample, skips, c = nn.ModuleList(), nn.ModuleList(), [], base_width
        for i, mult in enumerate(channel_mult):
            c_out = base_width * mult
            self.down.append(stage([TimeResBlock(c if k == 0 else c_out, c_out, emb_dim, dropout)
                                    for k in range(blocks)], c_out))
            c = c_out
            skips.append(c)
            last = i == len(channel_mult) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
        middle = [TimeResBlock(c, c, emb_dim, dropout), *([SelfAttentionBlock(c)] if self_attention else []),
                  TimeResBlock(c, c, emb_dim, dropout)]
        self.middle = stage(middle, c)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mult))):
            c_out = base_width * mult
            self.up.append(stage([TimeResBlock(c + skips[i] if k == 0 else c_out, c_out, emb_dim, dropout)
                                  for k in range(blocks)], c_out))
            c = c_out
            self.upsample.append(nn.Identity() if i == 0 else nn.Conv2d(c, base_width * channel_mult[i - 1], 3,
                                                                         padding=1))
            c = c if i == 0 else base_width * channel_mult[i - 1]
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # starts by predicting eps = 0: a calm first step (Ho et al.)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"a UNet of {self.levels} levels needs H and W divisible by {factor}, "
                             f"got {tuple(x.shape[-2:])}")
        t = cond if cond is not None else torch.zeros(x.shape[0], device=x.device)
        emb = self.time_mlp(timestep_embedding(t, self.base_width))
        h, skips = self.stem(x), []
        for stage, down in zip(self.down, self.downsample):
            h = stage(h, emb)
            skips.append(h)
            h = down(h)
        h = self.middle(h, emb)
        for stage, up, skip in zip(self.up, self.upsample, reversed(skips)):
            h = stage(torch.cat([h, skip], dim=1), emb)
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(h)


UNET_SIZES = {"unet_s": (32, (1, 2)), "unet_m": (64, (1, 2, 2))}  # 8x8 digits; 28x28 / 32x32 images


def _register(name: str, base_width: int, channel_mult: tuple[int, ...]) -> None:
    def build(attention: str = "none", in_channels: int = 1, base_width: int = base_width, blocks: int = 2,
              self_attention: bool = True, dropout: float = 0.0, **attention_options) -> UNet:
        return UNet(attention, in_channels, base_width, channel_mult, blocks, self_attention, dropout,
                    **attention_options)

    register_model(name, family="unet", kind="discrete", tasks=("diffusion",))(build)


for _name, (_width, _mult) in UNET_SIZES.items():
    _register(_name, _width, _mult)
