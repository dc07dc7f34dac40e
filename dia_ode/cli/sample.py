"""`dia-ode sample`: images from a trained diffusion run by DDPM, DDIM or the probability-flow ODE, with FID."""

from __future__ import annotations

import math
from pathlib import Path

import click

from dia_ode.analysis.sample_quality import FeatureNet, FeatureNetError, RealFeatures, cached_feature_run
from dia_ode.cli.options import CONTEXT, FiniteFloat, check_device, common_options
from dia_ode.cli.runtime import check_memory
from dia_ode.data import DataError
from dia_ode.engine import resolve_device
from dia_ode.rundir import CheckpointError, load_run, save_figure, start_run, write_json
from dia_ode.solvers import ADAPTIVE_METHODS, FIXED_GRID_METHODS, StepBudgetExceeded
from dia_ode.solvers.backends import (BACKENDS, CONTROLLER_FORMS, DEFAULT_BACKEND, DEFAULT_CONTROLLER, SolverChoice,
                                      SolverOptionError)
from dia_ode.studies.sampling import (NotADiffusionRun, Setting, diffusion_task, fits, plot_sweep, real_features,
                                      sample_setting, sweep, sweep_markdown, write_samples)
from dia_ode.tasks.diffusion import SAMPLERS


@click.command(context_settings=CONTEXT)
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--sampler", type=click.Choice(SAMPLERS), default="ddpm",
              help="ddpm: ancestral, T steps; ddim: --steps (default 50) and --eta; ode: the probability-flow ODE.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="ddim: its steps [50]; ode: the steps of a fixed-step --method (rk4, euler, ...).")
@click.option("--eta", type=FiniteFloat(0, 1), default=0.0, help="ddim: 0 deterministic, 1 ancestral-like noise.")
@click.option("--method", type=click.Choice(ADAPTIVE_METHODS + FIXED_GRID_METHODS), default=None,
              help="ode: a torchdiffeq method [dopri5; rk4 when --steps is given].")
@click.option("--rtol", type=FiniteFloat(min=0, min_open=True), default=1e-3, help="ode, adaptive: relative tolerance.")
@click.option("--atol", type=FiniteFloat(min=0, min_open=True), default=None,
              help="ode, adaptive: absolute tolerance [--rtol].")
@click.option("--max-steps", type=click.IntRange(min=1), default=1000,
              help="ode: attempted solver steps per batch (per sample on dia_ode) before it gives up.")
@click.option("--backend", type=click.Choice(BACKENDS), default=DEFAULT_BACKEND, show_default=True,
              help="ode: the engine; dia_ode is the project's integrator (any --controller, --per-sample).")
@click.option("--controller", default=DEFAULT_CONTROLLER, show_default=True,
              help=f"ode on dia_ode, adaptive: the error controller, {', '.join(CONTROLLER_FORMS)} (RUN a "
                   f"`dia-ode controllers train` run).")
@click.option("--per-sample/--batch-steps", default=False, show_default=True,
              help="ode on dia_ode, adaptive: each sample on its own steps, or one step for the batch.")
