"""CIFAR ResNeXt, assembled from residual stages (ODE solvers over depth).

"Aggregated Residual Transformations for Deep Neural Networks" (Xie et al., arXiv 1611.05431), the
CIFAR layout of its section 5.3: a 3x3 stem, three stages of n = (depth - 2) / 9 post-activation
grouped bottlenecks (strides 1, 2, 2), global average pooling and a linear head. DIANet (arXiv
1905.10671) puts one DIA-LSTM cell on each stage of its "ResNeXt-101, 8x32" (`dia_resnext101_8x32d`).
Pooling is adaptive, so any input size and channel count works.
"""

from __future__ import annotations

from torch import nn

from dia_ode.models.backbone import AbstractStagedCNN, FeatureInfo
from dia_ode.models.blocks import he_init, ResNeXtBottleneck, conv3x3
from dia_ode.models.registry import DETECTION_READY, register_model
from dia_ode.solvers.controllers import create_stage_controller
from dia_ode.solvers.stage import ResidualStage

# name -> (depth, cardinality, base width d). 29-8x64d and 29-16x64d are the ResNeXt paper's CIFAR
# models; 101-8x32d is DIANet's (its dia_resnext.py run with depth 101, cardinality 8, widen 4,
# which halves every width of 29-8x64d: stem 32, outputs 128 / 256 / 512, 11 blocks per stage).
CONFIGS = {"resnext29_8x64d": (29, 8, 64), "resnext29_16x64d": (29, 16, 64), "resnext101_8x32d": (101, 8, 32)}


class CifarResNeXt(AbstractStagedCNN):
    """Stem (conv-BN-ReLU) -> three stages of grouped bottlenecks -> GAP -> linear.

    One base width d sets every width, as in the official CIFAR code (prlz77's ResNeXt.pytorch,
    bearpaw's pytorch-classification, DIANet's dia_resnext.py): the stem has d channels, stage i
    has output channels widen_factor * d * 2^i and grouped-conv width D = cardinality * d * 2^i.
    ResNeXt-29 8x64d: outputs 256 / 512 / 1024, D = 512 / 1024 / 2048.

    The step h_k of a stage multiplies the bottleneck's output (after its last BN, on the stage's
    output channels), before the skip-add and the ReLU that follows it.

    Args:
        depth: 9n + 2 (n bottlenecks per stage).
        cardinality: groups of the 3x3 convolution.
        base_width: d, the group width of the first stage (64 in ResNeXt-29 8x64d).
        attention: controller name per stage ("none", "se", "eca", "cbam", "shared", "dia").
        widen_factor: stage output channels over d (4 in every official model).
        num_classes: size of the head.
        in_channels: input channels (1 for grey images, 3 for RGB).
        **attention_options: passed to solvers.create_stage_controller (e.g. reduction, sam). DIA's
            reduction defaults to the official r = 4 (attention.DIALSTMCell).
    """

    def __init__(self, depth: int, cardinality: int, base_width: int, attention: str = "none",
                 widen_factor: int = 4, num_classes: int = 10, in_channels: int = 3, **attention_options) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"ResNeXt depth must be 9n + 2 with n >= 1, got {depth}")
        if min(cardinality, base_width, widen_factor) < 1:
            raise ValueError("cardinality, base_width and widen_factor must be >= 1")
        n = (depth - 2) // 9
        self.stem = nn.Sequential(conv3x3(in_channels, base_width), nn.BatchNorm2d(base_width), nn.ReLU(inplace=True))
        stages, c_in, self.feature_info = [], base_width, []
        for i, stride in enumerate((1, 2, 2)):
            c_out = widen_factor * base_width * 2 ** i
            width = cardinality * base_width * 2 ** i  # D
            blocks = [ResNeXtBottleneck(c_in if k == 0 else c_out, c_out, width, cardinality, stride if k == 0 else 1)
                      for k in range(n)]
            stages.append(ResidualStage(blocks, create_stage_controller(attention, c_out, n, **attention_options),
                                        post=nn.ReLU(inplace=True)))
            self.feature_info.append(FeatureInfo(f"stages.{i}", c_out, 2 ** i))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.final_act = nn.Identity()  # post-activation blocks end with their ReLU
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The official CIFAR ResNeXt initialisation (the one DIANet's copy keeps): He-normal convs,
        # BN at identity, every Linear bias at zero, He-normal (fan-in) for the head's weight.
        he_init(self, zero_linear_bias=True)
        nn.init.kaiming_normal_(self.head.weight)


def _register(name: str, depth: int, cardinality: int, base_width: int) -> None:
    # base_width is an option so tests and quick runs can shrink a model; the name keeps its default.
    def build(attention: str = "none", num_classes: int = 10, in_channels: int = 3, base_width: int = base_width,
              **attention_options) -> CifarResNeXt:
        return CifarResNeXt(depth, cardinality, base_width, attention, num_classes=num_classes,
                            in_channels=in_channels, **attention_options)

    register_model(name, family="resnext", kind="discrete", tasks=DETECTION_READY)(build)


for _name, (_depth, _cardinality, _base_width) in CONFIGS.items():
    _register(_name, _depth, _cardinality, _base_width)
