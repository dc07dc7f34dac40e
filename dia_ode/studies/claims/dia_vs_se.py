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

Verdict rule:
- reproduced: the 95% t-interval of the paired difference (dia - plain test accuracy) lies above 0
  AND DIA's extra parameters over the plain backbone are fewer than SE's;
- not reproduced: the interval lies at or below 0 (DIA does not help), or DIA adds at least as many
  parameters as SE (the parameter half of the claim fails whatever the accuracies), or the interval
  includes 0 ("the difference is within noise at this budget");
- not testable here: fewer than two seeds finished (no interval).

Null reference of every accuracy: the plain backbone of the same seed (and SE as the competing
attention). Cost at the cpu budget (3 models x 3 seeds x 15 epochs, width 16, digits): about 3 s per
epoch (evaluation included) on one core (OMP_NUM_THREADS=1, measured for all three models), ~7
minutes on one core, ~4 with `--launcher local:2`. Measured at width 8, 5 epochs, seeds 0 and 1:
about 1.5 s per epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.engine import TrainConfig, recipe_config
from dia_ode.rundir import has_results, read_summary
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import AbstractClaim, ClaimResult, RunSpec, Verdict, no_dataset

PLAIN, SE, DIA = MODELS = ("resnet20", "se_resnet20", "dia_resnet20")


def backbone_config(model: str, budget: Budget, seed: int, dataset: str, *, augment: bool = True,
                    **model_options) -> TrainConfig:
    """The TrainConfig every CIFAR-ResNet claim trains: the model's registry recipe (none for resnet),
    budget.epochs, base_width = budget.width plus `model_options`. Claims that build the same
    arguments get the same RunSpec key, so the report trains such a run once for all of them."""
    values = {"model": model, "dataset": dataset, "epochs": budget.epochs, "seed": seed, "augment": augment,
              "model_options": {"base_width": budget.width, **model_options}}
    return recipe_config(values, set(values))


def test_accuracy(run_dir: Path) -> float:
    """summary.json's test accuracy; nan for a run without results (failed or diverged)."""
    summary = read_summary(run_dir)
    return float(summary["test_acc"]) if has_results(summary) else math.nan


def parameter_count(run_dir: Path) -> int | None:
    """summary.json's parameter count; None for a run without results."""
    summary = read_summary(run_dir)
    return int(summary["params"]) if has_results(summary) else None


def paired_difference(a: list[float], b: list[float]) -> Interval:
    """mean_interval of a[i] - b[i] over the seeds where both are finite."""
    pairs = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    return mean_interval(pairs) if pairs else mean_interval([math.nan])


def improvement_verdict(difference: Interval, extra_dia: int, extra_se: int) -> Verdict:
    """The rule of the module docstring on the paired difference dia - plain and the extra parameters."""
    if difference.low is None:
        return Verdict("not testable here", f"no interval of dia - plain ({difference.reason})")
    interval = f"[{difference.low:.4f}, {difference.high:.4f}]"
    if extra_dia >= extra_se:
        return Verdict("not reproduced", f"DIA adds {extra_dia:,} parameters to the backbone, SE {extra_se:,}: "
                                         f"not fewer (dia - plain accuracy {interval})")
    if difference.high <= 0:
        return Verdict("not reproduced", f"DIA does not improve its backbone: dia - plain accuracy {interval}")
    if difference.low <= 0:
        return Verdict("not reproduced", f"the difference is within noise at this budget (interval {interval} "
                                         f"includes 0)")
    return Verdict("reproduced", f"dia - plain accuracy {interval} lies above 0 with {extra_dia:,} extra "
                                 f"parameters against SE's {extra_se:,}")


class DiaImprovesBackbone(AbstractClaim):
    """resnet20 / se_resnet20 / dia_resnet20 at equal budget: accuracy with interval, parameter counts."""

    id = "dia-improves-backbone"
    statement = "DIA improves its backbone with fewer extra parameters than SE"
    paper = ("DIANet (arXiv 1905.10671) Table 1 / DIA (arXiv 2210.16101): on CIFAR-100, ResNet164 < SE-ResNet164 "
             "< DIA-ResNet164 in top-1 accuracy; official README: ResNet164 73.43% -> DIANet 76.67%")
    command = ("dia-ode train --model resnet20 --seeds 0,1,2 --model-option base_width=16 --epochs 15; "
               "likewise se_resnet20 and dia_resnet20; dia-ode compare --from RUN ...")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        return [RunSpec(backbone_config(model, budget, seed, dataset)) for model in MODELS for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        dataset = first_dataset(budget)
        if dataset is None:
            return no_dataset(budget)
        acc = {model: [test_accuracy(run_dirs[RunSpec(backbone_config(model, budget, seed, dataset)).key()])
                       for seed in budget.seeds] for model in MODELS}
        params = {model: next((n for seed in budget.seeds if (n := parameter_count(
            run_dirs[RunSpec(backbone_config(model, budget, seed, dataset)).key()])) is not None), None)
            for model in MODELS}
        measured = {f"{model} test accuracy": _finite_interval(acc[model]) for model in (SE, DIA)}
        measured["dia - plain accuracy (paired by seed)"] = paired_difference(acc[DIA], acc[PLAIN])
        measured["se - plain accuracy (paired by seed)"] = paired_difference(acc[SE], acc[PLAIN])
        references = {f"{PLAIN} test accuracy": _finite_interval(acc[PLAIN])}
        notes = [f"{dataset}, {budget.epochs} epochs, base_width {budget.width}, seeds {list(budget.seeds)}; "
                 f"the three models of one seed see the same batches (differences paired by seed)"]
        if any(n is None for n in params.values()):
            verdict = Verdict("not testable here", "a model has no finished run (no parameter count)")
        else:
            extra_se, extra_dia = params[SE] - params[PLAIN], params[DIA] - params[PLAIN]
            verdict = improvement_verdict(measured["dia - plain accuracy (paired by seed)"], extra_dia, extra_se)
            notes.append(f"extra parameters over {PLAIN} ({params[PLAIN]:,}): SE {extra_se:,} (one module per "
                         f"block), DIA {extra_dia:,} (one cell per stage)")
        table = [{"model": model, "test accuracy": _finite_interval(acc[model]).format(),
                  "95% CI": _finite_interval(acc[model]).format_ci(),
                  "params": params[model], "extra params": None if params[model] is None or params[PLAIN] is None
                  else params[model] - params[PLAIN],
                  "minus plain (paired)": "" if model == PLAIN else
                  paired_difference(acc[model], acc[PLAIN]).format_ci()} for model in MODELS]
        return ClaimResult(measured, references, verdict, table=table, notes=notes)


def _finite_interval(values: list[float]) -> Interval:
    """mean_interval of the finite values (runs that failed are left out); a nan Interval when none is."""
    finite = [v for v in values if math.isfinite(v)]
    return mean_interval(finite or [math.nan])

