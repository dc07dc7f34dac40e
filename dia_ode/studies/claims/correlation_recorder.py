"""The per-epoch record of the attention correlation, and its curve over training.

The recorder "attention_correlation" traces a fixed test batch after every epoch of a run of the
correlation claims (claims/correlation.py, claims/correlation_sweep.py), so r is a curve over training,
not one number at the end: does it emerge with training, and when? (The training-length part of the
setup sweep.) Each record also holds the homogeneity of the stage's features and gate logits between
consecutive blocks (dia_ode.analysis.homogeneity), trained and untrained: reported, not judged.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dia_ode.analysis.attention_nulls import correlation_with_nulls, untrained_model
from dia_ode.analysis.homogeneity import MEASURES as HOMOGENEITY
from dia_ode.analysis.homogeneity import homogeneity_with_untrained
from dia_ode.analysis.intervals import Interval
from dia_ode.rundir import load_run
from dia_ode.solvers import trace
from dia_ode.studies.report.recorders import register_recorder

RECORDER = "attention_correlation"
RECORDER_SAMPLES = 64  # the first 64 test images: a fixed batch, so the curve over epochs compares like with like
RECORDED_PROTOCOLS = ("per_sample", "centred")  # recorded per epoch and reported as intervals; the table has all
THRESHOLD = 0.5  # "strongly correlated": the paper reports up to 0.85
VERDICT_PROTOCOL = "per_sample"  # the paper's (unpublished) protocol is most plausibly per-sample vectors
STATISTIC = "mean_r_consecutive"


def interval_cell(iv: Interval) -> str:
    """A table cell of the correlation claims: "mean ± std [low, high]"."""
    return f"{iv.format('.3f')} {iv.format_ci('.3f')}"


def file_stem(label: str) -> str:
    """A setup's label as part of a figure's file name, valid on every system."""
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_")


def stage_measures(model: torch.nn.Module, untrained_traces: list, x: torch.Tensor, protocols: Sequence[str],
                   draws: int) -> list[dict]:
    """What the correlation claims measure on a network, per stage: correlation_with_nulls of its gates
    and, under "homogeneity", homogeneity_with_untrained of its features and gate logits.

    Args:
        model: the trained network, traced on x.
        untrained_traces: the untrained network's traces on x (attention_nulls.untrained_model).
        x: the images.
        protocols: the gate protocols (dia_ode.analysis.correlation.PROTOCOLS).
        draws: permutations of the permuted null.
    """
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant gates: NaN entries, counted in the results
        traces = trace(model, x)
        stages = correlation_with_nulls(traces, untrained_traces, protocols, draws=draws)
        for entry, homogeneity in zip(stages, homogeneity_with_untrained(traces, untrained_traces)):
            entry["homogeneity"] = homogeneity
    return stages


def attention_correlation_recorder(run_dir: Path) -> Callable[[int, dict], dict]:
    """The recorder "attention_correlation": after each epoch, r per stage on a fixed test batch.

    Loads the run's last checkpoint (rundir.load_run, on the CPU), traces the first RECORDER_SAMPLES
    test images and, once per run, the untrained network of the run's seed on the same images.

    Args:
        run_dir: the training run's directory.

    Returns:
        record(epoch, row) -> {"samples", "stages": [{"stage", "spread",
        "spread_untrained", "moved", "mean_gate", "<protocol>": {"mean_r", "mean_r_consecutive",
        "untrained", "untrained_consecutive", "permuted", "permuted_consecutive"}, "homogeneity":
        {"<measure>": {"mean_r_consecutive", "untrained_consecutive"}}}]} for the protocols
        RECORDED_PROTOCOLS (each r over all block pairs and between consecutive blocks) and the
        homogeneity measures (dia_ode.analysis.homogeneity.MEASURES).
    """
    cached: dict = {}

    def record(epoch: int, row: dict) -> dict:
        with torch.random.fork_rng(devices=[]):  # rebuilding models draws from torch's global generator
            run = load_run(run_dir)
            if not cached:
                cached["x"], _ = run.test_batch(RECORDER_SAMPLES)
                with torch.no_grad():
                    cached["untrained"] = trace(untrained_model(run.model_spec, run.config["seed"]), cached["x"])
            stages = stage_measures(run.model, cached["untrained"], cached["x"], RECORDED_PROTOCOLS, draws=4)
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
    entry["homogeneity"] = {m: {"mean_r_consecutive": stage["homogeneity"][m]["mean_r_consecutive"],
                                "untrained_consecutive": stage["homogeneity"][m]["untrained"]["mean_r_consecutive"]}
                            for m in HOMOGENEITY}
    return entry


def _curve(seeds: list[list[dict]], s: int, protocol: str, key: str) -> np.ndarray:
    """(seeds, epochs) of one recorded value of stage s (null -> NaN)."""
    length = min(len(rows) for rows in seeds)
    return np.array([[rows[e]["stages"][s][protocol][key] for e in range(length)] for rows in seeds],
                    dtype=np.float64)  # JSON null (an undefined r) becomes NaN


def curve_note(label: str, seeds: list[list[dict]]) -> str:
    """Per stage the per-sample r after the first and the last recorded epoch, against the untrained r.

    Args:
        label: what was trained (a model, or a setup of the sweep).
        seeds: per seed the rows of records/attention_correlation.jsonl.
    """
    parts = []
    for s in range(len(seeds[0][0]["stages"])):
        r = np.nanmean(_curve(seeds, s, VERDICT_PROTOCOL, STATISTIC), axis=0)
        r0 = np.nanmean(_curve(seeds, s, VERDICT_PROTOCOL, "untrained_consecutive"))
        parts.append(f"stage {s} {r[0]:.2f} -> {r[-1]:.2f} (untrained {r0:.2f})")
    epochs = min(len(rows) for rows in seeds)
    return f"{label}, per-sample r over epochs 1 -> {epochs} (first {RECORDER_SAMPLES} test images): {'; '.join(parts)}"


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
