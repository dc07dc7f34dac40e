"""One training configuration over several seeds, and the statistics a paper can quote from them.

`dia-ode train --seeds 0,1,2` makes a group run directory
`<out>/<NNNNN>-train-<model>[-<options>]-<dataset>-seeds/` (config.json: "command": "train-seeds")
whose `runs/` holds one ordinary training run directory per seed (each resumable and analysable on
its own), trained one after another in this process. `aggregate_runs` then reads their summaries and
gives, per metric, mean ± std, the 95% Student-t interval of the mean, n and the per-seed values,
with the test-set size so a reader sees what one test example is worth.

A group is not resumable as a whole: resume the seed's run that stopped (`dia-ode train --resume
RUN`), then aggregate the finished runs with `dia-ode compare --from RUN --from RUN ...`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

from dia_ode.analysis.intervals import (Interval, example_note, format_number, mean_interval, metric_bounds,
                                        one_example_worth)
from dia_ode.data import Dataset, load_test_split
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import (SEED_GROUP_COMMAND, has_results, load_run_config, read_summary, run_description,
                            start_run, write_json)
from dia_ode.studies.compare_stats import check_poolable

# Summary fields that are settings or labels, not measurements.
NOT_MEASURED = frozenset({"epochs", "world_size"})

Guard = Callable[[Callable[[], dict], Path], dict]


def start_seed_group(out: str | os.PathLike, cfg: TrainConfig, seeds: Sequence[int],
                     argv: list[str] | None = None) -> Path:
    """Create the group run directory; its config.json is cfg's with `seeds` in place of `seed`."""
    config = {**{k: v for k, v in asdict(cfg).items() if k != "seed"}, "command": SEED_GROUP_COMMAND,
              "seeds": list(seeds)}
    return start_run(out, f"{_description(cfg)}-seeds", config, argv=argv)


def _description(cfg: TrainConfig) -> str:
    """The name every training run gets (options a user set show in it; rundir.run_description)."""
    return run_description("train", cfg.model, cfg.model_options, cfg.dataset)


def train_seeds(cfg: TrainConfig, seeds: Sequence[int], group_dir: str | os.PathLike, *, progress: bool = False,
                dataset: Dataset | None = None, guard: Guard | None = None,
                on_run_end: Callable[[dict, Path], None] | None = None, argv: list[str] | None = None) -> list[Path]:
    """Train cfg once per seed, one after another, into `group_dir/runs/`; return the run directories.

    Args:
        cfg: the configuration shared by every seed (its own seed is replaced).
        seeds: distinct seeds, in the order to train them.
        group_dir: the group run directory (start_seed_group).
        progress: show tqdm progress bars.
        dataset: cfg's loaded dataset, reused by every seed.
        guard: runs each training job as guard(job, run_dir) (the CLI turns errors into messages
            naming that seed's run directory); None runs it as is.
        on_run_end: called as on_run_end(summary, run_dir) after each seed.
        argv: the command line, for each run's cmd.txt.

    Raises:
        Whatever run_training raises for a seed (unless guard handles it); later seeds are not started.
    """
    group_dir = Path(group_dir)
    argv = sys.argv if argv is None else argv
    guard = guard or (lambda job, run_dir: job())
    run_dirs = []
    for seed in seeds:
        seed_cfg = replace(cfg, seed=seed, model_options=dict(cfg.model_options))
        run_dir = start_run(group_dir / "runs", f"{_description(cfg)}-seed{seed}",
                            {"command": "train", **asdict(seed_cfg)},
                            argv=[*argv, f"# seed {seed} of the group {group_dir.name}"])
        summary = guard(lambda: run_training(seed_cfg, run_dir, progress=progress, dataset=dataset), run_dir)
        run_dirs.append(run_dir)
        if on_run_end is not None:
            on_run_end(summary, run_dir)
    return run_dirs


