"""`dia-ode integrate`: one solve of a classic problem by the controller lab's integrator."""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from dia_ode.analysis.integration_plots import plot_solution, plot_steps_and_stiffness
from dia_ode.cli.options import (CONTEXT, FiniteFloat, build_problem, common_options, problem_parameter_options)
from dia_ode.cli.runtime import check_memory
from dia_ode.numerics import (ERROR_CONTROLLERS, PID_PRESETS, SUCCESS, StiffnessTest, create_error_controller,
                              get_tableau, list_methods, solve)
from dia_ode.rundir import CheckpointError, save_figure, start_run, write_json
from dia_ode.stiffness import list_problems
from dia_ode.studies.dia_controller_training import load_dia_controller


@click.command(context_settings=CONTEXT)
@click.option("--problem", type=click.Choice(list_problems()), default="vdp", help="The initial value problem.")
@problem_parameter_options
@click.option("--method", type=click.Choice(list_methods()), default="dopri5", help="Runge-Kutta method.")
@click.option("--controller", type=click.Choice([*ERROR_CONTROLLERS, "dia"]), default="pi",
              help="Step-size controller (dia: a trained one, from --controller-run).")
@click.option("--controller-run", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The `dia-ode controllers train` run whose DIA controller to use (--controller dia).")
@click.option("--preset", type=click.Choice(list(PID_PRESETS)), default=None,
              help="Söderlind filter of the pid controller [default: H312PID].")
@click.option("--rtol", type=FiniteFloat(min=0, min_open=True), default=1e-6, help="Relative tolerance.")
@click.option("--atol", type=FiniteFloat(min=0, min_open=True), default=1e-6, help="Absolute tolerance.")
@click.option("--t0", type=FiniteFloat(), default=None, help="Start time [default: the problem's].")
@click.option("--t1", type=FiniteFloat(), default=None, help="End time [default: the problem's].")
@click.option("--step-size", type=FiniteFloat(min=0, min_open=True), default=None,
              help=f"Fixed steps of this size (required for {', '.join(list_methods(adaptive=False))}).")
@click.option("--max-steps", type=click.IntRange(min=1), default=1_000_000, help="Step budget (attempts).")
@click.option("--stiff-switch", is_flag=True,
              help="Continue on an L-stable Rosenbrock method where stability limits the step, back when it no "
                   "longer does.")
@click.option("--stiff-method", type=click.Choice(["ros2", "rodas3", "rodas4"]), default="rodas4",
              help="The implicit method of --stiff-switch (order 2, 3, 4).")
@click.option("--exact-spectrum", is_flag=True,
              help="Also record h times the exact spectral radius of the Jacobian on every accepted step (h_rho).")
@click.option("--points", type=click.IntRange(min=2), default=201, help="Save times for the solution figure.")
@click.option("--reference/--no-reference", default=True,
              help="Measure the error at the save times against scipy's Radau at rtol 1e-10.")
@common_options
def integrate(problem, mu, eigenvalues, method, controller, controller_run, preset, rtol, atol, t0, t1, step_size,
              max_steps, stiff_switch, stiff_method, exact_spectrum, points, reference, seed, device, out,
              no_progress) -> None:
    """Solve a classic problem with a chosen method and step-size controller; write the per-step trace.

    Writes trace.json (every attempted step: t, h, error ratio, accepted, h*lambda, stiff flag),
    summary.json (result, nfe, steps, rejections, stiff steps judged one by one and under the streak
    rule's flag, error against the reference, seconds)
    and figures (solution; step sizes with rejections and h*lambda against the stability bound).
    """
    if device == "cuda":
        raise click.BadParameter("the controller lab integrates on the CPU (float64 time stepping of small "
                                 "systems, one Python step at a time)", param_hint="--device")
    if preset is not None and controller != "pid":
        raise click.BadParameter(f"--preset is a filter of the pid controller, not of '{controller}'",
                                 param_hint="--preset")
    tableau = get_tableau(method)
    if stiff_switch and (step_size is not None or not tableau.adaptive):
        raise click.BadParameter("the stiff switch needs an adaptive method without --step-size",
                                 param_hint="--stiff-switch")
    if not tableau.adaptive and step_size is None:
        raise click.BadParameter(f"method '{method}' has no error estimate: give --step-size",
                                 param_hint="--step-size")
    ivp = build_problem(problem, mu, eigenvalues)
    # float64 at every save time: the time, the solution, scipy's reference and the error (n values each)
    check_memory(points * 8 * (1 + 3 * ivp.y0.numel()), "--points", f"{points:,} save times")
    start, end = (ivp.t_span[0] if t0 is None else t0), (ivp.t_span[1] if t1 is None else t1)
    if not end > start:
        raise click.BadParameter(f"--t1 ({end:g}) must be greater than --t0 ({start:g})", param_hint="--t1")
    if (controller == "dia") != (controller_run is not None):
        raise click.BadParameter("--controller dia and --controller-run RUN_DIR go together",
                                 param_hint="--controller-run")
    if controller == "dia":
        try:
            ctrl = load_dia_controller(controller_run)
        except CheckpointError as err:
            raise click.BadParameter(str(err), param_hint="--controller-run") from None
    else:
        ctrl = create_error_controller(controller, **({"preset": preset} if preset else {}))
    save_times = torch.linspace(start, end, points, dtype=torch.float64)
    config = {"command": "integrate", "problem": problem, "params": ivp.params, "method": method,
              "controller": controller, "preset": preset if controller == "pid" else None,
              "controller_run": str(controller_run) if controller_run else None, "rtol": rtol,
              "atol": atol, "t0": start, "t1": end, "step_size": step_size, "max_steps": max_steps,
              "stiff_switch": stiff_switch, "stiff_method": stiff_method if stiff_switch else None,
              "exact_spectrum": exact_spectrum, "points": points}
    run_dir = start_run(out, f"integrate-{problem}-{method}-{controller}", config)
    tic = time.perf_counter()
    sol = solve(ivp.f, ivp.y0[None], start, end, method=tableau, controller=ctrl, rtol=rtol, atol=atol,
                step_size=step_size, t_eval=save_times, max_steps=max_steps, trace=True, stiff_switch=stiff_switch,
                stiff_method=stiff_method, exact_spectrum=exact_spectrum)
    seconds = time.perf_counter() - tic
    steps = {key: value.numpy() for key, value in sol.trace.of(0).items()}
    rows_of_sample = (sol.trace.sample == 0).tolist()
    methods = [m for m, keep in zip(sol.trace.method, rows_of_sample) if keep]
    write_json(run_dir / "trace.json", {**{key: value.tolist() for key, value in steps.items()}, "method": methods})
    stats = {key: int(value[0]) for key, value in sol.stats.items()}
    summary = {"problem": problem, "params": ivp.params, "method": method, "controller": controller,
               "result": sol.messages()[0], **stats, "seconds": seconds,
               "stiff_fraction": float(sol.per_accepted("num_stiff_steps")[0]),
               "flagged_fraction": float(sol.per_accepted("num_flagged_steps")[0]),
               "stiffness_bound": StiffnessTest(tableau).threshold}
    y = sol.y[0].numpy()
    ref = None
    if reference and sol.result[0] == SUCCESS:
        ref = ivp.reference(save_times.numpy(), rtol=1e-10)
        summary["max_abs_error"] = float(np.abs(y - ref).max())
    failure = None
    if sol.result[0] != SUCCESS:  # the run keeps its trace, and `dia-ode ls runs` says it failed
        failure = f"the solve ended with '{summary['result']}' at t = {float(steps['t'][-1]):g}"
        summary.update(status="failed", error=failure)
    write_json(run_dir / "summary.json", summary)
    title = (f"{ivp.title()}, {method}{' / ' + stiff_method if stiff_switch else ''} + {controller}"
             f"{' ' + preset if preset else ''}, rtol {rtol:g}")
    save_figure(plot_solution(save_times.numpy(), y, title, ref), run_dir / "figures", "solution")
    save_figure(plot_steps_and_stiffness(steps, summary["stiffness_bound"], title, methods), run_dir / "figures",
                "steps")
    error = f", max error {summary['max_abs_error']:.2e}" if "max_abs_error" in summary else ""
    click.echo(f"{ivp.title()} with {method} + {controller}: {summary['result']}; nfe {stats['nfe']:,}, "
               f"{stats['num_accepted']:,} accepted, {stats['num_rejected']:,} rejected, "
               f"{summary['stiff_fraction']:.0%} of the accepted steps stability-limited "
               f"({summary['flagged_fraction']:.0%} under the streak rule's stiffness flag){error}, {seconds:.1f} s")
    if stiff_switch:
        click.echo(f"stiff switch: {stats['num_implicit_steps']:,} accepted steps on {stiff_method}, "
                   f"{stats['num_jacobians']:,} Jacobians, {stats['num_linear_solves']:,} linear solves")
    click.echo(f"-> {run_dir}")
    if failure is not None:
        raise click.ClickException(f"{failure}; the trace is in {Path(run_dir) / 'trace.json'}"
                                   + ("; raise --max-steps" if summary["result"] == "max steps reached" else ""))
