"""Everything that decides a training run, saved as config.json and checked before any work."""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, replace

from dia_ode.models import model_entry  # a recipe is registry data: engine builds no model family

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "warmup_cosine")
# How a run computes (engine/acceleration.py applies them and refuses what a device cannot run)
PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# A task's training defaults where they differ from classification's. Detection: measured with
# `dia-ode train --task detection` (experiments/README.md D1): AdamW 2e-3 reaches val AP50 0.95 after
# 3 epochs of 2,000 digit scenes; SGD's 0.1 is the classifiers' setting.
# Diffusion: AdamW 2e-3 without weight decay and an EMA of the weights (what samples; Ho et al. use
# 0.9999 over 800k steps, 0.999 suits a few thousand), no augmentation (a cropped digit is not a digit);
# epochs measured to fit the 10-minute budget on 2 cores (experiments/README.md F1).
TASK_RECIPES: dict[str, dict] = {
    "detection": {"dataset": "digit-scenes", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4,
                  "batch_size": 32, "epochs": 12},
    "diffusion": {"dataset": "digits", "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.0, "batch_size": 64,
                  "epochs": 100, "augment": False, "ema_decay": 0.999},
}


class ConfigError(ValueError):
    """A config field holds a bad value; `option` names the field (the CLI turns it into --field-name)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class ConfigTypeError(ConfigError, TypeError):
    """A config field holds a value of the wrong type (a hand-edited config.json: epochs "5"); a TypeError
    too, as a dict of the wrong types has always been one to TrainConfig's callers."""