@click.option("--num", type=click.IntRange(min=1), default=1000, help="Images to generate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, help="Images generated at once.")
@click.option("--feature-run", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A classification run on the same dataset whose features give the FID [a resnet20 trained "
                   "once and cached under $DIA_ODE_CACHE or ~/.cache/dia_ode].")
@click.option("--no-quality", is_flag=True, help="Skip the FID and the classifier's labels.")
@click.option("--sweep", "sweep_grid", is_flag=True,
              help="Run the NFE-vs-FID grid (DDPM; DDIM 100/50/20/10; ODE dopri5 rtol 1e-2..1e-5; rk4 5/10/25 "
                   "steps) on every RUN_DIR instead of one sampler.")
@common_options
@click.pass_context
def sample(ctx: click.Context, run_dirs, sampler, steps, eta, method, rtol, atol, max_steps, backend, controller,
           per_sample, num, batch_size, feature_run, no_quality, sweep_grid, seed, device, out, no_progress) -> None:
    """Generate images from trained diffusion runs (`dia-ode train --task diffusion`) with the weights'
    moving average, and measure them: a Fréchet distance in the features of a classifier trained on the
    same data (not Inception's, which cannot be downloaded here: compare numbers of one feature network
    only), always beside its floor (real test vs train images), and the share of samples the classifier
    labels with confidence >= 0.9. Writes samples.npz, figures/samples.png|pdf (and figures/steps for the
    ODE) and sample.json; with --sweep, sweep.json, sweep.md and figures/fid_vs_nfe for every RUN_DIR; and
    summary.json (sample.json's row, or the sweep's rows)."""
    check_device(device)
    if len(run_dirs) > 1 and not sweep_grid:
        raise click.BadParameter("several run directories are for --sweep; sample one at a time otherwise",
                                 param_hint="RUN_DIR")
    if sweep_grid and no_quality:
        raise click.BadParameter("a sweep measures quality: drop --no-quality", param_hint="--no-quality")
    if no_quality and feature_run is not None:
        raise click.BadParameter("--feature-run is for the quality numbers that --no-quality skips",
                                 param_hint="--feature-run")
    if not no_quality and num < 2:
        raise click.BadParameter("FID needs at least 2 samples (or give --no-quality)", param_hint="--num")
    given = {p.name: p.opts[0] for p in ctx.command.params
             if ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}
    if sweep_grid and set(given) & set(_ONE_SETTING):
        raise click.BadParameter(f"--sweep runs its own grid of samplers; drop "
                                 f"{', '.join(given[k] for k in _ONE_SETTING if k in given)}", param_hint="--sweep")
    engine = SolverChoice(backend, controller, per_sample)
    setting = _setting(sampler, steps, eta, method, rtol, atol, max_steps, engine, given)
    if (setting.sampler != "ode" or setting.method in FIXED_GRID_METHODS) and {"rtol", "atol"} & set(given):
        raise click.BadParameter("--rtol and --atol apply to an adaptive --sampler ode", param_hint="--rtol")
    target = resolve_device(device)
    runs = []
    for run_dir in run_dirs:
        try:
            run = load_run(run_dir, target)
            diffusion_task(run)
        except (CheckpointError, DataError, NotADiffusionRun) as err:
            raise click.BadParameter(str(err), param_hint="RUN_DIR") from None
        runs.append(run)
    if len({run.dataset_name for run in runs}) > 1:
        raise click.BadParameter("a sweep compares runs on one dataset", param_hint="RUN_DIR")
    shape = tuple(runs[0].test.images.shape[1:])  # (C, H, W)
    # float32 pixels held three times: every batch's, all of them concatenated, their uint8 scaling in samples.npz
    check_memory(num * math.prod(shape) * 4 * 3, "--num", f"{num:,} images of {'x'.join(map(str, shape))}")
    if not sweep_grid and fits(runs[0], setting) is not None:
        raise click.BadParameter(fits(runs[0], setting), param_hint="--steps")
    real = None if no_quality else _real_features(runs[0], feature_run, device, no_progress)
    config = {"command": "sample", "run_dirs": [str(r) for r in run_dirs], "num": num, "seed": seed,
              "batch_size": batch_size, "sweep": sweep_grid,
              "feature_run": None if real is None else str(real.net.run.run_dir),
              **({} if sweep_grid else {"setting": setting.label, "atol": setting.atol or setting.rtol})}
    name = "sweep" if sweep_grid else setting.tag
    out_dir = start_run(out, f"sample-{runs[0].model_name}-{name}", config)
    try:
        if sweep_grid:
            rows = sweep(runs, real, num=num, seed=seed, batch_size=batch_size, max_steps=max_steps,
                         progress=lambda row: click.echo(_line(row)), on_skip=click.echo)
            write_json(out_dir / "sweep.json", rows)
            (out_dir / "sweep.md").write_text(sweep_markdown(rows))
            save_figure(plot_sweep(rows), out_dir / "figures", "fid_vs_nfe")
            summary = {"rows": rows}
        else:
            images, row = sample_setting(runs[0], setting, num=num, seed=seed, batch_size=batch_size, real=real)
            write_samples(out_dir, images, row)
            click.echo(_line(row))
            summary = row
    except StepBudgetExceeded as err:
        advice = "raise --max-steps or give fewer --steps" if setting.steps else "raise --max-steps or loosen --rtol/--atol"
        raise click.UsageError(f"{err}: {advice}") from None
    write_json(out_dir / "summary.json", summary)
    click.echo(f"-> {out_dir}")


def _setting(sampler, steps, eta, method, rtol, atol, max_steps, engine: SolverChoice, given: dict) -> Setting:
    """The one sampler setting the options describe; BadParameter for options of another sampler (given:
    the options on the command line, by name) and for an engine that the library refuses (its
    SolverOptionError names the option)."""
    engine_flags = [flag for name, flag in given.items() if name in _ENGINE]
    if sampler != "ode" and engine_flags:
        raise click.BadParameter(f"{', '.join(engine_flags)} apply to --sampler ode", param_hint=engine_flags[0])
    if sampler != "ddim" and eta:
        raise click.BadParameter("--eta applies to --sampler ddim", param_hint="--eta")
    if sampler == "ddpm" and steps is not None:
        raise click.BadParameter("ddpm takes every one of the run's T steps; for fewer use --sampler ddim",
                                 param_hint="--steps")
    if sampler != "ode" and method is not None:
        raise click.BadParameter("--method applies to --sampler ode", param_hint="--method")
    method = method or ("rk4" if steps is not None else "dopri5")
    if sampler == "ode" and method in FIXED_GRID_METHODS and steps is None:
        raise click.BadParameter(f"fixed-step method {method} needs --steps", param_hint="--steps")
    if sampler == "ode" and method in ADAPTIVE_METHODS and steps is not None:
        raise click.BadParameter(f"adaptive method {method} chooses its steps (by --rtol); drop --steps",
                                 param_hint="--steps")
    if sampler == "ode":
        try:
            engine.check(method)
        except SolverOptionError as err:
            raise click.BadParameter(str(err), param_hint=f"--{err.option.replace('_', '-')}") from None
    return Setting(sampler, steps, eta, method, rtol, atol, max_steps, engine.backend, engine.controller,
                   engine.per_sample)


def _real_features(run, feature_run: Path | None, device: str, no_progress: bool) -> RealFeatures:
    """The feature network (given, or the cached one, trained first where missing) and the real splits."""
    config = run.config
    try:
        if feature_run is None:
            click.echo(f"feature network: the cached classifier of {run.dataset_name} (trained now if missing)")
            feature_run = cached_feature_run(run.dataset_name, data_dir=config.get("data_dir"),
                                             split_seed=config.get("split_seed", 0), device=device,
                                             progress=not no_progress)
        net = FeatureNet.from_run(feature_run, run.dataset_name, resolve_device(device))
        return real_features(run, net)
    except (CheckpointError, DataError, FeatureNetError) as err:
        raise click.BadParameter(str(err), param_hint="--feature-run") from None


# the options that describe one sampler setting (a sweep has its own grid), and the ODE engine's among them
_ENGINE = ("backend", "controller", "per_sample")
_ONE_SETTING = ("sampler", "steps", "eta", "method", "rtol", "atol", *_ENGINE)


def _line(row: dict) -> str:
    """`dia_unet_s  ddim 50  NFE 50  FID 1.23 (floor 0.45, 2.7x)  confident 0.91  3.2s`."""
    text = f"{row['model']}  {row['setting']}  NFE {row['nfe']:.0f}"
    quality = row.get("quality")
    if quality:
        text += (f"  FID {quality['fid']:.4g} (floor {quality['fid_floor']:.3g}, {quality['fid_ratio']:.2f}x)"
                 f"  confident {quality['confident']:.3f} (real {quality['confident_real']:.3f})")
    return text + f"  {row['seconds']:.1f}s"
