"""A training history for people: one plain line per epoch, and the figure of the whole run.

The epoch line is logged (logger "dia_ode.engine.trainer"), not drawn by tqdm, so it reads the same
in a terminal and in a scheduler's log file; the CLI prints it. Columns come from the row itself
(every train_* and val_* metric a task reports, a regulariser's included), so a new task or loss
term needs no change here.
"""

from __future__ import annotations

import math
from pathlib import Path

from dia_ode.rundir import choose_scale, save_figure

LABELS = {"loss": "loss", "acc": "accuracy", "reg": "regulariser", "nfe_forward": "forward",
          "nfe_backward": "backward (adjoint)", "nfe_eval": "evaluation"}


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def epoch_line(row: dict, epochs: int, nfe: bool = False) -> str:
    """One line per epoch, e.g. (a continuous model with its solver record)
    `epoch 3/30  train_loss 0.412  val_acc 0.88  lr 0.095  8.1s  nfe 14.0/0.0  max 20 rej 0.12 stiff 3% hλ 0.41`.

    A metric that is NaN (undefined for this data) is left out; undefined_note says so once.

    Args:
        row: one metrics.jsonl row.
        epochs: the run's total.
        nfe: append the mean forward/backward vector-field evaluations per batch (continuous models) and
            the solver record where the row has it (solvers.solver_record: the most evaluations one sample
            needed, rejected steps per sample, the stiff fraction, the median h·λ; undefined ones left out).
    """
    groups = [f"epoch {row['epoch']}/{epochs}"]
    for split in ("train", "val"):
        cells = [f"{k} {_number(v)}" for k, v in row.items() if k.startswith(f"{split}_") and not _undefined(v)]
        if cells:
            groups.append(" ".join(cells))
    groups += [f"lr {_number(row['lr'])}", f"{row['seconds']:.1f}s"]
    if nfe:
        groups.append(f"nfe {row['nfe_forward']:.1f}/{row['nfe_backward']:.1f}")
        record = [f"{word} {fmt.format(row[key])}" for key, word, fmt in RECORD_CELLS
                  if key in row and not _undefined(row[key])]
        if record:
            groups.append(" ".join(record))
    return "  ".join(groups)


# the solver record's cells in the epoch line: key, word, format
RECORD_CELLS = (("nfe_forward_max", "max", "{:.0f}"), ("rejected_steps", "rej", "{:.2g}"),
                ("stiff_fraction", "stiff", "{:.0%}"), ("h_lambda_median", "hλ", "{:.3g}"))


