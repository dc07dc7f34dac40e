"""Step sizes over depth, and how they rank against a stiffness estimate.

In the ODE reading of a residual stage, x_{k+1} = x_k + h_k * f_k(x_k), the attention of block k
is its step h_k. A controller that behaves like an adaptive ODE solver should take small steps
where the dynamics are stiff; these functions summarise h_k per block and per channel from a
trace and measure, with Spearman's rank correlation, whether the steps fall where a stiffness
estimate (computed elsewhere, passed in as a plain array) rises. A negative rho is the solver-like
answer.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from dia_ode.attention.layout import Layout
from dia_ode.models import list_models, stage_blocks
from dia_ode.models.registry import ModelEntry, resolve
from dia_ode.solvers.trace import StageTrace


def channel_steps(stage_trace: StageTrace, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The step of every block of a traced stage per sample and channel, stacked as (N, L, C).

    Each h_k is broadcast to the shape of its update f_k, images (N, C, H, W) or tokens (N, T, C)
    (attention.Layout), and averaged over every axis but samples and channels: a (N, C, 1, 1) or
    (N, 1, C) step keeps its values, CBAM's (N, C, H, W) step becomes its spatial mean, and a
    constant 0-d step (plain ResNet) becomes that constant in every entry.

    Args:
        stage_trace: one StageTrace from dia_ode.solvers.trace.
        dtype: convert the steps to this dtype before averaging (None keeps theirs).

    Returns:
        h (N, L, C).
    """
    if len(stage_trace) == 0:
        raise ValueError("the stage trace has no blocks (was it recorded during a forward?)")
    per_block = [h_k.to(dtype).expand(f_k.shape).mean(dim=not_channels(f_k))  # (N, C)
                 for h_k, f_k in zip(stage_trace.steps, stage_trace.updates)]
    return torch.stack(per_block, dim=1)  # (N, L, C)


def not_channels(f: torch.Tensor) -> tuple[int, ...]:
    """The axes of a feature tensor other than samples and channels: (2, 3) for images (N, C, H, W),
    (1,) for tokens (N, T, C)."""
    channel = Layout.of(f).channel_dim % f.dim()
    return tuple(d for d in range(1, f.dim()) if d != channel)


def step_sizes(stage_trace: StageTrace) -> dict:
    """Summary of the steps h_k of one stage, in float64 numpy arrays.

    Spatial positions (or tokens) are averaged first (see channel_steps). Standard deviations are over
    samples and use ddof = 0, so one sample gives 0.

    Args:
        stage_trace: one StageTrace from dia_ode.solvers.trace.

    Returns:
        {"block_mean": (L,) mean over samples and channels,
         "block_std": (L,) std over samples of each sample's channel-mean step,
         "channel_mean": (L, C) mean over samples,
         "channel_std": (L, C) std over samples,
         "num_samples": N,
         "constant": True when every step is a 0-d constant (a plain ResNet)}.
    """
    h = channel_steps(stage_trace, dtype=torch.float64).cpu()  # (N, L, C); float64 for the means
    per_sample = h.mean(dim=2)  # (N, L)
    return {
        "block_mean": per_sample.mean(dim=0).numpy(),  # (L,)
        "block_std": per_sample.std(dim=0, correction=0).numpy(),  # (L,)
        "channel_mean": h.mean(dim=0).numpy(),  # (L, C)
        "channel_std": h.std(dim=0, correction=0).numpy(),  # (L, C)
        "num_samples": h.shape[0],
        "constant": all(h_k.dim() == 0 for h_k in stage_trace.steps),
    }


# Why 4: with 3 pairs Spearman's rho takes only the values +-1 and +-0.5 and even rho = 1 has an exact
# two-sided p-value of 1/3, so it says nothing; 4 pairs is the least that can rank a trend at all.
MIN_PAIRS = 4


