"""The dose-response of the cross-layer correlation: the per-sample gate r, the gates' movement from
initialisation and their spread over images, against SGD steps.

The claim is about trained attention, and the paper trains for about 64,000 steps (CIFAR, 164 epochs of
batch 128), while the cpu budget's runs take a few hundred to a few thousand. Each run of the claim
records its gates after every epoch (correlation_recorder.py), so a run is a curve over training: epoch
e lies at e x epoch_steps(config) SGD steps (every epoch has the same batches). Per recorded epoch and
stage the verdict protocol's r between consecutive blocks is taken over the seeds that reached it (a 95%
Student-t interval from two seeds on), next to its untrained and channel-permuted nulls (each recorded
per seed, between consecutive blocks) and the gates' movement and spread, the precondition's two numbers.

A run that has not finished (still training, stopped, failed) counts with the epochs it recorded, so a
long study reports its points so far; a note says how far each seed got. The figure (plot_dose_response)
puts r on a log axis of steps with the nulls as bands, and the gates' movement and spread beside it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.data import global_batches, load_dataset
from dia_ode.engine import TrainConfig
from dia_ode.rundir import read_jsonl, read_summary
from dia_ode.rundir.lock import is_locked
from dia_ode.studies.claims.correlation_recorder import (RECORDER, STATISTIC, THRESHOLD, VERDICT_PROTOCOL, file_stem,
                                                         interval_cell)
from dia_ode.studies.report.claim import FAILED, RunSpec, run_outcome
from dia_ode.studies.report.recorders import records_path

R_KEYS = {"trained": STATISTIC, "untrained": "untrained_consecutive", "permuted": "permuted_consecutive"}
GATE_KEYS = ("moved", "spread")  # the precondition's numbers (claims.correlation.gates_learned)
NULL_BANDS = {"untrained": ("0.55", "untrained network"), "permuted": ("tab:olive", "channels permuted")}


@dataclass(frozen=True)
class DosePoint:
    """One recorded epoch over the seeds that reached it.

    Attributes:
        epoch: the epoch (1-based, as in metrics.jsonl).
        steps: SGD steps trained by then.
        stages: per stage, "trained", "untrained", "permuted" (the verdict protocol's r between
            consecutive blocks and its nulls), "moved" and "spread" (the gates), each over the seeds.
    """

    epoch: int
    steps: int
    stages: tuple[dict[str, Interval], ...]

    @property
    def seeds(self) -> int:
        return self.stages[0]["trained"].n


@dataclass
class DoseResponse:
    """What the claim adds to its result for one setup: the points, their table rows, notes and figure."""

    points: list[DosePoint]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[tuple[str, Figure]] = field(default_factory=list)


@functools.lru_cache(maxsize=None)  # measure() asks per setup; the 60,000 images load once
def _train_images(dataset: str, data_dir: str | None, val_fraction: float, split_seed: int,
                  train_examples: int | None) -> int:
    return len(load_dataset(dataset, data_dir, val_fraction=val_fraction, split_seed=split_seed,
                            train_examples=train_examples).train)


def epoch_steps(config: TrainConfig) -> int:
    """SGD steps of one epoch of `config`'s run: its batches over the training split (the last may be short)."""
    images = _train_images(config.dataset, config.data_dir, config.val_fraction, config.split_seed,
                           config.train_examples)
    return len(global_batches(images, config.batch_size))


def dose_points(seeds: Sequence[Sequence[dict]], steps_per_epoch: int) -> list[DosePoint]:
    """Every recorded epoch of any seed as a point over the seeds that recorded it.

    Args:
        seeds: per seed the rows of records/attention_correlation.jsonl (any number of epochs each).
        steps_per_epoch: epoch_steps of the runs.
    """
    by_epoch = [{row["epoch"]: row for row in rows} for rows in seeds]
    points = []
    for epoch in sorted(set().union(*by_epoch)):
        rows = [rows[epoch] for rows in by_epoch if epoch in rows]
        stages = []
        for s in range(len(rows[0]["stages"])):
            entries = [row["stages"][s] for row in rows]
            stage = {which: mean_interval([_number(e[VERDICT_PROTOCOL][key]) for e in entries], bounds=(-1.0, 1.0))
                     for which, key in R_KEYS.items()}
            stage.update({key: mean_interval([_number(e[key]) for e in entries]) for key in GATE_KEYS})
            stages.append(stage)
        points.append(DosePoint(epoch, epoch * steps_per_epoch, tuple(stages)))
    return points


