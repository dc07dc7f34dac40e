"""Backbones assembled from residual stages, and the name -> model registry."""

from dia_ode.models.registry import create_model, list_models, register_model
from dia_ode.models.resnet import CifarResNet

__all__ = ["CifarResNet", "create_model", "list_models", "register_model"]
