"""Benchmarks that print ratios measured in one process (this machine is noisy).

`bench_train_step` times full training steps (forward, backward, update) of several models on the same random
batch: a classifier's cross-entropy step, or a UNet's DDPM step (tasks/diffusion.py), in one or more settings
(autocast precision, eager or torch.compile), each taken as the trainer takes it (engine/acceleration.py).
Rounds are interleaved over every model and setting (A, B, C, A, B, C, ...) so that slow phases of the machine
hit them all alike, and each one's time is its fastest round: interference from other processes only ever adds
time, so the minimum is the least noisy estimate of what a step costs.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch
from torch.nn import functional as F

from dia_ode.engine.acceleration import (GradientStep, autocast, channels_last_batch, check_acceleration, compiled,
                                         to_channels_last)
from dia_ode.engine.config import ConfigError
from dia_ode.models import create_model, model_entry
from dia_ode.tasks import get_task

COMPILED_WARMUP_STEPS = 3  # the first call compiles; reduce-overhead records its CUDA graphs on a later one


@dataclass(frozen=True)
class Setting:
    """How a step computes: its autocast precision, and eager or through torch.compile."""

    precision: str = "fp32"
    compiled: bool = False

    @property
    def label(self) -> str:
        return f"{self.precision} {'compiled' if self.compiled else 'eager'}"


BASELINE = Setting()  # what the other settings' step times are divided by


def bench_settings(precisions: Sequence[str], compile: bool = False) -> list[Setting]:
    """Each precision (in the order given) eager, and with `compile` compiled too."""
    return [Setting(p, c) for p in dict.fromkeys(precisions) for c in ((False, True) if compile else (False,))]


def check_settings(models: Sequence[str], settings: Sequence[Setting], *, compile_mode: str = "default",
                   channels_last: bool = False, device: torch.device | str = "cpu") -> None:
    """Raise check_acceleration's ConfigError for the first setting that cannot run on `device`, or that
    a model refuses (a continuous-depth one in half precision: the message names it)."""
    device = torch.device(device)
    for setting in settings:
        options = dict(precision=setting.precision, compile=setting.compiled, compile_mode=compile_mode,
                       channels_last=channels_last, device=device)
        check_acceleration(**options)
        for name in models:
            try:
                check_acceleration(**options, continuous=model_entry(name).kind == "continuous")
            except ConfigError as err:
                raise ConfigError(err.option, f"{name}: {err}") from None


def _cross_entropy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def step_loss(name: str) -> Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss a model's training step backpropagates: cross-entropy for a classifier, the DDPM noise
    error (a random timestep per image) for a model that serves diffusion only (the UNets)."""
    tasks = model_entry(name).tasks
    if "classification" in tasks:
        return _cross_entropy
    if "diffusion" in tasks:
        task = get_task("diffusion")
        return lambda model, x, y: task.loss(model, (x, y, (0, len(x))))[0]
    raise ValueError(f"model '{name}' serves neither classification nor diffusion: no train step to time")


def bench_optimizer(model: torch.nn.Module, foreach: bool | None = None) -> torch.optim.Optimizer:
    """The benches' optimizer: SGD with momentum 0.9 as the trainer's default recipe, without its weight
    decay (the lr changes no step's cost).

    foreach: None lets torch choose for the device (a loop over parameters on the CPU, multi-tensor
    kernels on CUDA); True or False forces one.
    """
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=foreach)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss: Callable | None = None, phase: Callable[[str], ContextManager] | None = None, *,
               precision: str = "fp32", gradient: GradientStep | None = None) -> None:
    """One SGD step of `loss(model, x, y)` (default cross-entropy), as the trainer takes it: the forward
    and loss under `precision`'s autocast, backward and update through `gradient`.

    phase: called with "optimizer" (zero_grad, then the update), "forward" and "backward" around those
    parts of the step, for a caller that measures them apart (bench_ops's counter); None measures nothing.
    gradient: None makes a GradientStep per call; under fp16 pass one kept across steps (its loss scale adapts).
    """
    loss = loss or _cross_entropy
    phase = phase or (lambda name: nullcontext())
    gradient = gradient or GradientStep(precision, x.device)
    with phase("optimizer"):
        optimizer.zero_grad(set_to_none=True)
    with phase("forward"), autocast(precision, x.device):
        value = loss(model, x, y)
    with phase("backward"):
        gradient.backward(value)
    with phase("optimizer"):
        gradient.step(optimizer)


