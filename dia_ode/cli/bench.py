"""`dia-ode bench`: benchmarks that print ratios measured in one process."""

from __future__ import annotations

import click
import torch

from dia_ode.cli.options import (CONTEXT, CommaList, FiniteFloat, check_device, check_model, common_options,
                                 model_option, parse_model_options)
from dia_ode.engine import COMPILE_MODES, PRECISIONS, ConfigError, resolve_device
from dia_ode.rundir import start_run, write_json
from dia_ode.studies.bench_train_step import (bench_batch_and_models, bench_settings, bench_train_step, check_settings,
                                             setting_ratios, step_loss)


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@common_options
@click.pass_context
def bench(ctx: click.Context, seed, device, out, no_progress) -> None:
    """Benchmarks; without a subcommand runs `train-step` with its defaults."""
    shared = {"seed": seed, "device": device, "out": out, "no_progress": no_progress}
    ctx.default_map = {name: shared for name in bench.commands}  # a subcommand's own options still win
    if ctx.invoked_subcommand is None:
        ctx.invoke(bench_train_step_command, **shared)


def batch_shape_options(command):
    """The batch both step benches build: --batch-size, --image-size, --in-channels."""
    for option in reversed((
            click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Batch size."),
            click.option("--image-size", type=click.IntRange(min=4), default=32, help="Input height = width."),
            click.option("--in-channels", type=click.IntRange(min=1), default=3, help="Input channels (digits: 1)."))):
        command = option(command)
    return command


@bench.command(name="train-step", context_settings=CONTEXT)
@click.option("--models", type=CommaList(), default="resnet56,se_resnet56,dia_resnet56,vit_tiny,dia_vit_tiny",
              help="Comma-separated model names; ratios are relative to the first.")
@batch_shape_options
@click.option("--steps", type=click.IntRange(min=1), default=3, help="Timed SGD steps per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=7,
              help="Interleaved rounds; each model's fastest round is kept.")
@click.option("--channels-last", is_flag=True, help="Use the channels_last memory format.")
@click.option("--precision", "precisions", type=CommaList(click.Choice(PRECISIONS)), default="fp32",
              help=f"Comma-separated autocast precisions ({', '.join(PRECISIONS)}), each measured as a setting.")
@click.option("--compile", "compile_model", is_flag=True,
              help="Measure each precision eager and through torch.compile (the warm-up compiles: minutes on a CPU).")
@click.option("--compile-mode", type=click.Choice(COMPILE_MODES), default="default",
              help="torch.compile's mode (with --compile); reduce-overhead records CUDA graphs.")
