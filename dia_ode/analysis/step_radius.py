"""Step sizes against the spectral radius of each block's Jacobian: the pairs and their rank correlation.

In the ODE reading of a residual stage, x_{k+1} = x_k + h_k * f_k(x_k), a solver-like attention takes
small steps h_k where the field f_k is stiff, i.e. where rho(J_k), the spectral radius of
J_k = df_k/dx at x_k, is large (Hairer & Wanner: explicit Euler is stable only while h * rho stays
within its region). `step_radius_pairs` pairs the mean step of every block with its spectral radius
and gives Spearman's rho over the blocks of every stage pooled: a small network's stage has 3 blocks,
fewer than stepsize.MIN_PAIRS, so only the pooled pairs can rank a trend (`dia-ode stepsize --against
radius` prints the same pooled number). A negative rho is the solver-like answer.

Pooling mixes two trends: one within each stage (does h fall where rho rises from block to block?) and
one between stages (later stages have other widths, resolutions and step sizes). The within-stage rho
removes the second: each stage's mean over its pairs (the blocks with both an h and a rho) is subtracted
from h and from log rho before ranking; a mean over every h of the stage would include the downsampling
block, which has no rho, and leave a stage offset in the pairs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dia_ode.analysis.stepsize import rank_correlation, step_sizes
from dia_ode.solvers import trace
from dia_ode.stiffness import block_spectra


def block_radii(model: nn.Module, x: torch.Tensor, k: int = 3) -> dict[tuple[int, int], float]:
    """(stage, block) -> spectral radius of J_k = df_k/dx at x_k, mean over the samples of x.

    A shape-changing block (a stage's downsampling first block) has no square Jacobian: NaN.

    Args:
        model: a model built from residual stages.
        x: the samples whose spectra are averaged (each one is an ARPACK or dense eigen-solve per block).
        k: eigenvalues computed per Jacobian; the radius is the largest modulus among them ("LM").
    """
    rows = block_spectra(model, x, k=k, which="LM", samples=len(x))["blocks"]
    keys = {(r["stage"], r["block"]) for r in rows}
    return {key: float(np.mean([r["spectral_radius"] if not r["skipped"] else np.nan
                                for r in rows if (r["stage"], r["block"]) == key])) for key in keys}


def step_radius_pairs(model: nn.Module, x: torch.Tensor, radius_samples: int = 2, k: int = 3) -> dict:
    """Mean step h_k and spectral radius rho(J_k) of every block, and Spearman's rho over all of them.

    Args:
        model: a model built from residual stages, in eval mode (load_run and untrained_model give one).
        x: test samples; the steps are averaged over all of them (and over channels).
        radius_samples: the first samples of x whose spectra are averaged per block.
        k: eigenvalues per Jacobian (see block_radii).

    Returns:
        {"stage": (B,) stage index of each block, "block": (B,) index within its stage,
         "h": (B,) mean step, "radius": (B,) spectral radius (NaN for shape-changing blocks),
         "spearman": rank_correlation(h, radius) over every stage's blocks pooled (NaN pairs left out),
         "spearman_within_stage": the same after subtracting each stage's mean h and mean log radius,
         both over the stage's valid pairs}.
    """
    radii = block_radii(model, x[:radius_samples], k)
    with torch.no_grad():
        traces = [t for t in trace(model, x) if t.kind == "discrete"]  # in stages_of order, as block_spectra
    stage, block, h = [], [], []
    for s, t in enumerate(traces):
        means = step_sizes(t)["block_mean"]  # (L,)
        stage += [s] * len(means)
        block += list(range(len(means)))
        h += list(means)
    radius = np.array([radii[(s, j)] for s, j in zip(stage, block)])
    h = np.array(h, dtype=np.float64)
    stage = np.array(stage)
    return {"stage": stage, "block": np.array(block), "h": h, "radius": radius,
            "spearman": rank_correlation(h, radius),
            "spearman_within_stage": within_stage_rank_correlation(h, radius, stage)}


def within_stage_rank_correlation(h: np.ndarray, radius: np.ndarray, stage: np.ndarray) -> dict:
    """rank_correlation of h and log radius after removing each stage's means over its valid pairs.

    Args:
        h: (B,) mean step per block.
        radius: (B,) spectral radius per block (NaN, inf or <= 0: not a valid pair).
        stage: (B,) stage index per block.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        log_radius = np.log(radius)
    valid = np.isfinite(h) & np.isfinite(log_radius)
    h_in, r_in = np.full_like(h, np.nan), np.full_like(log_radius, np.nan)
    for s in np.unique(stage):
        pairs = valid & (stage == s)
        if pairs.any():
            h_in[pairs] = h[pairs] - h[pairs].mean()
            r_in[pairs] = log_radius[pairs] - log_radius[pairs].mean()
    return rank_correlation(h_in, r_in)


__all__ = ["block_radii", "step_radius_pairs", "within_stage_rank_correlation"]
