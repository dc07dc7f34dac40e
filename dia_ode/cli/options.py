"""Options and checks shared by every `dia-ode` command."""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import click
import torch

from dia_ode.cli.runtime import command_runtime, name_option, threads_option
from dia_ode.data import Dataset
from dia_ode.engine import resolve_device
from dia_ode.models import create_model, list_models
from dia_ode.models.registry import resolve
from dia_ode.stiffness import Problem, get_problem
from dia_ode.tasks import get_task, model_spec
from dia_ode.util import did_you_mean, unknown_name

CONTEXT = {"show_default": True, "help_option_names": ["-h", "--help"]}


class FiniteFloat(click.FloatRange):
    """click.FloatRange that also refuses nan and ±inf; every float option of the CLI uses it.

    Why: nan compares False with every bound, so FloatRange(min=0) lets it through, and inf passes
    any open upper end; either then fails deep inside a run instead of at the command line.
    """

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


class NameChoice(click.Choice):
    """click.Choice whose error also offers the choices a misspelt value most likely meant, as Click
    does for misspelt --flags and commands; for registry names (--dataset, --task, ...)."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as err:
            hint = did_you_mean(str(value), self.choices)
            if not hint:
                raise
            self.fail(f"{err.message.rstrip('.')}{hint}.", param, ctx)


class CommaList(click.ParamType):
    """'a, b,c' -> ['a', 'b', 'c'] (items converted by `item`); an empty list is a usage error."""

    name = "list"

    def __init__(self, item: click.ParamType = click.STRING) -> None:
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):  # already converted (a default given as a list)
            return list(value)
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        if not items:
            self.fail(f"{value!r} is an empty list; give comma-separated values.", param, ctx)
        return [self.item.convert(part, param, ctx) for part in items]


def _writable_dir(ctx: click.Context, param: click.Parameter, out: Path) -> Path:
    """--out must be a folder this process can create and write; the folders the check makes are
    removed again (rundir.start_run makes them with the run directory), so a command refused later
    leaves no empty --out behind. Several processes may check at once (the ranks under torchrun): a
    folder another one made first is theirs, and a folder that is no longer empty stays."""
    missing = [p for p in (out, *out.parents) if not p.exists()][::-1]  # outermost first
    made = []
    try:
        for folder in missing:
            try:
                folder.mkdir()
            except FileExistsError:  # another process made it between our look and our mkdir
                continue
            made.append(folder)
        writable = os.access(out, os.W_OK | os.X_OK)
    except OSError as err:
        raise click.BadParameter(f"cannot create {out}: {err.strerror}") from None
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # not empty any more (another process's run directory): not ours to remove
                pass
    if not writable:
        raise click.BadParameter(f"{out} is not writable")
    return out


def common_options(command):
    """--seed, --device, --out, --no-progress, --name and --threads, defined once for every command, and
    the runtime every command shares (cli/runtime.py: threads, failed-run clean-up, log lines, SIGTERM)."""
    command = command_runtime(command)
    options = [
        click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, help="Random seed."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     help="Where to compute; auto picks cuda when available."),
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                     callback=_writable_dir, help="Parent folder of the run directories."),
        click.option("--no-progress", is_flag=True, help="Hide progress bars (the per-epoch lines still print)."),
        name_option,
        threads_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_device(device: str) -> None:
    try:
        resolve_device(device)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None


def check_model(model: str, options: dict, data: Dataset | None = None, task: str = "classification",
                several_models: bool = False) -> None:
    """Fail before any work on a bad model name or option.

    Without data only the name and the option keys and types are checked; with the loaded dataset
    the model is built on the meta device (no memory) with its data-derived options too, so
    combinations such as a ViT patch that does not divide the image, or a model that does not serve
    the task, fail here. several_models: the options were given to several models at once (compare),
    so a refused key comes with the MODEL:KEY=VALUE advice.
    """
    try:
        entry, attention = resolve(model)
    except ValueError as err:  # the registry's message offers the close matches
        raise click.BadParameter(str(err), param_hint="--model") from None
    try:
        entry.check(attention, options)
    except ValueError as err:
        advice = "; to give an option to some models only, write MODEL:KEY=VALUE" if several_models else ""
        raise click.BadParameter(f"{err}{advice}", param_hint="--model-option") from None
    if data is None:
        return
    try:
        spec = model_spec(model, options, get_task(task), data)
        with torch.device("meta"):
            create_model(spec["name"], **spec["options"])
    except ValueError as err:
        hint = "--task" if "does not support task" in str(err) else "--model/--model-option"
        raise click.BadParameter(str(err), param_hint=hint) from None


RESERVED_MODEL_OPTIONS = ("num_classes", "in_channels")  # the training loop sets these from the dataset


def parse_model_options(pairs: tuple[str, ...], model: str | None = None) -> dict:
    """--model-option [MODEL:]KEY=VALUE pairs -> the options of `model`; VALUE is a Python literal
    (1e-5, 8, True) or else a string. A pair with a MODEL: prefix applies to that model only (so one
    compare can give dia_odenet:rtol=1e-5 without giving rtol to the discrete models); model=None
    keeps only the pairs without a prefix."""
    options = {}
    for pair in pairs:
        head, sep, value = pair.partition("=")
        target, colon, key = head.rpartition(":")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"expected [MODEL:]KEY=VALUE, got {pair!r}", param_hint="--model-option")
        if colon and target.strip() not in list_models():
            unknown = unknown_name("model", target.strip(), list_models(), see="`dia-ode ls models`")
            raise click.BadParameter(f"{pair!r} targets an {unknown}", param_hint="--model-option")
        if key in RESERVED_MODEL_OPTIONS:
            raise click.BadParameter(f"{key} comes from the dataset and cannot be set", param_hint="--model-option")
        if colon and target.strip() != model:
            continue
        options[key] = _option_value(value, f"{model or 'every model'}: {key}", "--model-option")
    return options


def parse_task_options(pairs: tuple[str, ...]) -> dict:
    """--task-option KEY=VALUE pairs -> the task's options (VALUE as in parse_model_options); the task
    itself checks names and values (tasks.get_task)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--task-option")
        options[key.strip()] = _option_value(value, key.strip(), "--task-option")
    return options


