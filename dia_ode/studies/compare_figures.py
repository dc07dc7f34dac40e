"""compare's figures from the per-model aggregates: accuracy vs NFE with error bars, NFE over training
and step sizes over depth with their spread over seeds.

Every title names the dataset, the number of seeds and the run; error bars and bands are ± one sample
std over seeds (the axis labels say so); an axis is logarithmic only where its values span more than a
decade (rundir.choose_scale); the legend sits outside the axes, so it never covers data.
"""

from __future__ import annotations

import numpy as np

from dia_ode.rundir import choose_scale
from dia_ode.analysis.intervals import Interval

SPREAD = "± std over seeds"


def compare_figures(aggregates: list[dict], run_name: str | None = None) -> list[tuple[str, object]]:
    """(name, figure) pairs: accuracy_vs_nfe, nfe_over_training, step_sizes.

    Args:
        aggregates: compare_stats.aggregate_rows' entries.
        run_name: the compare run directory's name, for the titles.
    """
    context = _context(aggregates, run_name)
    spread = any(a["n"] > 1 for a in aggregates)
    return [("accuracy_vs_nfe", _accuracy_vs_nfe(aggregates, context, spread)),
            ("nfe_over_training", _nfe_over_training(aggregates, context, spread)),
            ("step_sizes", _step_sizes(aggregates, context, spread))]


def _context(aggregates: list[dict], run_name: str | None) -> str:
    """"digits, 3 seeds per model, run 00012-compare-digits"."""
    datasets = ", ".join(sorted({str(a.get("dataset")) for a in aggregates}))
    counts = sorted({a["n"] for a in aggregates})
    many = counts[-1] > 1
    seeds = (f"{counts[0]} seed{'s' if many else ''} per model" if len(counts) == 1
             else f"{counts[0]}-{counts[-1]} seeds per model")
    return ", ".join([datasets, seeds] + ([f"run {run_name}"] if run_name else []))


def _axes(title: str, context: str):
    from matplotlib.figure import Figure  # not pyplot: no global figure state in a library

    fig = Figure(figsize=(6.4, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_title(f"{title}\n{context}", fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(ax, xvalues: list[float] | None, yvalues: list[float] | None) -> None:
    """Scales from the data (None: linear, as for epochs, normalised depth and accuracies, which live
    in [0, 1] and are compared by differences), legend outside."""
    ax.set_xscale("linear" if xvalues is None else choose_scale(xvalues))
    ax.set_yscale("linear" if yvalues is None else choose_scale(yvalues))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8, frameon=False)


def _marker(aggregate: dict) -> str:
    return "o" if aggregate["kind"] == "continuous" else "s"


def _std(value: float | None) -> float | None:
    return value if value is not None and np.isfinite(value) and value > 0 else None


def _accuracy_vs_nfe(aggregates: list[dict], context: str, spread: bool):
    fig, ax = _axes("Test accuracy vs function evaluations", context)
    xs = []
    for a in aggregates:
        acc, nfe = (Interval.from_dict(a["intervals"][k]) for k in ("test_acc", "nfe_forward"))
        xerr, yerr = _std(nfe.std), _std(acc.std)
        ax.errorbar(nfe.mean, acc.mean, xerr=xerr, yerr=yerr, fmt=_marker(a), capsize=3,
                    label=f"{a['model']} ({a['kind']}, n={a['n']})")
        xs += [nfe.mean - (xerr or 0), nfe.mean + (xerr or 0)]
    suffix = f" ({SPREAD})" if spread else ""
    ax.set(xlabel=f"NFE per forward pass on the test set{suffix}", ylabel=f"test accuracy{suffix}")
    _finish(ax, xs, None)
    return fig


def _band(ax, x, mean, std, **style) -> list[float]:
    """A mean line with a shaded ± std band where the std is known; returns the y-values shown."""
    x, mean, std = (np.asarray(v, dtype=float) for v in (x, mean, std))
    line, = ax.plot(x, mean, **style)
    known = np.isfinite(std)
    if known.any():
        ax.fill_between(x[known], (mean - std)[known], (mean + std)[known], color=line.get_color(), alpha=0.2,
                        linewidth=0)
    return [*mean.tolist(), *(mean - std)[known].tolist(), *(mean + std)[known].tolist()]


def _nfe_over_training(aggregates: list[dict], context: str, spread: bool):
    from matplotlib.ticker import MaxNLocator

    fig, ax = _axes("Function evaluations over training", context)
    ys = []
    for a in aggregates:
        curve = a["nfe_history"]
        epochs = list(range(1, len(curve["mean"]) + 1))
        ys += _band(ax, epochs, curve["mean"], curve["std"], marker=".", label=f"{a['model']} (n={a['n']})")
    ax.set(xlabel="epoch", ylabel="NFE per training forward pass" + (f" (mean, band {SPREAD})" if spread else ""))
    _finish(ax, None, ys)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # after the scale, which resets it
    return fig


def _step_sizes(aggregates: list[dict], context: str, spread: bool):
    fig, ax = _axes("Step sizes over depth / time", context)
    ys = []
    for a in aggregates:
        steps = a["steps"]
        if steps is None:
            continue
        label = f"{a['model']} (n={a['n']}{', binned' if steps['binned'] else ''})"
        h, std = np.asarray(steps["h"], dtype=float), np.asarray(steps["h_std"], dtype=float)
        yerr = np.where(np.isfinite(std), std, 0.0) if np.isfinite(std).any() else None
        # Points, not lines: a line between an adaptive solver's few steps would read as a trend.
        ax.errorbar(steps["s"], h, yerr=yerr, fmt=_marker(a), markersize=3, capsize=2, label=label)
        ys += h.tolist() + ((h - yerr).tolist() + (h + yerr).tolist() if yerr is not None else [])
    ax.set(xlabel="depth / time, normalised (k / L or t / T)",
           ylabel="mean step h_k (continuous: dt · a(t))" + (f" ({SPREAD})" if spread else ""))
    _finish(ax, None, ys)
    return fig
