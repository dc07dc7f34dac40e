"""compare's rows pooled per model over seeds: mean ± std, a 95% interval and n, and the table.

Runs belong together when they train the same model with the same constructor options (the seeds of
`compare --seeds`, or several `--from` runs of one model); runs pooled as one must also agree on
everything else they were trained with (`check_poolable`, also used by seeds.aggregate_runs), so a
run on another dataset or with another budget is refused, not averaged in. Accuracy and NFE get
mean ± std and a Student-t interval (analysis.intervals); the curves behind the figures (NFE per
epoch, step sizes over depth) get a mean and a std per point. The table's footnote says what one test example is
worth, so a difference of one or two test images reads as the noise it is.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import Sequence

import numpy as np

from dia_ode.analysis.intervals import Interval, example_note, format_number, mean_interval, metric_bounds
from dia_ode.engine import TrainConfig

STAT_COLUMNS = ("test_acc", "test_loss", "nfe_forward", "nfe_backward", "seconds_per_epoch", "peak_memory_mb")
CI_COLUMN = "test_acc 95% CI"
TABLE_COLUMNS = ("model", "kind", "params", "test_acc", CI_COLUMN, "n", "nfe_forward", "nfe_backward",
                 "seconds_per_epoch", "peak_memory_mb")
PROFILE_BINS = 16  # step-size profiles whose points differ between seeds (adaptive solvers) are binned in s


# Config fields free to differ between runs pooled as one configuration: the seed is what varies;
# where the data lives and which device ran it do not change what was trained.
FREE_FIELDS = frozenset({"seed", "data_dir", "device"})


def training_setup(config: dict) -> dict:
    """The fields of a run's config.json that runs pooled together must share, in TrainConfig's order.

    Every TrainConfig field but FREE_FIELDS (task, dataset, model_options, epochs, the optimiser,
    schedule, augmentation, split, ...); a field missing from an older config takes its default.
    """
    return {k: v for k, v in asdict(TrainConfig.from_dict(config)).items() if k not in FREE_FIELDS}


def check_poolable(configs: Sequence[dict], names: Sequence[str] | None = None) -> None:
    """Refuse to pool runs that were not trained the same way up to their seed.

    Args:
        configs: the runs' config.json contents.
        names: one name per run for the message (default: "run 0", "run 1", ...).

    Raises:
        ValueError: one line naming the first field on which two runs differ and both values.
    """
    names = list(names) if names is not None else [f"run {i}" for i in range(len(configs))]
    setups = [training_setup(c) for c in configs]
    for key in setups[0]:
        seen: dict[str, str] = {}  # value (as JSON: lists and tuples alike) -> the first run with it
        for setup, name in zip(setups, names):
            seen.setdefault(json.dumps(setup[key], sort_keys=True), name)
        if len(seen) > 1:
            (a, first), (b, second) = list(seen.items())[:2]
            raise ValueError(f"runs trained with different {key} cannot be pooled: {key}={a} ({first}) but "
                             f"{key}={b} ({second})")


def aggregate_rows(rows: list[dict], confidence: float = 0.95) -> list[dict]:
    """One entry per model (name + options), in the order the models first appear in `rows`.

    Args:
        rows: compare_runs' rows (one per run). A row's "config" (its run's config.json) is checked
            with check_poolable against the others of its model; a row without one is checked on its
            model_options and dataset only.
        confidence: the level of the accuracy interval.

    Returns:
        Dicts with model (a label: the name, plus the options where one name has several), model_name,
        model_options, kind, dataset, n, seeds, runs, n_test, params, the mean of every STAT_COLUMNS
        field, intervals {field: Interval.to_dict()}, nfe_history {"mean", "std"} per epoch and steps
        {"s", "h", "h_std", "binned"}.

    Raises:
        ValueError: runs of one model that differ in anything but their seed (check_poolable).
    """
    check_pools([_row_config(r) for r in rows], [str(r.get("run_dir", r["model"])) for r in rows])
    groups = {key: [rows[i] for i in index] for key, index in pools(rows).items()}
    names = Counter(model for model, _ in groups)
    return [_aggregate(members, _label(members[0], names[model] > 1), confidence)
            for (model, _), members in groups.items()]


def pools(entries: Sequence[dict]) -> dict[tuple[str, str], list[int]]:
    """The indices of the entries pooled together, keyed by (model, options as JSON), in order of
    first appearance; an entry is a compare row or a run's config.json (both have these two keys)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, entry in enumerate(entries):
        key = (entry.get("model"), json.dumps(entry.get("model_options", {}), sort_keys=True))
        groups.setdefault(key, []).append(i)
    return groups


def check_pools(configs: Sequence[dict], names: Sequence[str]) -> None:
    """check_poolable on every set of runs that aggregate_rows would pool (so `compare --from` can
    refuse before it evaluates anything)."""
    for index in pools(configs).values():
        check_poolable([configs[i] for i in index], [names[i] for i in index])


def _row_config(row: dict) -> dict:
    """The run's config.json carried by a compare row, or what the row itself says of it."""
    if "config" in row:
        return row["config"]
    return {k: row[k] for k in ("model", "dataset", "model_options") if row.get(k) is not None}


def _label(row: dict, ambiguous: bool) -> str:
    """The model's name; with its options as k=v when another group has the same name."""
    if not ambiguous:
        return row["model"]
    options = ", ".join(f"{k}={v}" for k, v in sorted(row.get("model_options", {}).items()))
    return f"{row['model']} ({options or 'default options'})"


def _aggregate(rows: list[dict], label: str, confidence: float) -> dict:
    first = rows[0]
    intervals = {c: mean_interval([r.get(c, float("nan")) for r in rows], confidence, metric_bounds(c))
                 for c in STAT_COLUMNS}
    params = {r["params"] for r in rows}
    return {"model": label, "model_name": first["model"], "model_options": first.get("model_options", {}),
            "kind": first["kind"], "dataset": first.get("dataset"), "n": len(rows),
            "seeds": [r.get("seed") for r in rows], "runs": [r.get("run_dir") for r in rows],
            "n_test": first.get("n_test"),
            "params": params.pop() if len(params) == 1 else float(np.mean([r["params"] for r in rows])),
            **{c: iv.mean for c, iv in intervals.items()},
            "intervals": {c: iv.to_dict() for c, iv in intervals.items()},
            "nfe_history": pool_curves([r.get("nfe_history", []) for r in rows]),
            "steps": pool_profiles([r["steps"] for r in rows]) if all("steps" in r for r in rows) else None}


def _mean_std(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means over the finite entries, and their sample std where a column has two or more."""
    finite = np.isfinite(matrix)
    count = finite.sum(axis=0)
    filled = np.where(finite, matrix, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
        squares = np.where(finite, (matrix - mean) ** 2, 0.0).sum(axis=0)
        std = np.where(count > 1, np.sqrt(squares / (count - 1)), np.nan)
    return np.where(count > 0, mean, np.nan), std


def pool_curves(curves: list[list[float]]) -> dict[str, list[float]]:
    """Per index (epoch): the mean over the curves that reach it, and the std (nan with one curve)."""
    length = max((len(c) for c in curves), default=0)
    matrix = np.full((len(curves), length), np.nan)
    for i, curve in enumerate(curves):
        matrix[i, :len(curve)] = curve
    mean, std = _mean_std(matrix)
    return {"mean": mean.tolist(), "std": std.tolist()}


def pool_profiles(profiles: list[dict[str, list[float]]]) -> dict:
    """Step-size profiles {"s", "h"} of several runs as one mean profile with a std per point.

    Discrete models step at the same s = k / L in every run: pooled point by point. An adaptive
    solver's accepted steps fall elsewhere in each run: averaged in PROFILE_BINS bins of s first
    ("binned": True, s the mean position of the steps in each bin).
    """
    first = profiles[0]["s"]
    if all(p["s"] == first for p in profiles):
        mean, std = _mean_std(np.asarray([p["h"] for p in profiles], dtype=float).reshape(len(profiles), -1))
        return {"s": list(first), "h": mean.tolist(), "h_std": std.tolist(), "binned": False}
    edges = np.linspace(0.0, 1.0, PROFILE_BINS + 1)
    where, steps = np.full((2, len(profiles), PROFILE_BINS), np.nan)
    for i, profile in enumerate(profiles):
        s, h = np.asarray(profile["s"], dtype=float), np.asarray(profile["h"], dtype=float)
        index = np.clip(np.digitize(s, edges) - 1, 0, PROFILE_BINS - 1)  # s = 1 goes to the last bin
        for b in np.unique(index):
            where[i, b], steps[i, b] = s[index == b].mean(), h[index == b].mean()
    mean, std = _mean_std(steps)
    keep = np.isfinite(mean)
    return {"s": _mean_std(where)[0][keep].tolist(), "h": mean[keep].tolist(), "h_std": std[keep].tolist(),
            "binned": True}


def markdown_table(aggregates: list[dict]) -> str:
    """The TABLE_COLUMNS of aggregate_rows' entries as a markdown table, and a footnote on the statistics.

    test_acc shows mean ± std, and NFE mean ± std where it varies; time and memory are means. The CI
    column appears when some model has more than one run.
    """
    with_ci = any(a["n"] > 1 for a in aggregates)
    columns = [c for c in TABLE_COLUMNS if with_ci or c != CI_COLUMN]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(a, c) for c in columns) + " |" for a in aggregates]
    return "\n".join(lines) + "\n\n" + _footnote(aggregates, with_ci) + "\n"


def _cell(aggregate: dict, column: str) -> str:
    intervals = aggregate.get("intervals", {})
    if column == CI_COLUMN:
        return Interval.from_dict(intervals["test_acc"]).format_ci(".4f")
    if column == "test_acc":
        return Interval.from_dict(intervals["test_acc"]).format(".4f")
    if column in ("nfe_forward", "nfe_backward"):
        return Interval.from_dict(intervals[column]).format(".4g", spread_spec=".2g")
    value = aggregate[column]
    if isinstance(value, float):
        return format_number(value, ".4g")
    return f"{value:,}" if isinstance(value, int) else str(value)


def _footnote(aggregates: list[dict], with_ci: bool) -> str:
    parts = ["n: runs (seeds) per model"]
    if with_ci:
        level = f"{aggregates[0]['intervals']['test_acc']['confidence']:.0%}"
        parts.append(f"test_acc and NFE: mean ± sample std over the n runs; {level} CI: Student-t interval of "
                     f"the mean accuracy; time and memory: means")
    sizes = sorted({a["n_test"] for a in aggregates if a.get("n_test")})
    parts += [example_note(n) for n in sizes]
    return "; ".join(parts) + "."
