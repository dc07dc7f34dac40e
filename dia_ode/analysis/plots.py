"""Figures for the attention-correlation and step-size-versus-stiffness studies.

Every function builds a matplotlib Figure object directly (no pyplot state, no GUI backend, so it
is safe under Agg and in threads) and returns it; none shows or saves. The caller saves and
closes with dia_ode.rundir.save_figure(fig, figures_dir, name). Inputs are plain arrays or nested
lists, e.g. the matrices of correlation.stage_correlations or the arrays of stepsize.step_sizes.

Rules for figures that go into a paper: `title` (what was analysed: run, model, dataset) is the
figure's suptitle; labels are words, never dict keys; an axis is logarithmic only when its positive
values span more than a decade (rundir.choose_scale); legends sit outside the data area; stages are
numbered from 0 as in the JSON the commands write.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from dia_ode.analysis.correlation import mean_off_diagonal
from dia_ode.analysis.stepsize import rank_correlation
from dia_ode.rundir import choose_scale

PANEL = 3.2  # inches per panel: three stages side by side fit a page width
MIN_WIDTH = 5.0  # inches: a figure of one panel still holds its title's longest word


def _names(n: int, given: Sequence[str] | None, what: str, prefix: str = "stage") -> list[str]:
    """Default names "stage 0", "stage 1", ...; a list of the wrong length is an error."""
    if given is None:
        return [f"{prefix} {i}" for i in range(n)]
    if len(given) != n:
        raise ValueError(f"{len(given)} titles or labels for {n} {what}")
    return list(given)


def suptitle(fig: Figure, title: str | None) -> None:
    """Set the figure's title, wrapped to the figure's width.

    Why wrapped: a run's title (command, model, dataset, run directory) is often wider than a figure of
    one or two panels; unwrapped it runs past both edges and constrained layout cannot make room for it.
    """
    if title:
        fig.suptitle(title, wrap=True)


def _row(n: int, width: float = PANEL, height: float = PANEL, title: str | None = None,
         **kwargs) -> tuple[Figure, list]:
    # at least MIN_WIDTH wide: a title breaks only between words, and a run directory's name is one word
    fig = Figure(figsize=(max(MIN_WIDTH, width * n + 0.8), height + (0.4 if title else 0.0)), layout="constrained")
    suptitle(fig, title)
    return fig, list(fig.subplots(1, n, squeeze=False, **kwargs)[0])


def plot_correlation_heatmaps(matrices: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                              annotate_up_to: int = 8, title: str | None = None) -> Figure:
    """One heatmap of the (L, L) layer-correlation matrix per stage, on one colour scale [-1, 1].

    Args:
        matrices: one (L, L) matrix per stage (tensors, arrays or nested lists); NaN is blank.
        titles: one title per stage; the mean off-diagonal r is appended to each.
        annotate_up_to: write the value in each cell when L is at most this.
        title: the figure's title (what was analysed).

    Returns:
        The figure: one axes per stage and one colour-bar axes.
    """
    titles = _names(len(matrices), titles, "matrices")
    fig, axes = _row(len(matrices), title=title)
    for ax, r, name in zip(axes, matrices, titles):
        r = np.asarray(r, dtype=np.float64)  # (L, L)
        # aspect "auto": constrained layout sizes a fixed-aspect axes wrongly and pushed its title into
        # the figure's title; a panel about as tall as wide keeps the cells near square anyway
        image = ax.imshow(r, vmin=-1.0, vmax=1.0, cmap="RdBu_r", aspect="auto")
        ax.set_title(f"{name}\nmean r = {mean_off_diagonal(r):.2f}")
        ax.set_xlabel("block j")
        ax.set_ylabel("block i")
        ax.set_xticks(range(r.shape[1]))
        ax.set_yticks(range(r.shape[0]))
        if r.shape[0] <= annotate_up_to:
            for (i, j), value in np.ndenumerate(r):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=axes, label="Pearson r", shrink=0.8)
    return fig


# Why two panels per stage and not one with twin y axes: two autoscaled axes stretch each curve to the
# panel's height, so a 3% change of h_k was drawn as steep as a doubling of ρ_k. Here h_k and the stiffness
# estimate each get an axis of their own, shared by every stage and starting at 0 (both are magnitudes:
# a step, a rate), so a small change looks small and stages compare at a glance; the stiffness axis is
# logarithmic instead where its values span more than a decade (choose_scale).
MIN_LINE_POINTS = 3  # fewer finite points are drawn as markers alone: a line through two shows no trend


def plot_depth_profiles(step_means: Sequence[np.ndarray], stiffness: Sequence[np.ndarray | None] | None = None,
                        titles: Sequence[str] | None = None, step_std: Sequence[np.ndarray] | None = None,
                        stiffness_label: str = "stiffness estimate", log_stiffness: bool | None = None,
                        title: str | None = None, spearman: Sequence[dict | None] | None = None,
                        missing_reason: str | None = None) -> Figure:
    """Mean step size (top row) and a stiffness estimate (bottom row) over depth, one column per stage.

    Args:
        step_means: per stage the mean step of each block (L,).
        stiffness: per stage a stiffness estimate per block (L,), or None for a stage without one.
        titles: one title per stage; when a stage has a stiffness estimate, Spearman's rho between
            the two curves is appended, or "Spearman n/a" and the reason when it is undefined.
        step_std: per stage the spread of the step over samples (L,), drawn as error bars of +-1 std.
        stiffness_label: y label of the bottom row and its legend entry.
        log_stiffness: log scale on the stiffness axis; None: when its values span more than a decade.
        title: the figure's title (what was analysed).
        spearman: per stage the rank_correlation result to print (None: computed from the two curves).
        missing_reason: why a stiffness estimate can be NaN, for the legend; such a block is marked
            "n/a" in its panel, so an absent point is not read as one lost in drawing.

    Returns:
        The figure: a 2 x stages grid of axes sharing the block axis per column and the y axis per row,
        and one legend below the grid.
    """
    n = len(step_means)
    titles = _names(n, titles, "stages")
    stiffness = [None] * n if stiffness is None else list(stiffness)
    spearman = [None] * n if spearman is None else list(spearman)
    if len(stiffness) != n or len(spearman) != n or (step_std is not None and len(step_std) != n):
        raise ValueError("step_means, stiffness, spearman and step_std need one entry per stage")
    fig = Figure(figsize=(PANEL * 1.1 * n + 0.8, 2 * PANEL * 0.8 + 0.8), layout="constrained")
    suptitle(fig, title)
    steps_row, stiff_row = fig.subplots(2, n, squeeze=False, sharex="col", sharey="row")
    step_values, stiff_values = [], []
    for s, (top, bottom, h, name) in enumerate(zip(steps_row, stiff_row, step_means, titles)):
        h = np.asarray(h, dtype=np.float64)  # (L,)
        k = np.arange(h.size)
        std = None if step_std is None else np.asarray(step_std[s], dtype=np.float64)  # (L,)
        label = "mean step h_k" + (" ± 1 std over samples" if std is not None else "")
        _profile(top, k, h, std, "o", "C0", label)
        step_values += [h] if std is None else [h - std, h + std]
        if stiffness[s] is None:
            bottom.text(0.5, 0.5, "no stiffness estimate", transform=bottom.transAxes, ha="center", va="center")
        else:
            stiff = np.asarray(stiffness[s], dtype=np.float64)  # (L,)
            _profile(bottom, k, stiff, None, "s", "C3", stiffness_label)
            for block in k[~np.isfinite(stiff)]:
                bottom.annotate("n/a", (block, 0.04), xycoords=("data", "axes fraction"), ha="center",
                                va="bottom", fontsize=8, color="0.4")
            if missing_reason and not np.isfinite(stiff).all():
                bottom.plot([], [], " ", label=f"n/a: {missing_reason}")  # a legend line without a marker
            stiff_values.append(stiff)
            name = f"{name}\n{spearman_text(spearman[s] or rank_correlation(h, stiff))}"
        top.set_title(name, fontsize=9)
        bottom.set_xlabel("block k")
        bottom.set_xticks(k)
    steps_row[0].set_ylabel("mean step h_k")
    stiff_row[0].set_ylabel(stiffness_label, fontsize=9)
    _from_zero(steps_row[0], step_values)
    values = np.concatenate(stiff_values) if stiff_values else np.zeros(0)
    if choose_scale(values) == "log" if log_stiffness is None else log_stiffness:
        stiff_row[0].set_yscale("log")
    else:
        _from_zero(stiff_row[0], [values])
    legend_below(fig)
    return fig


def _profile(ax, k: np.ndarray, y: np.ndarray, std: np.ndarray | None, marker: str, color: str, label: str) -> None:
    """Markers at every block, joined by a line only where MIN_LINE_POINTS of them are finite."""
    style = marker + ("-" if np.isfinite(y).sum() >= MIN_LINE_POINTS else "")
    ax.errorbar(k, y, yerr=std, fmt=style, color=color, capsize=3 if std is not None else 0, label=label)
    ax.grid(alpha=0.3)


def _from_zero(ax, values: Sequence[np.ndarray]) -> None:
    """A linear y axis that includes 0, so a change is drawn at its size relative to the magnitude."""
    finite = np.concatenate([np.ravel(v) for v in values]) if values else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() >= 0:
        ax.set_ylim(0.0, 1.1 * finite.max() or 1.0)  # 10% headroom above the largest value (all zero: 0 to 1)
    else:  # negative values (or none): widen the data limits to hold 0 and rescale
        ax.update_datalim([(0.0, 0.0)])
        ax.autoscale_view()


def legend_below(fig: Figure) -> None:
    """One legend below the axes with every labelled artist of the figure, each label once."""
    entries: dict[str, object] = {}
    for ax in fig.axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=min(3, len(entries)),
                   fontsize=8)


def spearman_text(result: dict) -> str:
    """"Spearman rho = 0.42 (n = 5)", or "Spearman n/a: <reason>" when rho is undefined."""
    if result.get("reason"):
        return f"Spearman n/a: {result['reason']}"
    return f"Spearman rho = {result['rho']:.2f} (n = {result['n']})"


Region = Callable[[np.ndarray], np.ndarray]

# Where region_box looks for a stability region: it holds every explicit method's of
# dia_ode.stiffness.stability (the widest, dopri5's, reaches Re z = -3.31 and |Im z| = 3.85).
REGION_SEARCH = (-8.0, 2.0, -6.0, 6.0)


def _euler_region(z: np.ndarray) -> np.ndarray:
    return np.abs(1.0 + z)


def region_box(region: Region, search: tuple[float, float, float, float] = REGION_SEARCH,
               points: int = 321) -> tuple[float, float, float, float]:
    """The box (x0, x1, y0, y1) that holds the region {z : region(z) <= 1} and the origin.

    Read off a points x points grid over `search` and widened by one grid cell on each side, so the
    boundary drawn from a finer grid stays inside; a region larger than `search` is cut to it.
    Why not one fixed box for every method: Euler's disk would sit small in the middle of it, and
    dopri5's region (|Im z| up to 3.85) did not fit the |Im z| <= 3 that was used.
    """
    x0, x1, y0, y1 = search
    x, y = np.meshgrid(np.linspace(x0, x1, points), np.linspace(y0, y1, points))
    inside = region(x + 1j * y) <= 1.0  # (points, points)
    cell = max(x1 - x0, y1 - y0) / (points - 1)
    xs, ys = np.append(x[inside], 0.0), np.append(y[inside], 0.0)
    return (max(x0, xs.min() - cell), min(x1, xs.max() + cell), max(y0, ys.min() - cell), min(y1, ys.max() + cell))


def _draw_region(ax, region: Region, label: str | None, xlim: tuple[float, float],
                 ylim: tuple[float, float]) -> None:
    """Shade {z : region(z) <= 1} over the given window and draw its boundary."""
    x, y = np.meshgrid(np.linspace(*xlim, 300), np.linspace(*ylim, 300))
    amplitude = region(x + 1j * y)  # |R(z)| on the grid, (300, 300)
    ax.contourf(x, y, amplitude, levels=[0.0, 1.0], colors=["0.6"], alpha=0.35)
    ax.contour(x, y, amplitude, levels=[1.0], colors=["0.3"], linewidths=0.8)
    if label:
        ax.fill([], [], color="0.6", alpha=0.35, label=label)  # a legend entry for the shaded region


def _window(z: np.ndarray, core: tuple[float, float, float, float]) -> tuple[tuple, tuple]:
    """Equal-aspect limits that contain the region's core box and every finite z, with a margin."""
    x0, x1, y0, y1 = core
    if z.size:
        x0, x1 = min(x0, z.real.min()), max(x1, z.real.max())
        y0, y1 = min(y0, z.imag.min()), max(y1, z.imag.max())
    half = 0.55 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - half, cx + half), (cy - half, cy + half)


