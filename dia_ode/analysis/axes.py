"""Axis choices a figure makes from its data rather than by habit.

A log axis suits a quantity that spans decades (NFE of an adaptive solver from 8 to 800, an
eigenvalue spectrum); within one decade it only compresses the differences a reader is looking for
and makes tick labels hard to read (NFE 6 vs 26, step sizes 0.3 to 0.9), so it is linear there.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

DECADE = 10.0


def choose_scale(values: Iterable[float], *, span: float = DECADE) -> str:
    """"log" when the positive finite values span more than `span` (max / min > span), else "linear".

    Values that are zero, negative or not finite cannot sit on a log axis: any of the first two makes
    the scale linear; non-finite values are ignored.

    Args:
        values: every value the axis will show (means and the ends of their error bars).
        span: the ratio above which log is chosen; a decade by default.

    Example:
        >>> choose_scale([6, 8, 26]), choose_scale([8, 120, 900]), choose_scale([-1, 100])
        ('linear', 'log', 'linear')
    """
    array = np.asarray([float(v) for v in values], dtype=float)
    array = array[np.isfinite(array)]
    if array.size == 0 or (array <= 0).any():
        return "linear"
    return "log" if array.max() / array.min() > span else "linear"
