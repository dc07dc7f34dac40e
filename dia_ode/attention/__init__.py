"""Self-attention modules (SAMs) and the DIA cell; read as step-size controllers in solvers/."""

from dia_ode.attention.cbam import CBAM, CBAMChannelGate, SpatialGate
from dia_ode.attention.dia import DIA_SAMS, DIAUnit
from dia_ode.attention.dia_cell import DIALSTMCell
from dia_ode.attention.eca import EfficientChannelAttention
from dia_ode.attention.layout import IMAGES, TOKENS, Layout
from dia_ode.attention.registry import ATTENTIONS, SAMS, AttentionSpec, create_sam, get_attention, list_attention
from dia_ode.attention.se import SqueezeExcite

__all__ = [
    "ATTENTIONS", "AttentionSpec", "CBAM", "CBAMChannelGate", "DIALSTMCell", "DIAUnit", "DIA_SAMS",
    "EfficientChannelAttention", "IMAGES", "Layout", "SAMS", "TOKENS", "SpatialGate", "SqueezeExcite", "create_sam", "get_attention", "list_attention",
]
