"""`dia-ode stepsize | stiffness` (and the helpers `dia-ode correlate` shares, cli/correlate.py): read a trained run's dynamics and write JSON + figures.

Each command loads a run directory written by `dia-ode train` (config + last checkpoint), traces the
model on the first test samples and writes its own run directory under --out. Stages are numbered
from 0 in the terminal, the JSON and the figures alike; every figure's title names the model, the
dataset and the run it reads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click
import numpy as np
import torch

from dia_ode.analysis import (MIN_PAIRS, block_radii, per_channel_rank_correlation, plot_depth_profiles,
                              plot_eigenvalues, plot_indices_over_time, rank_correlation, spearman_text, step_sizes,
                              with_depth_advice)
from dia_ode.analysis.continuous_stiffness import continuous_stiffness, stiffness_along_training, training_line
from dia_ode.cli.options import (CONTEXT, build_problem, check_device, common_options,
                                 problem_parameter_options)
from dia_ode.data import DataError
from dia_ode.engine import resolve_device, seed_everything
from dia_ode.engine.report import stiffness_record_figure
from dia_ode.rundir import CheckpointError, LoadedRun, load_run, read_jsonl, save_figure, start_run, write_json
from dia_ode.solvers import continuous_blocks, stages_of, trace
from dia_ode.stiffness import WHICH, block_spectra, list_problems, problem_indices, trace_stiffness
from dia_ode.tasks import get_task
from dia_ode.util import UnreadableFile

RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))


def samples_option(default: int, minimum: int = 2):
    return click.option("--samples", type=click.IntRange(min=minimum), default=default,
                        help="Test samples to trace (the first ones of the test split).")


def open_run(run_dir: Path, device: str, continuous: bool = False) -> LoadedRun:
    """load_run with its errors turned into one-line usage errors naming RUN_DIR; the model must be
    built from residual stages (the analysis reads their traces), or with `continuous` may instead
    have continuous blocks."""
    check_device(device)
    try:
        run = load_run(run_dir, resolve_device(device))
    except (CheckpointError, DataError) as err:
        raise click.BadParameter(str(err), param_hint="RUN_DIR") from None
    if not stages_of(run.model) and not (continuous and continuous_blocks(run.model)):
        raise click.BadParameter(f"model '{run.model_name}' has no residual stages to trace "
                                 f"(continuous models: use `dia-ode stiffness` or `dia-ode compare --from`)",
                                 param_hint="RUN_DIR")
    return run


def figure_title(what: str, run: LoadedRun) -> str:
    """"<what>: <model> on <dataset>, epoch <e> (run <dir name>)", the title of every run figure."""
    return f"{what}: {run.model_name} on {run.dataset_name}, epoch {run.epoch} (run {run.run_dir.name})"


@torch.no_grad()
def traced(run: LoadedRun, x: torch.Tensor, cond: torch.Tensor | None = None):
    """The run's per-stage traces on x (and cond, a diffusion run's timesteps), without an autograd graph."""
    return trace(run.model, x, cond)


diffusion_time_option = click.option(
    "--diffusion-time", type=click.IntRange(min=0), default=None,
    help="Diffusion runs: trace the UNet on test images noised to this timestep, x_t at t [T // 2].")


def analysis_batch(run: LoadedRun, samples: int, device: str, diffusion_time: int | None, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, cond) to trace: the first test images; for a diffusion run x_t = q(x_t | x_0) at one timestep
    (noise from `seed`) and cond its timesteps, since a UNet's blocks are steps at a diffusion time."""
    x, _ = run.test_batch(samples, resolve_device(device))
    if run.task != "diffusion":
        if diffusion_time is not None:
            raise click.BadParameter(f"applies to diffusion runs; {run.run_dir} trained {run.task}",
                                     param_hint="--diffusion-time")
        return x, None
    task = get_task("diffusion", run.config.get("task_options"))
    t = task.timesteps // 2 if diffusion_time is None else diffusion_time
    if t >= task.timesteps:
        raise click.BadParameter(f"the run's timesteps are 0 .. {task.timesteps - 1}, got {t}",
                                 param_hint="--diffusion-time")
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
    timesteps = torch.full((len(x),), t, device=x.device)
    return task.schedule.q_sample(x, timesteps, noise), timesteps.float()


def start_analysis(command: str, run: LoadedRun, out: Path, options: dict) -> Path:
    return start_run(out, f"{command}-{run.run_dir.name}",
                     {"command": command, "source_run": str(run.run_dir), "model": run.model_name,
                      "dataset": run.dataset_name, "epoch": run.epoch, **options})


