"""Claim: DIA improves its backbone, with fewer extra parameters than SE.

DIANet (Huang et al., "DIANet: Dense-and-Implicit Attention Network", arXiv 1905.10671, Table 1) and
the DIA journal version (arXiv 2210.16101) train ResNet164 on CIFAR-100 plain, with an SE module in
every block and with one DIA unit shared by every block of a stage; DIA is the most accurate of the
three, and the paper credits the sharing for a small parameter overhead. The official repository's
README (gbup-group/DIANet) gives ResNet164 73.43% -> DIANet 76.67% top-1 on CIFAR-100.

Protocol: resnet20, se_resnet20 and dia_resnet20 with base_width = budget.width, the same recipe
(the TrainConfig defaults: SGD, lr 0.1, cosine, weight decay 5e-4, batch 64, augmentation on),
budget.epochs, on the budget's first available dataset, for every seed of the budget. The seed fixes
the data order and the augmentation draws, so the three models of one seed see the same batches and
the differences dia - plain and se - plain are paired by seed.

Verdict, in two parts reported separately (ClaimResult.parts), because they are different kinds of
evidence: the accuracy part needs training, the parameter part is arithmetic on the architectures.
- accuracy part: reproduced when the 95% t-interval of the paired difference (dia - plain test
  accuracy) lies above 0; not reproduced when it lies at or below 0 (DIA does not help) or includes 0
  (within noise at this budget); not testable here with fewer than two paired seeds.
- parameter part: reproduced when DIA's extra parameters over the plain backbone are fewer than SE's
  at the trained scale (resnet20, base_width = budget.width, read from summary.json) AND at the paper's
  (resnet164, base_width 16, 100 classes, counted on the meta device without training); not
  reproduced otherwise; not testable here when a model has no finished run.
- overall: reproduced when both parts are; not testable here when the accuracy part is; not
  reproduced otherwise, the reason naming each part.

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
from dia_ode.studies.report.claim import (DIVERGED, FINISHED, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, AbstractClaim,
                                          ClaimResult, RunSpec, Verdict, no_dataset, run_outcome, study_config)

PLAIN, SE, DIA = MODELS = ("resnet20", "se_resnet20", "dia_resnet20")
PAPER_MODELS = ("resnet164", "se_resnet164", "dia_resnet164")  # DIANet Table 1: CIFAR-100, base width 16
PAPER_CLASSES = 100


def backbone_config(model: str, budget: Budget, seed: int, dataset: str, *, augment: bool = True,
                    **model_options) -> TrainConfig:
    """The TrainConfig every CIFAR-ResNet claim trains: the model's registry recipe (none for resnet),
    budget.epochs, base_width = budget.width plus `model_options`. Claims that build the same
    arguments get the same RunSpec key, so the report trains such a run once for all of them."""
    return study_config(model, dataset, budget, seed, {"base_width": budget.width, **model_options}, augment=augment)


def chance_accuracy(dataset: str) -> float:
    """1 / number of classes of the dataset's test split: the accuracy a diverged run counts at."""
    return 1.0 / (int(load_test_split(dataset).labels.max()) + 1)


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


def paper_scale_extras() -> tuple[int, int, int]:
    """(plain parameters, SE's extra, DIA's extra) at the paper's scale, built on the meta device."""
    counts = []
    for model in PAPER_MODELS:
        with torch.device("meta"):  # no memory, no initialisation: only the shapes are counted
            counts.append(sum(p.numel() for p in create_model(model, num_classes=PAPER_CLASSES).parameters()))
    return counts[0], counts[1] - counts[0], counts[2] - counts[0]


def paired_difference(a: list[float], b: list[float]) -> Interval:
    """mean_interval of a[i] - b[i] over the seeds where both are finite."""
    pairs = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    return mean_interval(pairs) if pairs else mean_interval([math.nan])


def accuracy_verdict(difference: Interval) -> Verdict:
    """The accuracy part (module docstring) on the paired difference dia - plain."""
    if difference.low is None:
        return Verdict(NOT_TESTABLE, f"no interval of dia - plain ({difference.reason})")
    interval = f"[{difference.low:.4f}, {difference.high:.4f}]"
    if difference.high <= 0:
        return Verdict(NOT_REPRODUCED, f"DIA does not improve its backbone: dia - plain accuracy {interval}")
    if difference.low <= 0:
        return Verdict(NOT_REPRODUCED, f"the difference is within noise at this budget (dia - plain {interval} "
                                       f"includes 0)")
    return Verdict(REPRODUCED, f"dia - plain accuracy {interval} lies above 0")


def parameter_verdict(extras: dict[str, tuple[int, int]]) -> Verdict:
    """The parameter part (module docstring); `extras`: scale -> (DIA's extra, SE's extra) parameters."""
    found = "; ".join(f"{scale}: DIA +{dia:,}, SE +{se:,}" for scale, (dia, se) in extras.items())
    if all(dia < se for dia, se in extras.values()):
        return Verdict(REPRODUCED, f"DIA adds fewer parameters than SE ({found})")
    return Verdict(NOT_REPRODUCED, f"DIA does not add fewer parameters than SE ({found})")


def improvement_verdict(accuracy: Verdict, parameters: Verdict) -> Verdict:
    """The overall verdict from the two parts (module docstring)."""
    reason = f"accuracy: {accuracy.reason}; parameters: {parameters.reason}"
    if accuracy.status == NOT_TESTABLE:
        return Verdict(NOT_TESTABLE, reason)
    both = accuracy.status == parameters.status == REPRODUCED
    return Verdict(REPRODUCED if both else NOT_REPRODUCED, reason)


class DiaImprovesBackbone(AbstractClaim):
    """resnet20 / se_resnet20 / dia_resnet20 at equal budget: accuracy with interval, parameter counts."""

    id = "dia-improves-backbone"
    statement = "DIA improves its backbone with fewer extra parameters than SE"
    paper = ("DIANet (arXiv 1905.10671) Table 1 / DIA (arXiv 2210.16101): on CIFAR-100, ResNet164 < SE-ResNet164 "
             "< DIA-ResNet164 in top-1 accuracy; official README: ResNet164 73.43% -> DIANet 76.67%")

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
        accuracy = accuracy_verdict(measured["dia - plain accuracy (paired by seed)"])
        paper_plain, paper_se, paper_dia = paper_scale_extras()
        paper_scale = f"{PAPER_MODELS[0]}, {PAPER_CLASSES} classes"
        notes.append(f"at the paper's scale ({paper_scale}, counted without training): {PAPER_MODELS[0]} "
                     f"{paper_plain:,} parameters, SE +{paper_se:,} (one module per block), DIA +{paper_dia:,} (one "
                     f"LSTM cell per stage); the paper's own parameter column is not checked here")
        if any(n is None for n in params.values()):
            parameters = Verdict(NOT_TESTABLE, "a model has no finished run (no parameter count)")
        else:
            extra_se, extra_dia = params[SE] - params[PLAIN], params[DIA] - params[PLAIN]
            parameters = parameter_verdict({f"{PLAIN} width {budget.width}": (extra_dia, extra_se),
                                            paper_scale: (paper_dia, paper_se)})
            notes.append(f"extra parameters over {PLAIN} ({params[PLAIN]:,}): SE {extra_se:,}, DIA {extra_dia:,}")
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