def aggregate_runs(run_dirs: Sequence[str | os.PathLike], confidence: float = 0.95,
                   n_test: int | None = None) -> dict:
    """Mean ± std, confidence interval, n and per-seed values of every measured summary field.

    Args:
        run_dirs: finished training runs of one model and dataset (typically one per seed).
        confidence: the interval's level.
        n_test: the test-set size; None reads it from the first run's dataset.

    Returns:
        {"model", "task", "dataset", "model_options", "seeds", "n", "confidence", "n_test",
        "one_test_example", "metrics": {field: Interval.to_dict()}, "runs"}.

    Raises:
        ValueError: no runs, a run without summary.json (unfinished), or runs trained differently in
            anything but their seed (model, dataset, task, options, epochs, ...: check_poolable).
    """
    if not run_dirs:
        raise ValueError("aggregate_runs needs at least one run directory")
    run_dirs = [Path(d) for d in run_dirs]
    configs, summaries = [], []
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        if not summary:
            raise ValueError(f"{run_dir} has no summary.json: its training has not finished")
        if not has_results(summary):  # a failed run's summary says why
            raise ValueError(f"{run_dir} did not finish: {summary.get('error', summary['status'])}")
        configs.append(load_run_config(run_dir))  # CheckpointError (a ValueError) names a bad config.json
        summaries.append(summary)
    first = configs[0]
    check_poolable(configs, [str(d) for d in run_dirs])
    if n_test is None:
        n_test = len(load_test_split(first["dataset"], first.get("data_dir"), split_seed=first.get("split_seed", 0)))
    measured = [k for k, v in summaries[0].items() if _is_number(v) and k not in NOT_MEASURED
                and all(_is_number(s.get(k)) for s in summaries)]
    return {"model": first["model"], "task": first.get("task", "classification"), "dataset": first["dataset"],
            "model_options": first.get("model_options", {}), "seeds": [c.get("seed") for c in configs],
            "n": len(run_dirs), "confidence": confidence, "n_test": n_test,
            "one_test_example": one_example_worth(n_test),
            "metrics": {k: mean_interval([s[k] for s in summaries], confidence, metric_bounds(k)).to_dict()
                        for k in measured},
            "runs": [str(d) for d in run_dirs]}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def seeds_markdown(aggregate: dict, prefix: str = "test_") -> str:
    """The metrics whose names start with `prefix` as a markdown table, with a heading and a footnote
    on the statistics and the test-set size."""
    seeds = ", ".join(str(s) for s in aggregate["seeds"])
    level = f"{aggregate['confidence']:.0%}"
    plural = "s" if aggregate["n"] > 1 else ""
    lines = [f"# {aggregate['model']} on {aggregate['dataset']}: {aggregate['n']} seed{plural} ({seeds})", "",
             f"| metric | mean ± std | {level} CI | n | per seed |", "|---|---|---|---|---|"]
    for name, fields in aggregate["metrics"].items():
        if name.startswith(prefix):
            iv = Interval.from_dict(fields)
            lines.append(f"| {name} | {iv.format()} | {iv.format_ci()} | {iv.n} | "
                         f"{', '.join(format_number(v, '.4f') for v in iv.values)} |")
    # what one example is worth is an accuracy's resolution; a loss or a COCO AP has none so simple
    note = f"; {example_note(aggregate['n_test'])}" if aggregate.get("task", "classification") == "classification" else ""
    lines += ["", f"std: sample standard deviation over seeds (ddof=1); {level} CI: Student-t interval of the "
                  f"mean{note}."]
    return "\n".join(lines) + "\n"


def summarize_seeds(group_dir: str | os.PathLike, run_dirs: Sequence[str | os.PathLike],
                    confidence: float = 0.95, n_test: int | None = None) -> dict:
    """aggregate_runs, written to the group's summary.json and seeds.md; returns the aggregate."""
    aggregate = aggregate_runs(run_dirs, confidence, n_test)
    write_json(Path(group_dir) / "summary.json", aggregate)
    (Path(group_dir) / "seeds.md").write_text(seeds_markdown(aggregate))
    return aggregate
