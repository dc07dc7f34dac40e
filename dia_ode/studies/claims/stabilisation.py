"""Claim: DIA stabilises training where the backbone alone degrades (skip connections removed,
BatchNorm removed, augmentation off).

DIANet (Huang et al., arXiv 1905.10671, the section on DIA-LSTM's regularisation: "the removal of
skip connections or Batch Normalization in the whole residual network") reports that a ResNet
stripped of its skip connections or of its BatchNorm trains badly, and that adding the shared DIA
unit recovers much of the loss; the DIA journal version (arXiv 2210.16101) adds training without
data augmentation. We run the three ablations on the backbone of claim "dia-improves-backbone" at a
depth where removing a part can hurt: depth 56 (9 blocks per stage) above the smoke budget. At depth
20 no ablation degraded the plain network on digits (cpu report of 2026-11-30, no_skip: plain -
reference -0.021 [-0.053, 0.011]): a 20-layer plain network trains well, the degradation problem of
He et al. (arXiv 1512.03385) appears with depth.

Protocol: for each ablation in (no_skip: model option skip=False, no_bn: batch_norm=False,
no_augment: TrainConfig augment=False) and each of resnet56, se_resnet56, dia_resnet56 (resnet20 and
its variants at the smoke budget), every seed of the budget, with exactly claim dia-improves-backbone's
recipe otherwise (budget.epochs, base_width = budget.width, the budget's first available dataset), so
at the smoke budget the unablated reference runs are that claim's runs (same RunSpec keys). Without skip connections a stage is
no longer an Euler integrator: x_{k+1} = post(h_k f_k(x_k)) (models/blocks.py).

Measured: test accuracy of each (ablation, model) as a 95% t-interval over seeds, next to the same
model unablated (the reference). Runs that did not finish follow claim.run_outcome, as in
dia-improves-backbone: a diverged run (TrainingDiverged, StepBudgetExceeded) counts at chance accuracy,
1 / number of classes, since training failed; a failed one is left out; the notes name both.
Per-stage gradient norms ||d loss / d theta_stage|| on a fixed batch of budget.samples test images
(analysis/gradients.py), of the trained network and of the untrained one of the same seed, in the
table (finished runs only: a diverged run has no trained network to differentiate).

Verdict rule, per ablation, on differences paired by seed (same data order). The claim presupposes
a baseline that trains and a backbone that degrades without the ablated part:
- the baseline trains: the plain unablated backbone reaches at least halfway from chance to perfect
  accuracy (chance + TRAINED_FRACTION x (1 - chance)) in every seed; a seed below it (at depth 56 on
  digits: 2 of 3) leaves the ablations nothing trained to degrade from, so more than
  MAX_BASELINE_FAILURES such seeds make the claim "precondition not met (the baseline failed to train)";
- the backbone degrades: the 95% interval of (plain ablated - plain unablated) lies below 0; where it
  does not, that ablation's precondition is not met (the backbone does not degrade at this depth/budget);
- DIA stabilises: the 95% interval of (dia ablated - plain ablated) lies above 0.
In this order: "not testable here" when an ablation has fewer than two paired seeds; "precondition not
met" when the baseline failed to train, or no ablation degrades the backbone; "reproduced" when DIA
stabilises in more than half of the ablations that degrade it (2 of 3 when all do, 1 of 1 when one
does); "not reproduced" otherwise, with the ablations that failed and why.

Cost at the cpu budget: 36 runs (4 configurations x 3 models x 3 seeds, 15 epochs, width 16, digits)
at about 4 s per epoch at depth 56 on one core (OMP_NUM_THREADS=1): ~36 minutes on one core, ~18 with
`--launcher local:2`.
"""

from __future__ import annotations

import math
from pathlib import Path

from dia_ode.analysis.attention_nulls import untrained_model
from dia_ode.analysis.gradients import stage_gradient_norms
from dia_ode.analysis.intervals import Interval
from dia_ode.engine import TrainConfig
from dia_ode.rundir import load_run
from dia_ode.studies.claims.dia_vs_se import (MODELS, accuracy_interval, backbone_config, chance_accuracy,
                                              outcome_accuracy, paired_difference, unfinished_note)
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import (DIVERGED, FINISHED, MORE_SEEDS, NOT_REPRODUCED, NOT_TESTABLE,
                                          PRECONDITION_NOT_MET, REPRODUCED, AbstractClaim, ClaimResult, RunSpec,
                                          Verdict, no_dataset, run_outcome)
