"""Residual blocks of the CIFAR ResNet family, each split into branch f_k and shortcut.

Post-activation blocks follow "Deep Residual Learning for Image Recognition" (He et al., arXiv
1512.03385); pre-activation blocks follow "Identity Mappings in Deep Residual Networks" (He et al.,
arXiv 1603.05027); the wide block follows "Wide Residual Networks" (Zagoruyko and Komodakis, arXiv
1605.07146) and the grouped bottleneck "Aggregated Residual Transformations for Deep Neural
Networks" (ResNeXt, Xie et al., arXiv 1611.05431). Layouts match the CIFAR code that DIANet builds
on: projection shortcuts are a 1x1 convolution (+ BN for post-activation) whenever a block changes
shape.

The CIFAR ResNet blocks also build the ablations of DIANet's stabilisation experiments (arXiv
1905.10671): `skip=False` removes the shortcut, `batch_norm=False` every BatchNorm (the
convolutions then carry biases, which BatchNorm's shift made redundant before).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dia_ode.solvers.stage import AbstractBlock


def he_init(model: nn.Module, zero_linear_bias: bool = False) -> None:
    """He-normal convolutions (fan-out, as in the CIFAR ResNet code DIANet builds on) and BatchNorm at
    the identity; zero_linear_bias also zeroes every Linear bias, the attention MLPs' and the DIA
    cell's included (the official WRN and ResNeXt code)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:  # only a network built without BatchNorm has conv biases
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif zero_linear_bias and isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def conv3x3(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(c_in: int, c_out: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=bias)


def norm2d(channels: int, batch_norm: bool = True) -> nn.Module:
    """BatchNorm2d(channels), or the identity in a network built without BatchNorm."""
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class AbstractSequentialBlock(AbstractBlock):
    """Base of the blocks below: branch is the layer sequence `f`, shortcut is x or `projection(x)`;
    never instantiated itself.

    Without skip (`skip=False`, DIANet's "removal of skip connections" ablation) the shortcut is 0,
    so the stage computes x_{k+1} = post(h_k * f_k(x_k)): a plain feed-forward layer whose output is
    scaled by the step, no longer an Euler step x_k + h_k f_k of any ODE (the state is replaced,
    not updated). The stage loop stays as it is; the trace then records states with
    x_{k+1} = post(h_k f_k) and the Euler identity x_{k+1} = post(x_k + h_k f_k) fails, as it should.
    """

    def __init__(self, f: nn.Sequential, projection: nn.Module | None, skip: bool = True) -> None:
        super().__init__()
        self.f = f
        self.projection = projection
        self.skip = skip

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.f(x)  # unconditioned: a CIFAR block ignores cond

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.skip:
            return x.new_zeros(())  # 0-d: broadcasts to f_k's shape, whatever the block's stride
        return x if self.projection is None else self.projection(x)


def _projection(c_in: int, c_out: int, stride: int, with_bn: bool, skip: bool = True,
                batch_norm: bool = True) -> nn.Module | None:
    """The 1x1 shortcut of a block that changes shape (+ BN with_bn); None when the shapes match or the
    block has no skip path (a projection nothing reads would be parameters without gradient)."""
    if not skip or (stride == 1 and c_in == c_out):
        return None
    conv = conv1x1(c_in, c_out, stride, bias=not batch_norm)
    return nn.Sequential(conv, norm2d(c_out, batch_norm)) if with_bn else conv


class BasicBlock(AbstractSequentialBlock):
    """f(x) = BN(conv3x3(relu(BN(conv3x3(x))))), post-activation.

    skip=False drops the shortcut (see AbstractSequentialBlock); batch_norm=False makes every BN the
    identity and gives the convolutions biases (the same for all blocks below)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, skip: bool = True, batch_norm: bool = True) -> None:
        bias = not batch_norm
        super().__init__(nn.Sequential(
            conv3x3(c_in, planes, stride, bias), norm2d(planes, batch_norm), nn.ReLU(inplace=True),
            conv3x3(planes, planes, bias=bias), norm2d(planes, batch_norm),
        ), _projection(c_in, planes, stride, True, skip, batch_norm), skip)


class Bottleneck(AbstractSequentialBlock):
    """f(x) = 1x1 -> 3x3 (stride) -> 1x1 (4 x planes), BN after each, ReLU between, post-activation."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, skip: bool = True, batch_norm: bool = True) -> None:
        c_out, bias = planes * self.expansion, not batch_norm
        super().__init__(nn.Sequential(
            conv1x1(c_in, planes, bias=bias), norm2d(planes, batch_norm), nn.ReLU(inplace=True),
            conv3x3(planes, planes, stride, bias), norm2d(planes, batch_norm), nn.ReLU(inplace=True),
            conv1x1(planes, c_out, bias=bias), norm2d(c_out, batch_norm),
        ), _projection(c_in, c_out, stride, True, skip, batch_norm), skip)


class PreActBasicBlock(AbstractSequentialBlock):
    """f(x) = conv3x3(relu(BN(conv3x3(relu(BN(x)))))) [-> BN if branch_bn], pre-activation.

    branch_bn ends the branch with a BatchNorm, as the official DIA-PreResNet does (theory/dia.md)."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, branch_bn: bool = False, skip: bool = True,
                 batch_norm: bool = True) -> None:
        bias = not batch_norm
        super().__init__(nn.Sequential(
            norm2d(c_in, batch_norm), nn.ReLU(), conv3x3(c_in, planes, stride, bias),
            norm2d(planes, batch_norm), nn.ReLU(inplace=True), conv3x3(planes, planes, bias=bias),
            *([norm2d(planes, batch_norm)] if branch_bn else []),
        ), _projection(c_in, planes, stride, False, skip, batch_norm), skip)


class PreActBottleneck(AbstractSequentialBlock):
    """f(x) = BN-ReLU-1x1 -> BN-ReLU-3x3 (stride) -> BN-ReLU-1x1 (4 x planes) [-> BN if branch_bn],
    pre-activation."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, branch_bn: bool = False, skip: bool = True,
                 batch_norm: bool = True) -> None:
        c_out, bias = planes * self.expansion, not batch_norm
        super().__init__(nn.Sequential(
            norm2d(c_in, batch_norm), nn.ReLU(), conv1x1(c_in, planes, bias=bias),
            norm2d(planes, batch_norm), nn.ReLU(inplace=True), conv3x3(planes, planes, stride, bias),
            norm2d(planes, batch_norm), nn.ReLU(inplace=True), conv1x1(planes, c_out, bias=bias),
            *([norm2d(c_out, batch_norm)] if branch_bn else []),
        ), _projection(c_in, c_out, stride, False, skip, batch_norm), skip)


