"""Claim: DIA improves its backbone, and its parameter overhead does not grow with depth (SE's does).

DIANet (Huang et al., "DIANet: Dense-and-Implicit Attention Network", arXiv 1905.10671, Table 1) and
the DIA journal version (arXiv 2210.16101) train ResNet164 on CIFAR-100 plain, with an SE module in
every block and with one DIA unit shared by every block of a stage; DIA is the most accurate of the
three, and the paper credits the sharing for a parameter overhead that does not grow with depth (one
unit per stage, where SE adds one module per block). The official repository's README
(gbup-group/DIANet) gives ResNet164 73.43% -> DIANet 76.67% top-1 on CIFAR-100.

Protocol: resnet20, se_resnet20 and dia_resnet20 with base_width = budget.width, the same recipe
(the TrainConfig defaults: SGD, lr 0.1, cosine, weight decay 5e-4, batch 64, augmentation on),
budget.epochs, on the budget's first available dataset, for every seed of the budget. The seed fixes
the data order and the augmentation draws, so the three models of one seed see the same batches and
the differences dia - plain and se - plain are paired by seed.

Verdict, in two parts reported separately (ClaimResult.parts), because they are different kinds of
evidence: the accuracy part needs training, the parameter part is arithmetic on the architectures.
- accuracy part (the paper's headline): not testable here with fewer than two paired seeds;
  precondition not met when the plain backbone's mean test accuracy is at ACCURACY_CEILING or above
  (no room for the gain the paper reports); reproduced when the 95% t-interval of the paired difference
  (dia - plain test accuracy) lies above 0; not reproduced when it lies at or below 0 (DIA does not help)
  or includes 0 (within noise at this budget).
- parameter part: the extra parameters of SE and DIA over the plain backbone at several depths
  (PARAMETER_DEPTHS; counted on the meta device at the budget's width and the dataset's classes, no
  training), within each block family, since DIA's unit is sized by the stages' widths and the
  bottleneck family has four times the basic family's. Reproduced when in every family DIA's overhead
  is the same at every depth (within OVERHEAD_TOLERANCE parameters) while SE's grows from each depth to
  the next (by more than OVERHEAD_TOLERANCE); not reproduced otherwise.
- overall (improvement_verdict): the headline part decides: the accuracy part's verdict unless it is
  reproduced, then the parameter part's; the reason names both.

Accuracies of runs that did not finish follow claim.run_outcome, as in dia-stabilises-training
(which shares these runs): a diverged run counts at chance accuracy (1 / classes: training failed,
that is its result), a failed one is left out; the notes name both.

Null reference of every accuracy: the plain backbone of the same seed (and SE as the competing
attention). Cost at the cpu budget (3 models x 3 seeds x 15 epochs, width 16, digits): about 3 s per
epoch (evaluation included) on one core (OMP_NUM_THREADS=1, measured for all three models), ~7
minutes on one core, ~4 with `--launcher local:2`. Measured at width 8, 5 epochs, seeds 0 and 1:
about 1.5 s per epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dia_ode.analysis.intervals import Interval, mean_interval, metric_bounds
from dia_ode.data import load_test_split
from dia_ode.engine import TrainConfig
from dia_ode.models import create_model
from dia_ode.rundir import read_summary
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import (DIVERGED, FINISHED, INCONCLUSIVE, MORE_SEEDS, NOT_REPRODUCED, NOT_TESTABLE,
                                          PRECONDITION_NOT_MET, REPRODUCED, AbstractClaim, ClaimResult, RunSpec,
                                          Verdict, no_dataset, run_outcome, study_config)

PLAIN, SE, DIA = MODELS = ("resnet20", "se_resnet20", "dia_resnet20")
# Depths per block family: DIA's unit is sized by the stages' widths, so depth is varied at equal widths
# (basic blocks: 16/32/64 x width/16; bottlenecks, resnet29 and the paper's resnet164: four times that).
PARAMETER_DEPTHS = {"basic": (20, 56, 110), "bottleneck": (29, 164)}
# "The same at every depth" within a few scalars (a step scale per stage, say); one parameter per block
# grows by 18 from resnet20 (9 blocks) to resnet56 (27) and is caught.
OVERHEAD_TOLERANCE = 8
# The plain backbone at or above this accuracy leaves under 2 points to gain, less than the paper's
# +3.24 (73.43% -> 76.67% on CIFAR-100): digits (about 0.99 at the cpu budget) cannot show the claim.
ACCURACY_CEILING = 0.98
# The paper's smallest headline gain, ResNet164 on CIFAR-100: an interval of dia - plain that holds 0 and
# reaches this admits both "no gain" and the paper's gain (inconclusive); one that stops below it rules
# the paper's gain out at this budget (not reproduced).
PAPER_GAIN = 0.0324


def backbone_config(model: str, budget: Budget, seed: int, dataset: str, *, augment: bool = True,
                    **model_options) -> TrainConfig:
    """The TrainConfig every CIFAR-ResNet claim trains: the model's registry recipe (none for resnet),
    budget.epochs, base_width = budget.width plus `model_options`. Claims that build the same
    arguments get the same RunSpec key, so the report trains such a run once for all of them."""
    return study_config(model, dataset, budget, seed, {"base_width": budget.width, **model_options}, augment=augment)


def num_classes(dataset: str) -> int:
    """The number of classes of the dataset's test split."""
    return int(load_test_split(dataset).labels.max()) + 1


