"""Model registry: names `{attention}_{backbone}{depth}` -> constructors.

The plain model has no prefix (`resnet20`); attention prefixes are the names of
dia_ode.attention.ATTENTIONS except "none" (`se_resnet20`, `dia_preresnet164`, ...).
"""

from __future__ import annotations

import fnmatch
from functools import partial
from typing import Callable

from torch import nn

from dia_ode.attention.registry import ATTENTIONS
from dia_ode.models.resnet import BASIC_DEPTHS, BOTTLENECK_DEPTHS, CifarResNet

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Add a constructor under `name` (used by backbone modules; names must be unique)."""
    if name in _MODELS:
        raise ValueError(f"model '{name}' is already registered")
    _MODELS[name] = constructor


def _register_cifar_resnets() -> None:
    for backbone, pre_activation in (("resnet", False), ("preresnet", True)):
        for depth in BASIC_DEPTHS + BOTTLENECK_DEPTHS:
            for attention in ATTENTIONS:
                prefix = "" if attention == "none" else f"{attention}_"
                register_model(f"{prefix}{backbone}{depth}", partial(
                    CifarResNet, depth, attention=attention, pre_activation=pre_activation))


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching an fnmatch pattern (e.g. "dia_*", "*resnet56")."""
    return sorted(fnmatch.filter(_MODELS, pattern))


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from list_models(), e.g. "dia_resnet20".
        **kwargs: num_classes, in_channels, base_width and attention options (reduction, sam, ...).

    Raises:
        ValueError: unknown name (the message lists close matches) or unknown option.
    """
    if name not in _MODELS:
        close = [m for m in _MODELS if name.split("_")[-1] in m][:8] or list_models("*resnet20")
        raise ValueError(f"unknown model '{name}'; e.g. {', '.join(close)} (see `dia-ode ls`)")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as err:  # an option the constructor does not take
        raise ValueError(f"model '{name}': {err}") from None


_register_cifar_resnets()
