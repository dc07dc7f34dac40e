"""The DIA-LSTM cell: the recurrent step-size memory shared by every block of a stage.

Follows "DIANet: Dense-and-Implicit Attention Network" (Huang et al., arXiv 1905.10671) and its
generalisation "A Generic Shared Attention Mechanism for Various Backbone Neural Networks"
(arXiv 2210.16101), matching the official DIANet code: both the input path and the hidden path
are bottleneck MLPs Linear(C, C//r) -> ReLU -> Linear(C//r, 4C) with biases, gates in the order
i, f, g, o, and the new hidden state uses a *sigmoid* of the cell state, so h is an attention
in (0, 1):

    i, f, g, o = split(W_ih(z) + W_hh(h))
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * sigmoid(c')
"""

from __future__ import annotations

import torch
from torch import nn

from dia_ode.attention.excite import bottleneck_mlp

State = tuple[torch.Tensor, torch.Tensor]


class DIALSTMCell(nn.Module):
    """One step of the DIA memory: (z, (h, c)) -> (h', c'), all (B, C).

    Args:
        channels: C, the size of the input descriptor and of the states.
        reduction: bottleneck ratio r of both MLP paths (the paper's default is 4).
        cell_state: ablation switch; False drops the forget path (c' = sigmoid(i) * tanh(g)),
            so the only memory left is h.
        output_gate: ablation switch; False drops the output gate (h' = sigmoid(c')).
    """

    def __init__(self, channels: int, reduction: int = 4, cell_state: bool = True,
                 output_gate: bool = True) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}")
        self.channels = channels
        self.cell_state = cell_state
        self.output_gate = output_gate
        # Gates present, in the official order i, f, g, o; ablations remove f and/or o.
        self.gate_names = ("i",) + (("f",) if cell_state else ()) + ("g",) + (("o",) if output_gate else ())
        width = len(self.gate_names) * channels
        self.w_ih = bottleneck_mlp(channels, reduction, width)
        self.w_hh = bottleneck_mlp(channels, reduction, width)

    def init_state(self, like: torch.Tensor) -> State:
        """h_0 = c_0 = 0, created with the batch size, dtype and device of `like` (B, ...)."""
        zeros = like.new_zeros(like.shape[0], self.channels)  # (B, C)
        return zeros, zeros

    def input_gates(self, z: torch.Tensor) -> torch.Tensor:
        """Input-path logits. z is (B, C) or (B, S, C); S descriptors are summed after the MLP
        (CBAM's shared-MLP rule for its average and max descriptors)."""
        gates = self.w_ih(z)
        return gates if z.dim() == 2 else gates.sum(dim=1)  # (B, nG*C)

    def forward(self, z: torch.Tensor, state: State) -> State:
        h, c = state  # (B, C) each
        gates = self.input_gates(z) + self.w_hh(h)  # (B, nG*C)
        parts = dict(zip(self.gate_names, gates.chunk(len(self.gate_names), dim=1)))
        c_next = torch.sigmoid(parts["i"]) * torch.tanh(parts["g"])
        if self.cell_state:
            c_next = c_next + torch.sigmoid(parts["f"]) * c
        h_next = torch.sigmoid(c_next)
        if self.output_gate:
            h_next = torch.sigmoid(parts["o"]) * h_next
        return h_next, c_next


def zero_(cell: DIALSTMCell) -> DIALSTMCell:
    """Set every weight and bias of the cell to zero (its attention is then exactly 0.25)."""
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
    return cell


__all__ = ["DIALSTMCell", "State", "zero_"]