class WideBasicBlock(AbstractBlock):
    """The pre-activation block of a wide ResNet, as in the official WRN and DIANet CIFAR code.

    f(x) = conv3x3(dropout(relu(BN(conv3x3_s(relu(BN_1(x))))))) [-> BN if branch_bn]

    When the block changes shape, the shortcut is a strided 1x1 convolution of the *pre-activated*
    input relu(BN_1(x)) (BN_1 shared with the branch), not of x: that is what the official WRN code
    does, and it keeps the parameter count of the paper. Otherwise the shortcut is x itself.

    Args:
        c_in: input channels.
        c_out: output channels (16k, 32k or 64k in a WRN-d-k).
        stride: stride of the first convolution and of the projection.
        dropout: dropout probability between the two convolutions (WRN paper: 0.3).
        branch_bn: end the branch with a BatchNorm, as the official DIA-WRN does (bn_additional).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dropout: float = 0.0,
                 branch_bn: bool = False) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.f = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), conv3x3(c_in, c_out, stride),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            *([nn.Dropout(dropout)] if dropout > 0 else []),
            conv3x3(c_out, c_out),
            *([nn.BatchNorm2d(c_out)] if branch_bn else []),
        )
        self.projection = None if stride == 1 and c_in == c_out else conv1x1(c_in, c_out, stride)

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.f(x)  # (B, c_out, H / stride, W / stride)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            return x
        return self.projection(F.relu(_batch_norm_without_update(self.f[0], x)))  # (B, c_out, H/s, W/s)


def _batch_norm_without_update(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """bn(x) with the same statistics and affine parameters as the module, but without touching its
    running statistics.

    Why: the branch already ran bn(x) on this batch; a second module call would advance the running
    mean and variance twice per step, which the official code (one call, output reused) does not.
    Values and gradients equal those of reusing the branch's output.
    """
    batch_stats = bn.training or not bn.track_running_stats
    return F.batch_norm(x, None if batch_stats else bn.running_mean, None if batch_stats else bn.running_var,
                        bn.weight, bn.bias, batch_stats, 0.0, bn.eps)


class ResNeXtBottleneck(AbstractSequentialBlock):
    """ResNeXt's bottleneck (type C), post-activation:

    f(x) = BN(conv1x1(relu(BN(gconv3x3_s(relu(BN(conv1x1(x)))))))), c_in -> D -> D -> c_out

    The 3x3 convolution has `cardinality` groups of D / cardinality channels each. The shortcut is a
    strided 1x1 convolution + BN when the block changes shape.

    Args:
        c_in: input channels.
        c_out: output channels.
        width: D, the channels of the grouped convolution (cardinality x group width).
        cardinality: number of groups.
        stride: stride of the grouped convolution and of the projection.
    """

    def __init__(self, c_in: int, c_out: int, width: int, cardinality: int, stride: int = 1) -> None:
        if width % cardinality:
            raise ValueError(f"width {width} is not a multiple of cardinality {cardinality}")
        super().__init__(nn.Sequential(
            conv1x1(c_in, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            conv1x1(width, c_out), nn.BatchNorm2d(c_out),
        ), _projection(c_in, c_out, stride, with_bn=True))