from dia_ode.tasks import get_task


REFERENCE = "none"
ABLATIONS: dict[str, dict] = {  # ablation -> (TrainConfig field or model option) overrides of backbone_config
    "no_skip": {"skip": False},
    "no_bn": {"batch_norm": False},
    "no_augment": {"augment": False},
}
NO_DEGRADATION = "precondition not met (the backbone does not degrade at this depth/budget)"
# A baseline seed trained when it got at least halfway from chance to perfect accuracy: every network that
# trains on the report's datasets passes it within the budget (SE and DIA resnet56: 0.98 on digits), while a
# stalled one stays near chance (plain resnet56 at the cpu budget: 0.145, 0.426).
TRAINED_FRACTION = 0.5
# Every ablation's drop is paired with the baseline of its seed: one untrained baseline makes its pair compare
# two failures, so no failed seed is allowed.
MAX_BASELINE_FAILURES = 0
DEPTH = {"smoke": 20, "cpu": 56, "full": 56}  # see the module docstring: degradation needs depth


def stabilisation_models(budget: Budget) -> tuple[str, str, str]:
    """(plain, se, dia) at the budget's DEPTH: claim dia-improves-backbone's models, deeper."""
    return tuple(name.replace("20", str(DEPTH[budget.name])) for name in MODELS)


def ablated_config(ablation: str, model: str, budget: Budget, seed: int, dataset: str) -> TrainConfig:
    """backbone_config of `model` with the ablation's override (REFERENCE: none, claim A's config)."""
    return backbone_config(model, budget, seed, dataset, **ABLATIONS.get(ablation, {}))


def trained_threshold(chance: float) -> float:
    """The accuracy a baseline seed must reach to count as trained: TRAINED_FRACTION of the way from chance to 1."""
    return chance + TRAINED_FRACTION * (1.0 - chance)


def ablation_verdict(plain_drop: dict[str, Interval], dia_gain: dict[str, Interval], baseline: list[float],
                     chance: float) -> Verdict:
    """The rule of the module docstring.

    Args:
        plain_drop: ablation -> interval of (plain ablated - plain unablated), paired by seed.
        dia_gain: ablation -> interval of (dia ablated - plain ablated), paired by seed.
        baseline: the plain unablated backbone's test accuracy per seed (nan: a failed run, left out;
            a diverged one counts at chance).
        chance: 1 / number of classes.
    """
    missing = [a for a in plain_drop if plain_drop[a].low is None or dia_gain[a].low is None]
    if missing:
        return Verdict(NOT_TESTABLE, f"no interval for {', '.join(missing)} (fewer than two paired seeds); "
                                     f"{MORE_SEEDS}")
    threshold = trained_threshold(chance)
    finished = [a for a in baseline if math.isfinite(a)]
    untrained = [a for a in finished if a < threshold]
    if len(untrained) > MAX_BASELINE_FAILURES:
        return Verdict(PRECONDITION_NOT_MET, f"the baseline failed to train: the plain unablated backbone stays below "
                                             f"{threshold:.4f} (halfway from chance {chance:.4f} to 1) in "
                                             f"{len(untrained)} of {len(finished)} seeds "
                                             f"({', '.join(f'{a:.4f}' for a in untrained)}; at most "
                                             f"{MAX_BASELINE_FAILURES} allowed)")
    held, failed, untestable = [], [], []
    for ablation in plain_drop:
        drop, gain = plain_drop[ablation], dia_gain[ablation]
        if drop.high >= 0:
            untestable.append(f"{ablation}: {NO_DEGRADATION}, plain - reference {drop.format_ci()}")
        elif gain.low <= 0:
            failed.append(f"{ablation}: DIA is not above the plain backbone (dia - plain {gain.format_ci()})")
        else:
            held.append(ablation)
    testable = len(held) + len(failed)
    if not testable:
        return Verdict(PRECONDITION_NOT_MET, f"no ablation degrades the backbone (plain - reference must lie below "
                                             f"0): {'; '.join(untestable)}")
    details = "; ".join(([f"holds in {', '.join(held)}"] if held else []) + failed + untestable)
    if 2 * len(held) > testable:
        return Verdict(REPRODUCED, f"DIA stays above the degraded backbone in {len(held)} of {testable} testable "
                                   f"ablations: {details}")
    return Verdict(NOT_REPRODUCED, f"DIA stays above the degraded backbone in {len(held)} of {testable} testable "
                                   f"ablations (needs more than half): {details}")


