"""`dia-ode controllers`: the controller benchmark (studies/bench_controllers.py)."""

from __future__ import annotations

import click

from dia_ode.analysis.integration_plots import plot_objective, plot_work_precision
from dia_ode.cli.options import CONTEXT, CommaList, FiniteFloat, common_options
from dia_ode.numerics import list_methods
from dia_ode.rundir import save_figure, start_run, write_json
from dia_ode.solvers.backends import parse_controller
from dia_ode.stiffness import list_problems
from dia_ode.stiffness.families import FAMILIES
from dia_ode.studies.bench_controllers import (DEFAULT_CONTROLLERS, DEFAULT_PROBLEMS, SCIPY_METHODS, BenchProblem,
                                              bench_controllers, torchode_available)
from dia_ode.studies.dia_controller_training import (TRAIN_COMMAND, held_out_comparison,
                                                     save_dia_controller, train_dia_controller)

COLUMNS = ("problem", "solver", "rtol", "result", "nfe", "accepted", "rejected", "error", "seconds", "stiff_fraction",
           "flagged_fraction", "njev", "nlu")
# what the stiffness columns mean, beside the table and in summary.json (studies/bench_controllers.py)
STIFFNESS_NOTE = ("stiff_fraction: accepted steps that stability limits, each judged alone by Hairer's test "
                  "(h·λ at least half the stability threshold), the same reading for every controller; "
                  "flagged_fraction: accepted steps under DOPRI5's streak flag (15 marks before 6 unmarked steps "
                  "in a row), which decides a switch to an implicit method and which a controller that swings h "
                  "across the bound keeps down (pid:H312PID)")


@click.group(context_settings=CONTEXT, invoke_without_command=True)
@click.option("--problems", type=CommaList(click.Choice(list_problems())), default=None,
              help="Comma-separated problems [default: vdp (mu 100, [0, 30]), brusselator, lorenz ([0, 5]), "
                   "orego ([0, 30])].")
@click.option("--mu", type=FiniteFloat(min=0, min_open=True), default=None, help="Van der Pol's mu.")
@click.option("--controllers", "names", type=CommaList(click.STRING), default=",".join(DEFAULT_CONTROLLERS),
              help="Comma-separated controllers: i, pi, pid:<preset>.")
@click.option("--tolerances", type=CommaList(FiniteFloat(min=0, min_open=True)), default="1e-4,1e-6",
              help="Comma-separated tolerances (rtol = atol).")
@click.option("--method", type=click.Choice(list_methods(adaptive=True)), default="dopri5", help="Our method.")
@click.option("--no-baselines", is_flag=True, help="Only our controllers (no scipy, no torchdiffeq).")
@common_options
@click.pass_context
def controllers(ctx: click.Context, problems, mu, names, tolerances, method, no_baselines, seed, device, out,
                no_progress) -> None:
    """Benchmark step-size controllers: problems x controllers x tolerances, beside scipy and torchdiffeq.

    Writes controllers.json (one row per solve), controllers.md (the table), summary.json (the table's
    columns) and a work-precision figure (error against function evaluations).
    """
    if ctx.invoked_subcommand is not None:
        return
    if device == "cuda":
        raise click.BadParameter("the controller lab integrates on the CPU", param_hint="--device")
    for name in names:
        try:
            parse_controller(name)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--controllers") from None
    chosen = _problems(problems, mu)
    config = {"command": "controllers", "problems": [p.label() for p in chosen], "controllers": list(names),
              "tolerances": list(tolerances), "method": method, "baselines": not no_baselines}
    run_dir = start_run(out, "controllers", config)
    rows = bench_controllers(tuple(chosen), tuple(names), tuple(tolerances), method, not no_baselines,
                             progress=lambda row: click.echo(_line(row)))
    write_json(run_dir / "controllers.json", {"rows": rows, "scipy": list(SCIPY_METHODS),
                                              "torchode": "run" if torchode_available() and not no_baselines
                                              else ("not installed: not run" if not torchode_available() else "not run")})
    (run_dir / "controllers.md").write_text(_markdown(rows))
    write_json(run_dir / "summary.json", {"rows": [{key: row[key] for key in COLUMNS} for row in rows],
                                          "notes": {"stiffness": STIFFNESS_NOTE}})
    save_figure(plot_work_precision(rows), run_dir / "figures", "work_precision")
    click.echo(STIFFNESS_NOTE)
    click.echo(f"-> {run_dir}")