@common_options
def bench_train_step_command(models, batch_size, image_size, in_channels, steps, rounds, channels_last, precisions,
                             compile_model, compile_mode, seed, device, out, no_progress) -> None:
    """Train-step time and images per second of models (b=64, 32x32x3) and their ratios (dia/plain, dia/se per
    backbone) in each setting (precision, eager or compiled), and each setting's step time over fp32 eager's,
    in one process. A classifier times a cross-entropy step, a UNet a DDPM step (a random timestep per image)."""
    check_device(device)
    names = models
    _check_bench_models(names, {name: {} for name in names}, image_size, in_channels)
    if compile_mode != "default" and not compile_model:
        raise click.BadParameter(f"compile mode {compile_mode} applies with --compile", param_hint="--compile-mode")
    settings = bench_settings(precisions, compile_model)
    try:
        check_settings(names, settings, compile_mode=compile_mode, channels_last=channels_last,
                       device=resolve_device(device))
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint=f"--{err.option.replace('_', '-')}") from None
    config = {"command": "bench train-step", "models": names, "batch_size": batch_size, "image_size": image_size,
              "in_channels": in_channels, "steps": steps, "rounds": rounds, "channels_last": channels_last,
              "precisions": list(dict.fromkeys(precisions)), "compile": compile_model, "compile_mode": compile_mode,
              "threads": torch.get_num_threads(), "seed": seed, "device": str(resolve_device(device))}
    run_dir = start_run(out, "bench-train-step", config)
    rows = bench_train_step(names, batch_size=batch_size, image_size=image_size, in_channels=in_channels,
                            steps=steps, rounds=rounds, device=resolve_device(device), channels_last=channels_last,
                            settings=settings, compile_mode=compile_mode, seed=seed)
    ratios = {s.label: _named_ratios([r for r in rows if r["setting"] == s.label]) for s in settings}
    over_baseline = setting_ratios(rows)
    write_json(run_dir / "bench.json", rows)
    write_json(run_dir / "summary.json", {"rows": rows, "ratios": ratios, "setting_ratios": over_baseline})
    for setting in settings:
        click.echo(f"{setting.label:<22}{'params':>12}{'step [ms]':>12}{'images/s':>12}{'ratio':>8}")
        for r in rows:
            if r["setting"] == setting.label:
                click.echo(f"  {r['model']:<20}{r['params']:>12,}{1e3 * r['step_seconds']:>12.1f}"
                           f"{r['images_per_second']:>12,.0f}{r['ratio_to_first']:>8.3f}")
        for label, value in ratios[setting.label].items():
            click.echo(f"{setting.label}: {label}: {value:.3f}")
    for label, per_model in over_baseline.items():
        click.echo(f"{label}: " + ", ".join(f"{model} {value:.3f}" for model, value in per_model.items()))
    click.echo(f"-> {run_dir}")


def _check_bench_models(names: list[str], options: dict[str, dict], image_size: int, in_channels: int) -> None:
    """Every model name and its options are valid, the model builds for the input shape (on the meta
    device: no memory, no time) and has a training step to measure."""
    for name in names:
        try:
            check_model(name, options[name])
        except click.BadParameter as err:  # the message names the model; the option here is --models
            hint = "--models" if err.param_hint == "--model" else err.param_hint
            raise click.BadParameter(err.message, param_hint=hint) from None
        try:
            step_loss(name)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--models") from None
        try:
            with torch.device("meta"):
                bench_batch_and_models([name], batch_size=1, image_size=image_size, in_channels=in_channels,
                                       device="meta", model_options=options)
        except ValueError as err:  # e.g. a ViT patch that does not divide --image-size
            raise click.UsageError(f"{name} at {image_size}x{image_size}x{in_channels}: {err}") from None


def _named_ratios(rows: list[dict], key: str = "step_seconds") -> dict[str, float]:
    """dia/plain and dia/se of rows[key] for every backbone that has those variants in the rows."""
    step = {r["model"]: r[key] for r in rows}
    ratios = {}
    for name in step:
        if name.startswith("dia_"):
            backbone = name[len("dia_"):]
            for other in (backbone, f"se_{backbone}"):
                if other in step:
                    ratios[f"{name}/{other}"] = step[name] / step[other]
    return ratios


@bench.command(name="ops", context_settings=CONTEXT)
@click.option("--models", type=CommaList(), default="resnet56,se_resnet56,dia_resnet56",
              help="Comma-separated model names; ratios are relative to the first.")
@batch_shape_options
@click.option("--foreach", is_flag=True,
              help="Count the optimizer's multi-tensor kernels, as CUDA runs them (default: torch's choice "
                   "for the device, a loop over parameters on the CPU).")
