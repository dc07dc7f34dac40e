"""How similar are the attentions of the blocks of one stage?

The DIA paper ("A Generic Shared Attention Mechanism for Various Backbone Neural Networks",
arXiv 2210.16101) motivates sharing one attention module per stage by measuring that the
channel attentions learned by independent per-block SAMs are strongly correlated across
blocks: mean Pearson r up to 0.85 between consecutive and between all block pairs. In the ODE
reading the attention a_k is the per-channel step h_k of block k, so a high r says that the
step-size controller of a stage could be one module. The paper does not publish how r is
computed, so this file computes the matrix under four protocols (PROTOCOLS, formulas in
theory/correlation.md) from a trace; it reads tensors only (traces or plain (N, L, C) arrays).
What a number means next to the untrained network and a channel-permuted null is in
dia_ode/analysis/attention_nulls.py.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch

from dia_ode.analysis.stepsize import channel_steps
from dia_ode.solvers.trace import StageTrace

PROTOCOLS = ("per_sample", "batch_mean", "per_channel", "centred")
MODES = PROTOCOLS[:2]  # the first two protocols, under their former name (callers that iterate over them)
# what the mean of each protocol runs over: the "<units>_used" counts of protocol_correlation
UNITS = {"per_sample": "samples", "batch_mean": "samples", "per_channel": "channels", "centred": "samples"}


def _row_products(d: torch.Tensor, max_elements: int = 2**20) -> torch.Tensor:
    """All dot products d_i . d_j of the rows of d, (L, C) -> (L, L) or (N, L, C) -> (N, L, L).

    An elementwise product and a sum rather than a matmul: BLAS blocks long rows differently for
    different (i, j), so two identical rows would not give exactly the number a row gives with
    itself. Chunked over N to keep each (chunk, L, L, C) product near max_elements (8 MB in float64).
    """
    d3 = d if d.dim() == 3 else d[None]  # (N, L, C)
    chunk = max(1, max_elements // (d3.shape[1] ** 2 * d3.shape[2]))
    out = torch.cat([(p[:, :, None, :] * p[:, None, :, :]).sum(dim=-1) for p in d3.split(chunk)])  # (N, L, L)
    return out if d.dim() == 3 else out[0]


def _cosine_rows(d: torch.Tensor, undefined_rows: torch.Tensor) -> torch.Tensor:
    """Cosine similarities between the rows of d (..., L, C), float64, as (..., L, L).

    The rows flagged in undefined_rows (..., L) have no direction: their row and column are NaN, their
    diagonal entry too. Every other diagonal entry is exactly 1; the rest is clamped to [-1, 1].
    """
    cov = _row_products(d)  # (..., L, L)
    ss = cov.diagonal(dim1=-2, dim2=-1)  # (..., L)
    # sqrt(ss_i * ss_j) rather than s_i * s_j: for two identical rows it is exactly ss_i.
    r = (cov / torch.sqrt(ss[..., :, None] * ss[..., None, :])).clamp(-1.0, 1.0)  # (..., L, L)
    eye = torch.eye(r.shape[-1], dtype=torch.bool, device=r.device)
    r = torch.where(eye, torch.ones_like(r), r)
    undefined = undefined_rows[..., :, None] | undefined_rows[..., None, :]  # (..., L, L)
    return r.masked_fill(undefined, math.nan)


def _pearson_rows(v: torch.Tensor) -> torch.Tensor:
    """Pearson correlations between the rows of v (..., L, C), float64, as (..., L, L): the cosine of
    the rows after subtracting each row's mean.

    A row that is constant (all C entries equal, compared exactly rather than after subtracting
    a rounded mean) has zero variance and no correlation: NaN, as in _cosine_rows.
    """
    v = v.to(torch.float64)  # float64: sums of C products, and r close to +-1 is the interesting range
    constant = v.amax(dim=-1) == v.amin(dim=-1)  # (..., L)
    return _cosine_rows(v - v.mean(dim=-1, keepdim=True), constant)


def _mean_over_units(r_u: torch.Tensor, units: str, what: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nan-aware mean of (U, L, L) correlations over the units U (samples or channels): (r, counts).

    A unit whose vector is undefined in some block (constant for a correlation, zero for a cosine) is
    NaN for the pairs with that block and left out of their mean (a RuntimeWarning says how many,
    naming the vector as `what`); a pair no unit defines stays NaN.
    """
    valid = ~r_u.isnan()  # (U, L, L)
    counts = valid.sum(dim=0)  # (L, L)
    r = r_u.nan_to_num(0.0).sum(dim=0) / counts  # (L, L); 0 / 0 = NaN where no unit is valid
    r = 0.5 * (r + r.T)  # the vectorised sum over U may round (i, j) and (j, i) differently
    dropped = int((~valid).any(dim=(1, 2)).sum())
    if dropped:
        what = what or ("constant (or non-finite) attention vector" if units == "samples"
                        else "constant (or non-finite) gate over the samples")
        warnings.warn(f"{dropped} of {r_u.shape[0]} {units} have a {what} in some block; "
                      f"they are left out of the mean for the pairs with that block "
                      f"({units} kept per pair: {int(counts.min())} to {int(counts.max())})",
                      RuntimeWarning, stacklevel=3)
    return r, counts


