"""The DIA paper's headline observation as a claim: the attentions of the blocks of a stage are strongly
correlated (mean Pearson r up to 0.85), the reason it gives for sharing one attention module per stage.

Runs: SE-ResNets (se_resnet20; se_resnet56 too above the smoke budget) on the budget's first available
dataset, every seed, with the SE options of claims.se_options (reduction 4, at least 4 hidden units:
the default r = 16 leaves 1-2 hidden units, and a dead ReLU unit makes a gate constant). The recorder
"attention_correlation" traces a fixed test batch after every epoch, so r is a curve over training,
not one number at the end. A run that diverged or failed is left out with a note (claims.trained_runs).

Statistic: per model, stage and protocol (dia_ode.analysis.correlation.PROTOCOLS) the mean r between
consecutive blocks (the paper's "consecutive layers"; the mean over all block pairs is in the table),
over seeds as a 95% Student-t interval, next to the untrained network of the same seed and the
channel-permuted null (analysis.attention_nulls.correlation_with_nulls, also between consecutive
blocks), and next to how much the gates learned (their spread over the images, their distance from
the untrained gates). The nulls are paired with the trained network (the same seed's initial weights;
the same trained gates with their channels permuted), so they are compared by the per-seed differences
trained - untrained and trained - permuted, each as a 95% Student-t interval over seeds.

Verdict rule: a stage *shows* the claim when the lower end of its per-sample r interval lies above 0.5
AND the lower ends of both paired-difference intervals (trained - untrained, trained - permuted) lie
above 0. "reproduced" when every model shows it in more than half of its stages; "not reproduced"
otherwise; "not testable here" when no dataset of the budget is available, no run of a model finished,
or an interval cannot be formed (fewer than 2 finished seeds, an undefined r).

CPU cost (OMP_NUM_THREADS=1): se_resnet20 width 16 on digits trains in about 0.9 s per epoch and
se_resnet56 in 3.9 s on an idle core, the recorder adds a fraction of a second per epoch, and measure()
takes a few seconds. The cpu budget's six runs (3 seeds, 15 epochs) took 464 s of wall time one after
the other on a 2-core machine shared with four other jobs (load about 6), about 5 minutes on an idle
core (theory/correlation.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dia_ode.analysis.attention_nulls import correlation_with_nulls, untrained_model
from dia_ode.analysis.correlation import PROTOCOLS
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.rundir import load_run, read_jsonl
from dia_ode.solvers import trace
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.claims.trained_runs import trained_runs
from dia_ode.studies.report.budgets import Budget, first_dataset
from dia_ode.studies.report.claim import NOT_TESTABLE, AbstractClaim, ClaimResult, RunSpec, Verdict, study_config
from dia_ode.studies.report.recorders import records_path, register_recorder

RECORDER = "attention_correlation"
RECORDER_SAMPLES = 64  # the first 64 test images: a fixed batch, so the curve over epochs compares like with like
RECORDED_PROTOCOLS = ("per_sample", "centred")  # recorded per epoch and reported as intervals; the table has all
THRESHOLD = 0.5  # "strongly correlated": the paper reports up to 0.85
VERDICT_PROTOCOL = "per_sample"  # the paper's (unpublished) protocol is most plausibly per-sample vectors
STATISTIC = "mean_r_consecutive"
NULLS = ("untrained", "permuted")  # each paired with the trained network of the same seed
DIFFERENCE_RANGE = (-2.0, 2.0)  # a difference of two correlations


def attention_correlation_recorder(run_dir: Path) -> Callable[[int, dict], dict]:
    """The recorder "attention_correlation": after each epoch, r per stage on a fixed test batch.

    Loads the run's last checkpoint (rundir.load_run, on the CPU), traces the first RECORDER_SAMPLES
    test images and, once per run, the untrained network of the run's seed on the same images.

    Args:
        run_dir: the training run's directory.

    Returns:
        record(epoch, row) -> {"samples", "stages": [{"stage", "spread",
        "spread_untrained", "moved", "mean_gate", "<protocol>": {"mean_r", "mean_r_consecutive",
        "untrained", "untrained_consecutive", "permuted", "permuted_consecutive"}}]} for the protocols
        RECORDED_PROTOCOLS: each r over all block pairs and between consecutive blocks.
    """
    cached: dict = {}

    def record(epoch: int, row: dict) -> dict:
        with torch.random.fork_rng(devices=[]):  # rebuilding models draws from torch's global generator
            run = load_run(run_dir)
            if not cached:
                cached["x"], _ = run.test_batch(RECORDER_SAMPLES)
                with torch.no_grad():
                    cached["untrained"] = trace(untrained_model(run.model_spec, run.config["seed"]), cached["x"])
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # constant gates: NaN entries, counted below
                stages = correlation_with_nulls(trace(run.model, cached["x"]), cached["untrained"],
                                                RECORDED_PROTOCOLS, draws=4)
        return {"samples": len(cached["x"]), "stages": [_compact(s) for s in stages]}

    return record


register_recorder(RECORDER, attention_correlation_recorder)


def _compact(stage: dict) -> dict:
    """The few numbers per stage a curve over epochs needs, from one correlation_with_nulls entry."""
    learned = stage["learning"]
    entry = {"stage": stage["stage"], "spread": learned["spread"], "spread_untrained": learned["spread_untrained"],
             "moved": learned["moved"], "mean_gate": learned["mean_gate"]}
    for protocol in RECORDED_PROTOCOLS:
        p = stage[protocol]
        entry[protocol] = {"mean_r": p["mean_r"], "mean_r_consecutive": p["mean_r_consecutive"],
                           "untrained": p["untrained"]["mean_r"],
                           "untrained_consecutive": p["untrained"]["mean_r_consecutive"],
                           "permuted": p["permuted"]["mean_r"],
                           "permuted_consecutive": p["permuted"]["mean_r_consecutive"]}
    return entry


def stage_shows_claim(trained: Interval, over_untrained: Interval, over_permuted: Interval) -> bool | None:
    """Whether a stage's trained r interval lies above THRESHOLD and both paired differences (trained -
    untrained, trained - permuted, per seed) lie above 0; None when one of the three has no interval."""
    if any(iv.low is None for iv in (trained, over_untrained, over_permuted)):
        return None
    return trained.low > THRESHOLD and over_untrained.low > 0 and over_permuted.low > 0


def correlation_verdict(stages: dict[str, list[tuple[Interval, Interval, Interval]]]) -> Verdict:
    """The claim's verdict from the per-sample intervals of every stage (module docstring).

    Args:
        stages: model -> one (trained r, trained - untrained r, trained - permuted r) triple of
            Intervals per stage, the differences paired by seed.

    Returns:
        "reproduced" when every model shows the claim (stage_shows_claim) in more than half of its
        stages, "not testable here" when there is no model or a stage has no interval, "not
        reproduced" otherwise.
    """
    if not stages:
        return Verdict(NOT_TESTABLE, "no finished run: none of the budget's datasets is available, or "
                                            "every run diverged")
    counts = {}
    for model, triples in stages.items():
        if not triples:
            return Verdict(NOT_TESTABLE, f"{model}: no run finished (every seed diverged or failed)")
        shows = [stage_shows_claim(*t) for t in triples]
        if None in shows:
            return Verdict(NOT_TESTABLE, f"{model}: a stage's r has no 95% interval (one seed, or an "
                                                "undefined correlation)")
        counts[model] = (sum(shows), len(shows))
    found = "; ".join(f"{m}: {k} of {n} stages" for m, (k, n) in counts.items())
    if all(k > n / 2 for k, n in counts.values()):
        return Verdict("reproduced", f"the per-sample r between consecutive blocks lies above {THRESHOLD} and "
                                     f"above its untrained and permuted nulls (paired by seed) in most stages "
                                     f"({found})")
    top = max(t[0].mean for triples in stages.values() for t in triples)
    return Verdict("not reproduced", f"the per-sample r between consecutive blocks lies above {THRESHOLD} and "
                                     f"above both nulls (paired by seed) in too few stages ({found}; highest "
                                     f"trained mean r {top:.2f})")


def _models(budget: Budget) -> tuple[str, ...]:
    return ("se_resnet20",) if budget.name == "smoke" else ("se_resnet20", "se_resnet56")


class CrossLayerCorrelation(AbstractClaim):
    """SAMs of consecutive blocks produce strongly correlated attention (see the module docstring)."""

    id = "cross-layer-correlation"
    statement = ("self-attention modules in consecutive layers produce strongly correlated attention "
                 "maps, mean Pearson r up to 0.85")
    paper = "0.85 (DIA: arXiv 2210.16101; DIANet: arXiv 1905.10671, the correlation figure)"


    def runs(self, budget: Budget) -> list[RunSpec]:
        dataset = first_dataset(budget)
        if dataset is None:
            return []
        return [RunSpec(study_config(model, dataset, budget, seed, {**SE_OPTIONS, "base_width": budget.width}),
                        (RECORDER,))
                for model in _models(budget) for seed in budget.seeds]

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        specs = self.runs(budget)
        if not specs:
            return ClaimResult({}, {}, correlation_verdict({}),
                               notes=[f"none of {', '.join(budget.datasets)} is available"])
        runs, notes = trained_runs(specs, run_dirs)
        per_model: dict[str, list[list[dict]]] = {model: [] for model in _models(budget)}  # one list per seed
        records: dict[str, list[list[dict]]] = {}  # model -> one recorder file per seed
        for spec, run_dir in runs:
            per_model[spec.config.model].append(_correlations(run_dir, budget.samples))
            records.setdefault(spec.config.model, []).append(read_jsonl(records_path(run_dir, RECORDER)))
        measured, references, table, triples, trained_r = {}, {}, [], {}, {}
        for model, seeds in per_model.items():
            triples[model], trained_r[model] = [], {protocol: [] for protocol in RECORDED_PROTOCOLS}
            for s in range(len(seeds[0]) if seeds else 0):
                stage = [seed[s] for seed in seeds]
                for protocol in PROTOCOLS:
                    ivs, gains = _stage_intervals(stage, protocol)
                    name = f"{model} {protocol} r (consecutive blocks), stage {s}"
                    if protocol in RECORDED_PROTOCOLS:  # the other two are in the table: a report stays readable
                        measured[name] = ivs["trained"]
                        trained_r[model][protocol].append(ivs["trained"])
                        references[f"{name}, untrained"] = ivs["untrained"]
                        references[f"{name}, channels permuted"] = ivs["permuted"]
                    if protocol == VERDICT_PROTOCOL:
                        triples[model].append((ivs["trained"], gains["untrained"], gains["permuted"]))
                        for null in NULLS:
                            measured[f"{model} {protocol} r minus the {null} null (paired by seed), stage {s}"] = \
                                gains[null]
                    table.append({"model": model, "stage": s, "protocol": protocol,
                                  **{which: f"{iv.format('.3f')} {iv.format_ci('.3f')}" for which, iv in ivs.items()},
                                  **{f"trained - {null}": f"{gains[null].format('.3f')} {gains[null].format_ci('.3f')}"
                                     for null in NULLS}})
                learned = {key: mean_interval([seed["learning"][key] for seed in stage])
                           for key in ("spread", "spread_untrained", "moved")}
                measured[f"{model} gate spread over images, stage {s}"] = learned["spread"]
                references[f"{model} gate spread over images, stage {s}, untrained"] = learned["spread_untrained"]
                measured[f"{model} gate distance from the untrained gates, stage {s}"] = learned["moved"]
        dataset = specs[0].config.dataset
        figures = [(f"{model}_r_over_epochs", plot_r_over_epochs(seeds, f"{model} on {dataset}"))
                   for model, seeds in records.items() if all(seeds)]
        notes += [f"{m}, {dataset}, {len(seeds)} seeds, {budget.epochs} epochs, base width {budget.width}, "
                  f"SE reduction 4 with at least 4 hidden units; r on the first {budget.samples} test images, "
                  f"8 channel permutations; intervals are 95% Student-t over seeds, the nulls' differences "
                  f"paired by seed" for m, seeds in per_model.items() if seeds]
        notes += [_centred_note(model, r) for model, r in trained_r.items() if per_model[model]]
        notes += [_curve_note(model, seeds) for model, seeds in records.items() if all(seeds)]
        if not all(all(seeds) for seeds in records.values()):
            notes.append(f"some runs have no records/{RECORDER}.jsonl: no curve over epochs for them")
        return ClaimResult(measured, references, correlation_verdict(triples), table, figures, notes)


def _stage_intervals(stage: list[dict], protocol: str) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """One stage's intervals over seeds: r of the trained network, of each null and over all block pairs,
    and the paired differences trained - null (per seed, then over seeds)."""
    values = {which: _values(stage, protocol, which) for which in ("trained", *NULLS, "all_pairs")}
    ivs = {which: mean_interval(v, bounds=(-1.0, 1.0)) for which, v in values.items()}
    gains = {null: mean_interval(np.subtract(values["trained"], values[null]), bounds=DIFFERENCE_RANGE)
             for null in NULLS}
    return ivs, gains


def _correlations(run_dir: Path, samples: int) -> list[dict]:
    """correlation_with_nulls of a finished run on its first `samples` test images (all PROTOCOLS)."""
    run = load_run(run_dir)
    x, _ = run.test_batch(samples)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        untrained = trace(untrained_model(run.model_spec, run.config["seed"]), x)
        return correlation_with_nulls(trace(run.model, x), untrained, PROTOCOLS, draws=8)


def _values(stage: list[dict], protocol: str, which: str) -> list[float]:
    """One stage's statistic over the seeds: trained, its untrained or permuted null, or over all pairs."""
    key = "mean_r" if which == "all_pairs" else STATISTIC
    return [seed[protocol][key] if which in ("trained", "all_pairs") else seed[protocol][which][key]
            for seed in stage]


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