# block Jacobians are taken of block.branch(x) alone; a UNet's branch also reads the timestep embedding
NO_UNET_JACOBIANS = ("block Jacobians of a UNet need its timestep embedding, which they do not take yet; "
                     "`stepsize --against quotient` and `correlate` (with --diffusion-time) read a diffusion run")

AGAINST = {"quotient": "depth-wise difference quotient ρ_k", "radius": "block spectral radius ρ(J_k)"}


@click.command(context_settings=CONTEXT)
@RUN_DIR
@samples_option(64)
@click.option("--against", type=click.Choice(list(AGAINST)), default="quotient", show_default=True,
              help="Stiffness estimate paired with h_k: the difference quotient between blocks k and k+1 "
                   "(from the trace), or the spectral radius of block k's Jacobian (ARPACK, slower).")
@click.option("--radius-samples", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --against radius: samples whose spectra are averaged per block.")
@diffusion_time_option
@common_options
def stepsize(run_dir, samples, against, radius_samples, diffusion_time, seed, device, out, no_progress) -> None:
    """Step sizes h_k per block and channel, and their rank correlation with a stiffness estimate."""
    seed_everything(seed)
    run = open_run(run_dir, device)
    x, cond = analysis_batch(run, samples, device, diffusion_time, seed)
    if cond is not None and against == "radius":
        raise click.BadParameter(NO_UNET_JACOBIANS, param_hint="--against")
    radii = block_radii(run.model, x[:radius_samples]) if against == "radius" else None
    stages = [_stage_steps(s, t, radii) for s, t in enumerate(traced(run, x, cond))]
    advised = with_depth_advice(run.model_name, [len(st["steps"]["block_mean"]) for st in stages],
                                [st["spearman_block"] for st in stages])  # a stage too short: what to train
    stages = [{**st, "spearman_block": sp} for st, sp in zip(stages, advised)]
    # every stage's pairs pooled: the one rho a small model (3 blocks per stage) can have
    pooled = rank_correlation(*(np.concatenate([st[key] for st in stages]) for key in ("h_paired", "stiffness_block")))
    out_dir = start_analysis("stepsize", run, out, {"samples": len(x), "against": against, "seed": seed,
                                                    **({"diffusion_time": int(cond[0])} if cond is not None else {}),
                                                    **({"radius_samples": radius_samples} if radii else {})})
    write_json(out_dir / "stepsize.json", stages)
    write_json(out_dir / "summary.json", {
        "model": run.model_name, "dataset": run.dataset_name, "samples": len(x), "against": against,
        "mean_step": [float(np.mean(st["steps"]["block_mean"])) for st in stages],
        "spearman_block": [st["spearman_block"]["rho"] for st in stages],
        "spearman_block_reason": [st["spearman_block"]["reason"] for st in stages],
        "spearman_block_instead": [st["spearman_block"]["instead"] for st in stages],
        "spearman_all_stages": pooled,
        "spearman_channel_mean": [st["spearman_channel"] and st["spearman_channel"]["mean"] for st in stages]})
    fig = plot_depth_profiles([st["steps"]["block_mean"] for st in stages],
                              [st["stiffness_block"] if radii else np.append(st["stiffness_block"], np.nan)
                               for st in stages],  # the quotient has no value for the last block
                              [f"stage {st['stage']}" for st in stages],
                              step_std=[st["steps"]["block_std"] for st in stages],
                              stiffness_label=AGAINST[against], spearman=[st["spearman_block"] for st in stages],
                              missing_reason=None if radii else "ρ_k needs block k+1 with block k's shape",
                              title=figure_title("Step size vs stiffness over depth", run))
    save_figure(fig, out_dir / "figures", "stepsize_vs_stiffness")
    for st in stages:
        sp, blocks = st["spearman_block"], len(st["steps"]["block_mean"])
        said = (f"Spearman(h_k, rho_k) = {sp['rho']:.3f} over {sp['n']} pairs" if sp["reason"] is None else
                f"Spearman n/a ({blocks} blocks: {sp['reason']})" + (f"; {sp['instead']}" if sp["instead"] else ""))
        click.echo(f"stage {st['stage']}: mean h = {np.mean(st['steps']['block_mean']):.3f}, {said}")
    click.echo(f"all stages pooled: {spearman_text(pooled)}")
    click.echo(f"-> {out_dir}")


def _stage_steps(s: int, t, radii: dict | None) -> dict:
    """One stage's steps, its stiffness estimate per block and their rank correlations.

    The quotient ρ_k is measured over the step x_k -> x_{k+1} = x_k + h_k f_k, so it pairs with h_k
    for k < L - 1 (Hairer's h * rho); the spectral radius of block k pairs with h_k for every k.
    """
    steps = step_sizes(t)
    length = len(steps["block_mean"])
    if radii is None:
        with warnings.catch_warnings():  # shape-changing blocks give all-NaN columns: NaN is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            rho_block = np.nanmean(trace_stiffness(t), axis=0)  # (L - 1,) mean over samples
            rho_channel = np.nanmean(trace_stiffness(t, per_channel=True), axis=0)  # (L - 1, C)
        h_block, h_channel = steps["block_mean"][:-1], steps["channel_mean"][:-1]
    else:
        rho_block = rho_channel = np.array([radii[(s, k)] for k in range(length)])  # (L,), shared by channels
        h_block, h_channel = steps["block_mean"], steps["channel_mean"]
    return {"stage": s, "steps": steps, "h_paired": h_block, "stiffness_block": rho_block,
            "stiffness_channel": None if radii else rho_channel,
            "spearman_block": rank_correlation(h_block, rho_block),
            "spearman_channel": None if steps["constant"] else per_channel_rank_correlation(h_channel, rho_channel),
            "min_pairs": MIN_PAIRS}


@click.command(context_settings=CONTEXT)
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--problem", type=click.Choice(list_problems()), default=None,
              help="A classic stiff problem instead of a trained run: indices along its reference solution.")
