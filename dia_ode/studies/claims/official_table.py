"""Claim: DIA improves four CIFAR-100 backbones by the official table's margins.

DIANet's official repository (gbup-group/DIANet, README "Results": the mean of five runs, reduction
r = 4; DIANet, arXiv 1905.10671) reports CIFAR-100 top-1 test accuracy (%), plain -> DIA: ResNet164
73.43 -> 76.67, PreResNet164 76.53 -> 78.20, WRN52-4 79.75 -> 80.99, ResNeXt101 8x32 81.18 -> 82.46.

Runs, at the full budget only and only where CIFAR-100 loads (elsewhere none, so nothing trains): each
backbone plain and with DIA, for every seed of the budget (five at full, as the paper's five runs), with
the recipe of its row in the official run_code.py and the defaults of its cifar.py: SGD, lr 0.1,
momentum 0.9, batch 128, random crop (padding 4) and flip, on all 50,000 training images (val_fraction 0:
cifar.py holds none out), the lr multiplied by gamma at fixed epochs (schedule "step"; TrainConfig keeps
the drops as fractions of the epochs), and per row (ROWS):
- ResNet164: 180 epochs, x0.1 at 60 / 120, weight decay 1e-4;
- PreResNet164: 164 epochs, x0.1 at 81 / 122, weight decay 1e-4;
- WRN-52-4: 200 epochs, x0.2 at 80 / 120 / 160, weight decay 5e-4, dropout 0.3;
- ResNeXt-101 8x32d: 300 epochs (cifar.py's default), x0.1 at 150 / 225, weight decay 5e-4.
The DIA networks are the official ones: r = 4 (the cell's default) and, for PreResNet164 and WRN-52-4, a
BatchNorm at the end of every branch (branch_bn=True, theory/dia.md), which their plain baselines lack.
Where the repository cannot follow the official protocol, RECIPE_GAPS says so in the notes.

Verdict, one part per row: dia_vs_se.accuracy_verdict on the paired difference dia - plain (test
accuracy, paired by seed) with the row's own paper gain as the threshold between "inconclusive" and "not
reproduced". Overall: reproduced when every row is; otherwise the first status in PRECEDENCE that a row
has (a row that rules the gain out decides against the table). "Not testable here" when runs() is empty
(a budget other than full, or no CIFAR-100), with what would test it and an estimate of its GPU-hours.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dia_ode.engine import TrainConfig
from dia_ode.models import create_model
from dia_ode.studies.claims.dia_vs_se import (accuracy_interval, accuracy_verdict, outcome_accuracy,
                                              paired_difference, unfinished_note)
from dia_ode.studies.report.budgets import Budget, dataset_available, get_budget
from dia_ode.studies.report.claim import (INCONCLUSIVE, NOT_REPRODUCED, NOT_TESTABLE, PRECONDITION_NOT_MET,
                                          REPRODUCED, AbstractClaim, ClaimResult, RunSpec, Verdict, study_config)

CLAIM_ID = "official-accuracy-table"
DATASET, CLASSES, TRAIN_IMAGES = "cifar100", 100, 50_000
FULL = "full"  # the budget that trains the papers' recipes
BATCH = 128  # cifar.py's --train-batch, given in run_code.py


@dataclass(frozen=True)
class OfficialRow:
    """One row of the official table with the recipe that produced it.

    Attributes:
        backbone: the row's name in the table.
        plain: registry name of the plain network.
        dia: registry name of the DIA network.
        paper: (plain, DIA) top-1 test accuracy as fractions (the table's % / 100).
        epochs: training epochs.
        drops: the epochs at which the lr is multiplied by gamma.
        gamma: the lr factor at each drop.
        weight_decay: SGD weight decay.
        options: model options of both networks.
        dia_options: model options of the DIA network only.
    """

    backbone: str
    plain: str
    dia: str
    paper: tuple[float, float]
    epochs: int
    drops: tuple[int, ...]
    gamma: float
    weight_decay: float
    options: dict = field(default_factory=dict)
    dia_options: dict = field(default_factory=dict)

    @property
    def gain(self) -> float:
        """The paper's dia - plain accuracy (fraction), to 4 decimals as the table prints it."""
        return round(self.paper[1] - self.paper[0], 4)

    def recipe(self) -> str:
        """"200 epochs, lr 0.1 x0.2 at 80/120/160, weight decay 0.0005, batch 128, dropout=0.3, DIA branch_bn=True"."""
        extra = "".join(f", {key}={value}" for key, value in self.options.items())
        extra += "".join(f", DIA {key}={value}" for key, value in self.dia_options.items())
        return (f"{self.epochs} epochs, lr 0.1 x{self.gamma} at {'/'.join(map(str, self.drops))}, weight decay "
                f"{self.weight_decay}, batch {BATCH}{extra}")

    def config(self, model: str, budget: Budget, seed: int) -> TrainConfig:
        """The TrainConfig of `model` (self.plain or self.dia) at `seed`: the row's recipe (module docstring)."""
        options = {**self.options, **(self.dia_options if model == self.dia else {})}
        return study_config(model, DATASET, budget, seed, options, epochs=self.epochs, batch_size=BATCH,
                            optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=self.weight_decay,
                            schedule="step", milestones=tuple(d / self.epochs for d in self.drops),
                            gamma=self.gamma, augment=True, val_fraction=0.0)


ROWS = (
    OfficialRow("ResNet164", "resnet164", "dia_resnet164", (0.7343, 0.7667), 180, (60, 120), 0.1, 1e-4),
    OfficialRow("PreResNet164", "preresnet164", "dia_preresnet164", (0.7653, 0.7820), 164, (81, 122), 0.1, 1e-4,
                dia_options={"branch_bn": True}),
    OfficialRow("WRN52-4", "wrn52_4", "dia_wrn52_4", (0.7975, 0.8099), 200, (80, 120, 160), 0.2, 5e-4,
                options={"dropout": 0.3}, dia_options={"branch_bn": True}),
    OfficialRow("ResNeXt101 8x32", "resnext101_8x32d", "dia_resnext101_8x32d", (0.8118, 0.8246), 300, (150, 225),
                0.1, 5e-4),
)
# Where the official protocol has something the repository does not: said in every result's notes.
RECIPE_GAPS = (
    "the official cifar.py reports the best test accuracy over all epochs (it tests after every epoch); the "
    "repository records the final network's test accuracy only (no per-epoch test evaluation), at most the best",
    "the official code normalises with fixed per-channel constants, mean (0.4914, 0.4822, 0.4465) and std "
    "(0.2023, 0.1994, 0.2010); the repository with the training images' own channel mean and std",
)
# A row that rules the paper's gain out decides against the table; then a row without evidence, then one whose
# precondition failed, then one that admits both readings.
PRECEDENCE = (NOT_REPRODUCED, NOT_TESTABLE, PRECONDITION_NOT_MET, INCONCLUSIVE, REPRODUCED)
# The GPU-hours estimate, from the only CIFAR-shaped GPU timing of the repository: one H200's training step
# (experiments/README.md G1, `dia-ode bench train-step --device cuda`, batch 64, 32x32x3) took 14.0 ms for
# resnet56 and 39.0 ms for dia_resnet56, 27 blocks each. G1 found the step bound by kernel launches, not by
# arithmetic, so the time per block carries over to other depths and to batch 128. WRN-52-4 and ResNeXt-101
# do far more arithmetic per block than resnet56, so for them (and so for the total) it is a lower bound.
MS_PER_BLOCK = {"plain": 14.0 / 27, "dia": 39.0 / 27}


@functools.lru_cache(maxsize=None)  # a registered network's block count does not change
def residual_blocks(model: str) -> int:
    """Residual blocks of `model` (built on the meta device: shapes only)."""
    with torch.device("meta"):
        network = create_model(model, num_classes=CLASSES)
    return sum(len(stage.blocks) for stage in network.stages)


def gpu_hours(row: OfficialRow, seeds: int) -> float:
    """Lower bound of the GPU-hours of `row`'s plain and DIA runs over `seeds` seeds (MS_PER_BLOCK), training
    steps only: blocks x ms per block x steps per epoch x epochs."""
    steps = math.ceil(TRAIN_IMAGES / BATCH) * row.epochs
    ms = sum(residual_blocks(model) * MS_PER_BLOCK[kind] for kind, model in (("plain", row.plain), ("dia", row.dia)))
    return seeds * steps * ms / 3.6e6


def untestable_reason(budget: Budget, available: bool) -> str:
    """What keeps the claim from being tested at `budget`, and what would test it."""
    seeds = len(get_budget(FULL).seeds)
    hours = sum(gpu_hours(row, seeds) for row in ROWS)
    test = (f"`dia-ode report --budget {FULL} --claims {CLAIM_ID}` would test it: {len(ROWS) * 2 * seeds} runs "
            f"({len(ROWS)} backbones x plain and DIA x {seeds} seeds) with the official recipes, at least "
            f"{hours:.0f} GPU-hours on one H200 (training steps only, scaled from the step times of experiments/"
            f"README.md G1; WRN-52-4 and ResNeXt-101 will take longer)")
    if not available:
        return (f"CIFAR-100 does not load here: the report reads a dataset from its default folder and {DATASET} has "
                f"none (dia_ode/data/registry.py: it needs --data-dir, a folder with the python batches "
                f"cifar-100-python/train and cifar-100-python/test, which the report finds at $DIA_ODE_DATA/cifar100); "
                f"with them there, {test}")
    return f"the {budget.name} budget does not train the papers' recipes; {test}"


def table_verdict(parts: dict[str, Verdict]) -> Verdict:
    """The overall verdict (module docstring) from each row's verdict."""
    status = min((verdict.status for verdict in parts.values()), key=PRECEDENCE.index)
    if status == REPRODUCED:
        return Verdict(REPRODUCED, f"DIA improves all {len(parts)} backbones: "
                                   + "; ".join(f"{name}: {v.reason}" for name, v in parts.items()))
    return Verdict(status, "; ".join(f"{name}: {v.reason}" for name, v in parts.items() if v.status == status))


def paper_rows(seeds: int, measured: dict[str, tuple[str, str, str]] | None = None) -> list[dict]:
    """The table: the paper's numbers, the recipe and the GPU-hours of `seeds` seeds (gpu_hours) per row, beside
    ours where `measured` has the row (backbone -> (plain, DIA, dia - plain) as text); "not run" otherwise."""
    measured = measured or {}
    return [{"backbone": row.backbone, "models": f"{row.plain} / {row.dia}",
             "paper plain %": f"{row.paper[0] * 100:.2f}", "paper DIA %": f"{row.paper[1] * 100:.2f}",
             "paper gain": f"+{row.gain * 100:.2f}", "recipe": row.recipe(),
             f"GPU-hours, {seeds} seeds (at least)": round(gpu_hours(row, seeds), 1),
             **dict(zip(("ours plain", "ours DIA", "ours dia - plain (paired)"),
                        measured.get(row.backbone, ("not run",) * 3)))} for row in ROWS]


class OfficialAccuracyTable(AbstractClaim):
    """The official CIFAR-100 table, four backbones plain and with DIA, at the official recipes."""

    id = CLAIM_ID
    kind = "paper"
    statement = ("DIA improves the CIFAR-100 top-1 accuracy of ResNet164, PreResNet164, WRN-52-4 and ResNeXt-101 "
                 "8x32d trained with the official recipes")
    paper = ("DIANet (arXiv 1905.10671), official README (gbup-group/DIANet), mean of 5 runs, r = 4: ResNet164 "
             "73.43 -> 76.67, PreResNet164 76.53 -> 78.20, WRN52-4 79.75 -> 80.99, ResNeXt101 8x32 81.18 -> 82.46")

    def runs(self, budget: Budget) -> list[RunSpec]:
        if budget.name != FULL or not dataset_available(DATASET):
            return []  # the official recipes take tens of GPU-hours: only the full budget trains them
        return [RunSpec(row.config(model, budget, seed)) for row in ROWS for model in (row.plain, row.dia)
                for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        notes = [f"recipe gap: {gap}" for gap in RECIPE_GAPS]
        if not self.runs(budget):
            reason = untestable_reason(budget, dataset_available(DATASET))
            table = paper_rows(len(get_budget(FULL).seeds))
            return ClaimResult({}, {}, Verdict(NOT_TESTABLE, reason), table=table, notes=notes)
        chance = 1.0 / CLASSES  # a diverged run counts at chance, as in dia-improves-backbone
        measured, references, parts, ours, comparisons = {}, {}, {}, {}, {}
        for row in ROWS:
            dirs = {model: [run_dirs[RunSpec(row.config(model, budget, seed)).key()] for seed in budget.seeds]
                    for model in (row.plain, row.dia)}
            acc = {model: [outcome_accuracy(d, chance) for d in ds] for model, ds in dirs.items()}
            plain, dia = accuracy_interval(acc[row.plain]), accuracy_interval(acc[row.dia])
            difference = paired_difference(acc[row.dia], acc[row.plain])
            references[f"{row.plain} test accuracy"] = plain
            measured[f"{row.dia} test accuracy"] = dia
            measured[f"{row.backbone}: dia - plain accuracy (paired by seed)"] = difference
            comparisons[f"{row.backbone}: dia - plain accuracy (paired by seed)"] = row.gain
            parts[row.backbone] = accuracy_verdict(difference, plain, gain=row.gain)
            ours[row.backbone] = (plain.format(), dia.format(), difference.format_ci())
            notes += unfinished_note(dirs, chance)
        notes.insert(0, f"{DATASET}, seeds {list(budget.seeds)}; plain and DIA of one seed see the same batches "
                        f"(differences paired by seed)")
        table = paper_rows(len(budget.seeds), ours)
        return ClaimResult(measured, references, table_verdict(parts), table=table, notes=notes,
                           parts=parts, comparisons=comparisons)
