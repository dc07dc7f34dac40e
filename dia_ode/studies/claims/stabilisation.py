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

Controls (at the cpu and full budgets; the smoke budget trains none, TRAINS_CONTROLS), each a run of the
plain backbone with the same recipe otherwise:
- warm-up, under the reference and every ablation: He et al. (arXiv 1512.03385) trained ResNet-110 only
  after warming up at lr 0.01; here the trainer's warm-up (schedule warmup_cosine: lr ramped linearly
  over WARMUP_EPOCHS, then the cosine), a second baseline for where the plain one fails to train;
- small steps, under every ablation: a constant step h = 0.5 and h = 0.25 (model option h; an SE gate
  starts near 1/2 and a DIA gate near 1/4, theory/dia.md) and a learned scalar step per block from 0
  (h=learned: SkipInit, arXiv 2002.10444 / ReZero, arXiv 2003.04887; not under no_skip, where a step
  from 0 zeroes every stage and nothing trains: NOT_CONTROLS). Attention read as a step size could
  stabilise by its size alone; these take the size without the attention.

Verdict rule, per ablation, on differences paired by seed (same data order). The claim presupposes
a baseline that trains and a backbone that degrades without the ablated part:
- the baseline trains: the plain unablated backbone reaches at least halfway from chance to perfect
  accuracy (chance + TRAINED_FRACTION x (1 - chance)) in every seed (MAX_BASELINE_FAILURES = 0 below it);
  where it does not (at depth 56 on digits: 2 of 3 seeds stall), the warmed-up plain backbone is judged
  the same way and, when it trains, is the baseline of every difference below (the reason says so);
  when neither trains, the ablations have nothing trained to degrade from: "precondition not met (the
  baseline failed to train)", naming both;
- the backbone degrades: the 95% interval of (baseline ablated - baseline unablated) lies below 0; where
  it does not, that ablation's precondition is not met (the backbone does not degrade at this depth/budget);
- DIA stabilises: the 95% interval of (dia ablated - baseline ablated) lies above 0;
- and it is DIA's doing: the 95% interval of (dia ablated - control ablated) lies above 0 for every small-
  step control; where one does not, DIA stabilises but "a small step does the same", which is no finding
  for attention, and the ablation counts against the claim (the reason names the control).
In this order: "not testable here" when an ablation or a control has fewer than two paired seeds;
"precondition not met" when no baseline trains, or no ablation degrades the backbone; "reproduced" when
DIA stabilises beyond every control in more than half of the ablations that degrade the backbone (2 of
3 when all do, 1 of 1 when one does); "not reproduced" otherwise, with the ablations that failed and why.
Without controls (smoke) the last condition is not checked, and the reason says so.