@problem_parameter_options
@click.option("--points", type=click.IntRange(min=2), default=41, help="Problem: times along the solution.")
@click.option("--grid", type=click.Choice(["linear", "log"]), default="linear",
              help="Problem: spacing of the times (log suits robertson).")
@samples_option(2, minimum=1)
@click.option("--k", "k", type=click.IntRange(min=1), default=6, help="Run: eigenvalues per Jacobian.")
@click.option("--which", type=click.Choice(WHICH), default="LM", help="Run: which eigenvalues (ARPACK's which).")
@click.option("--log-norms", is_flag=True, help="Run: also the logarithmic norm of every block (slower).")
@click.option("--record-only", is_flag=True,
              help="Continuous run: only the solver's stiffness record along training, read from metrics.jsonl "
                   "(no solve, no Jacobians).")
@common_options
def stiffness(run_dir, problem, mu, eigenvalues, points, grid, samples, k, which, log_norms, record_only,
              seed, device, out, no_progress) -> None:
    """Stiffness of a trained model's blocks (RUN_DIR) or of a classic problem (--problem).

    On a continuous run the solver's own record along training (stiff fraction, median h*lambda, NFE
    per sample, every epoch) is read from its metrics.jsonl beside the spectra of the final model.
    """
    if (run_dir is None) == (problem is None):
        raise click.UsageError("give either RUN_DIR or --problem, not both and not neither")
    if problem is not None:
        _problem_stiffness(problem, mu, eigenvalues, points, grid, seed, out)
        return
    seed_everything(seed)
    run = open_run(run_dir, device, continuous=True)
    if run.task == "diffusion":
        raise click.BadParameter(NO_UNET_JACOBIANS, param_hint="RUN_DIR")
    try:
        record = stiffness_along_training(read_jsonl(run.run_dir / "metrics.jsonl", partial_last=True))
    except UnreadableFile as err:  # a FIFO (never opened for a blocking read), broken or deeply nested JSON
        raise click.BadParameter(str(err), param_hint="RUN_DIR") from None
    if record_only and (stages_of(run.model) or record is None):
        raise click.BadParameter(f"{run.run_dir} has no solver record in its metrics.jsonl (a continuous model "
                                 f"trained by this version records one every epoch): run without --record-only",
                                 param_hint="--record-only")
    if record_only:
        result, summary, figures, lines = {}, {"model": run.model_name, "dataset": run.dataset_name}, [], []
    elif stages_of(run.model):
        x, _ = run.test_batch(samples, resolve_device(device))
        result, summary, figures, lines = _stage_stiffness(run, x, k, which, samples, log_norms)
    else:
        x, _ = run.test_batch(samples, resolve_device(device))
        result, summary, figures, lines = continuous_stiffness(run, x, k, which, samples,
                                                               lambda what: figure_title(what, run))
    if record is not None:
        result["training"], summary["training"] = record["epochs"], {"first": record["first"], "last": record["last"]}
        figures.append(("stiffness_along_training",
                        stiffness_record_figure(record["epochs"], figure_title("Solver record along training", run))))
        lines.append(training_line(record))
    out_dir = start_analysis("stiffness", run, out, {"samples": samples, "k": k, "which": which, "seed": seed,
                                                     "record_only": record_only})
    write_json(out_dir / "stiffness.json", result)
    write_json(out_dir / "summary.json", summary)
    for name, fig in figures:
        save_figure(fig, out_dir / "figures", name)
    for line in lines:
        click.echo(line)
    click.echo(f"-> {out_dir}")


