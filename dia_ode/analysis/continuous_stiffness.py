"""Stiffness of a continuous-depth run: spectra along the solver's own steps, summary and figures.

What `dia-ode stiffness RUN_DIR` reports for a model built from ContinuousBlock modules: the spectra
of each block's accepted steps (stiffness.continuous_spectra), a summary per block
(stiffness.summarise_block) and one figure per block of h_k λ against the region of the block's own
method (stiffness.stability), not against Euler's disk as for residual stages.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from dia_ode.analysis.plots import Region, plot_step_spectra
from dia_ode.rundir import LoadedRun
from dia_ode.solvers import SOLVER_RECORD
from dia_ode.stiffness import continuous_spectra, stability_function, stability_methods, summarise_block

if TYPE_CHECKING:  # only a type here; plots builds the figures
    from matplotlib.figure import Figure


def method_region(method: str) -> Region | None:
    """z -> |R(z)| of `method`'s stability function; None for a method without one (dopri8, Adams)."""
    if method not in stability_methods():
        return None
    return lambda z: np.abs(stability_function(method, z))


def continuous_stiffness(run: LoadedRun, x: torch.Tensor, k: int, which: str, samples: int,
                         title: Callable[[str], str]) -> tuple[dict, dict, list[tuple[str, "Figure"]], list[str]]:
    """Spectra of every continuous block of a run along its accepted steps.

    Args:
        run: the loaded run (a model with ContinuousBlock modules).
        x: the test samples to trace.
        k: eigenvalues per Jacobian.
        which: "LM", "LR" or "SR".
        samples: how many of x.
        title: what -> the figure's title (names the model, dataset and run).

    Returns:
        (result for stiffness.json, summary, [(figure name, figure)], terminal lines).
    """
    result = continuous_spectra(run.model, x, k=k, which=which, samples=samples)
    rows = result["steps"]
    blocks = [summarise_block(rows, block) for block in result["blocks"]]
    summary = {"model": run.model_name, "dataset": run.dataset_name, "samples": samples, "k": k, "which": which,
               "blocks": blocks}
    figures, lines = [], []
    for block, info in zip(blocks, result["blocks"]):
        mine = [r for r in rows if r["block"] == block["block"]]
        method = block["solver"]
        region = method_region(method)
        fig = plot_step_spectra(
            [r["t"] for r in mine], [r["step_eigenvalues"] for r in mine], [r["spectral_radius"] for r in mine],
            [r["dt"] for r in mine], info["real_axis_limit"], region,
            f"|R(z)| <= 1 ({method})" if region else f"no stability function known for {method}",
            title=title(f"Block {block['block']}: h_k λ along {block['num_steps']} {method} steps, "
                        f"top-{k}, {samples} sample{'s' * (samples != 1)}"))
        figures.append((f"step_eigenvalues_block{block['block']}", fig))
        lines.append(_line(block, method, k))
    return result, summary, figures, lines


def stiffness_along_training(history: list[dict]) -> dict | None:
    """The solver record of every epoch of a continuous run (its metrics.jsonl rows), read, not re-solved.

    Returns:
        {"epochs": [{"epoch", "nfe_forward", SOLVER_RECORD...}, ...], "first": its first row, "last": its
        last row}; None when no epoch carries a record (a discrete model, or a run trained before the
        record existed). Values are the record's: NaN where undefined (no stiffness test ran).
    """
    keys = ("nfe_forward", *SOLVER_RECORD)
    rows = [{"epoch": r["epoch"], **{key: r.get(key, math.nan) for key in keys}} for r in history
            if any(key in r for key in SOLVER_RECORD)]
    if not rows:
        return None
    return {"epochs": rows, "first": rows[0], "last": rows[-1]}


def training_line(record: dict) -> str:
    """The terminal line of stiffness_along_training: first and last epoch's stiffness and cost."""
    first, last = record["first"], record["last"]

    def cells(row: dict) -> str:
        stiff = "untested" if math.isnan(row["stiff_fraction"]) else f"stiff {row['stiff_fraction']:.0%}"
        h_lambda = "" if math.isnan(row["h_lambda_median"]) else f", median h*lambda {row['h_lambda_median']:.3g}"
        return (f"epoch {row['epoch']}: {stiff}{h_lambda}, NFE per sample {row['nfe_forward']:.3g} "
                f"(most {row['nfe_forward_max']:.0f}), rejected {row['rejected_steps']:.2g}")

    return f"solver record along training (metrics.jsonl, no re-solve): {cells(first)} -> {cells(last)}"


def _line(block: dict, method: str, k: int) -> str:
    """The block's terminal line: its spectral radii, and where the method has a region, how much of
    the spectrum lies in it."""
    inside = ("" if block["fraction_inside"] is None else
              f", top-{k} h*lambda inside the {method} region {block['fraction_inside']:.0%} "
              f"(steps with all inside {block['steps_all_inside']:.0%}), "
              f"max step index {block['max_step_index']:.3g}")
    return (f"block {block['block']} ({method}, {block['num_steps']} accepted steps): median rho(J) = "
            f"{block['median_spectral_radius']:.3g}, max {block['max_spectral_radius']:.3g}{inside}")


__all__ = ["continuous_stiffness", "method_region", "stiffness_along_training", "training_line"]
