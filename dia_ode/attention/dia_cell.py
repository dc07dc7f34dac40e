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

A step runs fused: the two MLPs are two matmuls on [z, h] (see `pack`), and one sigmoid covers
the gates i, f, o. The cell runs once per block with the same weights, so the packing is done
once per stage and shared by its steps. The parameters are the two nn.Sequential paths of the
official layout, and the state dict holds nothing else.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dia_ode.attention.excite import bottleneck_mlp

State = tuple[torch.Tensor, torch.Tensor]


class FusedWeights(NamedTuple):
    """Both MLP paths of the cell as one two-layer MLP on [z_1 .. z_S, h] (S input descriptors, batch B).

    Gate columns come with g last (the sigmoid gates first); see DIALSTMCell.pack.
    """

    w1: torch.Tensor  # (S*C + C, S*H + H): the first layers, block-diagonal, input-major
    b1: torch.Tensor  # (B, S*H + H): broadcast view
    w2: torch.Tensor  # (S*H + H, nG*C): the second layers stacked, so the S + 1 paths' logits are summed
    b2: torch.Tensor  # (B, nG*C): S * b_ih + b_hh, broadcast view


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
        # The fused step's gate order: the sigmoid gates, then g (one sigmoid for all of them).
        self.sigmoid_gates = tuple(name for name in self.gate_names if name != "g")
        order = [self.gate_names.index(name) for name in self.sigmoid_gates + ("g",)]
        columns = torch.arange(width).view(len(order), channels)[order].flatten()  # (nG*C,)
        # An index, not a parameter: kept out of the state dict, which holds the two paths only.
        self.register_buffer("fused_columns", columns, persistent=False)

    def init_state(self, like: torch.Tensor) -> State:
        """h_0 = c_0 = 0, created with the batch size, dtype and device of `like` (B, ...)."""
        zeros = like.new_zeros(like.shape[0], self.channels)  # (B, C)
        return zeros, zeros

    def pack(self, batch_size: int, descriptors: int = 1) -> FusedWeights:
        """The weights of a fused step for batches of `batch_size` inputs of `descriptors` vectors each
        (z of (B, S, C)).

        One block-diagonal first layer reads [z_1 .. z_S, h]; the second layer repeats W2_ih per
        descriptor, so its one matmul sums the S input paths and the hidden path, biases included
        (CBAM's shared-MLP rule: the descriptors are summed after the MLP). Build it once for all
        the steps that share these weights: it is a few ops, and they are paid once, like the
        reduction of the biases' gradients over the batch (they are broadcast here, not per step).
        """
        first_ih, _, second_ih = self.w_ih
        first_hh, _, second_hh = self.w_hh
        # Built contiguous (in, out): a step multiplies without transposing, and so does its backward.
        w1 = torch.block_diag(*[first_ih.weight.t()] * descriptors, first_hh.weight.t())
        w2 = torch.cat([second_ih.weight.t()] * descriptors + [second_hh.weight.t()])
        b1 = torch.cat([first_ih.bias] * descriptors + [first_hh.bias])
        b2 = torch.add(second_hh.bias, second_ih.bias, alpha=descriptors)
        return FusedWeights(w1, b1.expand(batch_size, -1), w2.index_select(1, self.fused_columns),
                            b2.index_select(0, self.fused_columns).expand(batch_size, -1))

    def forward(self, z: torch.Tensor, state: State, weights: FusedWeights | None = None) -> State:
        """One step. z is (B, C) or (B, S, C): S descriptors, summed after the input MLP.

        weights: `pack(B, S)`, built once by a caller that steps these weights many times; None packs here.
        """
        h, c = state  # (B, C) each
        if weights is None:
            weights = self.pack(z.shape[0], 1 if z.dim() == 2 else z.shape[1])
        u = torch.cat((z.flatten(1), h), dim=1)  # (B, S*C + C)
        hidden = torch.addmm(weights.b1, u, weights.w1).relu_()  # (B, S*H + H): every first layer
        gates = torch.addmm(weights.b2, hidden, weights.w2)  # (B, nG*C): W_ih(z) summed over S, + W_hh(h)
        sig, g = gates.split((gates.shape[1] - self.channels, self.channels), dim=1)
        gate = dict(zip(self.sigmoid_gates, torch.sigmoid(sig).chunk(len(self.sigmoid_gates), dim=1)))
        c_next = gate["i"] * torch.tanh(g)  # (B, C)
        if self.cell_state:
            # mul and add, not addcmul: addcmul's backward also multiplies by its scalar factor
            c_next = c_next + gate["f"] * c
        h_next = torch.sigmoid(c_next)
        if self.output_gate:
            h_next = gate["o"] * h_next
        return h_next, c_next


def zero_(cell: DIALSTMCell) -> DIALSTMCell:
    """Set every weight and bias of the cell to zero (its attention is then exactly 0.25)."""
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
    return cell


__all__ = ["DIALSTMCell", "FusedWeights", "State", "zero_"]
