"""Stiffness of a continuous-depth block along the solver's own steps (our definitions).

A ContinuousBlock integrates dx/dt = a(t) ⊙ f(t, x) (a = 1 without attention) with a torchdiffeq
method. `solvers.trace` records each accepted step k: its start t_k, the state x_k there and the step
h_k = dt_k a(t_k) (dt_k without attention). At each of them we take the eigenvalues λ of
J_k = ∂f(t_k, ·)/∂x at x_k, and those of diag(h_k) J_k, the points z = dt_k a λ that the method's
stability region |R(z)| <= 1 must contain for the step to be linearly stable on the frozen-attention
linearisation (Hairer & Wanner, Solving ODEs II, IV.2). The region is the method's own
(stiffness/stability.py: dopri5, rk4, euler, ...), not Euler's disk. As for residual stages
(network.block_spectra) a(t_k) is frozen at its traced value; for DIA the memory's part of the joint
Jacobian is left out. theory/stiffness.md has the row keys and the tests.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from dia_ode.solvers import ContinuousBlock, continuous_blocks, recorded_modules, trace
from dia_ode.stiffness.eigen import check_which
from dia_ode.stiffness.indices import STABILITY_LIMITS, zero_tolerance
from dia_ode.stiffness.network import eval_mode, sample_step, spectral_indices
from dia_ode.stiffness.stability import inside_region, stability_methods


def step_row(block: ContinuousBlock, states: torch.Tensor, h: torch.Tensor, t: torch.Tensor, dt: float,
             index: int, step: int, sample: int, k: int, which: str, method: str) -> dict:
    """Spectra of f(t_k, ·) and of h_k ⊙ f(t_k, ·) at x_k for one sample (one row of continuous_spectra)."""
    x_k = states[sample:sample + 1]  # (1, C, H, W)
    h_i = sample_step(h, sample)  # 0-d, or (1, C, 1, 1) with attention: frozen, no gradient
    t_k = t.to(x_k.dtype)

    def field(v: torch.Tensor) -> torch.Tensor:
        return block.dynamics.f(t_k, v)

    def scaled(v: torch.Tensor) -> torch.Tensor:
        return h_i * block.dynamics.f(t_k, v)  # v -> dt_k a(t_k) ⊙ f(t_k, v)

    row = {"block": index, "step": step, "sample": sample, "t": float(t), "dt": dt, "n": x_k.numel(),
           "h_min": float(h_i.min()), "h_mean": float(h_i.mean()), "h_max": float(h_i.max())}
    row.update(spectral_indices("", field, x_k, k, which, method, False))
    row.update(spectral_indices("step_", scaled, x_k, k, which, method, False))
    if block.method in stability_methods():
        z = row["step_eigenvalues"]
        # zero eigenvalues (GroupNorm's invariances, dead ReLUs) sit on the boundary |R(0)| = 1, and float32
        # round-off puts them on either side: count |R| within the eigenvalues' noise as inside
        tol = zero_tolerance(x_k.dtype) * max(row["step_spectral_radius"], 1e-300)
        row["fraction_inside"] = float(np.mean(inside_region(block.method, z, tol=tol)))
        row["step_index"] = row["step_spectral_radius"] / STABILITY_LIMITS[block.method]
    else:  # no tableau for this method (implicit Adams, dopri8): say so rather than guess a region
        row["fraction_inside"] = row["step_index"] = None
    return row


def continuous_spectra(model: nn.Module, x: torch.Tensor, k: int = 6, which: str = "LM", samples: int = 2, *,
                       method: str = "auto") -> dict:
    """Spectra of every continuous block's field at every accepted solver step, per sample.

    The model runs once in eval mode (each submodule's mode restored afterwards) on x[:samples]; the
    solver's accepted steps are the same for every sample of that batch (one solve). A block with
    per-sample steps (dia_ode, per_sample=True) runs once per sample instead, each on its own steps
    (a block's num_steps is then the most any sample took).

    Args:
        model: a model with ContinuousBlock modules.
        x: an input batch; only the first `samples` samples are used.
        k: eigenvalues per Jacobian.
        which: "LM", "LR" or "SR" (see spectrum).
        samples: how many samples of x.
        method: spectrum's path: "auto", "arpack" or "dense".

    Returns:
        {"k", "which", "samples", "method", "blocks": [{"block", "solver", "T", "num_steps",
        "real_axis_limit" (None without a tableau)}, ...], "steps": rows}, one row per
        (block, step, sample) in order; row keys in theory/stiffness.md. Eigenvalues are complex
        numpy arrays (pass the result through `dia_ode.rundir.to_jsonable`).

    Raises:
        ValueError: the model has no continuous block, or `which` is unknown.
    """
    check_which(which)
    blocks = continuous_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no continuous block (ContinuousBlock) to analyse")
    x = x[:samples]
    # per-sample steps (dia_ode) differ between the samples of a batch: each sample is traced alone, on its own
    alone = any(block.backend == "dia_ode" and block.per_sample for block in blocks)
    rows, info = [], [{"block": index, "solver": block.method, "T": block.T, "num_steps": 0,
                       "real_axis_limit": STABILITY_LIMITS.get(block.method)} for index, block in enumerate(blocks)]
    with eval_mode(model):
        for first, batch in ([(i, x[i:i + 1]) for i in range(len(x))] if alone else [(0, x)]):
            with torch.no_grad():
                traces = trace(model, batch)
                dts = [block.log.tensors() for block in blocks]  # read before anything runs the model again
            by_module = dict(zip(map(id, recorded_modules(model)), traces))
            for index, (block, log) in enumerate(zip(blocks, dts)):
                tr = by_module[id(block)]
                dt = log["dt"][log["accepted"]]  # (num_steps,) float64, in the order the trace recorded them
                info[index]["num_steps"] = max(info[index]["num_steps"], len(tr))
                rows += [{**step_row(block, tr.states[j], tr.steps[j], tr.times[j], float(dt[j]), index, j, i, k,
                                     which, method), "sample": first + i}
                         for j in range(len(tr)) for i in range(len(batch))]
    rows.sort(key=lambda row: (row["block"], row["step"], row["sample"]))  # the order one batch gives
    return {"k": k, "which": which, "samples": len(x), "method": method, "blocks": info, "steps": rows}


def summarise_block(rows: Sequence[dict], block: dict) -> dict:
    """Per-block summary of continuous_spectra rows: spectral radii over steps and the stable fraction.

    Returns:
        {"block", "solver", "num_steps", "median_spectral_radius", "max_spectral_radius",
        "max_step_index" (ρ(h J) / the method's real-axis limit), "fraction_inside" (mean over rows of
        the fraction of the top-k h λ in the region), "steps_all_inside" (fraction of rows with all of
        them inside); the last three None without a stability function}.
    """
    mine = [r for r in rows if r["block"] == block["block"]]
    radius = np.array([r["spectral_radius"] for r in mine])
    known = block["real_axis_limit"] is not None and bool(mine)
    return {"block": block["block"], "solver": block["solver"], "num_steps": block["num_steps"],
            "median_spectral_radius": float(np.median(radius)) if mine else None,
            "max_spectral_radius": float(radius.max()) if mine else None,
            "max_step_index": float(max(r["step_index"] for r in mine)) if known else None,
            "fraction_inside": float(np.mean([r["fraction_inside"] for r in mine])) if known else None,
            "steps_all_inside": float(np.mean([r["fraction_inside"] == 1.0 for r in mine])) if known else None}