@dataclass
class TrainConfig:
    """A training run's configuration; defaults are the quick start's (dia_resnet20 on digits, SGD)."""

    model: str = "dia_resnet20"
    task: str = "classification"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64  # the global batch: with torchrun each of N ranks computes batch_size / N
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # SGD
    nesterov: bool = False  # SGD
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine and step set the lr per epoch, warmup_cosine per step
    warmup_epochs: float = 0.0  # warmup_cosine: linear warm-up length
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of the epochs
    gamma: float = 0.1  # step schedule: lr factor at each milestone
    clip_grad: float | None = None  # max global gradient norm; None: no clipping
    augment: bool = True
    sync_bn: bool = False  # data-parallel: convert BatchNorm to SyncBatchNorm
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.1
    train_examples: int | None = None  # train on a seeded random subset of this many examples; None: all
    device: str = "auto"
    model_options: dict = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)  # the task's own settings (tasks/: e.g. a noise schedule)
    ema_decay: float | None = None  # keep an exponential moving average of the weights; it is evaluated and saved
    extended_from: tuple[int, ...] = ()  # earlier totals of `epochs`, one per resume that extended the run
    precision: str = "fp32"  # autocast type of forward and loss: fp32 (none), bf16, fp16 (with a gradient scaler)
    compile: bool = False  # train through torch.compile of the model
    compile_mode: str = "default"  # torch.compile's mode
    channels_last: bool = False  # weights and activations in the channels_last memory format

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from config.json (unknown keys such as versions are ignored; missing ones take
        their defaults, so configs written before a field existed still load).

        Raises:
            ConfigTypeError (a ConfigError and a TypeError): a known key holds a value of another type than
                its field's annotation (epochs "5", model_options [1, 2]), naming the key and the type.
        """
        known = {f.name for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        for key, value in d.items():
            if key in known:
                _check_type(key, value, hints[key])
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.milestones = tuple(cfg.milestones)
        cfg.extended_from = tuple(cfg.extended_from)
        return cfg

    def extended(self, epochs: int) -> "TrainConfig":
        """This config with `epochs` in total; more than now records the old total in extended_from.

        An extension never changes the lr of an epoch already planned: the old schedule runs to its
        end, then the added epochs run the same schedule again over their own length (a warm restart,
        SGDR, arXiv 1608.03983), so a resumed-and-extended run is reproducible from its config alone.
        """
        if epochs == self.epochs:
            return replace(self)
        if epochs < self.epochs:
            raise ValueError(f"epochs={epochs} is fewer than the run's {self.epochs}: a shorter schedule would change "
                             f"the lr of epochs already trained; start a new run")
        return replace(self, epochs=epochs, extended_from=(*self.extended_from, self.epochs))

    def schedule_segment(self, epoch: int) -> tuple["TrainConfig", int]:
        """(config of the schedule segment holding `epoch`, the epoch's index within it), 0-based.

        Without extensions that is (self, epoch). A restarted segment keeps the first one's warm-up
        as the same fraction of its length.
        """
        bounds = (0, *self.extended_from, self.epochs)
        k = max(i for i in range(len(bounds) - 1) if bounds[i] <= epoch)
        if k == 0 and not self.extended_from:
            return self, epoch
        length = bounds[k + 1] - bounds[k]
        warmup = self.warmup_epochs * length / bounds[1] if k else self.warmup_epochs
        return replace(self, epochs=length, warmup_epochs=warmup, extended_from=()), epoch - bounds[k]

    def validate(self) -> None:
        """Raise ConfigError (a ValueError) naming the first bad field."""
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma", "clip_grad", "ema_decay"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):  # a hand-edited config.json can hold Infinity
                raise ConfigError(name, f"{name} must be a finite number, got {value}")
        if self.epochs < 1:
            raise ConfigError("epochs", f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError("batch_size", f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError("lr", f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown optimizer '{self.optimizer}'; valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError("schedule", f"unknown schedule '{self.schedule}'; valid: {', '.join(SCHEDULES)}")
        if self.warmup_epochs and self.schedule != "warmup_cosine":
            raise ConfigError("warmup_epochs", f"warmup_epochs applies to schedule warmup_cosine, not '{self.schedule}'")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError("warmup_epochs", f"warmup_epochs must be in [0, epochs={self.epochs}), "
                                               f"got {self.warmup_epochs}")
        if list(self.extended_from) != sorted(set(self.extended_from)) or \
                any(not 0 < e < self.epochs for e in self.extended_from):
            raise ConfigError("extended_from", f"extended_from must rise strictly within (0, epochs={self.epochs}), "
                                               f"got {list(self.extended_from)}")
        if self.train_examples is not None and self.train_examples < 1:
            raise ConfigError("train_examples", f"train_examples must be >= 1, got {self.train_examples}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError("clip_grad", f"clip_grad must be > 0, got {self.clip_grad}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError("ema_decay", f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"unknown precision '{self.precision}'; valid: {', '.join(PRECISIONS)}")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError("compile_mode", f"unknown compile mode '{self.compile_mode}'; valid: "
                                              f"{', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and not self.compile:
            raise ConfigError("compile_mode", f"compile_mode {self.compile_mode} applies with compile")


_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a JSON object"}


def _fits(value, hint) -> bool:
    """Whether a JSON-loaded value fits a field's annotation (an int is a float; a bool is neither)."""
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:  # tuple[X, ...]: a JSON list (or a tuple) of X
        (item, *_) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _expected(hint) -> str:
    """The words for a field's type in a message: "an integer", "a string or null", "a list of numbers"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else _expected(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return f"a list of {'integers' if item is int else 'numbers' if item is float else _expected(item)}"
    return _WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _check_type(key: str, value, hint) -> None:
    """ConfigTypeError naming the field and the type it needs when `value` does not fit `hint`."""
    if not _fits(value, hint):
        shown = json.dumps(value, default=repr)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigTypeError(key, f"{key} must be {_expected(hint)}, got {shown}")


def apply_recipe(values: dict, recipe: dict, given: set[str]) -> dict:
    """Config values with a model's recipe filled in wherever the user gave no value.

    A recipe is one coherent setting: choosing another optimizer drops the recipe's optimizer-bound
    values (lr, weight decay, schedule, warm-up), choosing a schedule without warm-up drops its warm-up,
    and choosing the number of epochs scales the recipe's warm-up to the same fraction of the run.

    Args:
        values: field -> value as collected (defaults included).
        recipe: the model registry's training defaults for the model (e.g. optimizer adamw).
        given: the fields the user set explicitly; those always win.
    """
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ValueError(f"recipe names unknown config fields: {', '.join(unknown)}")
    applied = {k: v for k, v in recipe.items() if k not in given}
    if "warmup_epochs" in applied and "epochs" in given and recipe.get("epochs"):
        # the recipe's warm-up is a fraction of its own length: keep the fraction for the user's epochs
        applied["warmup_epochs"] = recipe["warmup_epochs"] * values["epochs"] / recipe["epochs"]
    if "optimizer" in given and values["optimizer"] != recipe.get("optimizer", values["optimizer"]):
        for key in ("lr", "weight_decay", "schedule", "warmup_epochs", "momentum", "nesterov"):
            applied.pop(key, None)
    if "schedule" in given and values["schedule"] != "warmup_cosine":
        applied.pop("warmup_epochs", None)
    return {**values, **applied}


def recipe_config(values: dict, given: set[str]) -> TrainConfig:
    """The TrainConfig of `values` with the model's registry recipe, then the task's (TASK_RECIPES, which
    wins where both set a field), filled in where `given` has no field.

    Args:
        values: TrainConfig fields, "model" included (defaults may be among them).
        given: the fields the user chose; the recipe never overrides those.
    """
    recipe = {**dict(model_entry(values["model"]).recipe), **TASK_RECIPES.get(values.get("task", ""), {})}
    return TrainConfig(**apply_recipe(values, recipe, given))
