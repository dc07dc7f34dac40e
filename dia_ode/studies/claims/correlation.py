"""The DIA paper's headline observation as a claim: the attentions of the blocks of a stage are strongly
correlated (mean Pearson r up to 0.85), the reason it gives for sharing one attention module per stage.

Runs: SE-ResNets (se_resnet20; se_resnet56 too at the cpu and full budgets) on the budget's first available
dataset, every seed, with the SE options of claims.se_options (reduction 4, at least 4 hidden units:
the default r = 16 leaves 1-2 hidden units, and a dead ReLU unit makes a gate constant). The recorder
"attention_correlation" traces a fixed test batch after every epoch, so r is a curve over training,
not one number at the end (claims/correlation_recorder.py). A run that diverged or failed is left out
of the end-of-training statistics with a note (claims.trained_runs).

Dose-response (claims/correlation_dose.py, every budget): r, its nulls and the gates' movement and spread
against SGD steps, one point per recorded epoch, unfinished runs included (measures_unfinished_runs: a
study still training reports its points so far). The long and gpu budgets are sized for it alone:
se_resnet20 on all of Fashion-MNIST at batch 128 (studies/report/budgets.py). The measurement is per Setup (model, SE options, dataset, length), so
the setup sweep (claims/correlation_sweep.py) measures its setups with the same code (measure_setups).

Statistic: per model, stage and protocol (dia_ode.analysis.correlation.PROTOCOLS) the mean r between
consecutive blocks (the paper's "consecutive layers"; the mean over all block pairs is in the table),
over seeds as a 95% Student-t interval, next to the untrained network of the same seed and the
channel-permuted null (analysis.attention_nulls.correlation_with_nulls, also between consecutive
blocks), and next to how much the gates learned (their spread over the images, their distance from
the untrained gates). The nulls are paired with the trained network (the same seed's initial weights;
the same trained gates with their channels permuted), so they are compared by the per-seed differences
trained - untrained and trained - permuted, each as a 95% Student-t interval over seeds.

Homogeneity (reported, not judged): what the paper may have correlated instead of the gates. Per model
and stage the per-sample Pearson r and cosine between consecutive blocks' pooled branch outputs GAP(f_k)
and pooled block outputs GAP(x_{k+1}), and the Pearson r of the gates' pre-sigmoid logits
(dia_ode.analysis.homogeneity), each over seeds next to the untrained network of the same seed (and
their paired difference in the table). They are measured where the gates are (after every epoch and at
the end) but the verdict rule reads the gate protocols only.

Positive control: the instrument must see a correlation where one exists. Gates planted with Pearson r
rho between consecutive blocks (analysis.attention_nulls.planted_gates, CONTROL_SHAPE, one draw per
seed of the budget) go through the claim's own protocol and statistic; each rho of CONTROL_RHOS must
come out within CONTROL_TOLERANCE in every draw (the report lists planted and measured r).

Precondition: the claim is about what trained attention does, so it presupposes that the SE gates
learned. A stage's gates *learned* when, as means over seeds, they moved at least MIN_GATE_MOVED from the
untrained gates of the same seed (mean |a - a_untrained| over images, blocks and channels) AND vary at
least MIN_GATE_SPREAD over the images (std over images, mean over blocks and channels); a model meets
the precondition when its gates learned in more than half of its stages (the share of stages the claim
needs).

Verdict rule: a stage *shows* the claim when the lower end of its per-sample r interval lies above 0.5
AND the lower ends of both paired-difference intervals (trained - untrained, trained - permuted) lie
above 0. "not testable here" when the positive control fails (the instrument is broken), no dataset of
the budget is available, no run of a model finished, or an interval cannot be formed (fewer than 2
finished seeds, an undefined r); otherwise "not reproduced" when a model that meets the precondition
shows the claim in at most half of its stages
(the claim needs every model, and that model tested it); else "precondition not met" when a model's
gates did not learn (the reason gives each stage's movement and spread and the thresholds); else
"reproduced": every model shows it in more than half of its stages.

Cost: the runs' training dominates; the recorder traces a few images once per epoch and measure() reads
the records back (measured costs: theory/correlation.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dia_ode.analysis.attention_nulls import planted_correlation, untrained_model
from dia_ode.analysis.correlation import PROTOCOLS
from dia_ode.analysis.homogeneity import LABELS as HOMOGENEITY_LABELS
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.rundir import load_run, read_jsonl, read_summary
from dia_ode.solvers import trace
from dia_ode.studies.claims.correlation_dose import dose_response
from dia_ode.studies.claims.correlation_recorder import (RECORDED_PROTOCOLS, RECORDER, RECORDER_SAMPLES, STATISTIC,
                                                         THRESHOLD, VERDICT_PROTOCOL, curve_note, file_stem,
                                                         interval_cell, plot_r_over_epochs, stage_measures)
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.claims.trained_runs import trained_runs
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import (MORE_SEEDS, NOT_REPRODUCED, NOT_TESTABLE, PRECONDITION_NOT_MET, REPRODUCED,
                                          AbstractClaim, ClaimResult, RunSpec, Verdict, study_config)
from dia_ode.studies.report.recorders import records_path

NULLS = ("untrained", "permuted")  # each paired with the trained network of the same seed
DIFFERENCE_RANGE = (-2.0, 2.0)  # a difference of two correlations
# The precondition (module docstring). A sigmoid gate starts at about sigmoid(0) = 0.5 and lives in (0, 1).
MIN_GATE_MOVED = 0.05  # a tenth of the initial gate: closer, the trained gates are the initial ones rescaled a little
MIN_GATE_SPREAD = 0.05  # a tenth of the gate: less, it is one channel profile for every image (untrained: ~0.002)
# The positive control (module docstring).
CONTROL_RHOS = (0.0, 0.5, 0.85)  # no correlation, the verdict's threshold, the paper's r
CONTROL_SHAPE = (256, 3, 16)  # (N, L, C): the cpu budget's images, se_resnet20's blocks per stage, its narrowest C
# The mean r over 256 x 2 pairs of 16-channel vectors scatters by about 0.011 (at r = 0) and is biased towards
# 0 by about 0.01 (at r = 0.5, planted_correlation): 0.05 leaves 4 such scatters, and still tells 0.85 from 0.75.
CONTROL_TOLERANCE = 0.05

__all__ = ["CONTROL_RHOS", "CONTROL_SHAPE", "CONTROL_TOLERANCE", "MIN_GATE_MOVED", "MIN_GATE_SPREAD", "RECORDER",
           "RECORDER_SAMPLES", "THRESHOLD", "CrossLayerCorrelation", "Setup", "SetupMeasures", "control_verdict",
           "correlation_verdict", "gates_learned", "measure_setups", "positive_control", "stage_shows_claim"]


@dataclass(frozen=True)
class Setup:
    """One training setup the correlation is measured in: an SE network, its options, data and length.

    Attributes:
        label: how the report names the setup's statistics, unique within a claim ("se_resnet20" for
            the claim's own models; the sweep's labels say what they vary).
        model: an SE model name.
        dataset: the dataset it trains on.
        model_options: the SE options (base_width is added from the budget).
        fields: other TrainConfig fields (epochs, train_examples, val_fraction); the budget's otherwise.
    """

    label: str
    model: str
    dataset: str
    model_options: Mapping[str, Any] = field(default_factory=lambda: SE_OPTIONS)
    fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def runs(self, budget: Budget) -> list[RunSpec]:
        """One run per seed of the budget, each with the per-epoch recorder."""
        return [RunSpec(study_config(self.model, self.dataset, budget, seed,
                                     {**self.model_options, "base_width": budget.width}, **self.fields), (RECORDER,))
                for seed in budget.seeds]

    def describe(self, budget: Budget, accuracy: Interval) -> str:
        """One sentence: what was trained, on what, how long, how well, and how r was measured."""
        options = dict(self.model_options)
        se = f"SE reduction {options.get('reduction', 16)}"
        if options.get("min_hidden", 1) > 1:
            se += f" with at least {options['min_hidden']} hidden units"
        examples = self.fields.get("train_examples")
        data = f"{self.dataset} ({examples} training examples)" if examples else self.dataset
        epochs = self.fields.get("epochs", budget.epochs)
        return (f"{self.label}: {self.model} on {data}, {accuracy.n} seeds, {epochs} epochs, base width "
                f"{budget.width}, {se}, test accuracy {accuracy.format('.3f')}; r on the first {budget.samples} "
                f"test images, 8 channel permutations")


@dataclass
class SetupMeasures:
    """What measure_setups reads from the finished runs of some setups (ClaimResult's fields, and the
    verdict's input: `triples`, label -> per stage (trained r, trained - untrained, trained - permuted);
    `learned`, label -> per stage (the gates' distance from the untrained gates, their spread over images);
    `control`, planted r -> the r measured on planted gates, over the draws: positive_control)."""

    measured: dict[str, Interval] = field(default_factory=dict)
    references: dict[str, Interval] = field(default_factory=dict)
    table: list[dict] = field(default_factory=list)
    triples: dict[str, list[tuple[Interval, Interval, Interval]]] = field(default_factory=dict)
    learned: dict[str, list[tuple[Interval, Interval]]] = field(default_factory=dict)
    control: dict[float, Interval] = field(default_factory=dict)
    figures: list[tuple[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def stage_shows_claim(trained: Interval, over_untrained: Interval, over_permuted: Interval) -> bool | None:
    """Whether a stage's trained r interval lies above THRESHOLD and both paired differences (trained -
    untrained, trained - permuted, per seed) lie above 0; None when one of the three has no interval."""
    if any(iv.low is None for iv in (trained, over_untrained, over_permuted)):
        return None
    return trained.low > THRESHOLD and over_untrained.low > 0 and over_permuted.low > 0


def gates_learned(moved: Interval, spread: Interval) -> bool:
    """Whether a stage's gates learned: their mean distance from the untrained gates reaches MIN_GATE_MOVED and
    their mean spread over images MIN_GATE_SPREAD (means over seeds: the precondition asks what happened)."""
    return moved.mean >= MIN_GATE_MOVED and spread.mean >= MIN_GATE_SPREAD


def positive_control(seeds: Sequence[int]) -> dict[float, Interval]:
    """The claim's protocol and statistic on gates planted at each r of CONTROL_RHOS, one draw per seed.

    Returns:
        planted r -> the measured r (VERDICT_PROTOCOL's mean r between consecutive blocks) over the draws.
    """
    return {rho: mean_interval([planted_correlation(rho, VERDICT_PROTOCOL, CONTROL_SHAPE, seed) for seed in seeds],
                               bounds=(-1.0, 1.0))
            for rho in CONTROL_RHOS}


def control_verdict(control: dict[float, Interval]) -> Verdict | None:
    """"not testable here" when a draw of the positive control lies more than CONTROL_TOLERANCE from its planted
    r, or is undefined (the instrument is broken, so no r it gives on the runs tests the claim); None when every
    draw recovers its planted r."""
    off = {rho: iv for rho, iv in control.items() if not all(abs(v - rho) <= CONTROL_TOLERANCE for v in iv.values)}
    if not off:
        return None
    found = "; ".join(f"planted {rho:g}, measured {'/'.join(f'{v:.3f}' for v in iv.values)}" for rho, iv in off.items())
    return Verdict(NOT_TESTABLE, f"the instrument is broken: the {VERDICT_PROTOCOL} r between consecutive blocks "
                                 f"of gates planted with a known r is off by more than {CONTROL_TOLERANCE} ({found}); "
                                 f"a protocol that recovers the planted r would test it")


def _control_note(control: dict[float, Interval]) -> str:
    """One line: the planted and the measured r of the positive control, and what they say."""
    pairs = "; ".join(f"planted {rho:g}, measured {iv.format('.3f')}" for rho, iv in control.items())
    n, length, c = CONTROL_SHAPE
    seen = "recovers" if control_verdict(control) is None else "does NOT recover"
    return (f"positive control ({len(next(iter(control.values())).values)} draws of {n} samples x {length} blocks "
            f"x {c} channels, consecutive blocks correlated by construction): {pairs}; the {VERDICT_PROTOCOL} r "
            f"{seen} every planted r within {CONTROL_TOLERANCE}")


def correlation_verdict(stages: dict[str, list[tuple[Interval, Interval, Interval]]],
                        learned: dict[str, list[tuple[Interval, Interval]]]) -> Verdict:
    """The claim's verdict from the per-sample intervals of every stage and what its gates learned
    (module docstring).

    Args:
        stages: model -> one (trained r, trained - untrained r, trained - permuted r) triple of
            Intervals per stage, the differences paired by seed.
        learned: model -> one (distance from the untrained gates, spread over images) pair of Intervals
            per stage, over seeds.

    Returns:
        "not testable here" when there is no model or a stage has no interval; "not reproduced" when a
        model whose gates learned (gates_learned, in more than half of its stages) shows the claim
        (stage_shows_claim) in at most half of its stages; "precondition not met" when a model's gates did
        not learn; "reproduced" otherwise.
    """
    if not stages:
        return Verdict(NOT_TESTABLE, "no finished run: none of the budget's datasets is available, or every run "
                                     "diverged; finished runs on an available dataset (digits: the smoke and cpu "
                                     "budgets) would test it")
    counts, learned_counts = {}, {}
    for model, triples in stages.items():
        if not triples:
            return Verdict(NOT_TESTABLE, f"{model}: no run finished (every seed diverged, failed or is still "
                                         f"training); {MORE_SEEDS}")
        shows = [stage_shows_claim(*t) for t in triples]
        if None in shows:
            return Verdict(NOT_TESTABLE, f"{model}: a stage's r has no 95% interval (one seed, or an undefined "
                                         f"correlation); {MORE_SEEDS}")
        counts[model] = (sum(shows), len(shows))
        learned_counts[model] = sum(gates_learned(*pair) for pair in learned[model])
    found = "; ".join(f"{m}: {k} of {n} stages" for m, (k, n) in counts.items())
    unlearned = [m for m, (_, n) in counts.items() if not 2 * learned_counts[m] > n]
    tested_against = [m for m, (k, n) in counts.items() if not k > n / 2 and m not in unlearned]
    top = max(t[0].mean for triples in stages.values() for t in triples)
    if tested_against:
        return Verdict(NOT_REPRODUCED, f"the per-sample r between consecutive blocks lies above {THRESHOLD} and "
                                       f"above both nulls (paired by seed) in too few stages of "
                                       f"{', '.join(tested_against)}, whose gates learned ({found}; highest trained "
                                       f"mean r {top:.2f})")
    if unlearned:
        gates = "; ".join(f"{m}: learned in {learned_counts[m]} of {counts[m][1]} stages (moved "
                          f"{'/'.join(f'{moved.mean:.3f}' for moved, _ in learned[m])}, spread "
                          f"{'/'.join(f'{spread.mean:.3f}' for _, spread in learned[m])})" for m in unlearned)
        return Verdict(PRECONDITION_NOT_MET, f"the attention did not learn: the claim presupposes trained gates, "
                                             f"moved >= {MIN_GATE_MOVED} from the untrained ones and spread >= "
                                             f"{MIN_GATE_SPREAD} over images in more than half of the stages "
                                             f"({gates}); r shows the claim in {found}")
    return Verdict(REPRODUCED, f"the per-sample r between consecutive blocks lies above {THRESHOLD} and above its "
                               f"untrained and permuted nulls (paired by seed) in most stages ({found})")


def _setups(budget: Budget) -> list[Setup]:
    """The claim's own setups: se_resnet20 (and se_resnet56 at cpu and full) with SE_OPTIONS on the budget's
    first available dataset; none when no dataset of the budget is available."""
    dataset = first_dataset(budget)
    if dataset is None:
        return []
    # a budget sized for this claim alone (long, gpu) spends its time on se_resnet20's seeds and steps
    models = ("se_resnet20",) if budget.name == "smoke" or budget.claims is not None else ("se_resnet20", "se_resnet56")
    return [Setup(model, model, dataset) for model in models]


def measure_setups(setups: list[Setup], run_dirs: dict[str, Path], budget: Budget) -> SetupMeasures:
    """Every setup's r per stage and protocol, its nulls, what the gates learned, and r over the epochs.

    Args:
        setups: the setups measured (their runs: Setup.runs(budget)).
        run_dirs: RunSpec.key() -> run directory, as a claim's measure() receives it.
        budget: the report's budget.

    Returns:
        SetupMeasures: statistics named "<label> <protocol> r (consecutive blocks), stage <s>" etc. (the
        homogeneity measures "<label> <measure label> (consecutive blocks), stage <s>"), the positive
        control's ("positive control: ..."), a table row per setup, stage and protocol or homogeneity
        measure, one r-over-epochs figure per setup, and notes.
    """
    out = SetupMeasures(control=positive_control(budget.seeds))
    for rho, iv in out.control.items():
        out.measured[f"positive control: {VERDICT_PROTOCOL} r of gates planted at r = {rho:g} (consecutive "
                     f"blocks)"] = iv
    out.notes.append(_control_note(out.control))
    for setup in setups:
        runs, skipped = trained_runs(setup.runs(budget), run_dirs)
        out.notes += [f"{setup.label}: {note}" for note in skipped]
        seeds = [_correlations(run_dir, budget.samples) for _, run_dir in runs]
        records = [read_jsonl(records_path(run_dir, RECORDER)) for _, run_dir in runs]
        out.triples[setup.label], trained_r = [], {protocol: [] for protocol in RECORDED_PROTOCOLS}
        out.learned[setup.label] = []
        for s in range(len(seeds[0]) if seeds else 0):
            stage = [seed[s] for seed in seeds]
            for protocol in PROTOCOLS:
                ivs, gains = _stage_intervals({which: _values(stage, protocol, which)
                                               for which in ("trained", *NULLS, "all_pairs")})
                name = f"{setup.label} {protocol} r (consecutive blocks), stage {s}"
                if protocol in RECORDED_PROTOCOLS:  # the other two are in the table: a report stays readable
                    out.measured[name] = ivs["trained"]
                    trained_r[protocol].append(ivs["trained"])
                    out.references[f"{name}, untrained"] = ivs["untrained"]
                    out.references[f"{name}, channels permuted"] = ivs["permuted"]
                if protocol == VERDICT_PROTOCOL:
                    out.triples[setup.label].append((ivs["trained"], gains["untrained"], gains["permuted"]))
                    for null in NULLS:
                        out.measured[f"{setup.label} {protocol} r minus the {null} null (paired by seed), "
                                     f"stage {s}"] = gains[null]
                out.table.append(_row(setup.label, s, protocol, ivs, gains))
            for measure, label in HOMOGENEITY_LABELS.items():
                ivs, gains = _stage_intervals(_homogeneity_values(stage, measure))
                name = f"{setup.label} {label} (consecutive blocks), stage {s}"
                out.measured[name] = ivs["trained"]
                out.references[f"{name}, untrained"] = ivs["untrained"]
                out.table.append(_row(setup.label, s, label, ivs, gains))
            learned = {key: mean_interval([seed["learning"][key] for seed in stage])
                       for key in ("spread", "spread_untrained", "moved")}
            out.measured[f"{setup.label} gate spread over images, stage {s}"] = learned["spread"]
            out.references[f"{setup.label} gate spread over images, stage {s}, untrained"] = learned["spread_untrained"]
            out.measured[f"{setup.label} gate distance from the untrained gates, stage {s}"] = learned["moved"]
            out.learned[setup.label].append((learned["moved"], learned["spread"]))
        if not seeds:
            continue
        accuracy = mean_interval([read_summary(run_dir)["test_acc"] for _, run_dir in runs], bounds=(0.0, 1.0))
        out.notes.append(setup.describe(budget, accuracy))
        out.notes.append(_centred_note(setup.label, trained_r))
        if all(records):
            out.figures.append((f"{file_stem(setup.label)}_r_over_epochs",
                                plot_r_over_epochs(records, f"{setup.label} on {setup.dataset}")))
            out.notes.append(curve_note(setup.label, records))
        else:
            out.notes.append(f"{setup.label}: some runs have no records/{RECORDER}.jsonl, no curve over epochs")
    return out


class CrossLayerCorrelation(AbstractClaim):
    """SAMs of consecutive blocks produce strongly correlated attention (see the module docstring)."""

    id = "cross-layer-correlation"
    kind = "paper"
    statement = ("self-attention modules in consecutive layers produce strongly correlated attention "
                 "maps, mean Pearson r up to 0.85")
    paper = "0.85 (DIA: arXiv 2210.16101; DIANet: arXiv 1905.10671, the correlation figure)"
    measures_unfinished_runs = True  # the dose-response counts every epoch recorded so far

    def runs(self, budget: Budget) -> list[RunSpec]:
        return [spec for setup in _setups(budget) for spec in setup.runs(budget)]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        setups = _setups(budget)
        if not setups:
            return ClaimResult({}, {}, correlation_verdict({}, {}),
                               notes=[f"none of {', '.join(budget.datasets)} is available"])
        m = measure_setups(setups, run_dirs, budget)
        for setup in setups:
            dose = dose_response(setup.label, setup.runs(budget), run_dirs, (MIN_GATE_MOVED, MIN_GATE_SPREAD))
            m.table += dose.rows
            m.figures += dose.figures
            m.notes += dose.notes
        verdict = control_verdict(m.control) or correlation_verdict(m.triples, m.learned)
        return ClaimResult(m.measured, m.references, verdict, m.table, m.figures, m.notes,
                           comparisons={name: None for name in m.measured if "(paired by seed)" in name})


def _stage_intervals(values: dict[str, list[float]]) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """One stage's intervals over seeds from its values per seed ("trained", "all_pairs" and the NULLS it
    has), and the paired differences trained - null (per seed, then over seeds)."""
    ivs = {which: mean_interval(v, bounds=(-1.0, 1.0)) for which, v in values.items()}
    gains = {null: mean_interval(np.subtract(values["trained"], values[null]), bounds=DIFFERENCE_RANGE)
             for null in NULLS if null in values}
    return ivs, gains


def _row(label: str, stage: int, protocol: str, ivs: dict[str, Interval], gains: dict[str, Interval]) -> dict:
    """One table row: each interval as "mean ± std [low, high]", the paired differences as "trained - <null>"."""
    return {"setup": label, "stage": stage, "protocol": protocol,
            **{which: interval_cell(iv) for which, iv in ivs.items()},
            **{f"trained - {null}": interval_cell(iv) for null, iv in gains.items()}}


def _correlations(run_dir: Path, samples: int) -> list[dict]:
    """stage_measures of a finished run on its first `samples` test images (all PROTOCOLS)."""
    run = load_run(run_dir)
    x, _ = run.test_batch(samples)
    with torch.no_grad():
        untrained = trace(untrained_model(run.model_spec, run.config["seed"]), x)
    return stage_measures(run.model, untrained, x, PROTOCOLS, draws=8)


def _values(stage: list[dict], protocol: str, which: str) -> list[float]:
    """One stage's statistic over the seeds: trained, its untrained or permuted null, or over all pairs."""
    key = "mean_r" if which == "all_pairs" else STATISTIC
    return [seed[protocol][key] if which in ("trained", "all_pairs") else seed[protocol][which][key]
            for seed in stage]