@click.option("--channels-last", is_flag=True, help="Use the channels_last memory format.")
@model_option
@common_options
def bench_ops_command(models, batch_size, image_size, in_channels, foreach, channels_last, model_option_pairs,
                      seed, device, out, no_progress) -> None:
    """Aten operations per forward and per SGD step of models (b=64, 32x32x3) and their ratios: the
    dispatcher calls a GPU pays one kernel launch for, counted on any device (after one warm-up step)."""
    from dia_ode.studies.bench_ops import bench_ops

    check_device(device)
    per_model = {name: parse_model_options(model_option_pairs, name) for name in models}
    _check_bench_models(models, per_model, image_size, in_channels)
    config = {"command": "bench ops", "models": models, "batch_size": batch_size, "image_size": image_size,
              "in_channels": in_channels, "foreach": foreach, "channels_last": channels_last,
              "model_options": per_model, "seed": seed, "device": str(resolve_device(device))}
    run_dir = start_run(out, "bench-ops", config)
    rows = bench_ops(models, batch_size=batch_size, image_size=image_size, in_channels=in_channels,
                     device=resolve_device(device), channels_last=channels_last,
                     foreach=True if foreach else None, seed=seed, model_options=per_model)
    ratios = _named_ratios(rows, "step_ops")
    write_json(run_dir / "bench.json", {"rows": rows, "ratios": ratios})
    write_json(run_dir / "summary.json", {"step_ops": {r["model"]: r["step_ops"] for r in rows}, "ratios": ratios})
    click.echo(f"{'model':<22}{'forward ops':>13}{'step ops':>10}{'ratio':>8}{'step views':>12}")
    for r in rows:
        click.echo(f"{r['model']:<22}{r['forward_ops']:>13,}{r['step_ops']:>10,}{r['ratio_to_first']:>8.3f}"
                   f"{r['step_view_ops']:>12,}")
    for label, value in ratios.items():
        click.echo(f"{label}: {value:.3f}")
    click.echo(f"-> {run_dir}")


@bench.command(name="stiffness", context_settings=CONTEXT)
@click.option("--channels", type=click.IntRange(min=1), default=16, help="Channels of the residual block.")
@click.option("--size", type=click.IntRange(min=2), default=32, help="H = W of the timed input (n = C H W).")
@click.option("--compare-size", type=click.IntRange(min=2), default=16,
              help="H = W of the input compared with dense Jacobian + eig (n = 4,096 by default: minutes).")
@click.option("--k", "k", type=click.IntRange(min=1), default=6, help="Eigenvalues (largest magnitude).")
@common_options
def bench_stiffness_command(channels, size, compare_size, k, seed, device, out, no_progress) -> None:
    """Matrix-free top-k Jacobian eigenvalues of one residual block vs dense Jacobian + eig."""
    from dia_ode.studies.bench_spectrum import bench_spectrum

    for option, side in (("--size", size), ("--compare-size", compare_size)):
        if k >= channels * side * side - 1:  # ARPACK's eigs needs k < n - 1
            raise click.BadParameter(f"n = channels * {option}^2 = {channels * side * side} must exceed k + 1 = "
                                     f"{k + 1} (ARPACK needs k < n - 1)", param_hint=option)
    config = {"command": "bench stiffness", "channels": channels, "size": size, "compare_size": compare_size,
              "k": k, "seed": seed, "device": "cpu"}  # ARPACK and numpy run on the CPU whatever --device says
    run_dir = start_run(out, "bench-stiffness", config)
    result = bench_spectrum(channels=channels, size=size, k=k, compare_size=compare_size, seed=seed)
    write_json(run_dir / "bench.json", result)
    write_json(run_dir / "summary.json", {key: value for key, value in result.items() if key != "eigenvalues"})
    click.echo(f"n = {result['n']:,}: top-{k} eigenvalues in {result['seconds']:.2f} s ({result['matvecs']} products)")
    click.echo(f"n = {result['compare_n']:,}: dense {result['dense_seconds']:.1f} s, matrix-free "
               f"{result['matrix_free_seconds']:.2f} s, speed-up {result['speedup']:.3g}x, "
               f"relative eigenvalue error {result['relative_error']:.1e}")
    click.echo(f"-> {run_dir}")


