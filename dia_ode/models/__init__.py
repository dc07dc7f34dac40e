"""Backbones assembled from residual stages, and the name -> model registry."""

from dia_ode.models.registry import create_model, list_models, register_model
from dia_ode.models.resnet import CifarResNet
from dia_ode.models.odenet import ODENet  # importing odenet registers the ODE-Net family

__all__ = ["CifarResNet", "ODENet", "create_model", "list_models", "register_model"]
