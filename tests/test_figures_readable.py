"""Figures a researcher can read: honest scales, legends, wrapped grids, no text drawn over text.

Each test reads the matplotlib objects a plotting function (or a command) builds: axes, their scales and
limits, legends, figure sizes, and the pixel extents of texts as the Agg renderer lays them out.
"""

import importlib
import itertools
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg

from dia_ode.analysis import plot_correlation_heatmaps, plot_correlation_nulls, plot_depth_profiles
from dia_ode.analysis.detections import plot_detections
from dia_ode.analysis.integration_plots import plot_steps_and_stiffness
from dia_ode.cli import main
from dia_ode.engine import report
from dia_ode.tasks.detection import DetectionTask
from dia_ode.tasks.diffusion import DiffusionTask

SAVE_DPI = 120  # rundir.save_figure's


def drawn(fig):
    """The figure laid out and drawn by Agg; returns its renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def overlapping(extents) -> list[tuple[int, int]]:
    """Index pairs of display boxes that share more than a pixel's sliver."""
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(extents), 2)
            if min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# --- dia-ode stepsize -------------------------------------------------------------------------------------

def test_stepsize_figure_draws_steps_and_stiffness_from_zero_in_stacked_panels_with_a_legend():
    h = np.array([0.380, 0.379, 0.3735])  # a 1.7% change: twin autoscaled axes drew it as a cliff
    fig = plot_depth_profiles([h], [np.array([3.8, 4.8, np.nan])], ["stage 0"], step_std=[np.full(3, 0.001)],
                              stiffness_label="difference quotient ρ_k", missing_reason="no block k+1")
    drawn(fig)
    top, bottom = fig.axes
    assert top.get_position().y0 > bottom.get_position().y1  # stacked, not one box with a twin y axis
    low, high = top.get_ylim()
    assert low == 0.0 and (h.max() - h.min()) / (high - low) < 0.05  # a small change looks small
    assert bottom.get_ylim()[0] == 0.0
    assert all(line.get_linestyle() == "None" for line in bottom.lines)  # two points: markers, no line
    assert any(line.get_linestyle() == "-" for line in top.lines)  # three points: a line
    assert sorted(legend_texts(fig)) == ["difference quotient ρ_k", "mean step h_k ± 1 std over samples",
                                         "n/a: no block k+1"]
    assert [t.get_text() for t in bottom.texts] == ["n/a"]  # the block without an estimate says so


def test_stepsize_figure_shares_each_row_across_stages_and_takes_a_log_axis_over_decades():
    fig = plot_depth_profiles([np.full(4, 0.5), np.array([0.2, 0.3, 0.4, 0.5])],
                              [np.array([1.0, 10.0, 100.0, 1000.0]), None], ["stage 0", "stage 1"])
    tops, bottoms = fig.axes[:2], fig.axes[2:]
    assert tops[0].get_ylim() == tops[1].get_ylim() and tops[0].get_ylim()[0] == 0.0
    assert bottoms[0].get_yscale() == "log"
    assert "no stiffness estimate" in [t.get_text() for t in bottoms[1].texts]
    assert [ax.get_title().splitlines()[0] for ax in tops] == ["stage 0", "stage 1"]


# --- training figures and epoch lines -------------------------------------------------------------------

def _history(names, undefined=(), train_only=("loss",), epochs=3):
    """metrics.jsonl rows: train_<m> for train_only, val_<m> for every name; NaN for the undefined ones."""
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "lr": 0.1, "seconds": 1.0}
        row.update({f"train_{m}": 1.0 / e for m in train_only})
        row.update({f"val_{m}": math.nan if m in undefined else 0.1 * e for m in names})
        rows.append(row)
    return rows


@pytest.mark.parametrize("task, undefined", [(DetectionTask, ("ap_medium", "ap_large")), (DiffusionTask, ())])
def test_training_figures_wrap_into_rows_and_leave_out_metrics_undefined_in_every_epoch(monkeypatch, tmp_path,
                                                                                       task, undefined):
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, folder, name: figures.append(fig))
    report.plot_history(_history(task.metric_names, undefined), task.metric_names, tmp_path, title="run: model")
    (fig,) = figures
    drawn(fig)
    panels = len(task.metric_names) - len(undefined)
    assert len(fig.axes) == panels
    assert fig.get_size_inches()[0] * SAVE_DPI <= 1700  # was one row of 4.5 in per metric: 2,700-4,300 px
    columns = {round(ax.get_position().x0, 3) for ax in fig.axes}
    assert len(columns) == report.MAX_COLUMNS and len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 2
    titles = [ax.get_title() for ax in fig.axes]
    assert not any(report.label(m) in titles for m in undefined)
    if undefined:
        assert "not drawn: ap medium, ap large" in fig._supxlabel.get_text()


def test_epoch_lines_leave_out_undefined_metrics_and_say_why_once():
    rows = _history(("loss", "ap", "ap_large"), undefined=("ap_large",), epochs=2)
    said = set()
    lines = [report.epoch_line(row, 2) for row in rows]
    notes = [report.undefined_note(row, said) for row in rows]
    assert all("nan" not in line and "ap_large" not in line and "val_ap " in line for line in lines)
    assert "val_ap_large" in notes[0] and "no objects of that size" in notes[0] and notes[1] is None


# --- dia-ode detect ---------------------------------------------------------------------------------------

