"""Claim "continuous-dia-nfe": the continuous DIA needs fewer function evaluations than a plain ODE-Net.

The project's research target (experiments/README.md, E2; issue 4): dia_odenet, the ODE-Net whose
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
and dia_odenet's accuracy is equal or better (its interval overlaps odenet's or lies above it). The
project's target (ratio <= 0.75) is met at a tolerance where the ratio's upper end is at most 0.75; the
verdict's reason says where. "reproduced" when the claim holds at every tolerance; "not reproduced"
when it fails at one (the reason names those where it held); "not testable here" when no dataset is
available, or a tolerance has fewer than two seeds with finished runs of both models (a run that
diverged or ran out of solver steps has no test NFE; the notes name it).

CPU cost (2 cores shared with other jobs, OMP_NUM_THREADS=1, digits, width 16): an epoch takes about
1.5 s (odenet) and 2.4 s (dia_odenet) at 1e-3, 2.1 s and 2.9 s at 1e-5; measure() only reads
summary.json. Measured at 3 seeds x 5 epochs: 160 s for the 12 runs; so at the cpu budget (3 seeds,
15 epochs) about 8 minutes, more if the tight tolerance's NFE grows with training.
"""

from __future__ import annotations

import math
from pathlib import Path

from dia_ode.analysis.intervals import Interval, mean_interval, metric_bounds
from dia_ode.engine import recipe_config
from dia_ode.rundir import has_results, read_summary
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import AbstractClaim, ClaimResult, RunSpec, Verdict

PLAIN, DIA = "odenet", "dia_odenet"
TOLERANCES = (1e-3, 1e-5)  # odenet's default, and a tight one where a solver must take more steps
TARGET = 0.75  # the project's research target (experiments/README.md, E2)
COLUMNS = (("accuracy", "test_acc", ".4f"), ("NFE", "nfe_test", ".3g"))  # table: (label, summary key, format)


def accuracy_not_worse(dia: Interval, plain: Interval) -> bool:
    """dia's accuracy interval overlaps plain's or lies above it (equal or better accuracy)."""
    return dia.high >= plain.low


def tolerance_outcome(ratio: Interval, acc_dia: Interval, acc_plain: Interval) -> dict | None:
    """{"holds", "target", "accuracy_ok"} at one tolerance (module docstring); None without intervals."""
    if any(iv.high is None for iv in (ratio, acc_dia, acc_plain)):
        return None
    accuracy_ok = accuracy_not_worse(acc_dia, acc_plain)
    return {"holds": ratio.high < 1 and accuracy_ok, "target": ratio.high <= TARGET and accuracy_ok,
            "accuracy_ok": accuracy_ok}


def nfe_verdict(tolerances: dict[float, tuple[Interval, Interval, Interval]]) -> Verdict:
    """The claim's verdict from each tolerance's (NFE ratio, dia accuracy, plain accuracy) intervals."""
    if not tolerances:
        return Verdict("not testable here", "no run: none of the budget's datasets is available")
    outcomes = {tol: tolerance_outcome(*ivs) for tol, ivs in tolerances.items()}
    missing = [f"{tol:g}" for tol, out in outcomes.items() if out is None]
    if missing:
        return Verdict("not testable here", f"at tolerance {', '.join(missing)} fewer than two seeds have "
                                            f"finished runs of both models: no 95% interval")
    found = "; ".join(f"{tol:g}: ratio {ratio.format('.2f')} {ratio.format_ci('.2f')}, accuracy "
                      f"{'equal or better' if outcomes[tol]['accuracy_ok'] else 'worse'}"
                      for tol, (ratio, _, _) in tolerances.items())
    target = [f"{tol:g}" for tol, out in outcomes.items() if out["target"]]
    target_text = (f"the project's target ratio <= {TARGET} is met at {', '.join(target)}" if target else
                   f"the project's target ratio <= {TARGET} is met at no tolerance")
    held = [f"{tol:g}" for tol, out in outcomes.items() if out["holds"]]
    if len(held) == len(outcomes):
        return Verdict("reproduced", f"dia_odenet's NFE ratio lies below 1 at equal or better accuracy at every "
                                     f"tolerance ({found}); {target_text}")
    where = f"it holds at {', '.join(held)} only" if held else "it holds at no tolerance"
    return Verdict("not reproduced", f"the NFE ratio's interval does not lie below 1 at equal or better accuracy "
                                     f"at every tolerance ({found}); {where}; {target_text}")