Cost at the cpu budget: 72 runs of 15 epochs at depth 56, width 16, digits: 36 of plain / SE / DIA
(4 configurations x 3 models x 3 seeds) and 36 controls (4 warm-up and 8 small-step configurations x 3
seeds); `--launcher local:2` halves the wall time.
"""

from __future__ import annotations

import math
from dataclasses import replace
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
SMALL_STEP = "a small step does the same"  # DIA's stabilisation matched by a constant or learned scalar step
# A baseline seed trained when it got at least halfway from chance to perfect accuracy: every network that
# trains on the report's datasets passes it within the budget (SE and DIA resnet56: 0.98 on digits), while a
# stalled one stays near chance (plain resnet56 at the cpu budget: 0.145, 0.426).
TRAINED_FRACTION = 0.5
# Every ablation's drop is paired with the baseline of its seed: one untrained baseline makes its pair compare
# two failures, so no failed seed is allowed.
MAX_BASELINE_FAILURES = 0
DEPTH = {"smoke": 20, "cpu": 56, "full": 56}  # see the module docstring: degradation needs depth

# The controls (module docstring): the plain backbone warmed up, and with a small step that is not attention.
WARMUP = "warm-up"
STEP_CONTROLS: dict[str, dict] = {"h=0.5": {"h": 0.5}, "h=0.25": {"h": 0.25}, "h=learned": {"h": "learned"}}
# Without skips a step that starts at 0 makes every stage output post(0 * f) = 0: no gradient reaches any
# weight and the network never trains, so the learned step is no control there.
NOT_CONTROLS = {("no_skip", "h=learned")}
# He et al. warmed up ResNet-110 for about 400 iterations, one CIFAR-10 epoch at batch 128.
WARMUP_EPOCHS = 1.0
# The smoke budget trains no control: 24 more runs would double the claim's cost there.
TRAINS_CONTROLS = {"smoke": False, "cpu": True, "full": True}


def stabilisation_models(budget: Budget) -> tuple[str, str, str]:
    """(plain, se, dia) at the budget's DEPTH: claim dia-improves-backbone's models, deeper."""
    return tuple(name.replace("20", str(DEPTH[budget.name])) for name in MODELS)


def ablated_config(ablation: str, model: str, budget: Budget, seed: int, dataset: str) -> TrainConfig:
    """backbone_config of `model` with the ablation's override (REFERENCE: none, claim A's config)."""
    return backbone_config(model, budget, seed, dataset, **ABLATIONS.get(ablation, {}))


def warmup_epochs(budget: Budget) -> float:
    """WARMUP_EPOCHS, or half the training where the budget trains for less (the warm-up must end before it)."""
    return min(WARMUP_EPOCHS, budget.epochs / 2)


def control_config(ablation: str, control: str, budget: Budget, seed: int, dataset: str) -> TrainConfig:
    """The plain backbone's ablated_config with a control: WARMUP (schedule warmup_cosine over warmup_epochs)
    or one of STEP_CONTROLS (its model option h)."""
    plain = stabilisation_models(budget)[0]
    config = backbone_config(plain, budget, seed, dataset, **ABLATIONS.get(ablation, {}),
                             **STEP_CONTROLS.get(control, {}))
    if control == WARMUP:
        config = replace(config, schedule="warmup_cosine", warmup_epochs=warmup_epochs(budget))
    return config


def arm_configs(budget: Budget, dataset: str) -> dict[tuple[str, str], list[TrainConfig]]:
    """(ablation, arm) -> one TrainConfig per seed. Arms: plain, SE and DIA under REFERENCE and every ablation;
    where the budget trains controls, also "<plain> warm-up" under REFERENCE and every ablation (a baseline)
    and "<plain> h=..." under every ablation but NOT_CONTROLS (DIA is compared with them where the backbone
    degrades)."""
    seeds, models = budget.seeds, stabilisation_models(budget)
    configs = {(a, m): [ablated_config(a, m, budget, seed, dataset) for seed in seeds]
               for a in (REFERENCE, *ABLATIONS) for m in models}
    if TRAINS_CONTROLS[budget.name]:
        for a in (REFERENCE, *ABLATIONS):
            for control in (WARMUP, *STEP_CONTROLS):
                if (a != REFERENCE or control == WARMUP) and (a, control) not in NOT_CONTROLS:
                    configs[a, f"{models[0]} {control}"] = [control_config(a, control, budget, seed, dataset)
                                                            for seed in seeds]
    return configs


def trained_threshold(chance: float) -> float:
    """The accuracy a baseline seed must reach to count as trained: TRAINED_FRACTION of the way from chance to 1."""
    return chance + TRAINED_FRACTION * (1.0 - chance)


def untrained_seeds(accuracies: list[float], chance: float) -> list[float]:
    """The finished seeds (finite accuracies) below trained_threshold."""
    return [a for a in accuracies if math.isfinite(a) and a < trained_threshold(chance)]


def choose_baseline(baselines: dict[str, list[float]], chance: float) -> str | None:
    """The first baseline (label -> unablated test accuracy per seed, in order of preference: the plain
    backbone, then the plain backbone with warm-up) with at most MAX_BASELINE_FAILURES untrained seeds;
    None when none trains."""
    return next((label for label, acc in baselines.items()
                 if len(untrained_seeds(acc, chance)) <= MAX_BASELINE_FAILURES), None)


def ablation_verdict(plain_drop: dict[str, Interval], dia_gain: dict[str, Interval], baselines: dict[str, list[float]],
                     chance: float, over_controls: dict[str, dict[str, Interval]] | None = None) -> Verdict:
    """The rule of the module docstring.

    Args:
        plain_drop: ablation -> interval of (baseline ablated - baseline unablated), paired by seed, for the
            baseline choose_baseline(baselines) picks (the first one when none trains).
        dia_gain: ablation -> interval of (dia ablated - baseline ablated), paired by seed.
        baselines: label -> unablated test accuracy per seed, in order of preference (nan: a failed run,
            left out; a diverged one counts at chance).
        chance: 1 / number of classes.
        over_controls: ablation -> control -> interval of (dia ablated - control ablated), paired by seed;
            None where the budget trains no control (the reason says so).
    """
    controls = over_controls or {}
    missing = [a for a in plain_drop if plain_drop[a].low is None or dia_gain[a].low is None]
    missing += [f"dia - {c} in {a}" for a in controls for c, iv in controls[a].items() if iv.low is None]
    if missing:
        return Verdict(NOT_TESTABLE, f"no interval for {', '.join(missing)} (fewer than two paired seeds); "
                                     f"{MORE_SEEDS}")
    chosen = choose_baseline(baselines, chance)
    if chosen is None:
        return Verdict(PRECONDITION_NOT_MET, f"the baseline failed to train: "
                                             f"{'; '.join(_untrained(b, acc, chance) for b, acc in baselines.items())}"
                                             f"; at most {MAX_BASELINE_FAILURES} allowed")
    passed_over = list(baselines)[:list(baselines).index(chosen)]  # preferred baselines that failed to train
    judged_on = (f"; judged on the {chosen} baseline, since "
                 f"{'; '.join(_untrained(b, baselines[b], chance) for b in passed_over)}") if passed_over else ""
    held, failed, matched, untestable = [], [], [], []
    for ablation in plain_drop:
        drop, gain = plain_drop[ablation], dia_gain[ablation]
        same = {c: iv for c, iv in controls.get(ablation, {}).items() if iv.low <= 0}
        if drop.high >= 0:
            untestable.append(f"{ablation}: {NO_DEGRADATION}, {chosen} - reference {drop.format_ci()}")
        elif gain.low <= 0:
            failed.append(f"{ablation}: DIA is not above the {chosen} backbone (dia - {chosen} {gain.format_ci()})")
        elif same:
            matched.append(f"{ablation}: DIA stays above the {chosen} backbone, but {SMALL_STEP} ("
                           + ", ".join(f"dia - {c} {iv.format_ci()}" for c, iv in same.items()) + ")")
        else:
            held.append(ablation)
    testable = len(held) + len(failed) + len(matched)
    if not testable:
        return Verdict(PRECONDITION_NOT_MET, f"no ablation degrades the backbone (baseline - reference must lie below "
                                             f"0): {'; '.join(untestable)}{judged_on}")
    details = "; ".join(([f"holds in {', '.join(held)}"] if held else []) + failed + matched + untestable)
    names = ", ".join(dict.fromkeys(c for per_ablation in controls.values() for c in per_ablation))
    beyond = f"above the degraded backbone and every small-step control ({names})" if controls else \
        "above the degraded backbone"
    unchecked = "" if controls else "; no small-step control was trained at this budget"
    if 2 * len(held) > testable:
        return Verdict(REPRODUCED, f"DIA stays {beyond} in {len(held)} of {testable} testable ablations: "
                                   f"{details}{judged_on}{unchecked}")
    return Verdict(NOT_REPRODUCED, f"DIA stays {beyond} in {len(held)} of {testable} testable ablations (needs "
                                   f"more than half): {details}{judged_on}{unchecked}")


def _untrained(baseline: str, accuracies: list[float], chance: float) -> str:
    """Which seeds of a baseline stay below trained_threshold, in words."""
    below = untrained_seeds(accuracies, chance)
    return (f"the {baseline} unablated backbone stays below {trained_threshold(chance):.4f} (halfway from chance "
            f"{chance:.4f} to 1) in {len(below)} of {sum(map(math.isfinite, accuracies))} seeds "
            f"({', '.join(f'{a:.4f}' for a in below)})")


class DiaStabilisesTraining(AbstractClaim):
    """Plain / SE / DIA resnet56 (resnet20 at smoke) without skips, BatchNorm or augmentation, beside the plain
    backbone warmed up and with small-step controls (module docstring)."""

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
        return [RunSpec(config) for configs in arm_configs(budget, dataset).values() for config in configs]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        dataset = first_dataset(budget)
        if dataset is None:
            return no_dataset(budget)
        task = get_task("classification")
        models = stabilisation_models(budget)
        plain, dia = models[0], models[-1]
        dirs = {arm: [run_dirs[RunSpec(config).key()] for config in configs]
                for arm, configs in arm_configs(budget, dataset).items()}
        chance = chance_accuracy(dataset)
        acc = {arm: [outcome_accuracy(d, chance) for d in ds] for arm, ds in dirs.items()}
        baseline_arms = {label: arm for label, arm in (("plain", plain), ("warmed-up plain", f"{plain} {WARMUP}"))
                         if (REFERENCE, arm) in acc}
        baselines = {label: acc[REFERENCE, arm] for label, arm in baseline_arms.items()}
        chosen = choose_baseline(baselines, chance) or "plain"
        base = baseline_arms[chosen]
        measured = {f"{a} {m} test accuracy": accuracy_interval(values) for (a, m), values in acc.items()
                    if a != REFERENCE}
        references = {f"{m} test accuracy (unablated)": accuracy_interval(values) for (a, m), values in acc.items()
                      if a == REFERENCE}
        plain_drop = {a: paired_difference(acc[a, base], acc[REFERENCE, base]) for a in ABLATIONS}
        dia_gain = {a: paired_difference(acc[a, dia], acc[a, base]) for a in ABLATIONS}
        over_controls = None
        if TRAINS_CONTROLS[budget.name]:
            over_controls = {a: {c: paired_difference(acc[a, dia], acc[a, f"{plain} {c}"]) for c in STEP_CONTROLS
                                 if (a, c) not in NOT_CONTROLS} for a in ABLATIONS}
        for a in ABLATIONS:
            measured[f"{a}: {chosen} - {chosen} unablated (paired)"] = plain_drop[a]
            measured[f"{a}: dia - {chosen} (paired)"] = dia_gain[a]
            for c, interval in (over_controls or {}).get(a, {}).items():
                measured[f"{a}: dia - {c} (paired)"] = interval
        table = []
        for (a, m), ds in dirs.items():
            trained, untrained = _gradient_norms(ds, budget, task)
            table.append({"ablation": a, "model": m, "test accuracy": accuracy_interval(acc[a, m]).format(),
                          "95% CI": accuracy_interval(acc[a, m]).format_ci(),
                          "diverged": sum(run_outcome(d) == DIVERGED for d in ds),
                          "grad norm per stage (trained)": trained, "grad norm per stage (untrained)": untrained})
        notes = [f"{dataset}, {budget.epochs} epochs, base_width {budget.width}, seeds {list(budget.seeds)}; "
                 f"a diverged run counts at chance accuracy {chance:.3f}",
                 _controls_note(budget, plain, chosen),
                 *unfinished_note({f"{a} {m}": ds for (a, m), ds in dirs.items()}, chance),
                 f"gradient norms: ||d loss / d theta|| per stage (stages.0 / .1 / .2), mean over seeds, on the first "
                 f"{budget.samples} test images in train mode (batch statistics)"]
        verdict = ablation_verdict(plain_drop, dia_gain, baselines, chance, over_controls)
        comparisons = {name: None for name in measured if name.endswith("(paired)")}  # the paper gives no effect size
        return ClaimResult(measured, references, verdict, table=table, notes=notes, comparisons=comparisons)


def _controls_note(budget: Budget, plain: str, baseline: str) -> str:
    """What the controls were and which baseline the verdict read."""
    if not TRAINS_CONTROLS[budget.name]:
        return f"no control at the {budget.name} budget: the verdict compares DIA with the plain backbone only"
    return (f"controls: {plain} {WARMUP} (lr ramped linearly over {warmup_epochs(budget):g} epochs, then the cosine: "
            f"schedule warmup_cosine) under every configuration, and {plain} with the step controls "
            f"{', '.join(STEP_CONTROLS)} (constant steps; one learned scalar per block from 0) under every ablation "
            f"(but {', '.join(f'{c} under {a}' for a, c in sorted(NOT_CONTROLS))}, which cannot train); "
            f"the verdict's baseline: {baseline}")


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

