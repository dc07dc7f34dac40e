"""CIFAR ResNet and PreResNet assembled from residual stages (ODE solvers over depth).

The family of "Deep Residual Learning" (arXiv 1512.03385) and "Identity Mappings in Deep Residual
Networks" (arXiv 1603.05027) for 32x32 inputs, as used by DIANet (arXiv 1905.10671): a 3x3 stem
with 16 channels, three stages of n blocks at widths 16, 32, 64 (x4 for bottlenecks, strides 1, 2,
2), global average pooling and a linear head. Depth 6n+2 uses basic blocks, 9n+2 bottlenecks.
Each stage gets one step-size controller by attention name; the pooling is adaptive so any input
size and channel count works (8x8 digits, 28x28 IDX, 32x32 CIFAR).

Two options build the ablations of DIANet's stabilisation experiments: `skip=False` removes every
block's shortcut (x_{k+1} = post(h_k f_k(x_k)): the stage is then a plain deep network, no longer an
Euler integrator), `batch_norm=False` removes every BatchNorm of the backbone (stem, blocks,
projections, final norm; the convolutions get zero-initialised biases instead). An attention's own
layers are the attention's: CBAM's spatial gate keeps its BatchNorm.
"""

from __future__ import annotations


from torch import nn

from dia_ode.models.backbone import AbstractStagedCNN, FeatureInfo
from dia_ode.models.blocks import he_init, norm2d, BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from dia_ode.models.registry import DETECTION_READY, register_model
from dia_ode.solvers.controllers import create_stage_controller
from dia_ode.solvers.stage import ResidualStage

BASIC_DEPTHS = (20, 32, 44, 56, 110)
BOTTLENECK_DEPTHS = (29, 164)  # 29: the bottleneck widths 64/128/256 at 3 blocks per stage, CPU-sized


def blocks_per_stage(depth: int) -> tuple[int, bool]:
    """(n, bottleneck) for a CIFAR depth: 6n+2 with basic blocks, 9n+2 with bottlenecks."""
    if depth in BOTTLENECK_DEPTHS:
        return (depth - 2) // 9, True
    if depth in BASIC_DEPTHS:
        return (depth - 2) // 6, False
    raise ValueError(f"unsupported depth {depth}; valid: {', '.join(map(str, BASIC_DEPTHS + BOTTLENECK_DEPTHS))}")


class CifarResNet(AbstractStagedCNN):
    """Stem -> three residual stages -> (pre-activation: BN-ReLU) -> GAP -> linear.

    Args:
        depth: 20, 32, 44, 56, 110 (basic blocks) or 29, 164 (bottlenecks).
        attention: controller name per stage ("none", "se", "eca", "cbam", "shared", "dia").
        pre_activation: PreResNet layout instead of the original post-activation ResNet.
        num_classes: size of the head.
        in_channels: input channels (1 for grey images, 3 for RGB).
        base_width: channels of the stem and first stage (16 in the paper).
        branch_bn: pre-activation only: end every branch with a BatchNorm, as the official DIA-PreResNet
            does (theory/dia.md); post-activation branches already end in one.
        skip: keep every block's shortcut; False removes them (and the projections) for the
            stabilisation ablation: x_{k+1} = post(h_k f_k(x_k)), no longer an ODE step.
        batch_norm: keep the backbone's BatchNorm layers; False replaces each by the identity and
            gives every convolution a bias.
        **attention_options: passed to solvers.create_stage_controller (e.g. reduction, sam).
    """

    def __init__(self, depth: int, attention: str = "none", pre_activation: bool = False,
                 num_classes: int = 10, in_channels: int = 3, base_width: int = 16, branch_bn: bool = False,
                 skip: bool = True, batch_norm: bool = True, **attention_options) -> None:
        super().__init__()
        n, bottleneck = blocks_per_stage(depth)
        if branch_bn and not pre_activation:
            raise ValueError("branch_bn applies to pre-activation blocks; post-activation branches end in BatchNorm")
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        if pre_activation:
            block = PreActBottleneck if bottleneck else PreActBasicBlock
        else:
            block = Bottleneck if bottleneck else BasicBlock
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base_width, kernel_size=3, padding=1, bias=not batch_norm),
            *([] if pre_activation else [norm2d(base_width, batch_norm), nn.ReLU(inplace=True)]),
        )
        stages, c_in, self.feature_info = [], base_width, []
        for i, stride in enumerate((1, 2, 2)):
            planes = base_width * 2 ** i
            extra = {"skip": skip, "batch_norm": batch_norm, **({"branch_bn": True} if branch_bn else {})}
            blocks = [block(c_in if k == 0 else planes * block.expansion, planes, stride if k == 0 else 1, **extra)
                      for k in range(n)]
            c_in = planes * block.expansion
            stages.append(ResidualStage(blocks, create_stage_controller(attention, c_in, n, **attention_options),
                                        post=None if pre_activation else nn.ReLU(inplace=True)))
            self.feature_info.append(FeatureInfo(f"stages.{i}", c_in, 2 ** i))
        self.stages = nn.Sequential(*stages)
        self.final_act = nn.Sequential(norm2d(c_in, batch_norm), nn.ReLU(inplace=True)) if pre_activation \
            else nn.Identity()
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        he_init(self)  # the initialisation of the CIFAR code DIANet uses


def _register(depth: int, pre_activation: bool) -> None:
    family = "preresnet" if pre_activation else "resnet"

    def build(attention: str = "none", num_classes: int = 10, in_channels: int = 3, base_width: int = 16,
              skip: bool = True, batch_norm: bool = True, **attention_options) -> CifarResNet:
        return CifarResNet(depth, attention, pre_activation, num_classes, in_channels, base_width,
                           skip=skip, batch_norm=batch_norm, **attention_options)

    def build_pre(attention: str = "none", num_classes: int = 10, in_channels: int = 3, base_width: int = 16,
                  branch_bn: bool = False, skip: bool = True, batch_norm: bool = True,
                  **attention_options) -> CifarResNet:
        return CifarResNet(depth, attention, pre_activation, num_classes, in_channels, base_width, branch_bn,
                           skip=skip, batch_norm=batch_norm, **attention_options)

    build = build_pre if pre_activation else build
    register_model(f"{family}{depth}", family=family, kind="discrete", tasks=DETECTION_READY)(build)


for _depth in BASIC_DEPTHS + BOTTLENECK_DEPTHS:
    for _pre in (False, True):
        _register(_depth, _pre)
