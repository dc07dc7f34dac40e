"""Budget presets of the reproduction report: how much each claim may train.

smoke: CI, every claim end to end in a few minutes on 2 cores (numbers that say nothing, files that
exist); cpu: a 2-core machine in about two hours, >= 3 seeds; full: a GPU or a cluster, the papers'
scale where the data allow it. A claim reads the fields it needs and scales its runs with them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from dia_ode.data import DataError, load_test_split


@dataclass(frozen=True)
class Budget:
    """One preset.

    Attributes:
        name: "smoke", "cpu" or "full".
        seeds: the seeds every statistic is taken over.
        epochs: training epochs of a claim's main runs.
        datasets: the datasets a claim may use, in order of preference (fashion-mnist and cifar10 are
            skipped, with a note, where their files are missing).
        width: base width of the CNN backbones (resnet base_width, odenet width).
        samples: test samples an analysis traces.
        description: one line for --help and the report header.
    """

    name: str
    seeds: tuple[int, ...]
    epochs: int
    datasets: tuple[str, ...]
    width: int
    samples: int
    description: str


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    Budget("smoke", seeds=(0, 1), epochs=1, datasets=("digits",), width=4, samples=32,
           description="CI: every claim end to end in a few minutes; the numbers say nothing"),
    Budget("cpu", seeds=(0, 1, 2), epochs=15, datasets=("digits", "fashion-mnist"), width=16, samples=256,
           description="2 CPU cores in about two hours, 3 seeds"),
    Budget("full", seeds=(0, 1, 2, 3, 4), epochs=164, datasets=("cifar10", "fashion-mnist"), width=16,
           samples=1024, description="a GPU or a cluster: the papers' epochs, 5 seeds"),
)}


def get_budget(name: str) -> Budget:
    """The preset called `name`; ValueError lists the valid ones."""
    if name not in BUDGETS:
        raise ValueError(f"unknown budget '{name}'; valid: {', '.join(BUDGETS)}")
    return BUDGETS[name]


@functools.lru_cache(maxsize=None)  # claims ask once per runs() and measure(); the files do not come and go
def dataset_available(name: str) -> bool:
    """Whether the test files of dataset `name` load here from their default place (digits always: it
    is embedded; fashion-mnist and cifar10 may be missing)."""
    try:
        load_test_split(name)
    except DataError:
        return False
    return True


def first_dataset(budget: Budget) -> str | None:
    """The first of budget.datasets available here (dataset_available); None when none is (a claim is
    then not testable here)."""
    return next((name for name in budget.datasets if dataset_available(name)), None)