def _crowded_scene():
    """One 64 x 64 image: five detections of nearly one box (classes 0-4), one below the threshold."""
    boxes = torch.tensor([[10.0, 12.0, 30.0, 40.0]]).repeat(6, 1) + torch.arange(6.0)[:, None] * 0.5
    found = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.1]),
             "labels": torch.tensor([0, 1, 2, 3, 4, 5])}
    return [np.zeros((64, 64, 1), dtype=np.uint8)], [found], [torch.tensor([[11.0, 12.0, 31.0, 40.0]])]


def test_detections_figure_has_a_legend_a_threshold_and_labels_that_do_not_overlap():
    images, found, truth = _crowded_scene()
    fig = plot_detections(images, found, [str(k) for k in range(10)], truth, score_threshold=0.3)
    renderer = drawn(fig)
    labels = [t for ax in fig.axes for t in ax.texts]
    assert sorted(t.get_text() for t in labels) == ["0 0.90", "1 0.80", "2 0.70", "3 0.60", "4 0.50"]
    assert overlapping([t.get_window_extent(renderer) for t in labels]) == []
    assert legend_texts(fig) == [f"predicted {k}" for k in range(5)] + ["ground truth"]
    assert "0.3" in fig._suptitle.get_text()


def test_detect_shows_the_score_thresholds_default_and_refuses_one_outside_zero_to_one(tmp_path):
    runner = CliRunner()
    assert "[default: 0.3; 0<=x<=1]" in " ".join(runner.invoke(main, ["detect", "--help"]).output.split())
    for bad in ("1.5", "nan"):
        result = runner.invoke(main, ["detect", str(tmp_path), "--score-threshold", bad])
        assert result.exit_code == 2 and "--score-threshold" in result.output and "Traceback" not in result.output


# --- dia-ode integrate --stiff-switch ---------------------------------------------------------------------

def _switching_trace(h_lambda):
    n = len(h_lambda)
    trace = {"t": np.arange(float(n)), "h": np.ones(n), "accepted": np.ones(n, dtype=bool),
             "h_lambda": np.asarray(h_lambda, dtype=float), "stiff": np.arange(n) // 3 == 1,
             "h_rho": np.full(n, np.nan)}
    methods = ["dopri5"] * 3 + ["rodas4"] * 3 + ["dopri5"] * (n - 6)
    return trace, methods


def test_stiff_switch_figure_marks_each_switch_and_puts_h_lambda_on_a_log_axis_over_decades():
    trace, methods = _switching_trace(np.logspace(-1, 5, 9))
    fig = plot_steps_and_stiffness(trace, 3.3, "vdp", methods)
    top, bottom = fig.axes
    assert bottom.get_yscale() == "log"
    for ax in (top, bottom):
        verticals = sorted(line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1)
        assert verticals == [3.0, 6.0]
    texts = legend_texts(fig)
    assert {"switch to rodas4", "switch back to dopri5"} <= set(texts)
    assert any(t.startswith("flagged stiff") for t in texts)
    linear = plot_steps_and_stiffness(_switching_trace(np.linspace(0.5, 3.0, 9))[0], 3.3, "vdp")
    assert linear.axes[1].get_yscale() == "linear"
    assert not any(t.startswith("switch") for t in legend_texts(linear))


def test_integrate_passes_the_stiff_switchs_methods_to_its_steps_figure(monkeypatch, tmp_path):
    integrate = importlib.import_module("dia_ode.cli.integrate")
    figures = {}
    monkeypatch.setattr(integrate, "save_figure", lambda fig, folder, name: figures.setdefault(name, fig))
    result = CliRunner().invoke(main, ["integrate", "--problem", "robertson", "--t1", "10", "--rtol", "1e-4",
                                       "--atol", "1e-8", "--stiff-switch", "--stiff-method", "rodas3",
                                       "--no-reference", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "switch to rodas3" in legend_texts(figures["steps"])


# --- dia-ode correlate ------------------------------------------------------------------------------------

LONG_TITLE = ("Attention correlation across blocks, protocol per_sample: dia_resnet20 on digits, epoch 1 "
              "(run 00002-train-dia_resnet20-base_width=4-digits)")


def _title_clear_of_panels(fig) -> None:
    renderer = drawn(fig)
    title = fig._suptitle.get_window_extent(renderer)
    assert 0 <= title.x0 and title.x1 <= fig.bbox.width  # wrapped inside the figure
    panels = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert panels and not any(overlapping([title, panel]) for panel in panels)


@pytest.mark.parametrize("title, stages, lines", [("short", 3, 2), ("short", 3, 3), (LONG_TITLE, 1, 3),
                                                 (LONG_TITLE, 3, 3)])
def test_correlation_heatmaps_keep_the_title_clear_of_the_panel_titles(title, stages, lines):
    names = ["stage\nuntrained 0.95, permuted 0.03"[: None if lines == 3 else 5]] * stages
    _title_clear_of_panels(plot_correlation_heatmaps([np.eye(3)] * stages, names, title=title))


def test_correlation_nulls_keep_the_title_clear_of_the_panel_titles():
    reference = {"mean_r": 0.5, "untrained": {"mean_r": 0.4}, "permuted": {"mean_r": 0.0, "mean_r_std": 0.1}}
    stages = [{"stage": s, "per_sample": reference, "centred": reference} for s in range(3)]
    _title_clear_of_panels(plot_correlation_nulls(stages, ["per_sample", "centred"], title=LONG_TITLE))