def _undefined(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def undefined_note(row: dict, said: set[str]) -> str | None:
    """One line naming the metrics of `row` that are NaN and not named before, or None when there are none.

    The trainer logs it beside the epoch line, so a metric a split cannot define (COCO's AP of large
    objects on scenes without any) is explained once instead of printed as nan every epoch.

    Args:
        row: one metrics.jsonl row.
        said: the metrics named so far; the new ones are added.
    """
    # the metrics of the splits only: the solver record is undefined by construction where no test runs
    new = [key for key, value in row.items()
           if key.startswith(("train_", "val_")) and _undefined(value) and key not in said]
    said.update(new)
    if not new:
        return None
    return (f"not printed while undefined (NaN): {', '.join(new)} (the split has nothing they measure, "
            f"e.g. no objects of that size)")


def label(name: str) -> str:
    """A metric's axis label: a word, never a raw JSON key."""
    return LABELS.get(name, name.replace("_", " "))


# panels per row of the training figure: a detection run's eight metrics in one row made it 4,300 px wide
MAX_COLUMNS = 3
SPLITS = (("train", "train"), ("val", "validation"))  # metrics.jsonl prefix, legend word


def _defined_series(history: list[dict], name: str) -> list[tuple[int, str, list[float]]]:
    """(colour index, legend word, values per epoch) of each split that reports `name` in some epoch."""
    found = []
    for color, (prefix, word) in enumerate(SPLITS):
        series = [r.get(f"{prefix}_{name}", math.nan) for r in history]
        if not all(math.isnan(v) for v in series):  # a split that never reports it (diffusion's per quarter)
            found.append((color, word, series))
    return found


def plot_history(history: list[dict], metric_names: tuple[str, ...], figures_dir: Path, title: str = "",
                 nfe: bool = False) -> None:
    """One panel per metric (train and val over the epochs), plus one of NFE per batch for continuous
    models and one of their stiffness record, as figures/training.png|pdf; at most MAX_COLUMNS panels a row.

    A metric that no split reports in any epoch (NaN throughout: ap_medium on scenes without medium
    objects) gets no panel; the figure names it at the bottom.

    Args:
        history: the metrics.jsonl rows.
        metric_names: the task's metrics, e.g. ("loss", "acc").
        figures_dir: where the figure goes.
        title: the figure's title, e.g. "00003-train-odenet-digits: odenet on digits".
        nfe: add the NFE panel (nfe_forward, nfe_backward per epoch), and the stiffness panel where the
            rows carry a stiffness record (draw_stiffness_record).
    """
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state in a library
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    drawn = {name: series for name in metric_names if (series := _defined_series(history, name))}
    stiffness = nfe and has_stiffness_record(history)
    panels = max(1, len(drawn) + int(nfe) + int(stiffness))
    columns = min(MAX_COLUMNS, panels)
    rows = -(-panels // columns)
    fig = Figure(figsize=(4.5 * columns, 3.4 * rows + 0.4), layout="constrained")  # room for the title
    grid = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in grid[panels:]:  # the unused cells of the last row
        ax.remove()
    axes = grid[:panels]
    for ax, (name, splits) in zip(axes, drawn.items()):
        for color, word, series in splits:
            ax.plot(epochs, series, marker="o", label=word, color=f"C{color}")
        values = [v for _, _, series in splits for v in series]
        ax.set(xlabel="epoch", ylabel=label(name), title=label(name), yscale=choose_scale(values))
    if stiffness:
        draw_stiffness_record(axes[-1], history)
    if nfe:
        ax = axes[-1 - int(stiffness)]
        values = []
        for key in ("nfe_forward", "nfe_backward"):
            series = [r.get(key, math.nan) for r in history]
            ax.plot(epochs, series, marker="o", label=label(key))
            values += series
        ax.set(xlabel="epoch", ylabel="evaluations of f per batch", title="solver cost (NFE)",
               yscale=choose_scale(values))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole, even one
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    skipped = [label(name) for name in metric_names if name not in drawn]
    if skipped:
        fig.supxlabel(f"not drawn: {', '.join(skipped)} (undefined, NaN, in every epoch)", fontsize="small")
    if title:
        fig.suptitle(title, wrap=True)
    save_figure(fig, figures_dir, "training")


def has_stiffness_record(history: list[dict]) -> bool:
    """Whether some epoch's solver record has a stiffness reading (a stiffness test ran)."""
    return any(not _undefined(r.get(key, math.nan)) for r in history for key in ("stiff_fraction", "h_lambda_median"))


def draw_stiffness_record(ax, history: list[dict]) -> None:
    """The stiff fraction and the median h·λ of the training solves per epoch on one axis (both are
    dimensionless; a stiff fraction near 1 or a median h·λ near the method's bound means stability, not
    accuracy, sets the learned dynamics' steps)."""
    epochs = [r["epoch"] for r in history]
    for key, word, color in (("stiff_fraction", "stiff fraction of accepted steps", "C3"),
                             ("h_lambda_median", "median h·λ (Hairer's estimate)", "C4")):
        ax.plot(epochs, [r.get(key, math.nan) for r in history], marker="o", label=word, color=color)
    ax.set(xlabel="epoch", ylabel="stiff fraction, h·λ", title="stiffness of the learned dynamics")


def stiffness_record_figure(history: list[dict], title: str = ""):
    """A figure of draw_stiffness_record and the NFE per sample (mean and most) beside it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9.5, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    draw_stiffness_record(left, history)
    epochs = [r["epoch"] for r in history]
    for key, word in (("nfe_forward", "mean per sample"), ("nfe_forward_max", "most for one sample")):
        right.plot(epochs, [r.get(key, math.nan) for r in history], marker="o", label=word)
    right.set(xlabel="epoch", ylabel="evaluations of f per forward", title="solver cost (NFE)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, wrap=True)
    return fig