@bench.command(name="solve-batch", context_settings=CONTEXT)
@click.option("--batch", type=click.IntRange(min=1), default=1024, help="Van der Pol solves in one batch.")
@click.option("--mu", type=FiniteFloat(min=0, min_open=True), default=1.0, help="Van der Pol's mu.")
@click.option("--t1", type=FiniteFloat(min=0, min_open=True), default=10.0, help="End time.")
@click.option("--tol", type=FiniteFloat(min=0, min_open=True), default=1e-6, help="rtol = atol.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, help="Interleaved rounds; the fastest is kept.")
@common_options
def bench_solve_batch_command(batch, mu, t1, tol, rounds, seed, device, out, no_progress) -> None:
    """Time per accepted step of a batch of solves: the controller lab's per-sample integrator (PI), with
    and without its stiffness test, against torchdiffeq's dopri5, in one process (the
    batched-speed target: ratio <= 1)."""
    from dia_ode.studies.bench_controllers import bench_solve_batch

    config = {"command": "bench solve-batch", "batch": batch, "mu": mu, "t1": t1, "tol": tol, "rounds": rounds,
              "seed": seed, "device": "cpu"}
    run_dir = start_run(out, "bench-solve-batch", config)
    result = bench_solve_batch(batch, mu, t1, tol, seed, rounds)
    write_json(run_dir / "bench.json", result)
    write_json(run_dir / "summary.json", result)
    click.echo(f"{batch} Van der Pol solves (mu {mu:g}, [0, {t1:g}], tol {tol:g}): ours {result['ours_seconds']:.2f} s, "
               f"{result['ours_mean_accepted']:.0f} accepted steps per sample (max {result['ours_max_accepted']}); "
               f"torchdiffeq {result['torchdiffeq_seconds']:.2f} s, {result['torchdiffeq_accepted']} batch steps")
    click.echo(f"time per accepted step: ours {1e3 * result['ours_seconds_per_step']:.2f} ms (without the "
               f"stiffness test {1e3 * result['ours_no_test_seconds_per_step']:.2f} ms), torchdiffeq "
               f"{1e3 * result['torchdiffeq_seconds_per_step']:.2f} ms; ratio {result['ratio']:.3f}, like for like "
               f"(no stiffness test, as torchdiffeq) {result['ratio_no_test']:.3f}")
    click.echo(f"-> {run_dir}")


@bench.command(name="stiff-switch", context_settings=CONTEXT)
@click.option("--stiff-methods", type=CommaList(click.Choice(["ros2", "rodas3", "rodas4"])),
              default="ros2,rodas3,rodas4", help="The implicit methods the switch is measured with.")
@click.option("--no-explicit", is_flag=True, help="Leave out scipy's RK45 (the explicit reference: slow).")
@common_options
def bench_stiff_switch_command(stiff_methods, no_explicit, seed, device, out, no_progress) -> None:
    """Function evaluations of the stiff switch (dopri5 + PI -> a Rosenbrock method) over scipy's LSODA
    on Robertson [0, 40] and HIRES at rtol 1e-4, atol 1e-8, and errors in units of the tolerance
    (the target: <= 2x LSODA's evaluations, errors <= 1)."""
    from dia_ode.studies.bench_stiff_switch import CASES, bench_stiff_switch, stiff_switch_markdown

    config = {"command": "bench stiff-switch", "stiff_methods": list(stiff_methods), "explicit": not no_explicit,
              "cases": [vars(case) for case in CASES], "seed": seed, "device": "cpu"}
    run_dir = start_run(out, "bench-stiff-switch", config)
    rows = bench_stiff_switch(stiff_methods=tuple(stiff_methods), explicit=not no_explicit)
    write_json(run_dir / "bench.json", {"rows": rows})
    write_json(run_dir / "summary.json", {f"{r['problem']} / {r['solver']}": r["nfe_ratio"] for r in rows})
    table = stiff_switch_markdown(rows)
    (run_dir / "bench.md").write_text(table)
    click.echo(table, nl=False)
    click.echo(f"-> {run_dir}")
