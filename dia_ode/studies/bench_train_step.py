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
from typing import Callable

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


def time_train_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                     loss: Callable | None = None) -> float:
    """Mean seconds of one SGD step over `steps` steps of `loss(model, x, y)` (default cross-entropy)."""
    loss = loss or _cross_entropy
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model.train()
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss(model, x, y).backward()
        optimizer.step()
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
    torch.manual_seed(seed)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, in_channels, image_size, image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(num_classes, (batch_size,), device=device)
    data_options = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    built = {name: create_model(name, **{k: v for k, v in data_options.items() if k in model_entry(name).options()})
             .to(device, memory_format=memory_format) for name in models}
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