def chance_accuracy(dataset: str) -> float:
    """1 / number of classes of the dataset's test split: the accuracy a diverged run counts at."""
    return 1.0 / num_classes(dataset)


def outcome_accuracy(run_dir: Path, chance: float) -> float:
    """Test accuracy by claim.run_outcome: summary.json's when finished, `chance` when diverged
    (training failed: that is the result), nan when failed (no result; left out of the intervals)."""
    outcome = run_outcome(run_dir)
    if outcome == FINISHED:
        return float(read_summary(run_dir)["test_acc"])
    return chance if outcome == DIVERGED else math.nan


def unfinished_note(dirs: dict[str, list[Path]], chance: float) -> list[str]:
    """One note naming each run (label, seed index) that did not finish and how it was counted."""
    named = [f"{label} run {i} {run_outcome(d)}" for label, ds in dirs.items() for i, d in enumerate(ds)
             if run_outcome(d) != FINISHED]
    return [f"not finished: {', '.join(named)} (diverged: counted at chance {chance:.3f}; failed: left out)"] \
        if named else []


def parameter_count(run_dir: Path) -> int | None:
    """summary.json's parameter count; None for a run without results."""
    return int(read_summary(run_dir)["params"]) if run_outcome(run_dir) == FINISHED else None


def overhead_by_depth(width: int, classes: int) -> dict[str, list[tuple[int, int, int]]]:
    """Per block family of PARAMETER_DEPTHS, (depth, SE's extra, DIA's extra) parameters over the plain
    resnet of that depth, at base width `width` and `classes` classes, built on the meta device."""
    def count(depth: int, attention: str) -> int:
        with torch.device("meta"):  # no memory, no initialisation: only the shapes are counted
            model = create_model(f"resnet{depth}", attention=attention, base_width=width, num_classes=classes)
        return sum(p.numel() for p in model.parameters())

    series = {}
    for family, depths in PARAMETER_DEPTHS.items():
        rows = []
        for depth in depths:
            plain, se, dia = (count(depth, attention) for attention in ("none", "se", "dia"))
            rows.append((depth, se - plain, dia - plain))
        series[family] = rows
    return series


def paired_difference(a: list[float], b: list[float]) -> Interval:
    """mean_interval of a[i] - b[i] over the seeds where both are finite."""
    pairs = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    return mean_interval(pairs) if pairs else mean_interval([math.nan])


def accuracy_verdict(difference: Interval, plain: Interval) -> Verdict:
    """The accuracy part (module docstring) on the paired difference dia - plain and the plain accuracy."""
    if difference.low is None:
        return Verdict(NOT_TESTABLE, f"no interval of dia - plain ({difference.reason}); {MORE_SEEDS}")
    if plain.mean >= ACCURACY_CEILING:
        return Verdict(PRECONDITION_NOT_MET, f"accuracy at its ceiling: the plain backbone reaches {plain.mean:.4f} "
                                             f">= {ACCURACY_CEILING}, less room than the paper's +3.24 points; a "
                                             f"harder dataset (fashion-mnist, cifar10: the full budget) would test it")
    interval = f"[{difference.low:.4f}, {difference.high:.4f}]"
    if difference.high <= 0:
        return Verdict(NOT_REPRODUCED, f"DIA does not improve its backbone: dia - plain accuracy {interval}")
    if difference.low <= 0 and difference.high >= PAPER_GAIN:
        return Verdict(INCONCLUSIVE, f"dia - plain accuracy {interval} holds both 0 and the paper's gain "
                                     f"+{PAPER_GAIN}: more seeds would decide")
    if difference.low <= 0:
        return Verdict(NOT_REPRODUCED, f"no gain at this budget: dia - plain accuracy {interval} holds 0 and "
                                       f"stops below the paper's gain +{PAPER_GAIN}")
    return Verdict(REPRODUCED, f"dia - plain accuracy {interval} lies above 0")


def overhead_text(series: dict[str, list[tuple[int, int, int]]]) -> str:
    """"basic blocks, depths 20/56/110: DIA +14,392/+14,392/+14,392, SE +2,373 -> +7,119 -> +14,238; ..."."""
    return "; ".join(f"{family} blocks, depths {'/'.join(str(d) for d, _, _ in rows)}: DIA "
                     f"{'/'.join(f'+{dia:,}' for _, _, dia in rows)}, SE {' -> '.join(f'+{se:,}' for _, se, _ in rows)}"
                     for family, rows in series.items())


