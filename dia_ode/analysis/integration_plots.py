"""Figures of one ODE solve of the controller lab (`dia-ode integrate`): the solution, the step sizes
with the rejected steps marked, and Hairer's stiffness estimate h*lambda against the method's bound,
with the stiff switch's changes of method marked."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from dia_ode.analysis.plots import legend_below
from dia_ode.rundir import choose_scale


def plot_solution(t: np.ndarray, y: np.ndarray, title: str, reference: np.ndarray | None = None) -> Figure:
    """Each component of y (T, n) over t (T,), the reference solution dashed where given."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    for i in range(y.shape[1]):
        ax.plot(t, y[:, i], color=f"C{i % 10}", label=f"y{i + 1}")
        if reference is not None:
            ax.plot(t, reference[:, i], color="black", linestyle="--", linewidth=0.7)
    ax.set_xlabel("t")
    ax.set_ylabel("y")
    ax.set_title(title + ("; dashed: scipy Radau reference" if reference is not None else ""))
    if y.shape[1] <= 8:
        ax.legend(fontsize="small")
    return fig


def _stiff_spans(t: np.ndarray, h: np.ndarray, stiff: np.ndarray) -> list[tuple[float, float]]:
    """The time intervals covered by accepted steps flagged stiff, merged where they touch."""
    spans: list[tuple[float, float]] = []
    for start, step, flag in zip(t, h, stiff):
        if not flag:
            continue
        if spans and np.isclose(spans[-1][1], start):
            spans[-1] = (spans[-1][0], start + step)
        else:
            spans.append((start, start + step))
    return spans


def _switches(t: np.ndarray, methods: Sequence[str]) -> list[tuple[float, str]]:
    """(time, method switched to) of every attempted step whose method differs from the step before."""
    return [(float(t[i]), methods[i]) for i in range(1, len(methods)) if methods[i] != methods[i - 1]]


def _mark_switches(ax, t: np.ndarray, methods: Sequence[str]) -> None:
    """A vertical line where the method switched: solid onto a method other than the first, dotted back."""
    for time, method in _switches(t, methods):
        back = method == methods[0]
        ax.axvline(time, color="black", linewidth=0.9, linestyle=":" if back else "-",
                   label=f"switch {'back ' if back else ''}to {method}")


def _h_lambda_scale(*series: np.ndarray) -> str:
    """Log where the positive values of h·λ (and the bound) span more than a decade, else linear.

    Why the positive values only: h·λ is a modulus, and a single 0 would keep linear an axis that spans
    decades (Robertson's runs from about 1 to 4e14 and drew flat at 0 until its last steps); on the log
    axis such a point is left out.
    """
    values = np.concatenate([np.ravel(v) for v in series])
    return choose_scale(values[np.isfinite(values) & (values > 0)])


def plot_steps_and_stiffness(trace: dict[str, np.ndarray], bound: float, title: str,
                             methods: Sequence[str] | None = None) -> Figure:
    """Two panels over t: the step size h (accepted steps as a line, rejected ones as red crosses), and
    h*lambda of the accepted steps against the stability bound; the intervals flagged stiff are shaded and,
    where `methods` shows the stiff switch at work, every switch of method is a vertical line.

    Args:
        trace: one sample's Trace.of(...) as numpy arrays (t, h, accepted, h_lambda, stiff, and h_rho
            where the exact spectrum was asked for).
        bound: the stiffness threshold (numerics.StiffnessTest.threshold).
        title: the solve in words.
        methods: the method of every row of `trace` (Trace.method of this sample), or None.

    Returns:
        The figure: the two axes (h·λ on a log axis where it spans more than a decade) and one legend
        below them.
    """
    t, h, accepted = trace["t"], trace["h"], trace["accepted"].astype(bool)
    fig = Figure(figsize=(7.5, 6.0), layout="constrained")
    fig.suptitle(title, wrap=True)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.semilogy(t[accepted], h[accepted], color="C0", linewidth=1, label="accepted step h")
    if (~accepted).any():
        top.semilogy(t[~accepted], h[~accepted], "x", color="C3", markersize=4, label="rejected step h")
    top.set_ylabel("step size h")
    h_lambda = trace["h_lambda"][accepted]
    if np.isfinite(h_lambda).any():
        bottom.plot(t[accepted], h_lambda, color="C1", linewidth=1, label="h·λ (Hairer's estimate)")
    else:
        bottom.text(0.5, 0.5, "the method has no stiffness estimate", transform=bottom.transAxes, ha="center")
    h_rho = trace.get("h_rho", np.full_like(h, np.nan))[accepted]
    if np.isfinite(h_rho).any():
        bottom.plot(t[accepted], h_rho, color="C2", linewidth=0.8, linestyle=":", label="h·ρ(J) (exact)")
    bottom.axhline(bound, color="black", linestyle="--", linewidth=0.8,
                   label=f"stiffness threshold {bound:.3g} (the real stability bound x Hairer's margin)")
    bottom.set_yscale(_h_lambda_scale(h_lambda, h_rho, np.array([bound])))
    bottom.set_ylabel("h·λ")
    bottom.set_xlabel("t")
    spans = _stiff_spans(t[accepted], h[accepted], trace["stiff"][accepted].astype(bool))
    for ax in (top, bottom):
        for n, (start, end) in enumerate(spans):
            ax.axvspan(start, end, color="C1", alpha=0.12, linewidth=0,
                       label="flagged stiff (the stiffness test's streak rule)" if n == 0 else None)
        if methods is not None:
            _mark_switches(ax, t, methods)
        ax.grid(alpha=0.3, which="major")
    legend_below(fig)
    return fig


def plot_work_precision(rows: list[dict]) -> Figure:
    """Error against function evaluations, one panel per problem, one line per solver over the
    tolerances (rows of studies.bench_controllers; failed solves and errors of 0 are left out)."""
    problems = list(dict.fromkeys(row["problem"] for row in rows))
    fig = Figure(figsize=(5.2 * len(problems), 4.4), layout="constrained")
    axes = fig.subplots(1, len(problems), squeeze=False)[0]
    solvers = list(dict.fromkeys(row["solver"] for row in rows))
    for ax, problem in zip(axes, problems):
        for i, solver in enumerate(solvers):
            points = sorted((row["nfe"], row["error"]) for row in rows
                            if row["problem"] == problem and row["solver"] == solver and row["result"] == "success"
                            and row["error"] and np.isfinite(row["error"]))
            if points:
                nfe, error = zip(*points)
                style = "-o" if solver.startswith("ours") else "--s"
                ax.loglog(nfe, error, style, color=f"C{i % 10}", markersize=4, linewidth=1, label=solver)
        ax.set_title(problem, fontsize="medium")
        ax.set_xlabel("function evaluations")
        ax.set_ylabel("max |y - y_ref| / (1 + |y_ref|)")
    axes[0].legend(fontsize="x-small")
    fig.suptitle("Work-precision: one point per tolerance (solid: this project's controllers)")
    return fig


def plot_objective(history: list[float]) -> Figure:
    """The DIA controller's training objective (nfe relative to PI + error penalty) over iterations."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    values = np.array(history, dtype=float)
    ax.plot(np.arange(1, len(values) + 1), np.where(np.isfinite(values), values, np.nan), "-o", markersize=3)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=0.8, label="PI (J = 1)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("J = nfe / nfe(PI) + error penalty")
    ax.set_title("DIA controller training (failed candidates not drawn)")
    ax.legend(fontsize="small")
    return fig
