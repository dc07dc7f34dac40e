"""Claim "continuous-dia-nfe" (a hypothesis of this project, not a claim of the papers): the continuous DIA
needs fewer function evaluations than a plain ODE-Net.

The project's research target (experiments/README.md, E2): dia_odenet, the ODE-Net whose
dynamics carry a DIA memory, should need at most 0.75 x the test NFE of the plain odenet at equal test
accuracy. The reading behind it is the step-size one of "Understanding Self-attention Mechanism via
Dynamical System Perspective" (Huang et al., ICCV 2023): an attention that refines the estimate of
stiffness should let an adaptive solver take fewer, larger steps. Runs: odenet and dia_odenet (width =
the budget's width, the budget's epochs, every seed, the budget's first available dataset), trained and
tested with dopri5 at each tolerance of TOLERANCES (rtol = atol): the default 1e-3 and a tight 1e-5.

Statistic, per tolerance: each model's test NFE (summary.json "nfe_test": mean vector-field
evaluations per test batch) and test accuracy over seeds as 95% Student-t intervals, and the paired
ratio NFE(dia_odenet) / NFE(odenet) of the same seed as an interval. Reference: the plain odenet of
the same seed, tolerance and budget (the ratio's denominator; ratio 1 = no saving).

Verdict rule: at a tolerance the claim *holds* when the upper end of the ratio's interval lies below 1
and dia_odenet's accuracy is not worse: the 95% interval of the paired difference (dia_odenet - odenet
test accuracy, same seed) has its lower end above -MARGIN (non-inferiority margin 0.01, one point of
accuracy). The project's target (ratio <= 0.75) is met at a tolerance where the ratio's upper end is
at most 0.75 with accuracy not worse; the verdict's reason says where. "reproduced" when the claim
holds at every tolerance; "not reproduced" when it fails at one (the reason names those where it
held); "not testable here" when no dataset is available, or a tolerance has fewer than two seeds
with finished runs of both models (claim.run_outcome: a run that diverged or ran out of solver steps
has no test NFE and is left out; the notes name it).

CPU cost (2 cores shared with other jobs, OMP_NUM_THREADS=1, digits, width 16): an epoch takes about
1.5 s (odenet) and 2.4 s (dia_odenet) at 1e-3, 2.1 s and 2.9 s at 1e-5; measure() only reads
summary.json. Measured at 3 seeds x 5 epochs: 160 s for the 12 runs; so at the cpu budget (3 seeds,
15 epochs) about 8 minutes, more if the tight tolerance's NFE grows with training.
"""

from __future__ import annotations

import math
from pathlib import Path

from dia_ode.analysis.intervals import Interval, mean_interval, metric_bounds
from dia_ode.rundir import read_summary
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import (FINISHED, MORE_SEEDS, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, AbstractClaim,
                                          ClaimResult, RunSpec, Verdict, no_dataset, run_outcome, study_config)

PLAIN, DIA = "odenet", "dia_odenet"
TOLERANCES = (1e-3, 1e-5)  # odenet's default, and a tight one where a solver must take more steps
TARGET = 0.75  # the project's research target (experiments/README.md, E2)
MARGIN = 0.01  # non-inferiority margin of the paired accuracy difference: one point of accuracy
DIFFERENCE_RANGE = (-1.0, 1.0)  # a difference of two accuracies
COLUMNS = (("accuracy", "test_acc", ".4f"), ("NFE", "nfe_test", ".3g"))  # table: (label, summary key, format)


def accuracy_not_worse(difference: Interval) -> bool:
    """The paired difference dia - plain accuracy is non-inferior: its interval's low end > -MARGIN."""
    return difference.low > -MARGIN


def tolerance_outcome(ratio: Interval, difference: Interval) -> dict | None:
    """{"holds", "target", "accuracy_ok"} at one tolerance (module docstring); None without intervals.

    Args:
        ratio: the paired NFE ratio dia_odenet / odenet.
        difference: the paired accuracy difference dia_odenet - odenet.
    """
    if ratio.high is None or difference.low is None:
        return None
    accuracy_ok = accuracy_not_worse(difference)
    return {"holds": ratio.high < 1 and accuracy_ok, "target": ratio.high <= TARGET and accuracy_ok,
            "accuracy_ok": accuracy_ok}


def nfe_verdict(tolerances: dict[float, tuple[Interval, Interval]]) -> Verdict:
    """The claim's verdict from each tolerance's (NFE ratio, accuracy difference) paired intervals."""
    if not tolerances:
        return Verdict(NOT_TESTABLE, "no run: none of the budget's datasets is available; a budget with digits "
                                     "(smoke, cpu) would test it")
    outcomes = {tol: tolerance_outcome(*ivs) for tol, ivs in tolerances.items()}
    missing = [f"{tol:g}" for tol, out in outcomes.items() if out is None]
    if missing:
        return Verdict(NOT_TESTABLE, f"at tolerance {', '.join(missing)} fewer than two seeds have "
                                     f"finished runs of both models: no 95% interval; {MORE_SEEDS}")
    found = "; ".join(f"{tol:g}: ratio {ratio.format('.2f')} {ratio.format_ci('.2f')}, accuracy dia - plain "
                      f"{difference.format_ci('.4f')} {'not worse' if outcomes[tol]['accuracy_ok'] else 'worse'}"
                      f" (margin {MARGIN})" for tol, (ratio, difference) in tolerances.items())
    target = [f"{tol:g}" for tol, out in outcomes.items() if out["target"]]
    target_text = (f"the project's target ratio <= {TARGET} is met at {', '.join(target)}" if target else
                   f"the project's target ratio <= {TARGET} is met at no tolerance")
    held = [f"{tol:g}" for tol, out in outcomes.items() if out["holds"]]
    if len(held) == len(outcomes):
        return Verdict(REPRODUCED, f"dia_odenet's NFE ratio lies below 1 at accuracy not worse at every "
                                     f"tolerance ({found}); {target_text}")
    where = f"it holds at {', '.join(held)} only" if held else "it holds at no tolerance"
    return Verdict(NOT_REPRODUCED, f"the NFE ratio's interval does not lie below 1 at accuracy not worse "
                                     f"at every tolerance ({found}); {where}; {target_text}")


