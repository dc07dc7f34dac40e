"""Feature-level stiffness of a residual network, read from its traces (our definitions).

A stage computes x_{k+1} = x_k + h_k ⊙ f_k(x_k) (dia_ode/solvers/stage.py): an explicit Euler step of
a depth-dependent field f_k with step h_k. Two readings of its stiffness:

- `trace_stiffness`: the depth-wise difference quotient ρ_k = ||f_{k+1}(x_{k+1}) - f_k(x_k)|| /
  ||x_{k+1} - x_k||, the form of Hairer's DOPRI5 stiffness test (Hairer, Nørsett & Wanner I, II.10)
  applied to the trajectory the network actually takes. It is ours: the field changes with k, so ρ_k
  mixes the Lipschitz constant of f with how fast f varies over depth.
- `block_spectra`: eigenvalues of the Jacobian of f_k at x_k, and of the step-scaled field
  v -> h_k ⊙ f_k(v) with h_k frozen at its traced value; the latter is what explicit Euler's stability
  region |1 + z| <= 1 sees (Hairer & Wanner II, IV.2), and `euler_amplification` is the spectral
  radius of the frozen Euler map's Jacobian I + diag(h_k) J_k. Freezing h_k drops the gate's own term
  diag(f_k) ∂h_k/∂x of the block map's full Jacobian. The ReLU after the add of post-activation
  ResNets and the projection shortcuts are not part of any of them.
theory/stiffness.md has the definitions and the tests that check them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from dia_ode.attention.layout import Layout
from dia_ode.solvers import StageTrace, stages_of, trace
from dia_ode.stiffness.indices import (
    difference_quotient, log_norm, spectral_radius, step_index, stiffness_ratio, zero_tolerance,
)
from dia_ode.stiffness.jacobian import VectorField
from dia_ode.stiffness.eigen import check_which, spectrum_with_info

SKIPPED_SHAPE = "shape-changing block (projection shortcut): its Jacobian is not square"


def trace_stiffness(stage_trace: StageTrace, per_channel: bool = False) -> np.ndarray:
    """ρ_k = ||f_{k+1}(x_{k+1}) - f_k(x_k)|| / ||x_{k+1} - x_k|| for k = 0 .. L-2, per sample.

    Norms are 2-norms over (C, H, W), or over (H, W) only with per_channel (then the quotient is taken
    channel by channel), computed in float64; for tokens (N, T, C) over (T, C), or over T only. A pair
    (k, k+1) is NaN unless x_k, x_{k+1}, f_k(x_k) and f_{k+1}(x_{k+1}) all have the same shape: block 0
    of a stage that changes shape (projection shortcut) makes ρ_0 NaN; so does x_{k+1} = x_k.

    Args:
        stage_trace: one stage's trace from dia_ode.solvers.trace (L blocks, batch N).
        per_channel: one quotient per channel instead of one per sample.

    Returns:
        float64 array (N, L-1), or (N, L-1, C) with per_channel, C the channels of the stage's output.
    """
    states, updates = stage_trace.states, stage_trace.updates
    channel = _channel_axis(states[-1])
    batch, channels = states[-1].shape[0], states[-1].shape[channel]
    rho = np.full((batch, len(updates) - 1) + ((channels,) if per_channel else ()), np.nan)
    for k in range(len(updates) - 1):
        x_a, x_b, f_a, f_b = states[k], states[k + 1], updates[k], updates[k + 1]
        if not x_a.shape == x_b.shape == f_a.shape == f_b.shape:
            continue
        # every axis but the sample's, and but the channel's with per_channel: (C, H, W) or (H, W), (T, C) or T
        dims = [d for d in range(1, x_a.dim()) if not (per_channel and d == channel)]
        rho[:, k] = difference_quotient(x_a, x_b, f_a, f_b, dims).cpu().numpy()
    return rho


def _channel_axis(x: torch.Tensor) -> int:
    """The channel axis of a state: 1 for images (N, C, H, W) and other batch-first layouts, 2 for
    tokens (N, T, C) (attention.Layout)."""
    return Layout.of(x).channel_dim % x.dim() if x.dim() in (3, 4) else 1


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, and restore each one's own mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


def sample_step(h: torch.Tensor, i: int) -> torch.Tensor:
    """Sample i's step from a traced h_k: 0-d (constant), or batch-first broadcastable to f_k."""
    return h if h.dim() == 0 or h.shape[0] == 1 else h[i:i + 1]


