"""Backbones assembled from residual stages, and the name -> model registry."""

from dia_ode.models.registry import create_model, list_models, register_model
from dia_ode.models.resnet import CifarResNet
from dia_ode.models import odenet as _odenet  # noqa: F401  (registers the ODE-Net family)

__all__ = ["CifarResNet", "create_model", "list_models", "register_model"]