def _tolerance_options(tol: float) -> dict:
    return {"rtol": tol, "atol": tol}


class ContinuousDiaNfe(AbstractClaim):
    """dia_odenet needs fewer test NFE than odenet at equal accuracy (module docstring)."""

    id = "continuous-dia-nfe"
    kind = "hypothesis"
    statement = "the continuous DIA needs fewer function evaluations than a plain ODE-Net"
    paper = (f"project target: dia_odenet <= {TARGET} x the NFE of odenet at equal test accuracy "
             f"(experiments/README.md E2); step-size reading of attention: Understanding Self-attention "
             f"Mechanism via Dynamical System Perspective, Huang et al., ICCV 2023")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        return [RunSpec(study_config(model, dataset, budget, seed, {"width": budget.width, **_tolerance_options(tol)}))
                for tol in TOLERANCES for model in (PLAIN, DIA) for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        specs = self.runs(budget)
        if not specs:
            return no_dataset(budget)
        results: dict[tuple[float, str, int], dict] = {}  # (tol, model, seed) -> summary.json
        notes = []
        for spec in specs:
            cfg, summary = spec.config, read_summary(Path(run_dirs[spec.key()]))
            if run_outcome(run_dirs[spec.key()]) == FINISHED and math.isfinite(summary.get("nfe_test", math.nan)):
                results[cfg.model_options["rtol"], cfg.model, cfg.seed] = summary
            else:  # diverged, or out of solver steps: no test NFE to compare
                notes.append(f"{cfg.model}, tolerance {cfg.model_options['rtol']:g}, seed {cfg.seed}: no test result "
                             f"({summary.get('error') or summary.get('status', 'no summary.json')})")
        measured, references, table, verdict_input = {}, {}, [], {}
        for tol in TOLERANCES:
            seeds = [s for s in budget.seeds if (tol, PLAIN, s) in results and (tol, DIA, s) in results]
            if not seeds:
                verdict_input[tol] = (_nothing(), _nothing())
                continue
            ivs = {(model, key): mean_interval([results[tol, model, s][key] for s in seeds], bounds=metric_bounds(key))
                   for model in (PLAIN, DIA) for key in ("nfe_test", "test_acc")}
            ratio = mean_interval([results[tol, DIA, s]["nfe_test"] / results[tol, PLAIN, s]["nfe_test"]
                                   for s in seeds], bounds=(0.0, math.inf))  # paired by seed; a ratio is > 0
            measured[f"NFE ratio dia_odenet / odenet, tolerance {tol:g}"] = ratio  # its null: 1, no saving
            difference = mean_interval([results[tol, DIA, s]["test_acc"] - results[tol, PLAIN, s]["test_acc"]
                                        for s in seeds], bounds=DIFFERENCE_RANGE)  # paired by seed; null: 0
            measured[f"test accuracy dia_odenet - odenet (paired), tolerance {tol:g}"] = difference
            for what, key, _ in COLUMNS:  # the report shows a reference of the same name beside its statistic
                name = f"test {what}, tolerance {tol:g}: dia_odenet (reference odenet)"
                measured[name], references[name] = ivs[DIA, key], ivs[PLAIN, key]
            verdict_input[tol] = (ratio, difference)
            table.append({"tolerance": f"{tol:g}", "seeds": len(seeds),
                          **{f"{model} {what}": f"{ivs[model, key].format(fmt)} {ivs[model, key].format_ci(fmt)}"
                             for model in (PLAIN, DIA) for what, key, fmt in COLUMNS},
                          "NFE ratio dia/plain": f"{ratio.format('.3f')} {ratio.format_ci('.3f')}",
                          "accuracy dia - plain": f"{difference.format('.4f')} {difference.format_ci('.4f')}"})
        dataset = specs[0].config.dataset
        notes.insert(0, f"odenet and dia_odenet on {dataset}, {len(budget.seeds)} seeds, {budget.epochs} epochs, "
                        f"width {budget.width}, dopri5 with rtol = atol = the tolerance in training and test; "
                        f"NFE = mean vector-field evaluations per test batch; the ratio is paired by seed; "
                        f"intervals are 95% Student-t over seeds")
        comparisons = {name: None for name in measured if "(paired)" in name}  # the hypothesis names no effect
        return ClaimResult(measured, references, nfe_verdict(verdict_input), table, [], notes,
                           comparisons=comparisons)


def _nothing() -> Interval:
    """An interval-less placeholder for a tolerance without a finished pair of runs."""
    return Interval(math.nan, None, 0, None, None, 0.95, (), reason="no finished pair of runs")
