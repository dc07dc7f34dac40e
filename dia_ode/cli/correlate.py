"""`dia-ode correlate RUN --protocol ...`: cross-block attention correlation, with its null references.

Every number is printed and saved next to the same measure on the untrained network of the run's
seed and on the trained attentions with each block's channels permuted, and next to how much the
attention learned (its spread over the images, its distance from the untrained gates); see
theory/correlation.md. Every figure and JSON entry names its protocol.
"""

from __future__ import annotations

import warnings

import click
import numpy as np
import torch

from dia_ode.analysis import plot_correlation_heatmaps
from dia_ode.analysis.attention_nulls import correlation_with_nulls, untrained_model
from dia_ode.analysis.correlation import PROTOCOLS
from dia_ode.analysis.correlation_plots import plot_correlation_nulls
from dia_ode.cli.analyze import (RUN_DIR, analysis_batch, diffusion_time_option, figure_title, open_run,
                                 samples_option, start_analysis, traced)
from dia_ode.cli.options import CONTEXT, common_options
from dia_ode.engine import resolve_device
from dia_ode.rundir import LoadedRun, save_figure, write_json
from dia_ode.solvers import trace


@click.command(context_settings=CONTEXT)
@RUN_DIR
@samples_option(256)
@click.option("--protocol", type=click.Choice([*PROTOCOLS, "all"]), default="all",
              help="per_sample: the blocks' C-vectors within each image, r averaged over images; batch_mean: "
                   "the blocks' mean vectors over the images; per_channel: each channel's gates over the "
                   "images, r averaged over channels; centred: per_sample after removing each block's mean "
                   "vector (theory/correlation.md).")
@click.option("--permutations", type=click.IntRange(min=1), default=8,
              help="Channel permutations averaged in the permuted null reference.")
@diffusion_time_option
@common_options
def correlate(run_dir, samples, protocol, permutations, diffusion_time, seed, device, out, no_progress) -> None:
    """Cross-layer attention correlation per stage and protocol, next to its untrained and permuted nulls
    (the DIA paper reports mean r up to 0.85)."""
    run = open_run(run_dir, device)
    protocols = list(PROTOCOLS) if protocol == "all" else [protocol]
    x, cond = analysis_batch(run, samples, device, diffusion_time, seed)
    untrained = untrained_model(run.model_spec, _run_seed(run), resolve_device(device))
    with torch.no_grad():
        untrained_traces = trace(untrained, x, cond)
    try:
        with warnings.catch_warnings():  # constant gates: said once per stage below, from the learning measures
            warnings.simplefilter("ignore", RuntimeWarning)
            stages = correlation_with_nulls(traced(run, x, cond), untrained_traces, protocols, permutations, seed)
    except ValueError as err:  # a plain model: constant step, nothing to correlate
        raise click.BadParameter(f"model '{run.model_name}' has no attention to correlate ({err})",
                                 param_hint="RUN_DIR") from None
    out_dir = start_analysis("correlate", run, out, {"samples": len(x), "seed": seed, "protocols": protocols,
                                                     "permutations": permutations, "run_seed": _run_seed(run),
                                                     **({"diffusion_time": int(cond[0])} if cond is not None else {})})
    write_json(out_dir / "correlation.json", stages)
    write_json(out_dir / "summary.json", _summary(run, stages, protocols, len(x)))
    for name in protocols:
        fig = plot_correlation_heatmaps(
            [np.asarray(s[name]["matrix"]) for s in stages],
            [f"stage {s['stage']}\nuntrained {s[name]['untrained']['mean_r']:.2f}, "
             f"permuted {s[name]['permuted']['mean_r']:.2f}" for s in stages],
            title=figure_title(f"Attention correlation across blocks, protocol {name}", run))
        save_figure(fig, out_dir / "figures", f"correlation_{name}")
    fig = plot_correlation_nulls(stages, protocols,
                                 title=figure_title(f"Attention correlation against its null references "
                                                   f"(protocols {', '.join(protocols)})", run))
    save_figure(fig, out_dir / "figures", "correlation_nulls")
    for s in stages:
        learned = s["learning"]
        for which in ("", "_untrained"):
            if learned[f"input_independent_blocks{which}"]:
                click.echo(f"stage {s['stage']}: the {'untrained' if which else 'trained'} gates of blocks "
                           f"{learned[f'input_independent_blocks{which}']} are the same for every image "
                           f"(per_channel and centred r undefined for their pairs)")
        for name in protocols:
            p = s[name]
            click.echo(f"stage {s['stage']}, {name}: r = {p['mean_r']:.3f} (untrained {p['untrained']['mean_r']:.3f}, "
                       f"permuted {p['permuted']['mean_r']:.3f}); spread {learned['spread']:.3g}, "
                       f"moved {learned['moved']:.3g} from untrained")
    click.echo(f"-> {out_dir}")


def _run_seed(run: LoadedRun) -> int:
    """The seed the run was trained with: what rebuilds its untrained network."""
    seed = run.config.get("seed")
    if not isinstance(seed, int):
        raise click.BadParameter(f"{run.run_dir / 'config.json'} has no integer 'seed', so the untrained "
                                 "network of the run cannot be rebuilt", param_hint="RUN_DIR")
    return seed


def _summary(run: LoadedRun, stages: list[dict], protocols: list[str], samples: int) -> dict:
    """summary.json: per protocol and stage the trained, untrained and permuted mean r, and the learning
    measures per stage (lists are indexed by stage)."""
    def per_stage(get):
        return {name: [get(s[name]) for s in stages] for name in protocols}

    return {"model": run.model_name, "dataset": run.dataset_name, "samples": samples, "protocols": protocols,
            "mean_r": per_stage(lambda p: p["mean_r"]),
            "mean_r_consecutive": per_stage(lambda p: p["mean_r_consecutive"]),
            "mean_r_untrained": per_stage(lambda p: p["untrained"]["mean_r"]),
            "mean_r_permuted": per_stage(lambda p: p["permuted"]["mean_r"]),
            "mean_r_permuted_std": per_stage(lambda p: p["permuted"]["mean_r_std"]),
            **{key: [s["learning"][key] for s in stages] for key in stages[0]["learning"]}}