def _tolerance_options(tol: float) -> dict:
    return {"rtol": tol, "atol": tol}


class ContinuousDiaNfe(AbstractClaim):
    """dia_odenet needs fewer test NFE than odenet at equal accuracy (module docstring)."""

    id = "continuous-dia-nfe"
    statement = "the continuous DIA needs fewer function evaluations than a plain ODE-Net"
    paper = (f"project target: dia_odenet <= {TARGET} x the NFE of odenet at equal test accuracy "
             f"(experiments/README.md E2); step-size reading of attention: Understanding Self-attention "
             f"Mechanism via Dynamical System Perspective, Huang et al., ICCV 2023")
    command = ("dia-ode compare --models odenet,dia_odenet --dataset digits --epochs 15 --seeds 0,1,2 "
               "--model-option width=16 --model-option rtol=TOL --model-option atol=TOL, "
               "for TOL = 1e-3 and 1e-5")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        given = {"model", "dataset", "epochs", "seed", "model_options"}
        return [RunSpec(recipe_config({"model": model, "dataset": dataset, "epochs": budget.epochs, "seed": seed,
                                       "model_options": {"width": budget.width, **_tolerance_options(tol)}}, given))
                for tol in TOLERANCES for model in (PLAIN, DIA) for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        specs = self.runs(budget)
        if not specs:
            return ClaimResult({}, {}, nfe_verdict({}),
                               notes=[f"none of {', '.join(budget.datasets)} is available"])
        results: dict[tuple[float, str, int], dict] = {}  # (tol, model, seed) -> summary.json
        notes = []
        for spec in specs:
            cfg, summary = spec.config, read_summary(Path(run_dirs[spec.key()]))
            if has_results(summary) and math.isfinite(summary.get("nfe_test", math.nan)):
                results[cfg.model_options["rtol"], cfg.model, cfg.seed] = summary
            else:  # diverged, or out of solver steps: no test NFE to compare
                notes.append(f"{cfg.model}, tolerance {cfg.model_options['rtol']:g}, seed {cfg.seed}: no test result "
                             f"({summary.get('error') or summary.get('status', 'no summary.json')})")
        measured, references, table, verdict_input = {}, {}, [], {}
        for tol in TOLERANCES:
            seeds = [s for s in budget.seeds if (tol, PLAIN, s) in results and (tol, DIA, s) in results]
            if not seeds:
                verdict_input[tol] = (_nothing(), _nothing(), _nothing())
                continue
            ivs = {(model, key): mean_interval([results[tol, model, s][key] for s in seeds], bounds=metric_bounds(key))
                   for model in (PLAIN, DIA) for key in ("nfe_test", "test_acc")}
            ratio = mean_interval([results[tol, DIA, s]["nfe_test"] / results[tol, PLAIN, s]["nfe_test"]
                                   for s in seeds], bounds=(0.0, math.inf))  # paired by seed; a ratio is > 0
            measured[f"NFE ratio dia_odenet / odenet, tolerance {tol:g}"] = ratio  # its null: 1, no saving
            for what, key, _ in COLUMNS:  # the report shows a reference of the same name beside its statistic
                name = f"test {what}, tolerance {tol:g}: dia_odenet (reference odenet)"
                measured[name], references[name] = ivs[DIA, key], ivs[PLAIN, key]
            verdict_input[tol] = (ratio, ivs[DIA, "test_acc"], ivs[PLAIN, "test_acc"])
            table.append({"tolerance": f"{tol:g}", "seeds": len(seeds),
                          **{f"{model} {what}": f"{ivs[model, key].format(fmt)} {ivs[model, key].format_ci(fmt)}"
                             for model in (PLAIN, DIA) for what, key, fmt in COLUMNS},
                          "NFE ratio dia/plain": f"{ratio.format('.3f')} {ratio.format_ci('.3f')}"})
        dataset = specs[0].config.dataset
        notes.insert(0, f"odenet and dia_odenet on {dataset}, {len(budget.seeds)} seeds, {budget.epochs} epochs, "
                        f"width {budget.width}, dopri5 with rtol = atol = the tolerance in training and test; "
                        f"NFE = mean vector-field evaluations per test batch; the ratio is paired by seed; "
                        f"intervals are 95% Student-t over seeds")
        return ClaimResult(measured, references, nfe_verdict(verdict_input), table, [], notes)


def _nothing() -> Interval:
    """An interval-less placeholder for a tolerance without a finished pair of runs."""
    return Interval(math.nan, None, 0, None, None, 0.95, (), reason="no finished pair of runs")
