"""Residual blocks of the CIFAR ResNet family, each split into branch f_k and shortcut.

Post-activation blocks follow "Deep Residual Learning for Image Recognition" (He et al., arXiv
1512.03385); pre-activation blocks follow "Identity Mappings in Deep Residual Networks" (He et al.,
arXiv 1603.05027). Layouts match the CIFAR code that DIANet builds on: projection shortcuts are a
1x1 convolution (+ BN for post-activation) whenever a block changes shape.
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.solvers.stage import AbstractBlock


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False)


class AbstractSequentialBlock(AbstractBlock):
    """Base of the blocks below: branch is the layer sequence `f`, shortcut is x or `projection(x)`;
    never instantiated itself."""

    def __init__(self, f: nn.Sequential, projection: nn.Module | None) -> None:
        super().__init__()
        self.f = f
        self.projection = projection

    def branch(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.f(x)  # unconditioned: a CIFAR block ignores cond

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.projection is None else self.projection(x)


def _projection(c_in: int, c_out: int, stride: int, with_bn: bool) -> nn.Module | None:
    if stride == 1 and c_in == c_out:
        return None
    if with_bn:
        return nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))
    return conv1x1(c_in, c_out, stride)


class BasicBlock(AbstractSequentialBlock):
    """f(x) = BN(conv3x3(relu(BN(conv3x3(x))))), post-activation."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__(nn.Sequential(
            conv3x3(c_in, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv3x3(planes, planes), nn.BatchNorm2d(planes),
        ), _projection(c_in, planes, stride, with_bn=True))


class Bottleneck(AbstractSequentialBlock):
    """f(x) = 1x1 -> 3x3 (stride) -> 1x1 (4 x planes), BN after each, ReLU between, post-activation."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        c_out = planes * self.expansion
        super().__init__(nn.Sequential(
            conv1x1(c_in, planes), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv3x3(planes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            conv1x1(planes, c_out), nn.BatchNorm2d(c_out),
        ), _projection(c_in, c_out, stride, with_bn=True))


class PreActBasicBlock(AbstractSequentialBlock):
    """f(x) = conv3x3(relu(BN(conv3x3(relu(BN(x)))))), pre-activation."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__(nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), conv3x3(c_in, planes, stride),
            nn.BatchNorm2d(planes), nn.ReLU(inplace=True), conv3x3(planes, planes),
        ), _projection(c_in, planes, stride, with_bn=False))


class PreActBottleneck(AbstractSequentialBlock):
    """f(x) = BN-ReLU-1x1 -> BN-ReLU-3x3 (stride) -> BN-ReLU-1x1 (4 x planes), pre-activation."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        c_out = planes * self.expansion
        super().__init__(nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), conv1x1(c_in, planes),
            nn.BatchNorm2d(planes), nn.ReLU(inplace=True), conv3x3(planes, planes, stride),
            nn.BatchNorm2d(planes), nn.ReLU(inplace=True), conv1x1(planes, c_out),
        ), _projection(c_in, c_out, stride, with_bn=False))