def _option_value(text: str, what: str, hint: str):
    """A Python literal (1e-5, 8, True; true and false too, as a shell user writes them), or else the
    string; BadParameter for a non-finite number."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = {"true": True, "false": False}.get(text.strip(), text.strip())
    if not _finite(value):
        raise click.BadParameter(f"{what}={text.strip()} is not a finite number", param_hint=hint)
    return value


def _finite(value) -> bool:
    """False for nan/inf anywhere in a model option: 1e999 is a literal inf, and 'nan' a string that a
    constructor's float() would turn into nan."""
    if isinstance(value, (list, tuple, set)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, complex):
        return math.isfinite(value.real) and math.isfinite(value.imag)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:  # not a number at all: the model's own check names it
            return True
    return True


def option_targets(pairs: tuple[str, ...]) -> set[str]:
    """The models that --model-option MODEL:KEY=VALUE pairs name."""
    return {pair.partition("=")[0].rpartition(":")[0].strip() for pair in pairs} - {""}


def _distinct_seeds(ctx: click.Context, param: click.Parameter, seeds: list[int] | None) -> tuple[int, ...] | None:
    """A repeated seed would count one run twice in every mean and interval."""
    if seeds is None:
        return None
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise click.BadParameter(f"seed {repeated[0]} is listed twice")
    return tuple(seeds)


seeds_option = click.option(
    "--seeds", type=CommaList(click.IntRange(0, 2**32 - 1)), default=None, callback=_distinct_seeds,
    metavar="LIST",
    help="Comma-separated seeds, e.g. 0,1,2: one run per seed, and tables give mean ± std, a 95% interval "
         "and n over them (instead of --seed).")


def check_seeds(ctx: click.Context, seeds: tuple[int, ...] | None) -> None:
    """--seeds and an explicit --seed exclude each other."""
    if seeds and ctx.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--seeds and --seed exclude each other; give every seed in --seeds")


model_option = click.option(
    "--model-option", "model_option_pairs", multiple=True, metavar="KEY=VALUE",
    help="Any constructor option of the model, e.g. rtol=1e-5, width=16, num_steps=8, method=rk4 (repeatable); "
         "MODEL:KEY=VALUE gives it to one model only (`dia-ode ls models --options MODEL` lists them).")


task_option = click.option(
    "--task-option", "task_option_pairs", multiple=True, metavar="KEY=VALUE",
    help="An option of the task, e.g. schedule=cosine, timesteps=1000, sample_every=10 for diffusion "
         "(repeatable; `dia-ode ls tasks` lists them).")


def problem_parameter_options(command):
    """--mu and --eigenvalues: the parameters of the classic problems (dia_ode.stiffness.problems), for
    every command that takes --problem."""
    options = [
        click.option("--mu", type=FiniteFloat(min=0, min_open=True), default=None, help="Van der Pol's mu (vdp)."),
        click.option("--eigenvalues", type=CommaList(FiniteFloat()), default=None,
                     help="Comma-separated real eigenvalues (linear), e.g. -1,-1000."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def build_problem(name: str, mu: float | None, eigenvalues: list[float] | None) -> Problem:
    """The problem `name` with the parameters given; a parameter it does not take is a usage error."""
    params = {key: value for key, value in (("mu", mu), ("eigenvalues", eigenvalues)) if value is not None}
    try:
        return get_problem(name, **params)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