def bench_batch_and_models(models: list[str], *, batch_size: int, image_size: int, in_channels: int,
                           num_classes: int = 10, device: torch.device | str = "cpu", channels_last: bool = False,
                           seed: int = 0, model_options: dict[str, dict] | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.nn.Module]]:
    """A random batch (x, y) and the models built for its shape, on `device`, seeded; with channels_last
    both in the trainer's layout (acceleration.to_channels_last and channels_last_batch).

    Each model gets the data options it takes (num_classes, in_channels, image_size) and then its own
    entry of model_options (name -> constructor options), which wins.
    """
    torch.manual_seed(seed)
    device = torch.device(device)
    x = torch.randn(batch_size, in_channels, image_size, image_size, device=device)
    x = channels_last_batch(x) if channels_last else x
    y = torch.randint(num_classes, (batch_size,), device=device)
    data_options = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    built = {}
    for name in models:
        options = {k: v for k, v in data_options.items() if k in model_entry(name).options()}
        options |= (model_options or {}).get(name, {})
        model = create_model(name, **options).to(device)
        built[name] = to_channels_last(model) if channels_last else model
    return x, y, built


class TimedStep:
    """One model's training step in one setting: the model (compiled in `compile_mode` for a compiled
    setting: the parameters stay the model's), with its own optimizer and gradient step across rounds."""

    def __init__(self, model: torch.nn.Module, loss: Callable, setting: Setting, device: torch.device,
                 compile_mode: str = "default") -> None:
        self.model, self.loss, self.setting = model, loss, setting
        self.net = compiled(model, compile_mode) if setting.compiled else model
        self.optimizer = bench_optimizer(model)
        self.gradient = GradientStep(setting.precision, device)

    def seconds(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
        """Mean seconds of one step over `steps` steps."""
        self.model.train()
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            train_step(self.net, self.optimizer, x, y, self.loss, precision=self.setting.precision,
                       gradient=self.gradient)
        sync()
        return (time.perf_counter() - start) / steps


def _recompile_limits(compiled_steps: int) -> ContextManager:
    """Dynamo's recompile limits times the compiled (model, setting) pairs, so each gets a lone training
    run's: models of one family share their forward's code, each pair compiles it once more, and past
    the limit dynamo runs it eager without failing. (The older names: torch before 2.6 knows only them.)"""
    if not compiled_steps:
        return nullcontext()
    config = torch._dynamo.config
    return config.patch(cache_size_limit=config.cache_size_limit * compiled_steps,
                        accumulated_cache_size_limit=config.accumulated_cache_size_limit * compiled_steps)


def bench_train_step(models: list[str], *, batch_size: int = 64, image_size: int = 32, in_channels: int = 3,
                     num_classes: int = 10, steps: int = 3, rounds: int = 7, device: torch.device | str = "cpu",
                     channels_last: bool = False, settings: Sequence[Setting] = (BASELINE,),
                     compile_mode: str = "default", seed: int = 0,
                     model_options: dict[str, dict] | None = None) -> list[dict]:
    """Train-step time, images per second and parameter count of each model in each setting.

    Raises:
        ConfigError: a setting that cannot run on `device` (check_settings).

    Returns:
        One row per setting and model, setting-major: model, precision, compiled, setting (its label),
        params, step_seconds (fastest round), step_seconds_median, step_seconds_all (every round),
        images_per_second (batch_size / step_seconds), ratio_to_first (of step_seconds, to the setting's
        first model).
    """
    device = torch.device(device)
    check_settings(models, settings, compile_mode=compile_mode, channels_last=channels_last, device=device)
    x, y, built = bench_batch_and_models(models, batch_size=batch_size, image_size=image_size,
                                         in_channels=in_channels, num_classes=num_classes, device=device,
                                         channels_last=channels_last, seed=seed, model_options=model_options)
    cells = {(setting, name): TimedStep(model, step_loss(name), setting, device, compile_mode)
             for setting in settings for name, model in built.items()}
    times: dict[tuple[Setting, str], list[float]] = {key: [] for key in cells}
    with _recompile_limits(sum(setting.compiled for setting, _ in cells)):
        for (setting, _), cell in cells.items():  # warm-up: allocator, kernels, lazy init, compilation
            cell.seconds(x, y, COMPILED_WARMUP_STEPS if setting.compiled else 1)
        for _ in range(rounds):
            for key, cell in cells.items():
                times[key].append(cell.seconds(x, y, steps))
    rows = []
    for setting, name in cells:
        best, first = min(times[setting, name]), min(times[setting, models[0]])
        rows.append({"model": name, "precision": setting.precision, "compiled": setting.compiled,
                     "setting": setting.label, "params": sum(p.numel() for p in built[name].parameters()),
                     "step_seconds": best, "step_seconds_median": statistics.median(times[setting, name]),
                     "step_seconds_all": times[setting, name], "images_per_second": batch_size / best,
                     "ratio_to_first": best / first})
    return rows


def setting_ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Each setting's step time over the baseline's (fp32 eager; else the first setting), per model:
    {"bf16 eager/fp32 eager": {model: ratio}}; below 1 the setting is faster."""
    labels = list(dict.fromkeys(r["setting"] for r in rows))
    base = BASELINE.label if BASELINE.label in labels else labels[0]
    base_seconds = {r["model"]: r["step_seconds"] for r in rows if r["setting"] == base}
    ratios: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["setting"] != base:
            ratios.setdefault(f"{r['setting']}/{base}", {})[r["model"]] = r["step_seconds"] / base_seconds[r["model"]]
    return ratios
