"""What every backbone exposes, as timm's models do: features, head and per-stage feature info.

A classifier is `forward_head(forward_features(x))`; a detector's neck reads `forward_stages(x)`,
one map per entry of `feature_info` (channels and stride relative to the input), so a neck can sit
on a ResNet, a WRN or a ViT alike without knowing which.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One multi-scale feature map of a backbone.

    Attributes:
        name: the module that produces it (e.g. "stages.2").
        channels: C of the map.
        stride: input size / map size (1, 2, 4, ... for the CIFAR stages).
    """

    name: str
    channels: int
    stride: int


class AbstractBackbone(nn.Module, abc.ABC):
    """A network with stages, a feature map and a head; never instantiated."""

    feature_info: list[FeatureInfo]
    # modules forward_stages never uses (the classifier's): a detector drops them, or DDP would wait
    # for their gradients forever
    classifier_only: tuple[str, ...] = ("head",)

    @abc.abstractmethod
    def forward_stages(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The output of every entry of feature_info, as (B, C, H / stride, W / stride) maps."""

    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The last feature map (after any final norm), before pooling and head."""

    @abc.abstractmethod
    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pool the features and apply the head: -> (B, num_classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class AbstractStagedCNN(AbstractBackbone):
    """stem -> stages (one ResidualStage per resolution) -> final_act -> GAP -> linear head: the CIFAR
    ResNet, WRN and ResNeXt share this plan and differ in their blocks and initialisation; never
    instantiated. Subclasses set `stem`, `stages` (nn.Sequential), `final_act` (nn.Identity when the
    blocks end activated), `head`, `feature_info`, and initialise their weights in `_init_weights`."""

    stem: nn.Module
    stages: nn.Sequential
    final_act: nn.Module
    head: nn.Linear

    @abc.abstractmethod
    def _init_weights(self) -> None:
        """The initialisation of the code the family follows."""

    def forward_stages(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> list[torch.Tensor]:
        maps, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)  # (B, C_i, H / 2^i, W / 2^i)
        return maps

    def forward_features(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.final_act(self.stages(self.stem(x)))  # (B, C_last, H / 4, W / 4)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))  # (B, num_classes)