def dose_response(label: str, specs: Sequence[RunSpec], run_dirs: dict[str, Path],
                  thresholds: Sequence[float] = ()) -> DoseResponse:
    """The dose-response of one setup's runs, finished or not.

    Args:
        label: the setup's name in the report (claims.correlation.Setup.label).
        specs: the setup's runs, one per seed (their configs differ only in the seed).
        run_dirs: RunSpec.key() -> run directory, as measure() receives it; a missing key or directory
            is a run not started.
        thresholds: the precondition's thresholds of movement and spread, drawn in the gates' panel.

    Returns:
        DoseResponse: the points; one table row per point and stage ("setup", "stage", "protocol", the r
        of "trained", "untrained", "permuted", "steps", "epoch", "seeds", "moved", "spread"); a note on
        how far each seed got and one on r at the first and the last point; the figure
        "<label>_dose_response" when any seed recorded an epoch.
    """
    steps = epoch_steps(specs[0].config)
    records = {spec.key(): _records(run_dirs.get(spec.key())) for spec in specs}
    points = dose_points([rows for rows in records.values() if rows], steps)
    cfg = specs[0].config
    progress = "; ".join(f"seed {spec.config.seed}: {_progress(records[spec.key()], spec, steps, run_dirs)}"
                         for spec in specs)
    out = DoseResponse(points, notes=[f"{label}, dose-response: {steps:,} SGD steps an epoch (batch {cfg.batch_size}); "
                                      f"{progress}"])
    if not points:
        return out
    for point in points:
        for s, stage in enumerate(point.stages):
            out.rows.append({"setup": label, "stage": s, "protocol": f"{VERDICT_PROTOCOL}, over steps",
                             **{which: interval_cell(stage[which]) for which in R_KEYS}, "steps": point.steps,
                             "epoch": point.epoch, "seeds": point.seeds,
                             **{key: stage[key].format(".3f") for key in GATE_KEYS}})
    first, last = points[0], points[-1]
    ends = "; ".join(f"stage {s} {a['trained'].format('.2f')} -> {b['trained'].format('.2f')} (permuted "
                     f"{b['permuted'].mean:.2f}, untrained {b['untrained'].mean:.2f}; moved {b['moved'].mean:.3f}, "
                     f"spread {b['spread'].mean:.3f})" for s, (a, b) in enumerate(zip(first.stages, last.stages)))
    out.notes.append(f"{label}, {VERDICT_PROTOCOL} r between consecutive blocks from {first.steps:,} to {last.steps:,} "
                     f"steps ({first.seeds} and {last.seeds} seeds; every point in the table): {ends}")
    figure = plot_dose_response(points, f"{label} on {cfg.dataset}", thresholds)
    out.figures.append((f"{file_stem(label)}_dose_response", figure))
    return out


def plot_dose_response(points: Sequence[DosePoint], title: str, thresholds: Sequence[float] = ()) -> Figure:
    """Two panels against SGD steps (log axis). Left: the verdict protocol's r between consecutive blocks,
    per stage its mean over seeds with the 95% interval shaded, and each null as a band (its range over
    stages and seeds at each point). Right: the gates' movement from the untrained gates (solid) and their
    spread over images (dashed), per stage the mean over seeds, with `thresholds` dotted.
    """
    steps = np.array([p.steps for p in points], dtype=np.float64)
    # one point has no width on the axis: its bands span a factor of 2 either side, so they show
    xs = steps if len(steps) > 1 else np.array([steps[0] / 2, steps[0] * 2])
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    fig.suptitle(f"Gate correlation against SGD steps: {title}")
    ax_r, ax_g = fig.subplots(1, 2)
    for null, (color, label) in NULL_BANDS.items():
        values = [[v for stage in p.stages for v in stage[null].values] for p in points]
        low, high = (np.array([fn(v) if np.isfinite(v).any() else np.nan for v in values])
                     for fn in (np.nanmin, np.nanmax))
        ax_r.fill_between(xs, np.resize(low, len(xs)), np.resize(high, len(xs)), color=color, alpha=0.3, linewidth=0,
                          label=f"{label} (range over stages and seeds)")
    for s in range(len(points[0].stages)):
        color = f"C{s}"
        r = [p.stages[s]["trained"] for p in points]
        ax_r.plot(steps, [iv.mean for iv in r], "o-", color=color, markersize=3, label=f"stage {s}, trained")
        ax_r.fill_between(steps, [np.nan if iv.low is None else iv.low for iv in r],
                          [np.nan if iv.high is None else iv.high for iv in r], color=color, alpha=0.15, linewidth=0)
        for key, style, marker in zip(GATE_KEYS, ("-", "--"), ("o", "s")):
            ax_g.plot(steps, [p.stages[s][key].mean for p in points], style, marker=marker, markersize=3, color=color,
                      label=f"stage {s}, {key}")
    ax_r.axhline(THRESHOLD, color="black", linestyle=":", linewidth=0.8, label=f"r = {THRESHOLD}")
    for value in sorted(set(thresholds)):
        ax_g.axhline(value, color="black", linestyle=":", linewidth=0.8, label=f"precondition: {value:g}")
    ax_r.set_ylim(-1.0, 1.0)
    ax_r.set_ylabel(f"{VERDICT_PROTOCOL} r, consecutive blocks")
    ax_g.set_ylabel("gates: moved (solid), spread (dashed)")
    ax_g.set_ylim(bottom=0.0)
    for ax in (ax_r, ax_g):
        ax.set_xscale("log")
        ax.set_xlabel("SGD steps")
        ax.legend(fontsize="x-small", loc="best")
    return fig


def _number(value: float | None) -> float:
    return np.nan if value is None else float(value)  # JSON null: an undefined r


def _records(run_dir: Path | None) -> list[dict]:
    """The run's per-epoch records ([] for a run not started); a last line cut short by a kill is dropped."""
    return [] if run_dir is None else read_jsonl(records_path(run_dir, RECORDER), partial_last=True)


def _progress(records: list[dict], spec: RunSpec, steps: int, run_dirs: dict[str, Path]) -> str:
    """How far one seed got: epochs recorded of those planned, the steps, and how the run stands."""
    run_dir = run_dirs.get(spec.key())
    if run_dir is None or not Path(run_dir).is_dir():
        return "not started"
    outcome = run_outcome(run_dir)
    if outcome == FAILED:  # no results yet: being trained, or stopped (killed, an error, --no-train)
        status = read_summary(run_dir).get("status")
        outcome = "training now" if is_locked(run_dir) else f"stopped ({status})" if status else "stopped"
    return f"{len(records)} of {spec.config.epochs} epochs recorded ({len(records) * steps:,} steps), {outcome}"


__all__ = ["DosePoint", "DoseResponse", "dose_points", "dose_response", "epoch_steps", "plot_dose_response"]
