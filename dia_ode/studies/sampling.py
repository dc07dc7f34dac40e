"""Sampling a trained diffusion run and judging the samples: one setting, or a sweep of NFE against FID.

A *setting* is a sampler with its numbers (DDPM; DDIM with steps and eta; the probability-flow ODE
adaptive with rtol / atol or fixed-step with steps). `sample_setting` draws `num` images from a
run's EMA weights and measures them (analysis/sample_quality.py); `SWEEP` is the standard grid of
settings (DDPM 1000; DDIM 100 / 50 / 20 / 10; the ODE by dopri5 at rtol 1e-2 .. 1e-5 and by rk4 at
5 / 10 / 25 steps), run for one or more runs with one feature network and one seed, so every row of
the table is measured against the same references.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch

from dia_ode.analysis.sample_quality import FeatureNet, RealFeatures, sample_quality
from dia_ode.data import load_dataset
from dia_ode.rundir import LoadedRun, save_figure, write_json
from dia_ode.solvers.backends import DEFAULT_BACKEND, DEFAULT_CONTROLLER, SolverChoice
from dia_ode.tasks import DiffusionTask, get_task
from dia_ode.tasks.sample_grid import sample_grid


class NotADiffusionRun(ValueError):
    """The run directory holds a run of another task."""


@dataclass(frozen=True)
class Setting:
    """A sampler with its numbers; `label` names it in tables ("ddim 50", "ode dopri5 rtol 1e-03")."""

    sampler: str = "ddpm"
    steps: int | None = None  # ddim: its steps (default 50); ode: a fixed-step method's steps
    eta: float = 0.0  # ddim
    method: str = "dopri5"  # ode
    rtol: float = 1e-3  # ode, adaptive
    atol: float | None = None  # ode, adaptive; None: rtol
    max_steps: int = 1000  # ode: attempted steps per batch before StepBudgetExceeded
    backend: str = DEFAULT_BACKEND  # ode: the engine, its error controller and per-sample steps
    controller: str = DEFAULT_CONTROLLER
    per_sample: bool = False

    @property
    def label(self) -> str:
        if self.sampler == "ddpm":
            return "ddpm"
        if self.sampler == "ddim":
            return f"ddim {self.steps or 50}" + (f" eta {self.eta:g}" if self.eta else "")
        engine = SolverChoice(self.backend, self.controller, self.per_sample)
        engine = "" if engine == SolverChoice() else f" {engine.describe()}"
        if self.steps is not None:
            return f"ode {self.method} {self.steps} steps{engine}"
        return f"ode {self.method} rtol {self.rtol:.0e}{engine}"

    @property
    def tag(self) -> str:
        """The label as a file-name part: "ode-dopri5-rtol-1e-03"."""
        return self.label.replace(" ", "-")


SWEEP = (Setting("ddpm"), *(Setting("ddim", steps=n) for n in (100, 50, 20, 10)),
         *(Setting("ode", rtol=r) for r in (1e-2, 1e-3, 1e-4, 1e-5)),
         *(Setting("ode", method="rk4", steps=n) for n in (5, 10, 25)))


def diffusion_task(run: LoadedRun) -> DiffusionTask:
    """The run's task with its saved options (noise schedule, T).

    Raises:
        NotADiffusionRun: the run trained another task.
    """
    if run.task != "diffusion":
        raise NotADiffusionRun(f"{run.run_dir} trained task '{run.task}', not diffusion: `dia-ode sample` needs a "
                               f"run of `dia-ode train --task diffusion`")
    return cast(DiffusionTask, get_task("diffusion", run.config.get("task_options")))


def real_features(run: LoadedRun, net: FeatureNet) -> RealFeatures:
    """The feature network's reading of the run's real train and test images: what every setting is
    measured against."""
    config = run.config
    data = load_dataset(config["dataset"], config.get("data_dir"), val_fraction=config.get("val_fraction", 0.1),
                        split_seed=config.get("split_seed", 0))
    return RealFeatures.of(net, data.train, data.test)


def fits(run: LoadedRun, setting: Setting) -> str | None:
    """None when the setting can sample the run, else why not (DDIM with more steps than the run's T)."""
    timesteps = diffusion_task(run).timesteps
    if setting.sampler == "ddim" and (setting.steps or 50) > timesteps:
        return f"{setting.label}: more steps than the run's T = {timesteps}"
    return None


def sample_setting(run: LoadedRun, setting: Setting, *, num: int, seed: int, batch_size: int,
                   real: RealFeatures | None) -> tuple[torch.Tensor, dict]:
    """(images (N, C, H, W) in [0, 1], the result row) of one setting on one run; quality numbers only
    with the real images' features.

    Raises:
        NotADiffusionRun, StepBudgetExceeded (the ODE's max_steps), ValueError (a bad setting).
    """
    task = diffusion_task(run)
    made = task.generate(run.model, num, tuple(run.test.images.shape[1:]), sampler=setting.sampler,
                         steps=setting.steps, eta=setting.eta, method=setting.method, rtol=setting.rtol,
                         atol=setting.atol or setting.rtol, max_num_steps=setting.max_steps, seed=seed,
                         batch_size=batch_size, backend=setting.backend, controller=setting.controller,
                         per_sample=setting.per_sample)
    row = {"run": str(run.run_dir), "model": run.model_name, "dataset": run.dataset_name, "epoch": run.epoch,
           "setting": setting.label, **asdict(setting), "num": num, "seed": seed, "batch_size": batch_size,
           "nfe": made.nfe, "seconds": made.seconds}
    if setting.sampler == "ode":
        row["solver"] = made.solver
    if real is not None:
        row["quality"] = sample_quality(made.images, real)
    return made.images, row


def write_samples(out_dir: Path, images: torch.Tensor, row: dict) -> None:
    """samples.npz (uint8 images and the NFE), figures/samples.png|pdf, figures/steps (ODE), sample.json."""
    out_dir = Path(out_dir)
    pixels = (images * 255).round().to(torch.uint8).numpy()
    np.savez_compressed(out_dir / "samples.npz", images=pixels, nfe=np.float64(row["nfe"]))
    quality = row.get("quality")
    title = f"{row['model']}: {row['setting']}, NFE {row['nfe']:.0f}"
    if quality:
        title += f", FID {quality['fid']:.3g} (floor {quality['fid_floor']:.3g})"
    save_figure(sample_grid(images, title), out_dir / "figures", "samples")
    if row.get("solver"):
        save_figure(plot_steps(row["solver"], title), out_dir / "figures", "steps")
    write_json(out_dir / "sample.json", row)


def plot_steps(solver: dict, title: str = ""):
    """The probability-flow ODE's accepted step sizes against the noise level sbar where they start."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.exp(solver["log_sbar"]), solver["step"], marker="o", ms=3)
    ax.set(xscale="log", xlabel="noise level sbar = sqrt((1 - abar) / abar) at the step's start",
           ylabel="step size in log sbar", title=title or "probability-flow ODE steps")
    ax.invert_xaxis()  # sampling runs from noise to data
    ax.grid(alpha=0.3)
    return fig


def sweep(runs: list[LoadedRun], real: RealFeatures, *, num: int, seed: int, batch_size: int,
          settings: tuple[Setting, ...] | None = None, max_steps: int | None = None, progress=None,
          on_skip=None) -> list[dict]:
    """Every setting (default SWEEP) on every run: rows as sample_setting's, without the images.
    `progress(row)` is called after each; a setting the run cannot take (`fits`) is skipped with
    `on_skip(reason)`."""
    rows = []
    for run in runs:
        for setting in SWEEP if settings is None else settings:
            if max_steps is not None:
                setting = replace(setting, max_steps=max_steps)
            reason = fits(run, setting)
            if reason is not None:
                if on_skip is not None:
                    on_skip(f"{run.model_name}: skipped {reason}")
                continue
            _, row = sample_setting(run, setting, num=num, seed=seed, batch_size=batch_size, real=real)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def sweep_markdown(rows: list[dict]) -> str:
    """The sweep as a markdown table: model, setting, NFE, FID, FID / floor, confident fraction, seconds."""
    lines = ["| model | setting | NFE | FID | FID (first n) / floor | confident | seconds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        q = row["quality"]
        lines.append(f"| {row['model']} | {row['setting']} | {row['nfe']:.0f} | {q['fid']:.3g} | {q['fid_ratio']:.2f} | "
                     f"{q['confident']:.3f} | {row['seconds']:.1f} |")
    if rows:
        q = rows[0]["quality"]
        lines.append(f"\nFID: all {rows[0]['num']} samples against the training images. Floor: {q['matched_n']} real "
                     f"test images against them, {q['fid_floor']:.3g} (same feature network); the ratio compares "
                     f"the first {q['matched_n']} samples with it.")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[dict]):
    """FID against NFE, one line per model and sampler family, the floor as a dashed line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        family = row["sampler"] if row["sampler"] != "ode" else f"ode {row['method']}"
        groups.setdefault((row["model"], family), []).append(row)
    markers = {"ddpm": "*", "ddim": "o", "ode dopri5": "s", "ode rk4": "^"}
    for (model, family), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r["nfe"])
        ax.plot([r["nfe"] for r in members], [r["quality"]["fid"] for r in members], marker=markers.get(family, "."),
                label=f"{model}: {family}")
    if rows:
        q = rows[0]["quality"]
        ax.axhline(q["fid_floor"], color="gray", ls="--", label=f"floor ({q['matched_n']} real test images)")
    ax.set(xscale="log", yscale="log", xlabel="evaluations of the noise predictor (NFE)",
           ylabel="Fréchet distance (project classifier features)", title="sample quality against NFE")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


__all__ = ["NotADiffusionRun", "SWEEP", "Setting", "diffusion_task", "fits", "plot_steps", "plot_sweep",
           "real_features", "sample_setting", "sweep", "sweep_markdown", "write_samples"]
