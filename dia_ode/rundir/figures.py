"""Figures of a run directory: each one as PNG and PDF under figures/ (made with the first figure)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_figure(fig: Any, figures_dir: str | os.PathLike, name: str) -> list[Path]:
    """Save a matplotlib Figure (built without pyplot, so nothing needs closing) as PNG and PDF."""
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    paths = [Path(figures_dir) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=120, bbox_inches="tight")
    return paths