def layer_correlation(a: torch.Tensor, protocol: str = "per_sample", return_counts: bool = False, *,
                      mode: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Pearson correlation between the channel attentions of every pair of blocks of a stage.

    Computed in float64 whatever the dtype of `a`. The formulas are in theory/correlation.md.

    Zero variance: a vector that is constant (all its entries equal, e.g. C = 1 or a saturated
    gate) has no correlation with anything. In the protocols that average over units (samples for
    "per_sample" and "centred", channels for "per_channel") such a unit is NaN for every pair with
    that block and the mean skips it (a nan-aware mean; `return_counts` gives how many units each
    pair kept, and a RuntimeWarning says how many were dropped). A pair that no unit defines stays
    NaN. In "batch_mean" a constant mean vector makes its row and column NaN. Never a silent
    division by zero.

    Args:
        a: attentions (N, L, C): N samples, L blocks, C channels.
        protocol: one of PROTOCOLS.
            "per_sample" correlates the C-vectors of blocks i and j within each sample and averages
            r over the samples (how alike the attention the blocks give to one input);
            "batch_mean" averages a over the samples first and correlates the mean vectors (how
            alike the blocks' typical channel preferences are; averaging removes the sample-to-sample
            part, so the two can differ a lot, even in sign);
            "per_channel" correlates, for each channel, the N gates of block i with those of block j
            across the samples and averages r over the channels (do the blocks turn a channel up
            for the same inputs?);
            "centred" is "per_sample" after subtracting each block's mean vector over the samples,
            so a channel profile shared by every input cannot make r high on its own.
        return_counts: also return the number of units behind every entry, (L, L) int64: samples
            ("per_sample", "centred"; N for "batch_mean") or channels ("per_channel"); see UNITS.
        mode: the former name of `protocol`; given, it wins.

    Returns:
        r (L, L) float64 with r[i, i] = 1 (NaN for a block without a defined correlation), or
        (r, counts).
    """
    protocol = protocol if mode is None else mode
    if a.dim() != 3:
        raise ValueError(f"attentions must be (N, L, C), got shape {tuple(a.shape)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; valid: {', '.join(PROTOCOLS)}")
    a = a.to(torch.float64)
    if protocol == "batch_mean":
        r = _pearson_rows(a.mean(dim=0))  # (L, L)
        counts = torch.where(r.isnan(), 0, a.shape[0])  # (L, L)
    elif protocol == "per_channel":
        r, counts = _mean_over_units(_pearson_rows(a.permute(2, 1, 0)), "channels")  # rows: (C, L, N)
    else:
        if protocol == "centred":
            a = a - a.mean(dim=0, keepdim=True)  # each block's dataset-mean vector removed
        r, counts = _mean_over_units(_pearson_rows(a), "samples")  # (N, L, C) -> (N, L, L)
    return (r, counts.to(torch.int64)) if return_counts else r


def layer_cosine(v: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between the C-vectors of every pair of blocks, per sample, averaged over samples.

    The uncentred sibling of layer_correlation's "per_sample": (1/N) Σ_n <v_nl, v_nm> / (|v_nl| |v_nm|).
    It counts a shared offset as agreement (two non-negative vectors, such as pooled post-ReLU features,
    never have a negative cosine), which is why it is reported next to the Pearson r. A zero vector
    has no direction: the sample is left out of the pairs with that block (a RuntimeWarning says how
    many), as a constant vector is in layer_correlation.

    Args:
        v: vectors (N, L, C): N samples, L blocks, C channels.

    Returns:
        (L, L) float64 with 1 on the diagonal (NaN for a block that is zero in every sample).
    """
    if v.dim() != 3:
        raise ValueError(f"vectors must be (N, L, C), got shape {tuple(v.shape)}")
    v = v.to(torch.float64)
    r_n = _cosine_rows(v, (v == 0).all(dim=-1))  # (N, L, L)
    return _mean_over_units(r_n, "samples", "zero (or non-finite) vector")[0]


def protocol_correlation(a: torch.Tensor, protocol: str) -> dict:
    """One protocol's correlation of a stage's attentions, as plain data for JSON.

    Args:
        a: attentions (N, L, C).
        protocol: one of PROTOCOLS.

    Returns:
        {"protocol": name, "matrix": (L, L) nested lists, "mean_r": mean over the pairs i != j,
        "mean_r_consecutive": mean over the pairs |i - j| = 1, "<units>_used": (L, L) nested lists
        of ints (units = UNITS[protocol])}. Undefined values are float NaN.
    """
    r, counts = layer_correlation(a, protocol, return_counts=True)
    return {"protocol": protocol, "matrix": r.tolist(), "mean_r": mean_off_diagonal(r),
            "mean_r_consecutive": mean_off_diagonal(r, offset=1), f"{UNITS[protocol]}_used": counts.tolist()}


def mean_off_diagonal(r: torch.Tensor | np.ndarray, offset: int | None = None) -> float:
    """Mean of the off-diagonal entries of a square matrix, ignoring NaN.

    Args:
        r: an (L, L) correlation matrix.
        offset: None averages every pair i != j; k averages the pairs |i - j| = k only
            (k = 1: consecutive blocks, the paper's other statistic).

    Returns:
        The mean, or NaN when no finite entry qualifies (L = 1, or all NaN).
    """
    r = np.asarray(r.detach().cpu() if torch.is_tensor(r) else r, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {r.shape}")
    i, j = np.indices(r.shape)
    values = r[(i != j) if offset is None else (np.abs(i - j) == offset)]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def attention_vectors(stage_trace: StageTrace) -> torch.Tensor:
    """The channel attention of every block of a traced stage, stacked as (N, L, C).

    Steps of shape (N, C, 1, 1), or (N, 1, C) for tokens (SE, ECA, shared SAM, DIA), give their C
    values; a step with spatial extent, CBAM's (N, C, H, W) = Mc * Ms, is averaged over H and W, so
    each channel's value is its mean step over the positions (the channel gate times the mean
    spatial gate when the spatial gate is per position).

    Args:
        stage_trace: one StageTrace from dia_ode.solvers.trace.

    Returns:
        a (N, L, C), the dtype of the steps.

    Raises:
        ValueError: a block has a constant (0-d) step, as in a plain ResNet.
    """
    for k, h_k in enumerate(stage_trace.steps):
        if h_k.dim() == 0:
            raise ValueError(f"block {k} has no attention: constant step h = {float(h_k):g} "
                             "(a plain ResNet); attention vectors need per-channel steps")
    return channel_steps(stage_trace)


def stage_correlations(traces: Sequence[StageTrace], modes: Sequence[str] = MODES) -> list[dict]:
    """Layer correlations of every stage of a traced model, as plain data for summary.json.

    Args:
        traces: the list returned by dia_ode.solvers.trace(model, x).
        modes: which protocols (PROTOCOLS) to compute; the first two by default.

    Returns:
        One dict per stage::

            {"stage": s, "num_samples": N, "num_blocks": L, "channels": C,
             "<protocol>": protocol_correlation(a, protocol), ...}

        with one entry per protocol. Undefined values are float NaN (json writes NaN);
        np.asarray(result[s][protocol]["matrix"]) gives the matrix for plotting. The null
        references and the learning measures are in dia_ode.analysis.attention_nulls.
    """
    result = []
    for s, stage_trace in enumerate(traces):
        a = attention_vectors(stage_trace)  # (N, L, C)
        entry = {"stage": s, "num_samples": a.shape[0], "num_blocks": a.shape[1], "channels": a.shape[2]}
        for mode in modes:
            entry[mode] = protocol_correlation(a, mode)
        result.append(entry)
    return result


__all__ = ["MODES", "PROTOCOLS", "UNITS", "attention_vectors", "layer_correlation", "layer_cosine",
           "mean_off_diagonal", "protocol_correlation", "stage_correlations"]