def _stage_stiffness(run: LoadedRun, x: torch.Tensor, k: int, which: str, samples: int, log_norms: bool):
    """Block spectra of every residual stage: (result, summary, [(figure name, figure)], terminal lines)."""
    result = block_spectra(run.model, x, k=k, which=which, samples=samples, log_norms=log_norms)
    rows = [r for r in result["blocks"] if not r["skipped"]]
    stages = sorted({r["stage"] for r in rows})
    summary = {"model": run.model_name, "dataset": run.dataset_name, "samples": samples, "k": k, "which": which,
               "stages": [_stage_summary([r for r in rows if r["stage"] == s], s) for s in stages]}
    figures = []
    for s in stages:
        stage_rows = [r for r in rows if r["stage"] == s and r["sample"] == 0]
        fig = plot_eigenvalues([r["step_eigenvalues"] for r in stage_rows], [f"block {r['block']}" for r in stage_rows],
                               title=figure_title(f"Stage {s}: h_k λ of the top-{k} eigenvalues, sample 0", run))
        figures.append((f"step_eigenvalues_stage{s}", fig))
    lines = [f"stage {st['stage']}: mean rho(J) = {st['mean_spectral_radius']:.3g}, "
             f"mean rho(hJ) = {st['mean_step_spectral_radius']:.3g}, max step index (Euler) = "
             f"{st['max_step_index_euler']:.3g}, blocks whose Euler map I + hJ has spectral radius <= 1 "
             f"{st['fraction_in_euler_disk']:.0%}" for st in summary["stages"]]
    return result, summary, figures, lines


def _stage_summary(rows: list[dict], stage: int) -> dict:
    return {"stage": stage, "blocks": len({r["block"] for r in rows}),
            "mean_spectral_radius": float(np.mean([r["spectral_radius"] for r in rows])),
            "mean_step_spectral_radius": float(np.mean([r["step_spectral_radius"] for r in rows])),
            "max_step_index_euler": float(np.max([r["step_index_euler"] for r in rows])),
            # euler_amplification is rho(I + diag(h) J) over every eigenvalue (its own solve), not the top k's
            "fraction_in_euler_disk": float(np.mean([r["euler_amplification"] <= 1.0 for r in rows]))}


# problem_indices key -> the words on the figure
INDEX_LABELS = {"spectral_radius": "spectral radius ρ(J)", "stiffness_ratio": "stiffness ratio",
                "log_norm": "log. norm μ2(J)", "local_stiffness": "local estimate\n(difference quotient)"}


def _problem_stiffness(name: str, mu, eigenvalues, points: int, grid: str, seed: int, out: Path) -> None:
    problem = build_problem(name, mu, eigenvalues)
    t0, t1 = problem.t_span
    if grid == "log":  # t0 first, then log-spaced from 1e-9 of the span (robertson's fast transient)
        t_eval = np.concatenate([[t0], t0 + np.geomspace((t1 - t0) * 1e-9, t1 - t0, points - 1)])
    else:
        t_eval = np.linspace(t0, t1, points)
    indices = problem_indices(problem, t_eval)
    out_dir = start_run(out, f"stiffness-{name}", {"command": "stiffness", "problem": name, "params": problem.params,
                                                  "points": points, "grid": grid, "seed": seed})
    write_json(out_dir / "stiffness.json", indices)
    summary = {"problem": name, "params": problem.params, "t_span": problem.t_span,
               **{f"{stat}_{key}": float(fn(indices[key])) for key in INDEX_LABELS
                  for stat, fn in (("max", np.nanmax), ("median", np.nanmedian))}}
    write_json(out_dir / "summary.json", summary)
    fig = plot_indices_over_time(indices["t"], {label: indices[key] for key, label in INDEX_LABELS.items()},
                                 title=f"Stiffness along the reference solution: {problem.title()}, {points} points")
    save_figure(fig, out_dir / "figures", "indices_over_time")
    click.echo(f"{problem.title()}: max spectral radius {summary['max_spectral_radius']:.4g}, "
               f"max stiffness ratio {summary['max_stiffness_ratio']:.4g}, "
               f"median local estimate {summary['median_local_stiffness']:.4g} "
               f"(median spectral radius {summary['median_spectral_radius']:.4g})")
    click.echo(f"-> {out_dir}")
