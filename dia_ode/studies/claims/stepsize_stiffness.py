"""Claim "steps-follow-stiffness": attention step sizes shrink where the learned dynamics are stiff.

"Understanding Self-attention Mechanism via Dynamical System Perspective" (Huang et al., ICCV 2023,
pp. 1412-1422) reads a self-attention module as a stiffness-aware step-size adaptor of the residual ODE
x_{k+1} = x_k + h_k ⊙ f_k(x_k): like an adaptive solver, it should take small steps h_k where f_k is
stiff. Runs: se_resnet20 (with the SE options of claims.se_options, as cross-layer-correlation: the
default reduction 16 leaves 1-2 hidden units, and a dead ReLU unit makes a block's steps constant) and
dia_resnet20 (base width = the budget's width, the budget's epochs, every seed) on the budget's first
available dataset, and above the smoke budget the same two at depth 56 (se_resnet56, dia_resnet56: 9
blocks a stage, 25 within-stage pairs a seed against resnet20's 7; DEPTHS). A run that diverged or
failed is left out with a note (claims.trained_runs).

Statistic: per run, Spearman's rank correlation between h_k, the mean step of block k (over the first
`budget.samples` test images and the channels), and rho(J_k), the spectral radius of J_k = df_k/dx at
x_k (mean over RADIUS_SAMPLES images; analysis.step_radius) *within stages*: each stage's mean is
removed from h and from log rho (over the blocks that have both) before ranking the blocks of all
stages together. Why within: the stages differ in width, resolution and controller, which moves both
h and rho, so the rho pooled over stages (the number `dia-ode stepsize --against radius` prints) can
come from a trend between stages alone; a stage of 3 blocks has too few pairs for a Spearman of its
own (analysis.stepsize.MIN_PAIRS; the downsampling first block of stages 1 and 2 has no square
Jacobian, so resnet20 gives 7 pairs). Over seeds as a 95% Student-t interval. Reference: the same
statistic on the untrained network of the same seed (analysis.attention_nulls.untrained_model), paired
by seed: the difference trained - untrained per seed, as a 95% Student-t interval over seeds; a
negative rho of the untrained network is the construction's, not something training taught the
attention. Secondary (table, not in the verdict): the rho pooled over stages, trained and untrained.

Verdict rule: a model *shows* the claim when the upper end of its trained within-stage interval lies
below 0 (larger radius, smaller step) and the upper end of its paired difference trained - untrained
lies below 0. An interval that does not lie below 0 *admits both readings* when it also reaches
-DECISIVE_RHO (0.3) or below: it holds a rank correlation that would decide for the claim and 0 or more,
which would decide against it; it *rules the claim out* when its lower end lies above -DECISIVE_RHO. A
model that does not show the claim is inconclusive when each interval that fails admits both readings,
and against the claim otherwise. "not testable here" when no dataset of the budget is available, no run
of a model finished, or a model's trained rho or paired difference has no interval (fewer than 2
finished seeds, or rho undefined: too few pairs, constant steps); otherwise "reproduced" when every
model shows it, "not reproduced" when a model rules it out (the claim needs every model), and
"inconclusive" when the rest admit both readings. Both depths: the claim needs every model at every
depth, so the rule runs over the models of both depths together (a depth that rules the claim out makes
it "not reproduced", one without an interval "not testable here"), and each depth's own verdict, by the
same rule, is reported beside it as a part (depth_verdicts). The notes give each model's paired shift
from the untrained network (trained - untrained, within stages).

Cost: measure() eigen-solves every block of the trained and the untrained network on the traced images,
so at the cpu budget it costs about as much as the training; a depth-56 network has three times the
blocks to train, trace and eigen-solve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dia_ode.analysis.attention_nulls import untrained_model
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.analysis.step_radius import step_radius_pairs
from dia_ode.rundir import load_run
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.claims.trained_runs import trained_runs
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import (INCONCLUSIVE, MORE_SEEDS, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED,
                                          AbstractClaim, ClaimResult, RunSpec, Verdict, study_config)

RANK_RANGE = (-1.0, 1.0)  # a Spearman rho: its t interval is clipped to the range rho can take
# A rank correlation of -0.3 or stronger would decide for the claim: a moderate one (Cohen's medium effect);
# a weaker one, even if true, would not say that the steps follow the stiffness. An interval that holds both it
# and 0 admits both readings.
DECISIVE_RHO = 0.3
DIFFERENCE_RANGE = (-2.0, 2.0)  # a difference of two rhos
VERDICT_STATISTIC = "spearman_within_stage"  # the pooled "spearman" is secondary (module docstring)
STATISTICS = {"spearman_within_stage": "within stages", "spearman": "all stages pooled"}

MODELS = ("se_resnet20", "dia_resnet20")
# Above the smoke budget the same attentions at depth 56 too: 9 blocks a stage, 25 within-stage pairs a seed
# (resnet20: 7), so a depth where a stage has enough blocks to rank and where step sizes could matter most.
DEPTHS = {"smoke": (20,), "cpu": (20, 56), "full": (20, 56)}
OPTIONS = {"se": SE_OPTIONS}  # model options besides the width, by attention
RADIUS_SAMPLES = 2  # images whose spectra are averaged per block: 2 and 4 gave the same rho (width 16, digits)
NETWORKS = ("trained", "untrained")


SHOWS, AGAINST = "shows", "against"  # a model's outcome besides INCONCLUSIVE (module docstring)


def admits_both(interval: Interval) -> bool:
    """Whether an interval that does not lie below 0 still reaches -DECISIVE_RHO: it holds a reading that
    would decide for the claim and one (0 or more) that would decide against it."""
    return interval.low <= -DECISIVE_RHO


def model_outcome(trained: Interval, over_untrained: Interval) -> str | None:
    """SHOWS when the trained within-stage rho interval and the paired difference trained - untrained both lie
    below 0; INCONCLUSIVE when every one of them that does not admits both readings (admits_both); AGAINST
    otherwise; None when one of them has no interval."""
    if trained.high is None or over_untrained.high is None:
        return None
    failing = [iv for iv in (trained, over_untrained) if iv.high >= 0]
    if not failing:
        return SHOWS
    return INCONCLUSIVE if all(admits_both(iv) for iv in failing) else AGAINST


def stiffness_verdict(models: dict[str, tuple[Interval, Interval] | None]) -> Verdict:
    """The claim's verdict (module docstring).

    Args:
        models: model -> (trained within-stage rho, trained - untrained rho paired by seed) Intervals,
            or None when no run of the model finished.
    """
    if not models:
        return Verdict(NOT_TESTABLE, "no run: none of the budget's datasets is available; a budget with digits "
                                     "(smoke, cpu) would test it")
    unfinished = [model for model, pair in models.items() if pair is None]
    if unfinished:
        return Verdict(NOT_TESTABLE, f"{', '.join(unfinished)}: no run finished (every seed diverged or failed); "
                                     f"{MORE_SEEDS}")
    outcomes = {model: model_outcome(*pair) for model, pair in models.items()}
    missing = [model for model, outcome in outcomes.items() if outcome is None]
    if missing:
        return Verdict(NOT_TESTABLE, f"{', '.join(missing)}: a Spearman rho has no 95% interval (fewer than 2 "
                                     f"finished seeds, or rho undefined: too few pairs or constant steps); "
                                     f"{MORE_SEEDS}")
    found = "; ".join(f"{model} {trained.format('.2f')} {trained.format_ci('.2f')}, minus untrained "
                      f"{gain.format('.2f')} {gain.format_ci('.2f')}" for model, (trained, gain) in models.items())
    if all(outcome == SHOWS for outcome in outcomes.values()):
        return Verdict(REPRODUCED, f"the within-stage Spearman(h_k, rho(J_k)) lies below 0 and below the untrained "
                                   f"network's (paired by seed) for every model ({found})")
    against = {model: ("includes 0 or is positive" if trained.high >= 0 else "is negative but not below the untrained "
                       "network's, paired by seed (the construction, not training)")
               for model, (trained, _) in models.items() if outcomes[model] == AGAINST}
    if against:
        return Verdict(NOT_REPRODUCED, "the trained within-stage interval " + "; ".join(
            f"of {m} {w}, and what fails lies above -{DECISIVE_RHO} (rules the claim out)" for m, w in against.items())
            + f" ({found})")
    unsure = [model for model, outcome in outcomes.items() if outcome == INCONCLUSIVE]
    return Verdict(INCONCLUSIVE, f"the intervals of {', '.join(unsure)} contain both 0 and rank correlations of "
                                 f"-{DECISIVE_RHO} or below: they admit both readings at this budget ({found})")


def stiffness_models(budget: Budget) -> dict[int, tuple[str, ...]]:
    """depth -> the MODELS at that depth, for every depth of DEPTHS[budget.name]."""
    return {depth: tuple(m.replace("20", str(depth)) for m in MODELS) for depth in DEPTHS[budget.name]}


def depth_verdicts(by_depth: dict[int, dict[str, tuple[Interval, Interval] | None]]
                   ) -> tuple[Verdict, dict[str, Verdict]]:
    """The verdict over every model of every depth, and each depth's own verdict where there are several.

    The claim needs every model at every depth: the overall verdict is stiffness_verdict over all of them
    (reproduced only when each shows it, not reproduced when one rules it out, and so on), and the parts
    say at which depth it holds.

    Args:
        by_depth: depth -> the argument of stiffness_verdict for the models of that depth.
    """
    overall = stiffness_verdict({model: pair for models in by_depth.values() for model, pair in models.items()})
    if len(by_depth) < 2:
        return overall, {}
    return overall, {f"depth {depth}": stiffness_verdict(models) for depth, models in by_depth.items()}


class StepsFollowStiffness(AbstractClaim):
    """Attention steps shrink where the blocks' Jacobians have a large spectral radius (module docstring)."""

    id = "steps-follow-stiffness"
    kind = "paper"
    statement = "attention step sizes shrink where the learned dynamics are stiff"
    paper = ("qualitative: SAMs act as stiffness-aware step-size adaptors (Understanding Self-attention "
             "Mechanism via Dynamical System Perspective, Huang et al., ICCV 2023)")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        return [RunSpec(study_config(model, dataset, budget, seed,
                                     {**OPTIONS.get(model.partition("_")[0], {}), "base_width": budget.width}))
                for models in stiffness_models(budget).values() for model in models for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        specs = self.runs(budget)
        if not specs:
            return ClaimResult({}, {}, stiffness_verdict({}),
                               notes=[f"none of {', '.join(budget.datasets)} is available"])
        runs, skipped = trained_runs(specs, run_dirs)
        depths = stiffness_models(budget)
        # model -> per seed {"trained": .., "untrained": ..}
        pairs: dict[str, list[dict]] = {model: [] for models in depths.values() for model in models}
        for spec, run_dir in runs:
            pairs[spec.config.model].append(_run_pairs(run_dir, budget.samples))
        measured, references, table, verdict_pairs = {}, {}, [], {}
        for model, seeds in pairs.items():
            if not seeds:
                verdict_pairs[model] = None
                continue
            rho = {(net, key): [seed[net][key]["rho"] for seed in seeds] for net in NETWORKS for key in STATISTICS}
            ivs = {pair: mean_interval(values, bounds=RANK_RANGE) for pair, values in rho.items()}
            gains = {key: mean_interval(np.subtract(rho["trained", key], rho["untrained", key]),
                                        bounds=DIFFERENCE_RANGE)
                     for key in STATISTICS}
            for key, what in STATISTICS.items():
                name = f"{model} Spearman(h_k, rho(J_k)), {what}"
                measured[name], references[name] = ivs["trained", key], ivs["untrained", key]  # report: side by side
                measured[f"{name}, trained minus untrained (paired by seed)"] = gains[key]
            verdict_pairs[model] = (ivs["trained", VERDICT_STATISTIC], gains[VERDICT_STATISTIC])
            for net in NETWORKS:
                table.append({"model": model, "network": net, "pairs per seed": _pair_counts(seeds, net),
                              "mean h": f"{np.mean([np.mean(s[net]['h']) for s in seeds]):.3f}",
                              "mean rho(J)": f"{np.mean([np.nanmean(s[net]['radius']) for s in seeds]):.3g}",
                              **{f"Spearman {what}": f"{ivs[net, key].format('.2f')} {ivs[net, key].format_ci('.2f')}"
                                 for key, what in STATISTICS.items()}})
        pairs = {model: seeds for model, seeds in pairs.items() if seeds}
        dataset = specs[0].config.dataset
        seeds_per_model = ", ".join(f"{model} {len(seeds)} seeds" for model, seeds in pairs.items())
        notes = skipped + [
            f"{seeds_per_model or 'no finished run'} on {dataset}, {budget.epochs} epochs, base width {budget.width}; "
            f"h_k over the first {budget.samples} test images, rho(J_k) = largest |eigenvalue| of df_k/dx at x_k "
            f"averaged over {RADIUS_SAMPLES} images; intervals are 95% Student-t over seeds; reference: the "
            f"untrained network of the same seed on the same images, compared by the per-seed difference",
            "the downsampling first block of a later stage changes shape (no square Jacobian) and is left out",
            "the verdict reads the within-stage rho; the pooled rho (secondary) mixes in the trend between stages "
            "(other widths, resolutions and controllers): where only the pooled one is negative, the step sizes "
            "follow the stages, not the stiffness block by block"]
        notes += [_shift_note(model, *pair) for model, pair in verdict_pairs.items() if pair is not None]
        notes += [_undefined_note(model, seeds) for model, seeds in pairs.items() if _undefined_note(model, seeds)]
        figures = [("h_vs_radius", plot_steps_against_radius(
            pairs, f"{dataset}, {budget.epochs} epochs, {len(budget.seeds)} seeds"))] if pairs else []
        comparisons = {name: None for name in measured if name.endswith("trained minus untrained (paired by seed)")}
        verdict, parts = depth_verdicts({depth: {model: verdict_pairs[model] for model in models}
                                         for depth, models in depths.items()})
        return ClaimResult(measured, references, verdict, table, figures, notes, parts=parts, comparisons=comparisons)


def _run_pairs(run_dir: Path, samples: int) -> dict:
    """step_radius_pairs of a finished run and of the untrained network of its seed, on the same images."""
    run = load_run(run_dir)
    x, _ = run.test_batch(samples)
    untrained = untrained_model(run.model_spec, run.config["seed"])
    return {"trained": step_radius_pairs(run.model, x, RADIUS_SAMPLES),
            "untrained": step_radius_pairs(untrained, x, RADIUS_SAMPLES)}


def _shift_note(model: str, trained: Interval, shift: Interval) -> str:
    """The model's within-stage rho and its paired shift from the untrained network of the same seeds."""
    return (f"{model}: within-stage Spearman {trained.format('.2f')} {trained.format_ci('.2f')}; paired shift from "
            f"the untrained network (trained - untrained, per seed) {shift.format('.2f')} {shift.format_ci('.2f')}")


def _pair_counts(seeds: list[dict], net: str) -> str:
    counts = sorted({seed[net]["spearman"]["n"] for seed in seeds})
    return "/".join(str(n) for n in counts)


def _undefined_note(model: str, seeds: list[dict]) -> str:
    """Why a seed's rho is undefined (constant steps, too few pairs), or "" when every one is defined."""
    reasons = sorted({seed[net][key]["reason"] for seed in seeds for net in NETWORKS for key in STATISTICS} - {None})
    return f"{model}: Spearman undefined for some seed ({'; '.join(reasons)})" if reasons else ""


def plot_steps_against_radius(pairs: dict[str, list[dict]], title: str) -> Figure:
    """h_k against rho(J_k), one panel per model: every block of every seed, coloured by stage, trained
    filled and untrained hollow.

    Args:
        pairs: model -> per seed {"trained": step_radius_pairs(...), "untrained": ...}.
        title: what was trained (dataset, epochs, seeds).
    """
    fig = Figure(figsize=(3.6 * len(pairs) + 0.8, 3.8), layout="constrained")
    fig.suptitle(f"Step size vs spectral radius per block: {title}")
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, (model, seeds) in zip(axes, pairs.items()):
        stages = np.unique(np.concatenate([seed["trained"]["stage"] for seed in seeds]))
        for s in stages:
            for net in NETWORKS:
                h = np.concatenate([seed[net]["h"][seed[net]["stage"] == s] for seed in seeds])
                r = np.concatenate([seed[net]["radius"][seed[net]["stage"] == s] for seed in seeds])
                ax.scatter(r, h, s=22, edgecolors=f"C{s}", facecolors=f"C{s}" if net == "trained" else "none",
                           label=f"stage {s}, {net}")
        rho = mean_interval([seed["trained"][VERDICT_STATISTIC]["rho"] for seed in seeds], bounds=RANK_RANGE)
        ax.set_title(f"{model}\nSpearman within stages {rho.format('.2f')}")
        ax.set_xlabel("spectral radius ρ(J_k)")
        ax.set_ylabel("mean step h_k")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    return fig