def _curve(seeds: list[list[dict]], s: int, protocol: str, key: str) -> np.ndarray:
    """(seeds, epochs) of one recorded value of stage s (null -> NaN)."""
    length = min(len(rows) for rows in seeds)
    return np.array([[rows[e]["stages"][s][protocol][key] for e in range(length)] for rows in seeds],
                    dtype=np.float64)  # JSON null (an undefined r) becomes NaN


def _curve_note(model: str, seeds: list[list[dict]]) -> str:
    """Per stage the per-sample r after the first and the last recorded epoch, against the untrained r."""
    parts = []
    for s in range(len(seeds[0][0]["stages"])):
        r = np.nanmean(_curve(seeds, s, VERDICT_PROTOCOL, STATISTIC), axis=0)
        r0 = np.nanmean(_curve(seeds, s, VERDICT_PROTOCOL, "untrained_consecutive"))
        parts.append(f"stage {s} {r[0]:.2f} -> {r[-1]:.2f} (untrained {r0:.2f})")
    epochs = min(len(rows) for rows in seeds)
    return f"{model}, per-sample r over epochs 1 -> {epochs} (first {RECORDER_SAMPLES} test images): {'; '.join(parts)}"


def plot_r_over_epochs(seeds: list[list[dict]], title: str) -> Figure:
    """r between consecutive blocks over the epochs, one panel per stage: each recorded protocol's mean over
    seeds (thick), every seed (thin), and the untrained network's r (dashed, mean over seeds).

    Args:
        seeds: per seed the rows of records/attention_correlation.jsonl.
        title: what was trained (model and dataset).
    """
    stages = len(seeds[0][0]["stages"])
    fig = Figure(figsize=(3.2 * stages + 0.8, 3.6), layout="constrained")
    fig.suptitle(f"Attention r between consecutive blocks over training: {title}")
    axes = fig.subplots(1, stages, squeeze=False, sharey=True)[0]
    for s, ax in enumerate(axes):
        for i, protocol in enumerate(RECORDED_PROTOCOLS):
            color = f"C{i}"
            r = _curve(seeds, s, protocol, STATISTIC)  # (seeds, epochs)
            epochs = np.arange(1, r.shape[1] + 1)
            ax.plot(epochs, r.T, color=color, linewidth=0.6, alpha=0.4)
            ax.plot(epochs, np.nanmean(r, axis=0), color=color, linewidth=2, label=f"{protocol}, trained")
            ax.axhline(np.nanmean(_curve(seeds, s, protocol, "untrained_consecutive")), color=color,
                       linestyle="--", linewidth=1, label=f"{protocol}, untrained")
        ax.axhline(THRESHOLD, color="black", linestyle=":", linewidth=0.8, label=f"r = {THRESHOLD}")
        ax.set_title(f"stage {s}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-1.0, 1.0)
    axes[0].set_ylabel("mean Pearson r, consecutive blocks")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(RECORDED_PROTOCOLS) * 2 + 1)
    return fig