def plot_eigenvalues(eigs: Sequence[np.ndarray], labels: Sequence[str] | None = None, step: float | None = None,
                     inset_beyond: float = 10.0, region: Region | None = None,
                     region_label: str = "|1 + z| <= 1 (explicit Euler)", title: str | None = None) -> Figure:
    """Eigenvalues z = h * lambda over a stability region (explicit Euler's disk |1 + z| <= 1 by default).

    A step is linearly stable where every z of the Jacobian lies inside the shaded region. When some z
    lies farther than `inset_beyond` from the origin, a second panel beside the first repeats the view
    around the region (side by side, so neither hides data). The legend sits below the panels.

    Args:
        eigs: one complex array per set (e.g. per block); non-finite values are dropped.
        labels: one legend label per set; the count inside the region is appended.
        step: multiply every eigenvalue by this step h; None when eigs already hold h * lambda.
        inset_beyond: |z| beyond which the close-up panel is added.
        region: z -> |R(z)| of the method (None: explicit Euler, |1 + z|).
        region_label: legend label of the region.
        title: the figure's title (what was analysed).

    Returns:
        The figure: one axes (two with the close-up), one marker line per set on each.
    """
    labels = _names(len(eigs), labels, "eigenvalue sets", prefix="set")
    region = _euler_region if region is None else region
    scale = 1.0 if step is None else step
    zs = []
    for e in eigs:
        z = np.asarray(e, dtype=np.complex128).ravel() * scale
        zs.append(z[np.isfinite(z)])
    every = np.concatenate(zs) if zs else np.zeros(0, complex)
    far = every.size > 0 and np.abs(every).max() > inset_beyond
    fig = Figure(figsize=(9.5 if far else 5.5, 5.6 + 0.25 * len(zs)), layout="constrained")
    suptitle(fig, title)
    axes = list(fig.subplots(1, 2 if far else 1, squeeze=False)[0])
    core = region_box(region)
    symbol = "z" if step is None else f"({step:g} λ)"
    for n, ax in enumerate(axes):
        near = n == 1
        xlim, ylim = _window(np.zeros(0) if near else every, core)
        _draw_region(ax, region, None if near else region_label, xlim, ylim)
        for i, (z, label) in enumerate(zip(zs, labels)):
            inside = int((region(z) <= 1.0 + 1e-12).sum())
            ax.plot(z.real, z.imag, "o", ms=4, alpha=0.8, color=f"C{i % 10}",
                    label=None if near else f"{label} ({inside}/{z.size} inside)")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_xlabel(f"Re {symbol}")
        ax.set_ylabel(f"Im {symbol}")
        ax.grid(alpha=0.3)
        if far:
            ax.set_title("close-up of the region" if near else "every computed eigenvalue", fontsize=9)
    fig.legend(loc="outside lower center", fontsize=8, ncols=min(3, len(zs) + 1))
    return fig


