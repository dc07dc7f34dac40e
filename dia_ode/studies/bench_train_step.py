"""Benchmarks that print ratios measured in one process (this machine is noisy).

`bench_train_step` times full SGD steps (forward, backward, update) of several models on the same random
batch: a classifier's cross-entropy step, or a UNet's DDPM step (tasks/diffusion.py). Rounds are interleaved
(model A, B, C, A, B, C, ...) so that slow phases of the machine hit every model alike, and each model's
time is its fastest round: interference from other processes only ever adds time, so the minimum is the
least noisy estimate of what a step costs.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
from torch.nn import functional as F

from dia_ode.models import create_model, model_entry
from dia_ode.tasks import get_task


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
               loss: Callable | None = None, phase: Callable[[str], ContextManager] | None = None) -> None:
    """One SGD step of `loss(model, x, y)` (default cross-entropy).

    phase: called with "optimizer" (zero_grad, then the update), "forward" and "backward" around those
    parts of the step, for a caller that measures them apart (bench_ops's counter); None measures nothing.
    """
    loss = loss or _cross_entropy
    phase = phase or (lambda name: nullcontext())
    with phase("optimizer"):
        optimizer.zero_grad(set_to_none=True)
    with phase("forward"):
        value = loss(model, x, y)
    with phase("backward"):
        value.backward()
    with phase("optimizer"):
        optimizer.step()


def bench_batch_and_models(models: list[str], *, batch_size: int, image_size: int, in_channels: int,
                           num_classes: int = 10, device: torch.device | str = "cpu", channels_last: bool = False,
                           seed: int = 0, model_options: dict[str, dict] | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.nn.Module]]:
    """A random batch (x, y) and the models built for its shape, on `device`, seeded.

    Each model gets the data options it takes (num_classes, in_channels, image_size) and then its own
    entry of model_options (name -> constructor options), which wins.
    """
    torch.manual_seed(seed)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, in_channels, image_size, image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(num_classes, (batch_size,), device=device)
    data_options = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    built = {}
    for name in models:
        options = {k: v for k, v in data_options.items() if k in model_entry(name).options()}
        options |= (model_options or {}).get(name, {})
        built[name] = create_model(name, **options).to(device, memory_format=memory_format)
    return x, y, built


def time_train_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                     loss: Callable | None = None) -> float:
    """Mean seconds of one SGD step over `steps` steps of `loss(model, x, y)` (default cross-entropy)."""
    optimizer = bench_optimizer(model)
    model.train()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x, y, loss)
    sync()
    return (time.perf_counter() - start) / steps


def bench_train_step(models: list[str], *, batch_size: int = 64, image_size: int = 32, in_channels: int = 3,
                     num_classes: int = 10, steps: int = 3, rounds: int = 7, device: torch.device | str = "cpu",
                     channels_last: bool = False, seed: int = 0) -> list[dict]:
    """Train-step time and parameter count of each model; ratios relative to the first.

    Returns:
        One row per model: model, params, step_seconds (fastest round), step_seconds_median,
        step_seconds_all (every round), ratio_to_first (of step_seconds).
    """
    x, y, built = bench_batch_and_models(models, batch_size=batch_size, image_size=image_size,
                                         in_channels=in_channels, num_classes=num_classes, device=device,
                                         channels_last=channels_last, seed=seed)
    losses = {name: step_loss(name) for name in models}
    for name, model in built.items():
        time_train_steps(model, x, y, 1, losses[name])  # warm-up: allocator, kernels, lazy init
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in built.items():
            times[name].append(time_train_steps(model, x, y, steps, losses[name]))
    first = min(times[models[0]])
    rows = []
    for name in models:
        rows.append({"model": name, "params": sum(p.numel() for p in built[name].parameters()),
                     "step_seconds": min(times[name]), "step_seconds_median": statistics.median(times[name]),
                     "step_seconds_all": times[name], "ratio_to_first": min(times[name]) / first})
    return rows
