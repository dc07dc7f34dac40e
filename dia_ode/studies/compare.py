"""Discrete vs continuous-depth models side by side: accuracy, parameters, NFE, time and memory.

`train_models` trains each model through the library (engine.run_training) in a fresh child process
with one shared budget, once per seed, so every model gets a clean peak-memory reading and a model
that blows its step budget cannot take the others down; the child returns its run directory as a
value (pickled by concurrent.futures), never as printed text. `compare_runs` then loads each run
directory, evaluates it on the test split with the NFE meter, and reads its step sizes over depth
(discrete: the traced h_k) or time (continuous: the solver's accepted dt); the same function serves
`dia-ode compare --from RUN_DIR`. `aggregate_rows` (compare_stats.py) pools the runs of each model over
seeds into mean ± std and a 95% interval, which the table and the figures (compare_figures.py) show.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch

from dia_ode.engine import TrainConfig, recipe_config, run_training
from dia_ode.models import model_entry
from dia_ode.rundir import LoadedRun, current_run_name, load_run, read_jsonl, read_summary, run_description, start_run
from dia_ode.solvers import recorded_modules, trace
from dia_ode.solvers.statistics import DynamicsMeter
from dia_ode.tasks import get_task

DEFAULT_MODELS = ("odenet", "dia_odenet", "rknet", "dia_rknet", "untiednet", "dia_untiednet")
COLUMNS = ("model", "kind", "params", "test_acc", "nfe_forward", "nfe_backward", "seconds_per_epoch",
           "peak_memory_mb")


class CompareError(RuntimeError):
    """A model's training failed, or a run is not a classifier's; the message names the model or run."""


# What compare always shares between models (its budget); the rest follows each model's recipe
# unless the user chose it (e.g. --lr).
SHARED = frozenset({"dataset", "data_dir", "epochs", "batch_size", "seed", "device", "model_options"})


def _train_in_child(values: dict, given: frozenset[str], out: str, threads: int | None, argv: list[str],
                    suffix: str, name: str | None) -> str:
    """Body of the child process: the model's config (recipe applied), a run directory, training.

    The run is named like any training run (rundir.run_description) plus `suffix`; `name` is the
    parent's run tag, which a spawned process does not inherit on its own.
    """
    if threads:
        torch.set_num_threads(threads)
    cfg = recipe_config(values, set(given))
    run_dir = start_run(out, run_description("train", cfg.model, cfg.model_options, cfg.dataset) + suffix,
                        {"command": "train", **asdict(cfg)},
                        argv=[*argv, f"# trained {cfg.model} for this comparison; its options: config.json"],
                        name=name)
    run_training(cfg, run_dir, progress=False)
    return str(run_dir)


def train_models(base: TrainConfig, models: list[str], out: Path, threads: int | None = 1,
                 given: frozenset[str] = SHARED, argv: list[str] | None = None,
                 model_options: dict[str, dict] | None = None, seeds: Sequence[int] | None = None,
                 name: str | None = None) -> list[Path]:
    """Train every model with the shared config `base` (its model field replaced) once per seed; return
    the run dirs, model by model, each model's seeds in the order given.

    Args:
        base: the shared budget (dataset, epochs, batch size, seed, model options, ...).
        models: model names.
        out: parent folder of the run directories.
        threads: torch threads per child (1 suits the small models here: a second thread on 2 cores
            only adds synchronisation); None keeps torch's default.
        given: the fields of base every model must use; the others follow each model's recipe
            (the ViTs train with AdamW) where it has one.
        argv: the command line that asked for the comparison, for each run's cmd.txt.
        model_options: per model name, its own constructor options (replacing base.model_options).
        seeds: the seeds to train each model with; None: base.seed alone.
        name: a tag for every run's name and config.json; None: the caller's rundir.run_name, if any.

    Raises:
        CompareError: a model failed to train (diverged, ran out of ODE steps, bad option, crashed).
    """
    # spawn, not fork: a forked child would inherit this process's torch threads and memory peak.
    context = multiprocessing.get_context("spawn")
    argv = sys.argv if argv is None else argv
    seeds = [base.seed] if seeds is None else list(seeds)
    name = name or current_run_name()  # a spawned child starts without the parent's context
    run_dirs = []
    for model in models:
        # One process per model, its seeds one after another: a process start costs seconds, and the
        # seeds of one model reach the same peak memory.
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            for seed in seeds:
                values = {**asdict(base), "model": model, "seed": seed}
                if model_options is not None and model in model_options:
                    values["model_options"] = model_options[model]
                suffix = f"-seed{seed}" if len(seeds) > 1 else ""
                job = pool.submit(_train_in_child, values, frozenset(given), str(out), threads, list(argv), suffix,
                                  name)
                try:
                    run_dirs.append(Path(job.result()))
                except Exception as err:  # noqa: BLE001 -- any failure of one model, a crashed child included
                    message = " ".join(str(err).split()) or type(err).__name__
                    raise CompareError(f"training {model} (seed {seed}) failed: {message}") from None
    return run_dirs


def model_kind(name: str) -> str:
    """"continuous" when the model integrates an ODE with a solver, else "discrete" (registry metadata)."""
    return model_entry(name).kind


def step_profile(run: LoadedRun, samples: int = 32) -> dict[str, list[float]]:
    """Step sizes over normalised depth/time s in [0, 1] on the first test samples.

    One reading for both kinds (solvers.trace): every step k of every stage or continuous block, at
    s = t_k / T (continuous: the accepted steps, T the block's end time) or k / L (a stage of L blocks),
    with the mean over samples and channels of its step h_k (continuous: dt_k * a(t_k), or dt_k).
    """
    x, _ = run.test_batch(samples, next(run.model.parameters()).device)
    s, h = [], []
    with torch.no_grad():
        traces = trace(run.model, x)
    for module, tr in zip(recorded_modules(run.model), traces):
        length = module.T if tr.kind == "continuous" else len(tr.steps)
        s += [float(t) / length for t in tr.times]
        h += [float(step.float().mean()) for step in tr.steps]
    return {"s": s, "h": h}


def compare_runs(run_dirs: list[Path], device: torch.device | str = "cpu", samples: int = 32) -> list[dict]:
    """One row per run (keys COLUMNS, plus run_dir, seed, dataset, model_options, n_test, test_loss,
    nfe_history, steps, config)."""
    rows = []
    for run_dir in run_dirs:
        run = load_run(run_dir, device)
        if run.task != "classification":  # its accuracy and NFE columns are a classifier's
            raise CompareError(f"{run_dir} trained {run.task}; compare reads classification runs")
        summary = read_summary(run_dir)
        history = read_jsonl(run_dir / "metrics.jsonl")
        with DynamicsMeter(run.model) as meter:
            test = get_task(run.task).evaluate(run.model, run.test_batches(device=device))
            totals = meter.read()["eval"]
        rows.append({
            "model": run.model_name, "kind": model_kind(run.model_name),
            "params": sum(p.numel() for p in run.model.parameters()),
            "test_acc": test["acc"], "test_loss": test["loss"],
            "nfe_forward": totals["nfe_forward"] / max(totals["passes"], 1),
            "nfe_backward": history[-1].get("nfe_backward", float("nan")) if history else float("nan"),
            "seconds_per_epoch": summary.get("seconds_per_epoch", float("nan")),
            "peak_memory_mb": summary.get("peak_memory_mb", float("nan")),
            "run_dir": str(run_dir), "seed": run.config.get("seed"), "dataset": run.dataset_name,
            "model_options": run.config.get("model_options", {}), "n_test": len(run.test),
            "config": run.config,  # aggregate_rows pools only runs trained alike (compare_stats.check_poolable)
            "nfe_history": [r.get("nfe_forward", float("nan")) for r in history],
            "steps": step_profile(run, samples),
        })
    return rows