def rank_correlation(h: np.ndarray, s: np.ndarray) -> dict:
    """Spearman rank correlation between block step sizes and a stiffness estimate.

    Pairs where either value is NaN or infinite are left out.

    Args:
        h: step sizes per block (L,), e.g. step_sizes(...)["block_mean"].
        s: a stiffness estimate per block (L,), e.g. a spectral radius of each f_k's Jacobian.

    Returns:
        {"rho", "pvalue", "n": valid pairs used, "reason": None, or why rho and pvalue are NaN
        (fewer than MIN_PAIRS valid pairs, or a constant input that has no ranks to compare)}.
    """
    h = np.asarray(h, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if h.shape != s.shape or h.ndim != 1:
        raise ValueError(f"h and s must both be (L,), got shapes {h.shape} and {s.shape}")
    valid = np.isfinite(h) & np.isfinite(s)
    h, s = h[valid], s[valid]
    n = int(valid.sum())
    reason = None
    if n < MIN_PAIRS:
        reason = f"only {n} valid pair{'s' * (n != 1)}, need >= {MIN_PAIRS}"
    elif np.ptp(h) == 0 or np.ptp(s) == 0:
        reason = "constant " + ("step h" if np.ptp(h) == 0 else "stiffness estimate") + ": no ranks to compare"
    if reason is not None:
        return {"rho": math.nan, "pvalue": math.nan, "n": n, "reason": reason}
    result = stats.spearmanr(h, s)
    return {"rho": float(result.statistic), "pvalue": float(result.pvalue), "n": n, "reason": None}


def with_depth_advice(model: str, blocks: Sequence[int], results: Sequence[dict]) -> list[dict]:
    """Each stage's rank_correlation result with "instead": what to train where the stage has too few pairs.

    A stage with fewer than MIN_PAIRS valid pairs cannot rank a trend however long it is trained; a
    deeper stage can. A stage short of m pairs needs m more blocks, since a deeper stage loses as many
    pairs as this one (the quotient has none for the last block, nor for a first block that changes
    shape); "instead" names the shallowest registered model of the same family, attention and kind
    whose stages are that long: for dia_resnet20 (3 blocks per stage, 2 or 1 pairs) "train a deeper
    model, e.g. dia_resnet44 (7 blocks per stage)". A plain model's steps are constant, so its advice
    names the deeper model with DIA. Elsewhere "instead" is None.

    Args:
        model: the registry name of the analysed model.
        blocks: blocks per stage.
        results: per stage the rank_correlation of its steps with its stiffness estimate.
    """
    short = [r["n"] < MIN_PAIRS for r in results]
    advice = None
    if any(short):
        entry, attention = resolve(model)
        what = "a deeper model"
        if attention == "none" and "dia" in entry.attentions:  # h = 1 everywhere: more blocks rank nothing
            attention, what = "dia", "a deeper model with attention (a plain model's steps are constant)"
        needed = [b + MIN_PAIRS - r["n"] if s else 0 for b, r, s in zip(blocks, results, short)]
        deeper = _shallowest_with(entry, attention, needed)
        advice = (f"train {what}, e.g. {_blocks_text(*deeper)}" if deeper else
                  f"no registered model of the {entry.family} family has enough blocks per stage")
    return [{**r, "instead": advice if s else None} for r, s in zip(results, short)]


def _shallowest_with(entry: ModelEntry, attention: str, needed: Sequence[int]) -> tuple[str, list[int]] | None:
    """(name, blocks per stage) of the shallowest model of the entry's family and kind with `attention`
    whose stage s has at least needed[s] blocks, with as many stages; None if none is registered."""
    fits = []
    for name in list_models(family=entry.family, kind=entry.kind, attention=attention):
        try:
            blocks = stage_blocks(name)
        except (ValueError, TypeError):  # a model its defaults do not build (it needs an option)
            continue
        if len(blocks) == len(needed) and all(b >= n for b, n in zip(blocks, needed)):
            fits.append((sum(blocks), name, blocks))
    return min(fits)[1:] if fits else None


def _blocks_text(name: str, blocks: list[int]) -> str:
    """"dia_resnet44 (7 blocks per stage)", or "unet_m (blocks per stage: 2, 2, 3, 2, 2)"."""
    if len(set(blocks)) == 1:
        return f"{name} ({blocks[0]} blocks per stage)"
    return f"{name} (blocks per stage: {', '.join(map(str, blocks))})"


def per_channel_rank_correlation(h: np.ndarray, s: np.ndarray) -> dict:
    """Spearman rank correlation across blocks, channel by channel.

    Args:
        h: per-block, per-channel steps (L, C), e.g. step_sizes(...)["channel_mean"].
        s: a stiffness estimate (L, C), or (L,) for one value per block shared by every channel.

    Returns:
        {"rho": (C,) with NaN where undefined (see rank_correlation), "pvalue": (C,), "n": (C,),
         "num_valid": channels with a finite rho, and over those channels "mean", "median",
         "fraction_positive", "fraction_negative" (NaN when no channel is valid)}.
    """
    h = np.asarray(h, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"h must be (L, C), got shape {h.shape}")
    s = np.broadcast_to(s[:, None] if s.ndim == 1 else s, h.shape)  # (L, C)
    per_channel = [rank_correlation(h[:, c], s[:, c]) for c in range(h.shape[1])]
    rho = np.array([r["rho"] for r in per_channel])  # (C,)
    finite = rho[np.isfinite(rho)]
    summary = {"mean": np.mean, "median": np.median,
               "fraction_positive": lambda x: np.mean(x > 0), "fraction_negative": lambda x: np.mean(x < 0)}
    return {
        "rho": rho,
        "pvalue": np.array([r["pvalue"] for r in per_channel]),  # (C,)
        "n": np.array([r["n"] for r in per_channel]),  # (C,)
        "num_valid": int(finite.size),
        **{name: float(fn(finite)) if finite.size else math.nan for name, fn in summary.items()},
    }


__all__ = ["MIN_PAIRS", "channel_steps", "not_channels", "per_channel_rank_correlation", "rank_correlation",
           "step_sizes", "with_depth_advice"]