def spectral_indices(prefix: str, f: VectorField, x: torch.Tensor, k: int, which: str, method: str,
                     with_log_norm: bool) -> dict:
    """Eigenvalues of f's Jacobian at x and the indices read from them, keys prefixed by `prefix`."""
    values, info = spectrum_with_info(f, x, k, which, method=method)
    row = {f"{prefix}eigenvalues": values, f"{prefix}spectral_radius": spectral_radius(values),
           f"{prefix}stiffness_ratio": stiffness_ratio(values, zero_tolerance(x.dtype)),
           f"{prefix}path": info["path"], f"{prefix}matvecs": info["matvecs"]}
    if with_log_norm:
        row[f"{prefix}log_norm"] = log_norm(f, x, method=method)
    return row


def block_row(block: nn.Module, stage_trace: StageTrace, stage: int, index: int, sample: int, k: int = 6,
              which: str = "LM", method: str = "auto", with_log_norm: bool = False) -> dict:
    """The spectra and indices of one block at one sample of a trace (one row of block_spectra)."""
    x_k = stage_trace.states[index][sample:sample + 1]  # (1, C, H, W) or tokens (1, T, C)
    row = {"stage": stage, "block": index, "sample": sample, "n": x_k.numel(), "skipped": None}
    if stage_trace.updates[index].shape != stage_trace.states[index].shape:
        return {**row, "skipped": SKIPPED_SHAPE}
    h = sample_step(stage_trace.steps[index], sample)  # 0-d, (1, C, 1, 1), (1, 1, C): frozen, no gradient

    def scaled(v: torch.Tensor) -> torch.Tensor:
        return h * block.branch(v)  # v -> h_k ⊙ f_k(v)

    row.update(h_min=float(h.min()), h_mean=float(h.mean()), h_max=float(h.max()))
    # The fused scaled_dot_product_attention kernels (a ViT's branch) have no forward-mode AD, which
    # J v needs; the math backend is composite ops with the same values. No effect on other blocks.
    with sdpa_kernel(SDPBackend.MATH):
        row.update(spectral_indices("", block.branch, x_k, k, which, method, with_log_norm))
        row.update(spectral_indices("step_", scaled, x_k, k, which, method, with_log_norm))
        # max |1 + z| over ALL eigenvalues z of diag(h) J: the spectral radius of the frozen Euler map's
        # Jacobian I + diag(h) J. Over the k "LM" step eigenvalues it missed small z with Re z > 0.
        top, info = spectrum_with_info(lambda v: v + scaled(v), x_k, 1, "LM", method=method)
    row["step_index_euler"] = step_index(1.0, row["step_spectral_radius"], "euler")
    row["euler_amplification"], row["euler_matvecs"] = float(np.abs(top[0])), info["matvecs"]
    return row


def block_spectra(model: nn.Module, x: torch.Tensor, k: int = 6, which: str = "LM", samples: int = 2, *,
                  stages: Sequence[int] | None = None, method: str = "auto", log_norms: bool = False) -> dict:
    """Spectra of every block's field f_k and step-scaled field h_k ⊙ f_k at the traced states.

    The model runs in eval mode (each submodule's mode is restored afterwards) on x[:samples]; for each
    stage s, block j and sample i it takes x_j of that sample (batch of 1) and computes k eigenvalues
    of J = df_j/dx at x_j and of diag(h_j) J (h_j frozen at its traced value for that sample), and the
    spectral radius of I + diag(h_j) J (`euler_amplification`, one more eigen-solve).

    Args:
        model: a model built from ResidualStage modules.
        x: an input batch; only the first `samples` samples are used.
        k: eigenvalues per Jacobian.
        which: "LM", "LR" or "SR" (see spectrum). Radii and ratios are over the k computed values.
        samples: how many samples of x.
        stages: indices of the stages to analyse (None: every stage).
        method: spectrum's path: "auto", "arpack" or "dense".
        log_norms: also compute μ2 of both Jacobians (two more ARPACK runs per row).

    Returns:
        {"k", "which", "samples", "stages", "method", "stability_method": "euler", "blocks": rows},
        one row per (stage, block, sample) in forward order; see theory/stiffness.md for the row keys.
        Eigenvalues are complex numpy arrays: pass the result through `dia_ode.rundir.to_jsonable` (or write_json).
    """
    check_which(which)
    x = x[:samples]
    all_stages = stages_of(model)
    chosen = range(len(all_stages)) if stages is None else list(stages)
    if any(not 0 <= s < len(all_stages) for s in chosen):
        raise ValueError(f"stages {list(chosen)} out of range; the model has {len(all_stages)} stages")
    with eval_mode(model):
        with torch.no_grad():
            traces = [t for t in trace(model, x) if t.kind == "discrete"]  # one per stages_of entry, same order
        rows = [block_row(block, traces[s], s, j, i, k, which, method, log_norms)
                for s in chosen
                for j, block in enumerate(all_stages[s].blocks)
                for i in range(len(x))]
    return {"k": k, "which": which, "samples": len(x), "stages": list(chosen), "method": method,
            "stability_method": "euler", "blocks": rows}
