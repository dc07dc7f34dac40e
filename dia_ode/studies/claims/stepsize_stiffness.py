"""Claim "steps-follow-stiffness": attention step sizes shrink where the learned dynamics are stiff.

"Understanding Self-attention Mechanism via Dynamical System Perspective" (Huang et al., ICCV 2023,
pp. 1412-1422) reads a self-attention module as a stiffness-aware step-size adaptor of the residual ODE
x_{k+1} = x_k + h_k ⊙ f_k(x_k): like an adaptive solver, it should take small steps h_k where f_k is
stiff. Runs: se_resnet20 and dia_resnet20 (base width = the budget's width, the budget's epochs, every
seed) on the budget's first available dataset.

Statistic: per run, Spearman's rank correlation between h_k, the mean step of block k (over the first
`budget.samples` test images and the channels), and rho(J_k), the spectral radius of J_k = df_k/dx at
x_k (mean over RADIUS_SAMPLES images; analysis.step_radius, the number `dia-ode stepsize --against
radius` prints as "all stages pooled"), over the blocks of every stage pooled: a stage of 3 blocks
alone has fewer pairs than analysis.stepsize.MIN_PAIRS (the downsampling first block of stages 1 and 2
has no square Jacobian, so resnet20 gives 7 pairs). Over seeds as a 95% Student-t interval. Reference:
the same statistic on the untrained network of the same seed (analysis.attention_nulls.untrained_model):
a negative rho there is the construction's, not something training taught the attention. Secondary
(table and notes, not in the verdict): the within-stage rho, each stage's mean removed from h and
log rho first, which drops the trend between stages that pooling mixes in.

Verdict rule: a model *shows* the claim when the upper end of its trained interval lies below 0
(larger radius, smaller step) and below the lower end of its untrained interval. "reproduced" when
every model shows it; "not reproduced" when a model's interval includes 0, is positive, or overlaps
its untrained reference; "not testable here" when no dataset of the budget is available or a model's
trained or untrained rho has no interval (one seed, or rho undefined: too few pairs, constant steps).

CPU cost (2 cores shared with other jobs, OMP_NUM_THREADS=1, digits, width 16): training about 1.7 s
(se) and 1.8 s (dia) per epoch; measure() about 30 s per run (eigen-solves of every block for the trained
and the untrained network, 256 traced images). Measured at 3 seeds x 5 epochs: 67 s of training and
186 s of measurement; so at the cpu budget (3 seeds, 15 epochs) about 3 + 3 = 6 minutes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dia_ode.analysis.attention_nulls import untrained_model
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.analysis.step_radius import step_radius_pairs
from dia_ode.engine import recipe_config
from dia_ode.rundir import load_run
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import AbstractClaim, ClaimResult, RunSpec, Verdict

RANK_RANGE = (-1.0, 1.0)  # a Spearman rho: its t interval is clipped to the range rho can take

MODELS = ("se_resnet20", "dia_resnet20")
RADIUS_SAMPLES = 2  # images whose spectra are averaged per block: 2 and 4 gave the same rho (width 16, digits)
NETWORKS = ("trained", "untrained")


def model_shows_claim(trained: Interval, untrained: Interval) -> bool | None:
    """Whether the trained rho interval lies below 0 and below the untrained one; None without intervals."""
    if trained.high is None or untrained.low is None:
        return None
    return trained.high < 0 and trained.high < untrained.low


def stiffness_verdict(models: dict[str, tuple[Interval, Interval]]) -> Verdict:
    """The claim's verdict from each model's (trained, untrained) pooled-rho intervals (module docstring)."""
    if not models:
        return Verdict("not testable here", "no run: none of the budget's datasets is available")
    shows = {model: model_shows_claim(*pair) for model, pair in models.items()}
    missing = [model for model, s in shows.items() if s is None]
    if missing:
        return Verdict("not testable here", f"{', '.join(missing)}: a Spearman rho has no 95% interval (one seed, "
                                            f"or rho undefined: too few pairs or constant steps)")
    found = "; ".join(f"{model} {trained.format('.2f')} {trained.format_ci('.2f')} vs untrained "
                      f"{untrained.format_ci('.2f')}" for model, (trained, untrained) in models.items())
    if all(shows.values()):
        return Verdict("reproduced", f"Spearman(h_k, rho(J_k)) lies below 0 and below the untrained network's "
                                     f"for every model ({found})")
    why = {model: ("includes 0 or is positive" if trained.high >= 0 else "is negative but overlaps the untrained "
                   "network's (the construction, not training)")
           for model, (trained, untrained) in models.items() if not shows[model]}
    return Verdict("not reproduced", "the trained interval " + "; ".join(f"of {m} {w}" for m, w in why.items())
                   + f" ({found})")


class StepsFollowStiffness(AbstractClaim):
    """Attention steps shrink where the blocks' Jacobians have a large spectral radius (module docstring)."""

    id = "steps-follow-stiffness"
    statement = "attention step sizes shrink where the learned dynamics are stiff"
    paper = ("qualitative: SAMs act as stiffness-aware step-size adaptors (Understanding Self-attention "
             "Mechanism via Dynamical System Perspective, Huang et al., ICCV 2023)")
    command = ("dia-ode train --model se_resnet20 --dataset digits --epochs 15 --seeds 0,1,2 "
               "--model-option base_width=16 (and --model dia_resnet20); then for each run: "
               "dia-ode stepsize RUN --against radius --samples 256 --radius-samples 2")

    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        given = {"model", "dataset", "epochs", "seed", "model_options"}
        return [RunSpec(recipe_config({"model": model, "dataset": dataset, "epochs": budget.epochs, "seed": seed,
                                       "model_options": {"base_width": budget.width}}, given))
                for model in MODELS for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        specs = self.runs(budget)
        if not specs:
            return ClaimResult({}, {}, stiffness_verdict({}),
                               notes=[f"none of {', '.join(budget.datasets)} is available"])
        pairs: dict[str, list[dict]] = {}  # model -> per seed {"trained": pairs, "untrained": pairs}
        for spec in specs:
            pairs.setdefault(spec.config.model, []).append(_run_pairs(Path(run_dirs[spec.key()]), budget.samples))
        measured, references, table, verdict_pairs = {}, {}, [], {}
        for model, seeds in pairs.items():
            ivs = {(net, key): mean_interval([seed[net][key]["rho"] for seed in seeds], bounds=RANK_RANGE)
                   for net in NETWORKS for key in ("spearman", "spearman_within_stage")}
            for key, what in (("spearman", "all stages pooled"), ("spearman_within_stage", "within stages")):
                name = f"{model} Spearman(h_k, rho(J_k)), {what}"
                measured[name], references[name] = ivs["trained", key], ivs["untrained", key]  # report: side by side
            verdict_pairs[model] = (ivs["trained", "spearman"], ivs["untrained", "spearman"])
            for net in NETWORKS:
                table.append({"model": model, "network": net, "pairs per seed": _pair_counts(seeds, net),
                              "mean h": f"{np.mean([np.mean(s[net]['h']) for s in seeds]):.3f}",
                              "mean rho(J)": f"{np.mean([np.nanmean(s[net]['radius']) for s in seeds]):.3g}",
                              **{label: f"{ivs[net, key].format('.2f')} {ivs[net, key].format_ci('.2f')}"
                                 for label, key in (("Spearman pooled", "spearman"),
                                                    ("Spearman within stages", "spearman_within_stage"))}})
        dataset = specs[0].config.dataset
        notes = [f"{', '.join(pairs)} on {dataset}, {len(budget.seeds)} seeds, {budget.epochs} epochs, base width "
                 f"{budget.width}; h_k over the first {budget.samples} test images, rho(J_k) = largest |eigenvalue| "
                 f"of df_k/dx at x_k averaged over {RADIUS_SAMPLES} images; intervals are 95% Student-t over seeds; "
                 f"reference: the untrained network of the same seed on the same images",
                 "the downsampling first block of a later stage changes shape (no square Jacobian) and is left out",
                 "pooled rho mixes the trend between stages (other widths, resolutions and controllers) with the one "
                 "within each stage; where it differs from the within-stage rho, the step sizes follow the stages, "
                 "not the stiffness block by block"]
        notes += [_undefined_note(model, seeds) for model, seeds in pairs.items() if _undefined_note(model, seeds)]
        figure = plot_steps_against_radius(pairs, f"{dataset}, {budget.epochs} epochs, {len(budget.seeds)} seeds")
        return ClaimResult(measured, references, stiffness_verdict(verdict_pairs), table,
                           [("h_vs_radius", figure)], notes)


def _run_pairs(run_dir: Path, samples: int) -> dict:
    """step_radius_pairs of a finished run and of the untrained network of its seed, on the same images."""
    run = load_run(run_dir)
    x, _ = run.test_batch(samples)
    untrained = untrained_model(run.model_spec, run.config["seed"])
    return {"trained": step_radius_pairs(run.model, x, RADIUS_SAMPLES),
            "untrained": step_radius_pairs(untrained, x, RADIUS_SAMPLES)}


def _pair_counts(seeds: list[dict], net: str) -> str:
    counts = sorted({seed[net]["spearman"]["n"] for seed in seeds})
    return "/".join(str(n) for n in counts)


def _undefined_note(model: str, seeds: list[dict]) -> str:
    """Why a seed's rho is undefined (constant steps, too few pairs), or "" when every one is defined."""
    reasons = sorted({seed[net]["spearman"]["reason"] for seed in seeds for net in NETWORKS} - {None})
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
        rho = mean_interval([seed["trained"]["spearman"]["rho"] for seed in seeds], bounds=RANK_RANGE)
        ax.set_title(f"{model}\npooled Spearman {rho.format('.2f')}")
        ax.set_xlabel("spectral radius ρ(J_k)")
        ax.set_ylabel("mean step h_k")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    return fig