def _homogeneity_values(stage: list[dict], measure: str) -> dict[str, list[float]]:
    """One stage's homogeneity measure over the seeds: trained, untrained (consecutive blocks) and over all pairs."""
    entries = [seed["homogeneity"][measure] for seed in stage]
    return {"trained": [e[STATISTIC] for e in entries], "untrained": [e["untrained"][STATISTIC] for e in entries],
            "all_pairs": [e["mean_r"] for e in entries]}


def _centred_note(model: str, trained_r: dict[str, list[Interval]]) -> str:
    """Whether the centred r is high (input-dependent agreement) next to the per-sample r (which a channel
    profile shared by every input can make high on its own); trained_r: protocol -> r per stage."""
    def high(protocol: str) -> tuple[int, int, str]:
        ivs = trained_r[protocol]
        return (sum(iv.low is not None and iv.low > THRESHOLD for iv in ivs), len(ivs),
                ", ".join(f"{iv.mean:.2f}" for iv in ivs))

    (k, n, centred), (k_sample, _, _) = high("centred"), high(VERDICT_PROTOCOL)
    if k > n / 2:
        reading = "the blocks agree on what varies with the input"
    elif k_sample > n / 2:
        reading = "the high per-sample r comes from a channel profile shared by every input"
    else:
        reading = "the blocks agree neither on a shared profile nor on what varies with the input"
    return f"{model}: centred r by stage {centred}; above {THRESHOLD} in {k} of {n} stages: {reading}"
