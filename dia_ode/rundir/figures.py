"""Figures of a run directory: each one as PNG and PDF under figures/ (made with the first figure),
and the axis scale a figure picks from its data rather than by habit.

A log axis suits a quantity that spans decades (NFE of an adaptive solver from 8 to 800, an
eigenvalue spectrum); within one decade it only compresses the differences a reader is looking for
and makes tick labels hard to read (NFE 6 vs 26, step sizes 0.3 to 0.9), so it is linear there.
choose_scale lives here, below engine and analysis, so the training figure and the analysis figures
decide alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

DECADE = 10.0


def save_figure(fig: Any, figures_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save a matplotlib Figure (built without pyplot, so nothing needs closing) as PNG and PDF."""
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    paths = [Path(figures_dir) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    return paths


def choose_scale(values: Iterable[float], *, span: float = DECADE) -> str:
    """"log" when the positive finite values span more than `span` (max / min > span), else "linear".

    Values that are zero, negative or not finite cannot sit on a log axis: any of the first two makes
    the scale linear; non-finite values (a NaN for a metric an epoch lacks) and non-numbers are ignored.

    Args:
        values: every value the axis will show (means and the ends of their error bars).
        span: the ratio above which log is chosen; a decade by default.

    Example:
        >>> choose_scale([6, 8, 26]), choose_scale([8, 120, 900]), choose_scale([-1, 100])
        ('linear', 'log', 'linear')
    """
    array = np.asarray([float(v) for v in values if _is_number(v)], dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0 or (array <= 0).any():
        return "linear"
    return "log" if array.max() / array.min() > span else "linear"


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
