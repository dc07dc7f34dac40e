"""Several seeds: intervals, `train --seeds` groups, `compare --seeds` tables and figures, bad seed lists."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from dia_ode.analysis.axes import choose_scale
from dia_ode.analysis.intervals import Interval, example_note, mean_interval, one_example_worth
from dia_ode.studies.compare_figures import compare_figures
from dia_ode.studies.compare_stats import CI_COLUMN, aggregate_rows, markdown_table, pool_profiles

TINY = ("--epochs", 1, "--batch-size", 256, "--model-option", "width=8", "--device", "cpu")


def invoke(*args):
    from dia_ode.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _only_dir(folder):
    (d,) = [p for p in folder.iterdir() if p.is_dir()]
    return d


# --- statistics -------------------------------------------------------------------------------------

def test_mean_interval_matches_scipy():
    values = [0.9721, 0.9749, 0.9722, 0.9805]
    iv = mean_interval(values, confidence=0.95)
    low, high = stats.t.interval(0.95, df=3, loc=np.mean(values), scale=stats.sem(values))
    assert iv.n == 4 and iv.mean == pytest.approx(np.mean(values))
    assert iv.std == pytest.approx(np.std(values, ddof=1))
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    assert iv.values == tuple(values) and iv.reason is None
    wider = mean_interval(values, confidence=0.99)
    assert wider.low < iv.low < iv.high < wider.high
    assert Interval.from_dict(json.loads(json.dumps(iv.to_dict()))) == iv
    assert iv.format() == f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def test_one_value_or_a_nan_has_no_interval_and_says_why():
    one = mean_interval([0.97])
    assert (one.mean, one.std, one.low, one.high, one.n) == (0.97, None, None, None, 1)
    assert "one value" in one.reason and one.format() == "0.9700" and one.format_ci() == "n/a"
    bad = mean_interval([0.9, math.nan])
    assert math.isnan(bad.mean) and bad.std is None and "not finite" in bad.reason
    same = mean_interval([6.0, 6.0, 6.0])  # a discrete model's NFE: no spread, a zero-width interval
    assert (same.std, same.low, same.high) == (0.0, 6.0, 6.0) and same.format(".4g") == "6"
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def test_one_test_example_and_axis_scale():
    assert one_example_worth(359) == pytest.approx(1 / 359)
    assert "one test example = 0.0028 accuracy (359 test examples)" == example_note(359)
    with pytest.raises(ValueError):
        one_example_worth(0)
    assert choose_scale([6, 26]) == "linear"  # under a decade: discrete vs adaptive NFE
    assert choose_scale([8, 100]) == "log"
    assert choose_scale([0.0, 100]) == choose_scale([-1, 1e3]) == choose_scale([]) == "linear"
    assert choose_scale([1.0, 5.0, math.nan, math.inf]) == "linear"


# --- pooling compare rows ---------------------------------------------------------------------------

def _row(model, seed, acc, nfe, options=None, s=(0.0, 0.5), h=(1.0, 0.5)):
    return {"model": model, "kind": "continuous" if "ode" in model else "discrete", "params": 100, "test_acc": acc,
            "test_loss": 0.1, "nfe_forward": nfe, "nfe_backward": nfe, "seconds_per_epoch": 1.0,
            "peak_memory_mb": 10.0, "run_dir": f"r{seed}", "seed": seed, "dataset": "digits",
            "model_options": options or {}, "n_test": 359, "nfe_history": [nfe, nfe + seed],
            "steps": {"s": list(s), "h": list(h)}}


def test_rows_pool_per_model_and_options():
    rows = [_row("rknet", 0, 0.90, 6.0), _row("rknet", 1, 0.92, 6.0),
            _row("odenet", 0, 0.80, 20.0, {"rtol": 1e-3}), _row("odenet", 1, 0.84, 26.0, {"rtol": 1e-3}),
            _row("odenet", 0, 0.70, 50.0, {"rtol": 1e-5})]
    pooled = aggregate_rows(rows)
    assert [p["model"] for p in pooled] == ["rknet", "odenet (rtol=0.001)", "odenet (rtol=1e-05)"]
    assert [p["n"] for p in pooled] == [2, 2, 1] and pooled[1]["seeds"] == [0, 1]
    assert pooled[1]["test_acc"] == pytest.approx(0.82)
    assert pooled[1]["intervals"]["test_acc"]["std"] == pytest.approx(np.std([0.80, 0.84], ddof=1))
    assert pooled[1]["nfe_history"]["mean"] == pytest.approx([23.0, 23.5])
    assert math.isnan(pooled[2]["nfe_history"]["std"][0])  # one run: no band
    table = markdown_table(pooled).splitlines()
    assert CI_COLUMN in table[0] and table[0].count("|") == 11
    cells = [c.strip() for c in table[3].split("|")[1:-1]]
    assert cells[3] == "0.8200 ± 0.0283" and cells[4].startswith("[") and cells[5] == "2"
    assert cells[6] == "23 ± 4.2"  # adaptive NFE varies: shown with its spread
    assert [c.strip() for c in table[2].split("|")][7] == "6"  # fixed NFE: no ± 0
    assert "one test example = 0.0028 accuracy" in table[-1]


def test_single_runs_keep_the_old_table_plus_n():
    pooled = aggregate_rows([_row("rknet", 0, 0.98765, 6.0)])
    header, _, line = markdown_table(pooled).splitlines()[:3]
    assert CI_COLUMN not in header
    assert line == "| rknet | discrete | 100 | 0.9877 | 1 | 6 | 6 | 1 | 10 |"


def test_profiles_pool_point_by_point_or_in_bins():
    same = pool_profiles([{"s": [0, 0.5], "h": [1.0, 0.4]}, {"s": [0, 0.5], "h": [0.8, 0.6]}])
    assert not same["binned"] and same["h"] == pytest.approx([0.9, 0.5])
    assert same["h_std"] == pytest.approx([np.std([1.0, 0.8], ddof=1), np.std([0.4, 0.6], ddof=1)])
    moved = pool_profiles([{"s": [0.0, 0.51], "h": [1.0, 0.4]}, {"s": [0.01, 0.52, 1.0], "h": [0.8, 0.6, 0.2]}])
    assert moved["binned"] and moved["h"][0] == pytest.approx(0.9) and moved["s"][-1] > 0.9


def test_figures_name_the_run_and_show_spread():
    pooled = aggregate_rows([_row("rknet", 0, 0.90, 6.0), _row("rknet", 1, 0.92, 6.0),
                             _row("odenet", 0, 0.80, 20.0), _row("odenet", 1, 0.84, 26.0)])
    figures = dict(compare_figures(pooled, "00007-compare-digits"))
    for fig in figures.values():
        ax = fig.axes[0]
        assert "digits" in ax.get_title() and "2 seeds" in ax.get_title() and "00007-compare-digits" in ax.get_title()
        anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        assert anchor.x0 > 1  # legend outside the axes
    acc = figures["accuracy_vs_nfe"].axes[0]
    assert acc.get_xscale() == "linear" and "± std" in acc.get_ylabel()  # NFE 6..26: under a decade
    assert len(acc.containers) == 2 and acc.containers[1].has_yerr
    assert figures["nfe_over_training"].axes[0].collections  # the shaded band
    wide = aggregate_rows([_row("rknet", 0, 0.9, 6.0), _row("odenet", 0, 0.8, 600.0)])
    assert dict(compare_figures(wide))["accuracy_vs_nfe"].axes[0].get_xscale() == "log"


# --- commands ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seed_group(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds")
    result = invoke("train", "--model", "rknet", *TINY, "--seeds", "0,1", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    return _only_dir(out), result.output


def test_train_seeds_makes_a_group_of_runs(seed_group):
    group, output = seed_group
    assert group.name.endswith("-train-rknet-digits-seeds")
    runs = sorted((group / "runs").iterdir())
    assert [json.loads((r / "config.json").read_text())["seed"] for r in runs] == [0, 1]
    assert json.loads((group / "config.json").read_text())["seeds"] == [0, 1]
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    assert summaries[0]["test_loss"] != summaries[1]["test_loss"]  # different seeds, different runs
    aggregate = json.loads((group / "summary.json").read_text())
    assert aggregate["n"] == 2 and aggregate["seeds"] == [0, 1] and aggregate["n_test"] == 359
    for metric in ("test_acc", "test_loss"):
        values = [s[metric] for s in summaries]
        assert aggregate["metrics"][metric]["mean"] == pytest.approx(np.mean(values))
        assert aggregate["metrics"][metric]["values"] == values
    table = (group / "seeds.md").read_text()
    assert "| test_acc |" in table and "one test example = 0.0028" in table
    assert "| test_acc |" in output and str(group) in output


def test_compare_from_pools_runs_of_one_model(seed_group, tmp_path):
    runs = sorted((seed_group[0] / "runs").iterdir())
    result = invoke("compare", "--from", runs[0], "--from", runs[1], "--samples", 4, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((_only_dir(tmp_path) / "compare.json").read_text())
    assert len(data["runs"]) == 2 and [m["n"] for m in data["models"]] == [2]
    assert data["models"][0]["test_acc"] == pytest.approx(np.mean([r["test_acc"] for r in data["runs"]]))


def test_compare_seeds_trains_every_model_and_seed(tmp_path):
    result = invoke("compare", "--models", "rknet,odenet", *TINY, "--seeds", "0,1", "--samples", 4, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out_dir = _only_dir(tmp_path)
    data = json.loads((out_dir / "compare.json").read_text())
    assert [(r["model"], r["seed"]) for r in data["runs"]] == [("rknet", 0), ("rknet", 1), ("odenet", 0), ("odenet", 1)]
    assert [(m["model"], m["n"]) for m in data["models"]] == [("rknet", 2), ("odenet", 2)]
    names = sorted(p.name for p in (out_dir / "runs").iterdir())
    assert sum(n.endswith("-seed1") for n in names) == 2
    table = (out_dir / "compare.md").read_text()
    assert CI_COLUMN in table and " ± " in table and table in result.output
    for name in ("accuracy_vs_nfe", "nfe_over_training", "step_sizes"):
        assert (out_dir / "figures" / f"{name}.png").is_file()


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize("args,needle", [
    (["--seeds", ""], "empty list"),
    (["--seeds", "0,1,0"], "seed 0 is listed twice"),
    (["--seeds", "0,-1"], "--seeds"),
    (["--seeds", "a,b"], "--seeds"),
    (["--seeds", "0,1", "--seed", "3"], "--seeds and --seed"),
])
def test_bad_seed_lists_are_usage_errors(tmp_path, command, args, needle):
    result = invoke(command, *args, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    assert not any(tmp_path.iterdir())  # no run directory
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert needle in error


def test_compare_from_with_seeds_is_a_usage_error(tmp_path):
    result = invoke("compare", "--from", tmp_path, "--seeds", "0,1", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--from" in result.output
