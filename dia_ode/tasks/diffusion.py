"""Denoising diffusion (DDPM, Ho et al. 2020, arXiv 2006.11239): a UNet learns the noise of the forward process.

The task owns the process, the network only computes eps(x_t, t) (improved-diffusion's split): the
noise schedule (noise_schedule.py), the loss ||eps - eps_theta(x_t, t)||^2 at a timestep drawn for
each image, and the samplers (diffusion_samplers.py) behind one call, `generate`. Images are scaled
to [-1, 1] (the normalisation mean = std = 0.5), labels are ignored. Training draws the batch's
timesteps stratified over [0, T) (one per 1 / B of the range, then jittered: the marginal is uniform
as in Ho et al., with less variance per batch). Evaluation scores each image once in every quarter
of the timesteps, with noise from a fixed seed, so val_loss is comparable between epochs and the
per-quarter losses (loss_q1 = the least noisy quarter .. loss_q4 = the noisiest) share one count.

Options (`dia-ode train --task diffusion --task-option KEY=VALUE`):
    schedule      "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    timesteps     T, 1000 by default
    sample_every  draw a grid of samples (DDIM, 50 steps, a fixed seed) every this many epochs and after
                  the last one, as figures/samples/epoch_NNNN.png|pdf; 0: never
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from dia_ode.data import Dataset, Split, global_batches, iterate_batches, with_standard_strides
from dia_ode.solvers.backends import DEFAULT_BACKEND, DEFAULT_CONTROLLER
from dia_ode.tasks.base import AbstractTask
from dia_ode.tasks.classification import ClassificationTask
from dia_ode.tasks.diffusion_samplers import ddim_sample, ddpm_sample, probability_flow_sample
from dia_ode.tasks.noise_schedule import SCHEDULES, make_schedule
from dia_ode.tasks.sample_grid import sample_grid
from dia_ode.util import did_you_mean

QUARTERS = 4
SAMPLERS = ("ddpm", "ddim", "ode")
GRID_SEED = 0  # the training figures' samples: the same noise every epoch, so the grids show learning


@dataclass
class Generated:
    """What `DiffusionTask.generate` made.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1] pixel units, on the CPU.
        nfe: evaluations of the noise predictor per sample (the same for every batch but an adaptive ODE
            solve's; there the mean over batches, and with per-sample steps the mean over samples).
        seconds: wall-clock time of the sampling.
        solver: for the ODE sampler, the first batch's solve: accepted / rejected steps and every
            accepted step's start and size in log sbar (diffusion_samplers.probability_flow_sample).
    """

    images: torch.Tensor
    nfe: float
    seconds: float
    solver: dict = field(default_factory=dict)


class DiffusionTask(AbstractTask):
    """DDPM training of a noise predictor (module docstring)."""

    name = "diffusion"
    dataset_type = Dataset
    dataset_names = ClassificationTask.dataset_names
    metric_names = ("loss", *(f"loss_q{k + 1}" for k in range(QUARTERS)))
    selection_metric = "loss"
    higher_is_better = False

    def __init__(self, schedule: str = "linear", timesteps: int = 1000, sample_every: int = 10, **unknown: Any
                 ) -> None:
        if unknown:
            takes = ("schedule", "timesteps", "sample_every")
            raise ValueError(f"task 'diffusion' has no option {', '.join(sorted(unknown))}"
                             f"{did_you_mean(sorted(unknown), takes)}; it takes {', '.join(takes)}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}"
                             f"{did_you_mean(str(schedule), SCHEDULES)}")
        if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < QUARTERS:
            raise ValueError(f"timesteps must be an integer >= {QUARTERS}, got {timesteps!r}")
        if not isinstance(sample_every, int) or isinstance(sample_every, bool) or sample_every < 0:
            raise ValueError(f"sample_every must be an integer >= 0, got {sample_every!r}")
        self.schedule = make_schedule(schedule, timesteps)
        self.sample_every = sample_every
        self._eval_generator: torch.Generator | None = None

    @property
    def timesteps(self) -> int:
        return self.schedule.steps

    def normalisation(self, dataset: Dataset) -> dict[str, list[float]]:
        return {"mean": [0.5] * dataset.in_channels, "std": [0.5] * dataset.in_channels}  # pixels -> [-1, 1]

    def model_options(self, dataset: Dataset, accepted: Iterable[str]) -> dict[str, Any]:
        options: dict[str, Any] = {"in_channels": dataset.in_channels}
        if "image_size" in accepted:
            options["image_size"] = dataset.image_size
        return options

    def batches(self, split: Split, batch_size: int, *, dataset: Dataset, device: torch.device,
                shuffle: bool = False, generator: torch.Generator | None = None, augment: bool = False,
                shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, int]]]:
        """(images in [-1, 1], labels, (offset, size)): this rank's part of a global batch of `size`
        images, starting at `offset` in it, so the loss can draw the global batch's timesteps and noise."""
        norm = self.normalisation(dataset)
        rank, world = shard
        parts = iterate_batches(split, batch_size, mean=norm["mean"], std=norm["std"], shuffle=shuffle,
                                generator=generator, augment=dataset.augment if augment else None, device=device,
                                shard=shard)
        for (x, y), (_, size) in zip(parts, global_batches(len(split), batch_size, world)):
            offset = sum(len(part) for part in torch.arange(size).tensor_split(world)[:rank])
            yield x, y, (offset, size)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, tuple[int, int]]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        x0, _, (offset, size) = batch
        n = len(x0)
        # drawn for the whole global batch (from torch's generator, which the trainer seeds alike on every
        # rank) and sliced: under torchrun each rank takes its own part of one draw, as one process would
        t = ((torch.arange(size) + torch.rand(size)) * self.timesteps / size).long().clamp(max=self.timesteps - 1)
        noise = torch.randn((size, *x0.shape[1:]))
        part = slice(offset, offset + n)
        loss = self._noise_error(model, x0, t[part].to(x0.device), noise[part].to(x0.device)).mean()
        return self.add_regularization(model, loss, {"loss": loss.item() * n, "count": n})

    def _noise_error(self, model: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared error of the predicted noise at timesteps t (B,)."""
        x_t = with_standard_strides(self.schedule.q_sample(x0, t, noise))  # (B, C, H, W); why: data/strides.py
        predicted = model(x_t, t.to(x0.dtype))
        return F.mse_loss(predicted, noise, reduction="none").flatten(1).mean(dim=1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any], dist: Any = None) -> dict[str, float]:
        """The base evaluation with this call's noise drawn from a fixed seed (module docstring)."""
        self._eval_generator = torch.Generator().manual_seed(0)
        try:
            return super().evaluate(model, batches, dist)
        finally:
            self._eval_generator = None

    def eval_sums(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, Any]) -> dict[str, float]:
        x0 = batch[0]
        n, width = len(x0), self.timesteps / QUARTERS
        generator = self._eval_generator or torch.Generator().manual_seed(0)
        sums: dict[str, float] = {"count": n}
        for k in range(QUARTERS):
            t = (k * width + torch.rand(n, generator=generator) * width).long().clamp(max=self.timesteps - 1)
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
            sums[f"loss_q{k + 1}"] = self._noise_error(model, x0, t.to(x0.device), noise).sum().item()
        sums["loss"] = sum(sums[f"loss_q{k + 1}"] for k in range(QUARTERS)) / QUARTERS
        return sums

    def noise_predictor(self, model: nn.Module):
        """eps(x, t) of `model` for the samplers: float64 CPU state in, float64 CPU noise out, the model
        computing in its own dtype on its own device."""
        parameter = next(model.parameters())

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = model(x.to(parameter.device, parameter.dtype), t.to(parameter.device, parameter.dtype))
            return out.to("cpu", torch.float64)
        return eps

    @torch.no_grad()
    def generate(self, model: nn.Module, num: int, image_shape: tuple[int, int, int], *, sampler: str = "ddpm",
                 steps: int | None = None, eta: float = 0.0, method: str = "dopri5", rtol: float = 1e-3,
                 atol: float = 1e-3, max_num_steps: int | None = None, seed: int = 0,
                 batch_size: int = 500, backend: str = DEFAULT_BACKEND, controller: str = DEFAULT_CONTROLLER,
                 per_sample: bool = False) -> Generated:
        """`num` images from the model by a sampler: "ddpm" (T steps), "ddim" (`steps`, default 50; `eta`),
        "ode" (the probability-flow ODE: adaptive `method` with rtol / atol, or a fixed-step method with
        `steps`; at most max_num_steps attempted steps per batch; on the engine that backend, controller
        and per_sample choose, solvers/backends.py). Seeded: the same seed and batch_size give the same
        images (the noise is drawn batch by batch, and an adaptive solve in batch steps controls the error
        of a whole batch).

        Raises:
            ValueError: an unknown sampler, or steps out of range.
            StepBudgetExceeded: the ODE solve needed more than max_num_steps steps (on dia_ode: a sample's
                solve ended without success).
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{sampler}'; valid: {', '.join(SAMPLERS)}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if sampler == "ddim" and (steps or 50) > self.timesteps:
            raise ValueError(f"DDIM steps must be at most the run's T = {self.timesteps}, got {steps or 50}")
        model.eval()
        eps, generator = self.noise_predictor(model), torch.Generator().manual_seed(seed)
        parts, nfes, solver = [], [], {}
        start = time.perf_counter()
        for first in range(0, num, batch_size):
            shape = (min(batch_size, num - first), *image_shape)
            if sampler == "ddpm":
                x, stats = ddpm_sample(eps, self.schedule, shape, generator)
            elif sampler == "ddim":
                x, stats = ddim_sample(eps, self.schedule, shape, steps or 50, generator, eta=eta)
            else:
                x, stats = probability_flow_sample(eps, self.schedule, shape, generator, method=method, rtol=rtol,
                                                   atol=atol, steps=steps, max_num_steps=max_num_steps,
                                                   backend=backend, controller=controller, per_sample=per_sample)
                solver = solver or {k: v for k, v in stats.items() if k != "nfe"}
            parts.append(((x.float() + 1) / 2).clamp(0, 1))  # [-1, 1] -> pixels
            nfes.append(stats["nfe"])
        return Generated(torch.cat(parts), sum(nfes) / len(nfes), time.perf_counter() - start, solver)

    def epoch_figures(self, model: nn.Module, dataset: Dataset, epoch: int, epochs: int) -> dict[str, Any]:
        if not self.sample_every or (epoch % self.sample_every and epoch != epochs):
            return {}
        shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
        steps = min(50, self.timesteps)
        made = self.generate(model, 64, shape, sampler="ddim", steps=steps, seed=GRID_SEED)
        return {f"samples/epoch_{epoch:04d}": sample_grid(made.images, f"epoch {epoch}: DDIM, {steps} steps")}
