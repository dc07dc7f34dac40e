"""Figures for the attention-correlation and step-size-versus-stiffness studies.

Every function builds a matplotlib Figure object directly (no pyplot state, no GUI backend, so it
is safe under Agg and in threads) and returns it; none shows or saves. The caller saves and
closes with dia_ode.rundir.save_figure(fig, figures_dir, name). Inputs are plain arrays or nested
lists, e.g. the matrices of correlation.stage_correlations or the arrays of stepsize.step_sizes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from dia_ode.analysis.correlation import mean_off_diagonal
from dia_ode.analysis.stepsize import rank_correlation

PANEL = 3.2  # inches per panel: three stages side by side fit a page width


def _names(n: int, given: Sequence[str] | None, what: str, prefix: str = "stage") -> list[str]:
    """Default names "stage 0", "stage 1", ...; a list of the wrong length is an error."""
    if given is None:
        return [f"{prefix} {i}" for i in range(n)]
    if len(given) != n:
        raise ValueError(f"{len(given)} titles or labels for {n} {what}")
    return list(given)


def _row(n: int, width: float = PANEL, height: float = PANEL, **kwargs) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n + 0.8, height), layout="constrained")
    return fig, list(fig.subplots(1, n, squeeze=False, **kwargs)[0])


def plot_correlation_heatmaps(matrices: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                              annotate_up_to: int = 8) -> Figure:
    """One heatmap of the (L, L) layer-correlation matrix per stage, on one colour scale [-1, 1].

    Args:
        matrices: one (L, L) matrix per stage (tensors, arrays or nested lists); NaN is blank.
        titles: one title per stage; the mean off-diagonal r is appended to each.
        annotate_up_to: write the value in each cell when L is at most this.

    Returns:
        The figure: one axes per stage and one colour-bar axes.
    """
    titles = _names(len(matrices), titles, "matrices")
    fig, axes = _row(len(matrices))
    for ax, r, title in zip(axes, matrices, titles):
        r = np.asarray(r, dtype=np.float64)  # (L, L)
        image = ax.imshow(r, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
        ax.set_title(f"{title}\nmean r = {mean_off_diagonal(r):.2f}")
        ax.set_xlabel("block j")
        ax.set_ylabel("block i")
        ax.set_xticks(range(r.shape[1]))
        ax.set_yticks(range(r.shape[0]))
        if r.shape[0] <= annotate_up_to:
            for (i, j), value in np.ndenumerate(r):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=axes, label="Pearson r", shrink=0.8)
    return fig


def plot_depth_profiles(step_means: Sequence[np.ndarray], stiffness: Sequence[np.ndarray | None] | None = None,
                        titles: Sequence[str] | None = None, step_std: Sequence[np.ndarray] | None = None,
                        stiffness_label: str = "stiffness estimate", log_stiffness: bool = False) -> Figure:
    """Mean step size and a stiffness estimate over depth, one panel per stage (twin y-axes).

    Args:
        step_means: per stage the mean step of each block (L,).
        stiffness: per stage a stiffness estimate per block (L,), or None for a stage without one.
        titles: one title per stage; when a stage has a stiffness estimate, Spearman's rho between
            the two curves is appended.
        step_std: per stage the spread of the step (L,), drawn as a band of +-1 std.
        stiffness_label: y label of the right axis.
        log_stiffness: log scale on the stiffness axis.

    Returns:
        The figure: one axes per stage with the step line, plus one twin axes (one line) per stage
        that has a stiffness estimate.
    """
    n = len(step_means)
    titles = _names(n, titles, "stages")
    stiffness = [None] * n if stiffness is None else list(stiffness)
    if len(stiffness) != n or (step_std is not None and len(step_std) != n):
        raise ValueError("step_means, stiffness and step_std need one entry per stage")
    fig, axes = _row(n, width=PANEL * 1.2)
    for s, (ax, h, title) in enumerate(zip(axes, step_means, titles)):
        h = np.asarray(h, dtype=np.float64)  # (L,)
        k = np.arange(h.size)
        ax.plot(k, h, "o-", color="C0")
        if step_std is not None:
            std = np.asarray(step_std[s], dtype=np.float64)  # (L,)
            ax.fill_between(k, h - std, h + std, color="C0", alpha=0.2)
        ax.set_xlabel("block k")
        ax.set_ylabel("mean step h_k", color="C0")
        ax.set_xticks(k)
        if stiffness[s] is not None:
            stiff = np.asarray(stiffness[s], dtype=np.float64)  # (L,)
            twin = ax.twinx()
            twin.plot(k, stiff, "s--", color="C3")
            twin.set_ylabel(stiffness_label, color="C3")
            if log_stiffness:
                twin.set_yscale("log")
            title = f"{title}\nSpearman rho = {rank_correlation(h, stiff)['rho']:.2f}"
        ax.set_title(title)
    return fig


def plot_eigenvalues(eigs: Sequence[np.ndarray], labels: Sequence[str] | None = None, step: float | None = None,
                     inset_beyond: float = 10.0) -> Figure:
    """Eigenvalues z = h * lambda over the stability region of explicit Euler, |1 + z| <= 1.

    The region (the disk of radius 1 centred at -1) is shaded; a residual step x + h f(x) is
    linearly stable where every z of the Jacobian of f lies inside it. The axes autoscale to the
    disk and every eigenvalue with equal aspect, so large ones stay visible; when some |1 + z|
    exceeds `inset_beyond` an inset repeats the view around the disk.

    Args:
        eigs: one complex array per set (e.g. per block); non-finite values are dropped.
        labels: one legend label per set; the count inside the region is appended.
        step: multiply every eigenvalue by this step h; None when eigs already hold h * lambda.
        inset_beyond: distance from -1 beyond which the inset is added.

    Returns:
        The figure: one axes (two with the inset), one marker line per set on each.
    """
    labels = _names(len(eigs), labels, "eigenvalue sets", prefix="set")
    scale = 1.0 if step is None else step
    zs = []
    for e in eigs:
        z = np.asarray(e, dtype=np.complex128).ravel() * scale
        zs.append(z[np.isfinite(z)])
    fig = Figure(figsize=(5.5, 5.0), layout="constrained")
    ax = fig.subplots()
    far = max((np.abs(1 + z).max() for z in zs if z.size), default=0.0) > inset_beyond
    inset = ax.inset_axes([0.6, 0.6, 0.38, 0.38]) if far else None
    for target in (ax, inset) if far else (ax,):
        target.add_patch(Circle((-1.0, 0.0), 1.0, color="0.6", alpha=0.35, lw=0,
                                label="|1 + z| <= 1 (explicit Euler)" if target is ax else None))
        for i, (z, label) in enumerate(zip(zs, labels)):
            inside = int((np.abs(1 + z) <= 1).sum())
            target.plot(z.real, z.imag, "o", ms=4, alpha=0.8, color=f"C{i % 10}",
                        label=f"{label} ({inside}/{z.size} inside)" if target is ax else None)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    symbol = "z" if step is None else f"({step:g} λ)"
    ax.set_xlabel(f"Re {symbol}")
    ax.set_ylabel(f"Im {symbol}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if far:
        inset.set_xlim(-2.5, 0.5)
        inset.set_ylim(-1.5, 1.5)
        inset.set_aspect("equal")
        inset.set_title("near the region", fontsize=8)
        inset.tick_params(labelsize=7)
    return fig


def plot_indices_over_time(t: np.ndarray, indices: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """Stiffness indices of a classic ODE problem along its solution, one row per index.

    Args:
        t: times (T,).
        indices: name -> values (T,), e.g. spectral radius, stiffness ratio, a local estimate.
        title: figure title.

    Returns:
        The figure: one axes and one line per index, sharing t. An index whose finite values
        are all positive gets a log y axis, any other a linear one.
    """
    if not indices:
        raise ValueError("no indices to plot")
    t = np.asarray(t, dtype=np.float64)  # (T,)
    fig = Figure(figsize=(6.0, 1.9 * len(indices) + 0.6), layout="constrained")
    axes = fig.subplots(len(indices), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, values) in zip(axes, indices.items()):
        values = np.asarray(values, dtype=np.float64)  # (T,)
        if values.shape != t.shape:
            raise ValueError(f"index '{name}' has shape {values.shape}, t has {t.shape}")
        ax.plot(t, values)
        finite = values[np.isfinite(values)]
        if finite.size and (finite > 0).all():
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3, which="both")
    axes[-1].set_xlabel("t")
    if title:
        fig.suptitle(title)
    return fig


__all__ = ["plot_correlation_heatmaps", "plot_depth_profiles", "plot_eigenvalues", "plot_indices_over_time"]
