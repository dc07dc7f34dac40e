"""How alike are the features, and the gates before their sigmoid, of consecutive blocks of a stage?

The DIA paper (arXiv 2210.16101) does not say what its cross-block r of 0.85 correlates, and its
official code collects, in commented-out lines, a (batch, blocks, C) tensor of the blocks' pooled
outputs. So beside the gate protocols of correlation.py this file measures the homogeneity of a
stage's features and of its gates' logits, each a (N, L, C) array read from a trace:

- "update": GAP(f_k), the branch output of block k pooled over positions (H, W or tokens);
- "state": GAP(x_{k+1}), the output of block k (states[1:] of the trace: all L have the stage's C
  channels, while x_0 may have the previous stage's);
- "logit": logit(h_k) = log h_k - log(1 - h_k), the excitation before its sigmoid, recovered from the
  traced gate (exact for a sigmoid channel gate such as SE's, up to the gate's float rounding).

and compares them per sample between blocks by Pearson's r (layer_correlation, "per_sample") and,
for the features, by the cosine (layer_cosine). MEASURES names the five combinations.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from dia_ode.analysis.correlation import attention_vectors, layer_correlation, layer_cosine, mean_off_diagonal
from dia_ode.analysis.stepsize import not_channels
from dia_ode.solvers.trace import StageTrace

# measure -> (the vectors compared, the similarity); LABELS says each in words for tables and figures
MEASURES = {"update_pearson": ("update", "pearson"), "update_cosine": ("update", "cosine"),
            "state_pearson": ("state", "pearson"), "state_cosine": ("state", "cosine"),
            "logit_pearson": ("logit", "pearson")}
LABELS = {"update_pearson": "GAP(f_k) Pearson r", "update_cosine": "GAP(f_k) cosine",
          "state_pearson": "GAP(x_k+1) Pearson r", "state_cosine": "GAP(x_k+1) cosine",
          "logit_pearson": "gate logit Pearson r"}


def pooled(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Global average pooling of L feature maps, (N, C, H, W) or tokens (N, T, C) each, stacked as (N, L, C)."""
    return torch.stack([f.mean(dim=not_channels(f)) for f in features], dim=1)  # (N, L, C)


def pooled_updates(stage_trace: StageTrace) -> torch.Tensor:
    """GAP(f_k) of every block of a traced stage, (N, L, C)."""
    return pooled(stage_trace.updates)


def pooled_states(stage_trace: StageTrace) -> torch.Tensor:
    """GAP(x_{k+1}), the pooled output of every block of a traced stage, (N, L, C)."""
    return pooled(stage_trace.states[1:])


def gate_logits(stage_trace: StageTrace) -> torch.Tensor:
    """The pre-sigmoid logits of a stage's channel gates, logit(h_k), as (N, L, C) float64.

    Inverting the traced gate needs no hook on the attention module. A float32 gate near 0.5 gives its
    logit to about 1e-7, one at |logit| = 10 to about 1e-3; a gate rounded to exactly 0 or 1 (|logit|
    above about 17) gives an infinite logit, which the correlations leave out as undefined. Meaningful
    for sigmoid gates only (SE, ECA), not for DIA's h = o * sigmoid(c) or CBAM's product of two gates.
    """
    h = attention_vectors(stage_trace).to(torch.float64)  # (N, L, C); float64: 1 - h near h = 1
    return torch.log(h) - torch.log1p(-h)


VECTORS: dict[str, Callable[[StageTrace], torch.Tensor]] = {
    "update": pooled_updates, "state": pooled_states, "logit": gate_logits}
SIMILARITIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pearson": lambda v: layer_correlation(v, "per_sample"), "cosine": layer_cosine}


def block_similarity(stage_trace: StageTrace, measure: str) -> torch.Tensor:
    """One of MEASURES between every pair of blocks of a traced stage, (L, L) float64, mean over samples.

    Raises:
        ValueError: an unknown measure (the message lists MEASURES).
    """
    if measure not in MEASURES:
        raise ValueError(f"unknown measure '{measure}'; valid: {', '.join(MEASURES)}")
    vectors, similarity = MEASURES[measure]
    return SIMILARITIES[similarity](VECTORS[vectors](stage_trace))


def stage_homogeneity(stage_trace: StageTrace, measures: Sequence[str] = tuple(MEASURES)) -> dict:
    """{measure: {"mean_r": mean over block pairs i != j, "mean_r_consecutive": over |i - j| = 1}}."""
    out = {}
    for measure in measures:
        r = block_similarity(stage_trace, measure)
        out[measure] = {"mean_r": mean_off_diagonal(r), "mean_r_consecutive": mean_off_diagonal(r, offset=1)}
    return out


def homogeneity_with_untrained(traces: Sequence[StageTrace], untrained_traces: Sequence[StageTrace],
                               measures: Sequence[str] = tuple(MEASURES)) -> list[dict]:
    """Every stage's homogeneity, each measure next to the untrained network's on the same images.

    Args:
        traces: the trained model's traces on N images.
        untrained_traces: the untrained network's traces (attention_nulls.untrained_model) on the same images.
        measures: which of MEASURES.

    Returns:
        One dict per stage, plain data for JSON: {measure: {"mean_r", "mean_r_consecutive",
        "untrained": {"mean_r", "mean_r_consecutive"}}}.
    """
    if len(traces) != len(untrained_traces):
        raise ValueError(f"{len(traces)} trained stages but {len(untrained_traces)} untrained ones")
    result = []
    for t, t0 in zip(traces, untrained_traces):
        trained, untrained = stage_homogeneity(t, measures), stage_homogeneity(t0, measures)
        result.append({m: {**trained[m], "untrained": untrained[m]} for m in measures})
    return result


__all__ = ["LABELS", "MEASURES", "block_similarity", "gate_logits", "homogeneity_with_untrained", "pooled",
           "pooled_states", "pooled_updates", "stage_homogeneity"]
