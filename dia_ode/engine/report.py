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

    Args:
        row: one metrics.jsonl row.
        epochs: the run's total.
        nfe: append the mean forward/backward vector-field evaluations per batch (continuous models).
    """
    groups = [f"epoch {row['epoch']}/{epochs}"]
    for split in ("train", "val"):
        cells = [f"{k} {_number(v)}" for k, v in row.items() if k.startswith(f"{split}_")]
        if cells:
            groups.append(" ".join(cells))
    groups += [f"lr {_number(row['lr'])}", f"{row['seconds']:.1f}s"]
    if nfe:
        groups.append(f"nfe {row['nfe_forward']:.1f}/{row['nfe_backward']:.1f}")
    return "  ".join(groups)


def label(name: str) -> str:
    """A metric's axis label: a word, never a raw JSON key."""
    return LABELS.get(name, name.replace("_", " "))


def plot_history(history: list[dict], metric_names: tuple[str, ...], figures_dir: Path, title: str = "",
                 nfe: bool = False) -> None:
    """One panel per metric (train and val over the epochs), plus one of NFE per batch for continuous
    models, as figures/training.png|pdf.

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
    panels = len(metric_names) + int(nfe)
    fig = Figure(figsize=(4.5 * panels, 3.6), layout="constrained")  # room for the title over the panels
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, name in zip(axes, metric_names):
        values = []
        for color, (prefix, split) in enumerate((("train", "train"), ("val", "validation"))):
            series = [r.get(f"{prefix}_{name}", math.nan) for r in history]
            if all(math.isnan(v) for v in series):  # a metric only evaluation reports (diffusion's per quarter)
                continue
            ax.plot(epochs, series, marker="o", label=split, color=f"C{color}")
            values += series
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
        if ax.get_legend_handles_labels()[0]:  # a metric no split reported (detection's undefined AP_large)
            ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, figures_dir, "training")