def parameter_verdict(series: dict[str, list[tuple[int, int, int]]]) -> Verdict:
    """The parameter part (module docstring).

    Args:
        series: block family -> (depth, SE's extra, DIA's extra) per depth, in increasing depth.

    Raises:
        ValueError: a family has fewer than two depths (nothing to compare).
    """
    short = [family for family, rows in series.items() if len(rows) < 2]
    if not series or short:
        raise ValueError(f"the parameter part needs two or more depths per block family: {', '.join(short) or 'none'}")
    dia_constant = {family: max(r[2] for r in rows) - min(r[2] for r in rows) <= OVERHEAD_TOLERANCE
                    for family, rows in series.items()}
    se_grows = {family: all(b[1] - a[1] > OVERHEAD_TOLERANCE for a, b in zip(rows, rows[1:]))
                for family, rows in series.items()}
    found = overhead_text(series)
    if all(dia_constant.values()) and all(se_grows.values()):
        return Verdict(REPRODUCED, f"DIA's parameter overhead does not grow with depth (within {OVERHEAD_TOLERANCE} "
                                   f"parameters) while SE's does: {found}")
    failed = [f"DIA's overhead changes with depth in the {f} blocks" for f, ok in dia_constant.items() if not ok]
    failed += [f"SE's overhead does not grow with depth in the {f} blocks" for f, ok in se_grows.items() if not ok]
    return Verdict(NOT_REPRODUCED, f"{'; '.join(failed)}: {found}")


def improvement_verdict(accuracy: Verdict, parameters: Verdict) -> Verdict:
    """The overall verdict (module docstring): the accuracy part, the paper's headline, decides unless it is
    reproduced; then the claim stands or falls with the parameter part."""
    reason = f"accuracy: {accuracy.reason}; parameters: {parameters.reason}"
    return Verdict(parameters.status if accuracy.status == REPRODUCED else accuracy.status, reason)


class DiaImprovesBackbone(AbstractClaim):
    """resnet20 / se_resnet20 / dia_resnet20 at equal budget: accuracy with interval, parameter counts."""

    id = "dia-improves-backbone"
    kind = "paper"
    statement = ("DIA improves its backbone, and its parameter overhead does not grow with depth (one unit shared "
                 "by the blocks of a stage), while SE's grows with every block")
    paper = ("DIANet (arXiv 1905.10671) Table 1 / DIA (arXiv 2210.16101): on CIFAR-100, ResNet164 < SE-ResNet164 "
             "< DIA-ResNet164 in top-1 accuracy, with DIA's parameters shared per stage; official README: ResNet164 "
             "73.43% -> DIANet 76.67%")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        return [RunSpec(backbone_config(model, budget, seed, dataset)) for model in MODELS for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        dataset = first_dataset(budget)
        if dataset is None:
            return no_dataset(budget)
        dirs = {model: [run_dirs[RunSpec(backbone_config(model, budget, seed, dataset)).key()] for seed in budget.seeds]
                for model in MODELS}
        chance = chance_accuracy(dataset)
        acc = {model: [outcome_accuracy(d, chance) for d in ds] for model, ds in dirs.items()}
        params = {model: next((n for d in ds if (n := parameter_count(d)) is not None), None)
                  for model, ds in dirs.items()}
        measured = {f"{model} test accuracy": accuracy_interval(acc[model]) for model in (SE, DIA)}
        measured["dia - plain accuracy (paired by seed)"] = paired_difference(acc[DIA], acc[PLAIN])
        measured["se - plain accuracy (paired by seed)"] = paired_difference(acc[SE], acc[PLAIN])
        references = {f"{PLAIN} test accuracy": accuracy_interval(acc[PLAIN])}
        notes = [f"{dataset}, {budget.epochs} epochs, base_width {budget.width}, seeds {list(budget.seeds)}; "
                 f"the three models of one seed see the same batches (differences paired by seed)",
                 *unfinished_note(dirs, chance)]
        accuracy = accuracy_verdict(measured["dia - plain accuracy (paired by seed)"],
                                    references[f"{PLAIN} test accuracy"])
        series = overhead_by_depth(budget.width, num_classes(dataset))
        parameters = parameter_verdict(series)
        notes.append(f"extra parameters over the plain resnet at base width {budget.width}, counted without training: "
                     f"{overhead_text(series)}")
        if all(n is not None for n in params.values()):
            notes.append(f"trained: extra parameters over {PLAIN} ({params[PLAIN]:,}): SE "
                         f"{params[SE] - params[PLAIN]:,}, DIA {params[DIA] - params[PLAIN]:,}")
        table = [{"model": model, "test accuracy": accuracy_interval(acc[model]).format(),
                  "95% CI": accuracy_interval(acc[model]).format_ci(),
                  "params": params[model], "extra params": None if params[model] is None or params[PLAIN] is None
                  else params[model] - params[PLAIN],
                  "minus plain (paired)": "" if model == PLAIN else
                  paired_difference(acc[model], acc[PLAIN]).format_ci()} for model in MODELS]
        return ClaimResult(measured, references, improvement_verdict(accuracy, parameters), table=table, notes=notes,
                           parts={"accuracy": accuracy, "parameters": parameters})


def accuracy_interval(values: list[float]) -> Interval:
    """mean_interval of the finite accuracies (failed runs are left out), clipped to [0, 1]; a nan Interval
    when none is finite."""
    finite = [v for v in values if math.isfinite(v)]
    return mean_interval(finite or [math.nan], bounds=metric_bounds("test_acc"))

