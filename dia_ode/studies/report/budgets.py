"""Budget presets of the reproduction report: how much each claim may train.

smoke: CI, every claim end to end in a few minutes on 2 cores (numbers that say nothing, files that
exist); cpu: a 2-core machine in about 70 minutes, >= 3 seeds; full: a GPU or a cluster, the papers'
scale where the data allow it. A claim reads the fields it needs and scales its runs with them.

Two budgets are sized for one question, the dose-response of the cross-layer correlation: the per-sample
gate r, the gates' movement and their spread over images against SGD steps, on all of Fashion-MNIST
(claims/correlation.py, claims/correlation_dose.py). They name the claims they size (`claims`); every
other claim is measured at the `fallback` budget, or not at all where there is none (sized_budget):

- long: a CPU machine for hours (a resumable study): se_resnet20, 3 seeds, 45 epochs of batch 128 on
  58,800 training images (a 2% validation split keeps the per-epoch validation cheap), 460 steps an
  epoch, so the per-epoch records lie at 460, 920, ... 20,700 steps: from the low end of the cpu
  budget's digits runs (about 300-2,300 steps) to a third of the paper's 64,000. The first epochs are
  the dose-response's low end (no sub-epoch record: the trainer records per epoch), and the untrained
  network, step 0, is its null. The other claims run at the cpu budget, so a long study is a whole report.
- gpu: ten minutes of one GPU: the same dose-response with 5 seeds (the runs take device cuda; with
  `--launcher local:5` the seeds train at once: a network this small leaves the GPU waiting on kernel
  launches, not arithmetic). The other claims are not measured: their budgets are cpu-sized.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch

from dia_ode.data import DataError, load_test_split

DOSE_CLAIM = "cross-layer-correlation"  # the claim the long and gpu budgets are sized for (by id: no claim import)


@dataclass(frozen=True)
class Budget:
    """One preset.

    Attributes:
        name: "smoke", "cpu", "full", "long" or "gpu".
        seeds: the seeds every statistic is taken over.
        epochs: training epochs of a claim's main runs.
        datasets: the datasets a claim may use, in order of preference (fashion-mnist and cifar10 are
            skipped, with a note, where their files are missing).
        width: base width of the CNN backbones (resnet base_width, odenet width).
        samples: test samples an analysis traces.
        description: one line for --help and the report header.
        batch_size: the global batch of the claims' runs; None: each model's recipe (TrainConfig's 64).
        val_fraction: the validation split of the claims' runs; None: TrainConfig's default.
        device: where the claims' runs train ("auto", "cpu", "cuda"); "cuda" is refused up front where
            torch sees no GPU (check_device).
        claims: the ids of the claims this budget is sized for; None: every claim.
        fallback: the budget every other claim is measured at; None: they are not measured.
    """

    name: str
    seeds: tuple[int, ...]
    epochs: int
    datasets: tuple[str, ...]
    width: int
    samples: int
    description: str
    batch_size: int | None = None
    val_fraction: float | None = None
    device: str = "auto"
    claims: tuple[str, ...] | None = None
    fallback: str | None = None

    def train_fields(self) -> dict:
        """The TrainConfig fields this budget sets on every run of its claims (batch_size, val_fraction,
        device), only those it sets: a budget that sets none leaves the runs' configs, and so their cache
        keys, as they were."""
        fields = {"batch_size": self.batch_size, "val_fraction": self.val_fraction}
        return {**{k: v for k, v in fields.items() if v is not None},
                **({"device": self.device} if self.device != "auto" else {})}


# 45 epochs x 460 steps (58,800 images / batch 128) = 20,700 SGD steps: see the module docstring
_LONG = Budget("long", seeds=(0, 1, 2), epochs=45, datasets=("fashion-mnist",), width=16, samples=256, batch_size=128,
               val_fraction=0.02, claims=(DOSE_CLAIM,), fallback="cpu",
               description="hours on a CPU, resumable: the cross-layer correlation against SGD steps (460 to 20,700, "
                           "se_resnet20, all of Fashion-MNIST, 3 seeds); the other claims at the cpu budget")

BUDGETS: dict[str, Budget] = {b.name: b for b in (
    Budget("smoke", seeds=(0, 1), epochs=1, datasets=("digits",), width=4, samples=32,
           description="CI: every claim end to end in a few minutes; the numbers say nothing"),
    Budget("cpu", seeds=(0, 1, 2), epochs=15, datasets=("digits", "fashion-mnist"), width=16, samples=256,
           description="2 CPU cores in about 70 minutes, 3 seeds"),
    Budget("full", seeds=(0, 1, 2, 3, 4), epochs=164, datasets=("cifar10", "fashion-mnist"), width=16,
           samples=1024, description="a GPU or a cluster: the papers' epochs, 5 seeds"),
    _LONG,
    dataclasses.replace(_LONG, name="gpu", seeds=(0, 1, 2, 3, 4), device="cuda", fallback=None,
                        description="ten minutes of one GPU (--launcher local:5): the long budget's dose-response "
                                    "with 5 seeds; the other claims are not measured"),
)}


def get_budget(name: str) -> Budget:
    """The preset called `name`; ValueError lists the valid ones."""
    if name not in BUDGETS:
        raise ValueError(f"unknown budget '{name}'; valid: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def sized_budget(budget: Budget, claim_id: str) -> Budget | None:
    """The budget claim `claim_id` runs and is measured at under `budget`: `budget` itself where it is
    sized for the claim (budget.claims is None or names it), else its fallback; None where it has none."""
    if budget.claims is None or claim_id in budget.claims:
        return budget
    return None if budget.fallback is None else get_budget(budget.fallback)


def unsized_reason(budget: Budget, claim_id: str) -> str:
    """Why claim `claim_id` is not measured under `budget` (sized_budget is None), and what would measure it."""
    return (f"the {budget.name} budget is sized for {', '.join(budget.claims or ())} alone and measures no other "
            f"claim; `dia-ode report --budget cpu --claims {claim_id}` (or --budget full) would test it")


def check_device(budget: Budget) -> None:
    """ValueError, in one line, where `budget` trains on cuda and torch sees no CUDA device here."""
    if budget.device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"the {budget.name} budget trains on cuda, and torch sees no CUDA device here; "
                         f"--budget long is its CPU counterpart (--dry-run lists the runs without a GPU)")


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