def plot_step_spectra(t: np.ndarray, z: Sequence[np.ndarray], radius: np.ndarray, dt: np.ndarray,
                      real_axis_limit: float | None, region: Region | None, region_label: str,
                      title: str | None = None) -> Figure:
    """The spectra of a continuous block along its solver's steps, against the method's region.

    Left: every h_k λ (colour: the step's time t_k) over the stability region {|R(z)| <= 1}. Right:
    the spectral radius ρ(J_k) over t_k, and the largest |λ| a step dt_k can take on the negative real
    axis, real_axis_limit / dt_k (both in 1 / time: where the first crosses the second the step is at
    the edge of stability).

    Args:
        t: the time t_k of each row (R,) (one row per step and sample).
        z: per row the computed h_k λ (complex arrays).
        radius: per row ρ(J_k) (R,).
        dt: per row the step dt_k (R,).
        real_axis_limit: where the region meets the negative real axis (None: unknown, line left out).
        region: z -> |R(z)| of the method (None: no region drawn).
        region_label: legend label of the region.
        title: the figure's title (what was analysed).

    Returns:
        The figure: the z-plane axes, its colour bar and the over-t axes.
    """
    t, radius, dt = (np.asarray(v, dtype=np.float64) for v in (t, radius, dt))
    fig = Figure(figsize=(11.0, 5.0), layout="constrained")
    suptitle(fig, title)
    ax, over_t = fig.subplots(1, 2, gridspec_kw={"wspace": 0.1})
    points = np.concatenate([np.asarray(v, dtype=np.complex128) for v in z]) if len(z) else np.zeros(0, complex)
    times = np.concatenate([np.full(len(v), tk) for v, tk in zip(z, t)]) if len(z) else np.zeros(0)
    xlim, ylim = _window(points, region_box(_euler_region if region is None else region))  # no region: Euler's scale
    if region is not None:
        _draw_region(ax, region, region_label, xlim, ylim)
    marks = ax.scatter(points.real, points.imag, c=times, s=14, cmap="viridis", label="h_k λ")
    fig.colorbar(marks, ax=ax, label="t_k (start of the step)", shrink=0.8, pad=0.03)
    ax.set(xlim=xlim, ylim=ylim, aspect="equal", xlabel="Re h_k λ", ylabel="Im h_k λ")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize=8, ncols=2)
    over_t.plot(t, radius, "o", ms=4, label="spectral radius ρ(J_k), every sample")
    if real_axis_limit is not None:
        order = np.argsort(t, kind="stable")
        over_t.plot(t[order], real_axis_limit / dt[order], "--", label="stability limit on the real axis / dt_k")
    over_t.set_yscale(choose_scale(np.concatenate([radius, real_axis_limit / dt if real_axis_limit else radius])))
    over_t.set(xlabel="t", ylabel="1 / time")
    over_t.grid(alpha=0.3, which="both")
    over_t.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12), fontsize=8)
    return fig


def plot_indices_over_time(t: np.ndarray, indices: Mapping[str, np.ndarray], title: str | None = None) -> Figure:
    """Stiffness indices of a classic ODE problem along its solution, one row per index.

    Args:
        t: times (T,).
        indices: label -> values (T,), e.g. "spectral radius ρ(J)"; the label is the y-axis label.
        title: figure title.

    Returns:
        The figure: one axes and one line per index, sharing t. An index whose finite values are
        positive and span more than a decade gets a log y axis, any other a linear one.
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
        ax.set_yscale(choose_scale(values))
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[-1].set_xlabel("t")
    suptitle(fig, title)
    return fig


__all__ = ["plot_correlation_heatmaps", "plot_depth_profiles", "plot_eigenvalues",
           "plot_indices_over_time", "plot_step_spectra", "region_box", "spearman_text", "suptitle"]
