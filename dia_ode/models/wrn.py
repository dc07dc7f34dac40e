"""Wide residual networks for CIFAR, assembled from residual stages (ODE solvers over depth).

"Wide Residual Networks" (Zagoruyko and Komodakis, arXiv 1605.07146), WRN-d-k: a 3x3 stem with 16
channels, three stages of n = (d - 4) / 6 pre-activation blocks at widths 16k, 32k, 64k (strides
1, 2, 2), BN-ReLU, global average pooling and a linear head. DIANet (arXiv 1905.10671) puts one
DIA-LSTM cell on each stage; its WRN-52-4 row is `dia_wrn52_4` with `branch_bn=True` (see
theory/dia.md). Pooling is adaptive, so any input size and channel count works.
"""

from __future__ import annotations


from torch import nn

from dia_ode.models.backbone import AbstractStagedCNN, FeatureInfo
from dia_ode.models.blocks import he_init, WideBasicBlock, conv3x3
from dia_ode.models.registry import DETECTION_READY, register_model
from dia_ode.solvers.controllers import create_stage_controller
from dia_ode.solvers.stage import ResidualStage

# (depth, widen factor) of the registered names wrn{depth}_{widen}: the WRN paper's CIFAR table
# (16-4, 16-8, 22-8, 28-10, 40-4) plus DIANet's 52-4 and two small ones for quick runs.
CONFIGS = ((16, 2), (16, 4), (16, 8), (22, 8), (28, 10), (40, 2), (40, 4), (52, 4))


class WideResNet(AbstractStagedCNN):
    """Stem -> three stages of wide pre-activation blocks -> BN-ReLU -> GAP -> linear.

    The step h_k of a stage multiplies the whole branch (after its last conv, or after the extra BN
    when `branch_bn`), on the stage's 16k / 32k / 64k channels; there is no ReLU after the skip-add.

    Args:
        depth: 6n + 4 (n blocks per stage).
        widen_factor: k; stage widths are base_width * k * (1, 2, 4).
        attention: controller name per stage ("none", "se", "eca", "cbam", "shared", "dia").
        num_classes: size of the head.
        in_channels: input channels (1 for grey images, 3 for RGB).
        dropout: dropout probability between the two convolutions of every block. 0 by default, as
            in the official model code; DIANet trained WRN-52-4 with 0.3 (its run_code.py).
        branch_bn: end every branch with a BatchNorm. The official DIA-WRN has it (bn_additional),
            the official plain WRN does not, so the default False keeps `wrn*` the paper's network
            and `dia_wrn*` different from it only by the cells; pass True to reproduce the DIANet row.
        base_width: channels of the stem, and the 16 of the stage widths 16k, 32k, 64k.
        **attention_options: passed to solvers.create_stage_controller (e.g. reduction, sam). DIA's
            reduction defaults to the official r = 4 (attention.DIALSTMCell).
    """

    def __init__(self, depth: int, widen_factor: int, attention: str = "none", num_classes: int = 10,
                 in_channels: int = 3, dropout: float = 0.0, branch_bn: bool = False, base_width: int = 16,
                 **attention_options) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        if widen_factor < 1 or base_width < 1:
            raise ValueError(f"widen_factor and base_width must be >= 1, got {widen_factor}, {base_width}")
        n = (depth - 4) // 6
        self.stem = conv3x3(in_channels, base_width)  # pre-activation: the first block's BN-ReLU follows
        stages, c_in, self.feature_info = [], base_width, []
        for i, stride in enumerate((1, 2, 2)):
            c_out = base_width * widen_factor * 2 ** i
            blocks = [WideBasicBlock(c_in if k == 0 else c_out, c_out, stride if k == 0 else 1, dropout, branch_bn)
                      for k in range(n)]
            stages.append(ResidualStage(blocks, create_stage_controller(attention, c_out, n, **attention_options)))
            self.feature_info.append(FeatureInfo(f"stages.{i}", c_out, 2 ** i))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.final_act = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True))
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The official WRN / DIA-WRN initialisation: every Linear bias at zero too.
        he_init(self, zero_linear_bias=True)


def _register(depth: int, widen_factor: int) -> None:
    def build(attention: str = "none", num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0,
              branch_bn: bool = False, base_width: int = 16, **attention_options) -> WideResNet:
        return WideResNet(depth, widen_factor, attention, num_classes, in_channels, dropout, branch_bn, base_width,
                          **attention_options)

    register_model(f"wrn{depth}_{widen_factor}", family="wrn", kind="discrete", tasks=DETECTION_READY)(build)


for _depth, _widen in CONFIGS:
    _register(_depth, _widen)
