"""The `dia-ode train` command line equivalent to a RunSpec's config: what --dry-run prints and a
cached run's cmd.txt holds, so every run of the report can be reproduced by hand.

The line gives --model, --dataset, --epochs and --seed always, and every other field that differs from
what `dia-ode train --model M` would use (TrainConfig's defaults with the model's recipe applied);
for a model with a recipe the recipe-bound fields are given too, because giving some of them makes
train drop the others (engine.apply_recipe). Fields train has no option for are listed after a `#`.
"""

from __future__ import annotations

import ast
import shlex
from dataclasses import asdict

from dia_ode.engine import TrainConfig, recipe_config
from dia_ode.models import model_entry

ALWAYS = ("model", "dataset", "epochs", "seed")
RECIPE_BOUND = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs")
NO_OPTION = ("milestones", "gamma", "split_seed", "extended_from")  # not on `dia-ode train`


def train_command(cfg: TrainConfig) -> str:
    """`dia-ode train --model ... --seed S` reproducing `cfg` (see the module docstring)."""
    values = asdict(cfg)
    plain = asdict(recipe_config({**asdict(TrainConfig()), "model": cfg.model}, {"model"}))
    has_recipe = bool(model_entry(cfg.model).recipe)
    args, missing = ["dia-ode", "train"], []
    for name, value in values.items():
        wanted = name in ALWAYS or value != plain[name] or (has_recipe and name in RECIPE_BOUND)
        if not wanted:
            continue
        if name in NO_OPTION:
            missing.append(f"{name}={value}")
        elif name == "model_options":
            for key, option in sorted(value.items()):
                args += ["--model-option", f"{key}={_literal(option)}"]
        elif name in ("augment", "sync_bn"):
            args += [] if value == (name == "augment") else [f"--{'no-augment' if name == 'augment' else 'sync-bn'}"]
        elif name == "nesterov":
            args.append("--nesterov" if value else "--no-nesterov")
        elif name in ("compile", "channels_last"):  # flags: given only when set
            args += [f"--{name.replace('_', '-')}"] if value else []
        elif value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    line = shlex.join(args)
    return f"{line}  # also: {', '.join(missing)}" if missing else line


def _literal(value) -> str:
    """A model option as --model-option reads it back: a string that would parse as a literal is quoted."""
    if not isinstance(value, str):
        return str(value)
    try:
        ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value  # read back as the same string
    return repr(value)