class DiaStabilisesTraining(AbstractClaim):
    """Plain / SE / DIA resnet56 (resnet20 at smoke) without skips, BatchNorm or augmentation."""

    id = "dia-stabilises-training"
    kind = "paper"
    statement = ("DIA stabilises training where the backbone alone degrades: skip connections removed, "
                 "BatchNorm removed, augmentation off")
    paper = ("DIANet (arXiv 1905.10671), DIA-LSTM's regularisation experiments: removing the skip connections "
             "or the BatchNorm of the whole ResNet hurts the backbone, DIA recovers much of it; "
             "DIA (arXiv 2210.16101) adds training without augmentation")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        return [RunSpec(ablated_config(ablation, model, budget, seed, dataset))
                for ablation in (REFERENCE, *ABLATIONS) for model in stabilisation_models(budget)
                for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        dataset = first_dataset(budget)
        if dataset is None:
            return no_dataset(budget)
        task = get_task("classification")
        models = stabilisation_models(budget)
        plain, dia = models[0], models[-1]
        dirs = {(a, m): [run_dirs[RunSpec(ablated_config(a, m, budget, seed, dataset)).key()] for seed in budget.seeds]
                for a in (REFERENCE, *ABLATIONS) for m in models}
        chance = chance_accuracy(dataset)
        acc = {k: [outcome_accuracy(d, chance) for d in ds] for k, ds in dirs.items()}
        measured = {f"{a} {m} test accuracy": accuracy_interval(acc[a, m]) for a in ABLATIONS for m in models}
        references = {f"{m} test accuracy (unablated)": accuracy_interval(acc[REFERENCE, m]) for m in models}
        plain_drop = {a: paired_difference(acc[a, plain], acc[REFERENCE, plain]) for a in ABLATIONS}
        dia_gain = {a: paired_difference(acc[a, dia], acc[a, plain]) for a in ABLATIONS}
        for a in ABLATIONS:
            measured[f"{a}: plain - plain unablated (paired)"] = plain_drop[a]
            measured[f"{a}: dia - plain (paired)"] = dia_gain[a]
        table = []
        for (a, m), ds in dirs.items():
            trained, untrained = _gradient_norms(ds, budget, task)
            table.append({"ablation": a, "model": m, "test accuracy": accuracy_interval(acc[a, m]).format(),
                          "95% CI": accuracy_interval(acc[a, m]).format_ci(),
                          "diverged": sum(run_outcome(d) == DIVERGED for d in ds),
                          "grad norm per stage (trained)": trained, "grad norm per stage (untrained)": untrained})
        notes = [f"{dataset}, {budget.epochs} epochs, base_width {budget.width}, seeds {list(budget.seeds)}; "
                 f"a diverged run counts at chance accuracy {chance:.3f}",
                 *unfinished_note({f"{a} {m}": ds for (a, m), ds in dirs.items()}, chance),
                 f"gradient norms: ||d loss / d theta|| per stage (stages.0 / .1 / .2), mean over seeds, on the first "
                 f"{budget.samples} test images in train mode (batch statistics)"]
        verdict = ablation_verdict(plain_drop, dia_gain, acc[REFERENCE, plain], chance)
        comparisons = {name: None for a in ABLATIONS  # the paper gives no effect size for these
                       for name in (f"{a}: plain - plain unablated (paired)", f"{a}: dia - plain (paired)")}
        return ClaimResult(measured, references, verdict, table=table, notes=notes, comparisons=comparisons)


def _gradient_norms(run_dirs: list[Path], budget: Budget, task) -> tuple[str, str]:
    """'a / b / c' per-stage gradient norms (mean over the finished seeds), trained and untrained."""
    trained, untrained = [], []
    for d in run_dirs:
        if run_outcome(d) != FINISHED:  # no trained network (the notes name it)
            continue
        run = load_run(d)
        batch = run.test_batch(budget.samples)
        trained.append(stage_gradient_norms(run.model, batch, task))
        untrained.append(stage_gradient_norms(untrained_model(run.model_spec, run.config["seed"]), batch, task))
    return _stage_means(trained), _stage_means(untrained)


def _stage_means(rows: list[dict[str, float]]) -> str:
    if not rows:
        return "n/a"
    return " / ".join(f"{sum(r[s] for r in rows) / len(rows):.3g}" for s in rows[0])