def _problems(names: list[str] | None, mu: float | None) -> list[BenchProblem]:
    """The chosen problems with the benchmark's intervals (DEFAULT_PROBLEMS) where it has one."""
    defaults = {p.name: p for p in DEFAULT_PROBLEMS}
    chosen = [defaults.get(name, BenchProblem(name)) for name in (names or list(defaults))]
    if mu is not None:
        if "vdp" not in [p.name for p in chosen]:
            raise click.BadParameter("--mu is Van der Pol's parameter; vdp is not among --problems", param_hint="--mu")
        chosen = [BenchProblem(p.name, (("mu", mu),), p.t1) if p.name == "vdp" else p for p in chosen]
    return chosen


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _line(row: dict) -> str:
    return "  ".join(f"{key}={_format(row[key])}" for key in COLUMNS if row[key] is not None)


def _markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_format(row[key]) for key in COLUMNS) + " |" for row in rows]
    notes = ["", "error: max over 11 save times and the components of |y - y_ref| / (1 + |y_ref|), y_ref from scipy "
             "Radau at rtol 1e-10; rejected: — where the solver does not report it (scipy); njev / nlu: scipy's "
             "Jacobian evaluations and LU factorisations"
             + ("." if torchode_available() else "; torchode is not installed here and was not run."),
             "", STIFFNESS_NOTE + "."]
    return "\n".join(lines + notes) + "\n"


@controllers.command("train", context_settings=CONTEXT)
@click.option("--family", type=click.Choice(list(FAMILIES)), default="vdp",
              help="vdp: Van der Pol, mu uniform in --mu-range; linear: random stable linear systems (3 x 3), "
                   "rates log-uniform in --rate-range.")
@click.option("--mu-range", type=CommaList(FiniteFloat(min=0, min_open=True)), default=None,
              help="The Van der Pol family: mu drawn uniformly from LOW,HIGH [default: 1,10].")
@click.option("--rate-range", type=CommaList(FiniteFloat(min=0, min_open=True)), default=None,
              help="The linear family: decay rates log-uniform in LOW,HIGH [default: 1,1000].")
@click.option("--t1", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Each member's interval [0, t1] [default: 10 for vdp, 1 for linear].")
@click.option("--members", type=click.IntRange(min=1), default=8, help="Training members (one batch).")
@click.option("--held-out", type=click.IntRange(min=1), default=8, help="Fresh members for the comparison.")
@click.option("--iterations", type=click.IntRange(min=1), default=30, help="Search iterations.")
@click.option("--population", type=click.IntRange(min=1), default=6, help="Direction pairs per iteration.")
@click.option("--rtol", type=FiniteFloat(min=0, min_open=True), default=1e-6, help="rtol = atol of every solve.")
@common_options
def train_controller(family, mu_range, rate_range, t1, members, held_out, iterations, population, rtol, seed, device,
                     out, no_progress) -> None:
    """Fit the DIA controller on a problem family (an elitist antithetic search) and compare it with PI
    on held-out members; writes controller.pt, summary.json and the objective over iterations."""
    own, other = ("--mu-range", "--rate-range") if family == "vdp" else ("--rate-range", "--mu-range")
    if (rate_range if family == "vdp" else mu_range) is not None:
        raise click.BadParameter(f"{other} is not an option of the {family} family (its range is {own})",
                                 param_hint=other)
    low_high = (mu_range or [1.0, 10.0]) if family == "vdp" else (rate_range or [1.0, 1000.0])
    if len(low_high) != 2 or not low_high[0] <= low_high[1]:
        raise click.BadParameter(f"give LOW,HIGH with LOW <= HIGH, got {','.join(map(str, low_high))}",
                                 param_hint=own)
    t1 = t1 if t1 is not None else (10.0 if family == "vdp" else 1.0)
    members_family = FAMILIES[family](low_high[0], low_high[1], t1)
    config = {"command": TRAIN_COMMAND, "family": family, f"{own[2:].replace('-', '_')}": list(low_high), "t1": t1,
              "members": members, "held_out": held_out, "iterations": iterations, "population": population,
              "rtol": rtol, "seed": seed}
    run_dir = start_run(out, "controllers-train-dia", config)
    training = train_dia_controller(members_family, members, iterations, population, rtol=rtol, atol=rtol, seed=seed,
                                    progress=lambda i, j: click.echo(f"iteration {i + 1}/{iterations}  J {j:.4f}"))
    save_dia_controller(training.controller, run_dir)
    comparison = held_out_comparison(training.controller, members_family, held_out, seed + 1000, rtol, rtol)
    summary = {"objective_untrained": training.initial, "objective": training.history,
               "best_objective": min(training.history),
               "train_nfe_pi": training.reference_nfe, "held_out": comparison}
    write_json(run_dir / "summary.json", summary)
    save_figure(plot_objective(training.history), run_dir / "figures", "objective")
    click.echo(f"held-out members: nfe DIA / PI {comparison['nfe_ratio']:.3f}, error DIA / PI "
               f"{comparison['error_ratio']:.3f} (mean over {held_out} members of the {family} family, "
               f"{own[2:]} [{low_high[0]:g}, {low_high[1]:g}])")
    click.echo(f"-> {run_dir}")
