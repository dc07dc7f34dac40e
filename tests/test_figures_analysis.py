"""Figures and terminal output of the analysis commands: titles, labels, axes, legends, missing numbers.

The figures are the matplotlib Figure objects the commands build (save_figure is intercepted), not PNGs.
"""

import importlib
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from click.testing import CliRunner

import dia_ode.cli.analyze as analyze
from dia_ode.analysis import plot_depth_profiles, plot_eigenvalues, plot_indices_over_time, rank_correlation
from dia_ode.cli import main
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import start_run


@pytest.fixture(scope="module")
def dia_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(model="dia_resnet20", epochs=1, batch_size=128, device="cpu", model_options={"base_width": 4})
    run_dir = start_run(out, "train-dia_resnet20", {"command": "train", **asdict(cfg)}, argv=["test"])
    run_training(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture
def figures(monkeypatch):
    """name -> Figure of every figure a command saves (and still writes it)."""
    seen = {}
    save = analyze.save_figure

    def keep(fig, figures_dir, name):
        seen[name] = fig
        return save(fig, figures_dir, name)
    monkeypatch.setattr(analyze, "save_figure", keep)
    # importlib: the package attribute dia_ode.cli.correlate is the command, not its module
    monkeypatch.setattr(importlib.import_module("dia_ode.cli.correlate"), "save_figure", keep)
    return seen


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def texts(fig) -> list[str]:
    """The figure's title, every axes title and label."""
    return [fig._suptitle.get_text() if fig._suptitle else ""] + [
        t for ax in fig.axes for t in (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())]


def test_spearman_with_too_few_pairs_says_why_in_terminal_json_and_figure(dia_run, tmp_path, figures):
    result = invoke("stepsize", dia_run, "--samples", 4, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "stage 0: mean h =" in result.output and "Spearman n/a (3 blocks: only 2 valid pairs, need >= 4)" \
        in result.output and "nan" not in result.output
    (out,) = tmp_path.iterdir()
    stages = json.loads((out / "stepsize.json").read_text())
    assert [s["stage"] for s in stages] == [0, 1, 2]
    assert stages[0]["spearman_block"]["rho"] is None and "need >= 4" in stages[0]["spearman_block"]["reason"]
    fig = figures["stepsize_vs_stiffness"]
    assert [ax.get_title().splitlines()[0] for ax in fig.axes[:3]] == ["stage 0", "stage 1", "stage 2"]
    assert "Spearman n/a: only 2 valid pairs, need >= 4" in fig.axes[0].get_title()
    assert "dia_resnet20" in fig._suptitle.get_text() and "digits" in fig._suptitle.get_text()


def test_stepsize_against_the_block_spectral_radius(dia_run, tmp_path):
    result = invoke("stepsize", dia_run, "--samples", 2, "--against", "radius", "--radius-samples", 1,
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (out,) = tmp_path.iterdir()
    stages = json.loads((out / "stepsize.json").read_text())
    first = stages[0]["stiffness_block"]  # stage 0 keeps its shape: a radius for all 3 blocks
    assert len(first) == 3 and all(r > 0 for r in first)
    assert stages[1]["stiffness_block"][0] is None  # a shape-changing block has no square Jacobian
    assert stages[0]["spearman_block"]["n"] == 3
    assert json.loads((out / "summary.json").read_text())["against"] == "radius"


def test_every_analysis_figure_names_model_dataset_and_run(dia_run, tmp_path, figures):
    for command, extra in (("correlate", ["--samples", 8]), ("stiffness", ["--samples", 1, "--k", 2])):
        result = invoke(command, dia_run, *extra, "--out", tmp_path / command)
        assert result.exit_code == 0, result.output
    assert set(figures) == {"correlation_per_sample", "correlation_batch_mean", "correlation_per_channel",
                            "correlation_centred", "correlation_nulls", "step_eigenvalues_stage0",
                            "step_eigenvalues_stage1", "step_eigenvalues_stage2"}
    for name, fig in figures.items():
        title = fig._suptitle.get_text()
        assert "dia_resnet20" in title and "digits" in title and dia_run.name in title, name
        assert not any("_" in t for t in texts(fig)[1:] if "h_k" not in t), (name, texts(fig))  # no JSON keys
    assert "stage 0, per_sample: r =" in invoke("correlate", dia_run, "--samples", 8, "--out", tmp_path / "again").output


def test_problem_figure_has_words_for_labels_and_linear_axes_within_a_decade(tmp_path, figures):
    result = invoke("stiffness", "--problem", "linear", "--eigenvalues", "-1,-3", "--points", 5, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    fig = figures["indices_over_time"]
    assert fig._suptitle.get_text().startswith("Stiffness along the reference solution: linear y' = A y")
    assert "{" not in fig._suptitle.get_text()  # no dict in the title
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[0] == "spectral radius ρ(J)" and not any("_" in label for label in labels)
    assert [ax.get_yscale() for ax in fig.axes][:2] == ["linear", "linear"]  # 3 and 3: no decade to span


def test_axis_scale_legend_and_reason_rules_of_the_plots():
    t = np.linspace(0, 1, 20)
    fig = plot_indices_over_time(t, {"a": 1 + t, "b": np.exp(5 * t)})
    assert [ax.get_yscale() for ax in fig.axes] == ["linear", "log"]  # e^5 = 148 spans two decades
    fig = plot_eigenvalues([np.array([-1.0, -0.5 + 0.5j]), np.array([-40.0])], ["block 0", "block 1"])
    assert len(fig.axes) == 2 and all(ax.get_legend() is None for ax in fig.axes)  # no legend on the data
    (legend,) = fig.legends
    assert "block 1 (0/1 inside)" in [t.get_text() for t in legend.get_texts()]
    reason = rank_correlation(np.arange(3.0), np.arange(3.0))
    assert math.isnan(reason["rho"]) and reason["reason"] == "only 3 valid pairs, need >= 4"
    fig = plot_depth_profiles([np.arange(3.0)], [np.arange(3.0)], title="model on data")
    assert "Spearman n/a: only 3 valid pairs" in fig.axes[0].get_title()
    assert fig._suptitle.get_text() == "model on data"


def test_bench_stiffness_writes_bench_json(tmp_path):
    result = invoke("bench", "stiffness", "--channels", 2, "--size", 3, "--compare-size", 3, "--k", 2,
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (out,) = tmp_path.iterdir()
    bench = json.loads((out / "bench.json").read_text())
    assert bench["n"] == bench["compare_n"] == 18 and len(bench["eigenvalues"]) == 2
    assert bench["relative_error"] < 1e-3
    result = invoke("bench", "stiffness", "--channels", 1, "--size", 2, "--k", 3, "--out", tmp_path)
    assert result.exit_code == 2 and "--size" in result.output


@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_the_plotted_window_holds_the_whole_stability_region_of_the_method(method):
    from dia_ode.analysis.continuous_stiffness import method_region
    from dia_ode.analysis.plots import plot_step_spectra
    from dia_ode.stiffness import stability_polynomial

    # the region on a fine grid of a wide box, from the polynomial's coefficients (not from plots.py)
    x, y = np.meshgrid(np.linspace(-10, 4, 561), np.linspace(-8, 8, 641))
    inside = np.abs(np.polynomial.polynomial.polyval(x + 1j * y, stability_polynomial(method))) <= 1
    assert not inside[[0, -1], :].any() and not inside[:, [0, -1]].any()  # the wide box holds it
    region = method_region(method)
    far = plot_eigenvalues([np.array([-60.0, -0.5])], region=region)  # z = -60: a close-up beside the data
    near = plot_step_spectra([0.0], [np.array([-0.5 + 0.1j])], [1.0], [0.5], 2.0, region, "region")
    for ax in (far.axes[1], near.axes[0]):
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x0 <= x[inside].min() and x[inside].max() <= x1, (method, ax.get_xlim())
        assert y0 <= y[inside].min() and y[inside].max() <= y1, (method, ax.get_ylim())  # dopri5: |Im z| 3.85
        assert y1 < 1.5 * np.abs(y[inside]).max() + 1.0  # and not a fixed box much larger than Euler's disk
    assert method_region("dopri8") is None
