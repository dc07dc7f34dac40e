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
    """`epoch 3/30  train_loss 0.412 train_acc 0.871  val_loss 0.398 val_acc 0.88  lr 0.095  8.1s  nfe 14.0/0.0`.

    A metric that is NaN (undefined for this data) is left out; undefined_note says so once.

    Args:
        row: one metrics.jsonl row.
        epochs: the run's total.
        nfe: append the mean forward/backward vector-field evaluations per batch (continuous models).
    """
    groups = [f"epoch {row['epoch']}/{epochs}"]
    for split in ("train", "val"):
        cells = [f"{k} {_number(v)}" for k, v in row.items() if k.startswith(f"{split}_") and not _undefined(v)]
        if cells:
            groups.append(" ".join(cells))
    groups += [f"lr {_number(row['lr'])}", f"{row['seconds']:.1f}s"]
    if nfe:
        groups.append(f"nfe {row['nfe_forward']:.1f}/{row['nfe_backward']:.1f}")
    return "  ".join(groups)


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
    new = [key for key, value in row.items() if _undefined(value) and key not in said]
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
    models, as figures/training.png|pdf; at most MAX_COLUMNS panels a row.

    A metric that no split reports in any epoch (NaN throughout: ap_medium on scenes without medium
    objects) gets no panel; the figure names it at the bottom.

    Args:
        history: the metrics.jsonl rows.
        metric_names: the task's metrics, e.g. ("loss", "acc").
        figures_dir: where the figure goes.
        title: the figure's title, e.g. "00003-train-odenet-digits: odenet on digits".
        nfe: add the NFE panel (nfe_forward, nfe_backward per epoch).
    """
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state in a library
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    drawn = {name: series for name in metric_names if (series := _defined_series(history, name))}
    panels = max(1, len(drawn) + int(nfe))
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
    if nfe:
        ax = axes[-1]
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
