"""`dia-ode report`: the papers' claims, each as runs, a number with its interval and a verdict."""

from __future__ import annotations

from pathlib import Path

import click

from dia_ode.cli.options import CONTEXT, CommaList, common_options
from dia_ode.cli.runtime import interrupt_exit
from dia_ode.rundir import start_run
from dia_ode.studies.claims import CLAIMS, get_claim
from dia_ode.studies.report.budgets import BUDGETS, check_device, get_budget
from dia_ode.studies.report.cache import STUDY_FILE, open_study
from dia_ode.studies.report.claim import NOT_TESTABLE, PRECONDITION_NOT_MET
from dia_ode.studies.report.launchers import LauncherOptionError, create_launcher
from dia_ode.studies.report.report import run_report


def _launcher_options(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return options


UNTESTED = (NOT_TESTABLE, PRECONDITION_NOT_MET)


@click.command(context_settings=CONTEXT)
@click.option("--budget", type=click.Choice(list(BUDGETS)), default="smoke",
              help="How much every claim may train: "
                   + "; ".join(f"{b.name}: {b.description}" for b in BUDGETS.values()))
@click.option("--claims", "claim_ids", type=CommaList(), default=None, metavar="LIST",
              help="Comma-separated claim ids (default: every registered claim: " + ", ".join(CLAIMS) + ").")
@click.option("--launcher", default="local", metavar="local|local:N|slurm",
              help="Where the runs train: this process, N local processes at once, or a cluster through submitit.")
@click.option("--launcher-option", "launcher_pairs", multiple=True, metavar="KEY=VALUE",
              callback=_launcher_options,
              help="slurm executor options: partition, time (minutes), gpus, cpus, mem (GB), cluster "
                   "(slurm, or local/debug to rehearse without a cluster); repeatable.")
@click.option("--study", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study directory to create or resume (its finished runs are reused); default: a new run "
                   "directory under --out.")
@click.option("--dry-run", is_flag=True, help="Print the runs (and their `dia-ode train` commands) without training.")
@click.option("--no-train", is_flag=True,
              help="Train nothing: measure the study's runs as they stand (a long study's points so far, say, "
                   "while another report trains it).")
@common_options
def report(budget, claim_ids, launcher, launcher_pairs, study, dry_run, no_train, seed, device, out,
           no_progress) -> None:
    """Run or reuse the runs behind each claim, measure it, and write report.md, report.json and figures.

    Every run is cached in the study directory by the hash of its config, so a killed report resumes
    without training a finished run twice. --seed and --device are refused: the budget's seeds and
    device decide ("auto" but for the gpu budget's cuda, which is refused where torch sees no GPU).
    """
    ctx = click.get_current_context()
    for name in ("seed", "device"):  # given at all, even with its default value
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.BadParameter(f"the report does not take --{name}: the budget's seeds and each run's "
                                     f"device (auto) decide", param_hint=f"--{name}")
    preset = get_budget(budget)
    if not (dry_run or no_train):  # a dry run and a measure of what exists need no GPU
        try:
            check_device(preset)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--budget") from None
    try:
        claims = [get_claim(c) for c in dict.fromkeys(claim_ids or CLAIMS)]
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--claims") from None
    try:
        runner = create_launcher(launcher, launcher_pairs)
    except LauncherOptionError as err:
        raise click.BadParameter(str(err), param_hint="--launcher-option") from None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--launcher") from None
    if study is not None and (not dry_run or (study / STUDY_FILE).exists()):
        try:  # a dry run makes nothing, but refuses a study it could not resume
            open_study(study, preset.name, create=not dry_run)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--study") from None
    if dry_run:
        try:
            lines = run_report(claims, preset, study, dry_run=True)["dry_run"]
        except ValueError as err:  # a run directory of the study holds another key's run (cache.run_state)
            raise click.BadParameter(str(err), param_hint="--study") from None
        for line in lines:
            click.echo(line)
        return
    if study is None:
        study = start_run(out, f"report-{preset.name}", {"command": "report", "budget": preset.name,
                                                         "claims": [c.id for c in claims], "launcher": launcher})
    click.echo(f"study directory: {study}")
    try:
        data = run_report(claims, preset, study, runner, progress=not no_progress, train=not no_train)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM from a scheduler (cli/runtime.py)
        what, code = interrupt_exit(err)
        click.echo(f"{what}; finished runs are kept, resume with: dia-ode report --budget {preset.name} "
                   f"--study {study}", err=True)
        raise SystemExit(code) from None
    for claim in data["claims"]:
        verdict = claim["verdict"]
        if verdict["status"] in UNTESTED:  # said loudly: the claim was not tested, whatever the papers say
            click.echo(f"!! {claim['id']}: {verdict['status'].upper()} -- {verdict['reason']}", err=True)
        else:
            click.echo(f"{claim['id']}: {verdict['status']} -- {verdict['reason']}")
    click.echo(f"-> {study / 'report.md'}")
