"""Backbones assembled from residual stages, and the name -> model registry with metadata."""

from dia_ode.models.backbone import AbstractBackbone, AbstractStagedCNN, FeatureInfo
from dia_ode.models.registry import ModelEntry, create_model, list_models, model_entry, register_model, stage_blocks
# Importing a backbone module registers its names.
from dia_ode.models.resnet import CifarResNet
from dia_ode.models.odenet import ODENet
from dia_ode.models.resnext import CifarResNeXt
from dia_ode.models.wrn import WideResNet
from dia_ode.models.vit import VisionTransformer
from dia_ode.models.unet import UNet

__all__ = ["AbstractBackbone", "AbstractStagedCNN", "CifarResNeXt", "CifarResNet", "FeatureInfo", "ModelEntry", "ODENet",
           "UNet", "VisionTransformer", "WideResNet", "create_model", "list_models", "model_entry", "register_model",
           "stage_blocks"]
