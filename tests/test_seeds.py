"""Several seeds: intervals, `train --seeds` groups, `compare --seeds` tables and figures, bad seed lists."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from dia_ode.analysis.intervals import Interval, example_note, mean_interval, metric_bounds, one_example_worth
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


def test_an_accuracy_interval_stays_inside_zero_and_one():
    values = [0.3872, 0.0776]  # two seeds: t = 12.7, the unclipped interval runs far outside [0, 1]
    free = mean_interval(values)
    assert free.low < 0 and free.high > 1
    bounded = mean_interval(values, bounds=metric_bounds("test_acc"))
    assert (bounded.low, bounded.high) == (0.0, 1.0) and bounded.mean == free.mean and bounded.std == free.std
    assert metric_bounds("best_val_acc") == (0.0, 1.0) and metric_bounds("nfe_forward") is None
    pooled = aggregate_rows([_row("rknet", 0, 0.05, 6.0), _row("rknet", 1, 0.60, 6.0)])
    assert Interval.from_dict(pooled[0]["intervals"]["test_acc"]).low == 0.0
    acc = dict(compare_figures(pooled))["accuracy_vs_nfe"].axes[0]
    assert acc.get_yscale() == "linear"  # 0.05..0.6 spans a decade, but accuracies are compared by differences


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


def test_one_test_example():
    assert one_example_worth(359) == pytest.approx(1 / 359)
    assert "one test example = 0.0028 accuracy (359 test examples)" == example_note(359)
    with pytest.raises(ValueError):
        one_example_worth(0)


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
    assert group.name.endswith("-train-rknet-width=8-digits-seeds")  # the options set, as in any training run
    runs = sorted((group / "runs").iterdir())
    assert [r.name[6:] for r in runs] == ["train-rknet-width=8-digits-seed0", "train-rknet-width=8-digits-seed1"]
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


def test_a_seed_group_is_listed_as_one_and_refuses_a_resume_naming_the_run(seed_group, tmp_path):
    group, _ = seed_group
    assert json.loads((group / "config.json").read_text())["command"] == "train-seeds"
    listed = invoke("ls", "runs", "--out", group.parent)
    assert listed.exit_code == 0, listed.output
    mean = json.loads((group / "summary.json").read_text())["metrics"]["test_acc"]["mean"]
    assert listed.output.splitlines()[1].split() == [group.name, "train-seeds", "rknet", "digits", "2/2", "seeds",
                                                     f"mean_test_acc={mean:.4f}", "finished"]
    refused = invoke("train", "--resume", group)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "group of seed runs" in refused.output and "not resumed as a whole" in refused.output
    assert "no checkpoint" not in refused.output


def test_compare_children_are_named_like_training_runs_and_keep_the_tag(monkeypatch, tmp_path):
    import contextvars
    from concurrent.futures import Future

    from dia_ode.engine import TrainConfig
    from dia_ode.rundir import run_name
    from dia_ode.studies import compare

    class FreshProcess:
        """Runs a job at once in an empty context, as a spawned child starts: no parent's run_name."""

        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, *args):
            future = Future()
            future.set_result(contextvars.Context().run(fn, *args))
            return future

    monkeypatch.setattr(compare, "ProcessPoolExecutor", FreshProcess)
    base = TrainConfig(model="rknet", dataset="digits", epochs=1, batch_size=256, device="cpu",
                       model_options={"width": 8})
    with run_name("abl2"):
        run_dirs = compare.train_models(base, ["rknet"], tmp_path, threads=None, argv=["t"], seeds=[0, 1])
    assert [d.name for d in run_dirs] == ["00000-train-rknet-width=8-digits-seed0-abl2",
                                          "00001-train-rknet-width=8-digits-seed1-abl2"]
    assert json.loads((run_dirs[0] / "config.json").read_text())["name"] == "abl2"


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


# --- which runs may be pooled (one check for compare_stats.aggregate_rows and seeds.aggregate_runs) -------

def _fake_run(folder, name, seed=0, acc=0.9, **changes):
    """A finished run directory with config.json and summary.json only (nothing is trained)."""
    from dataclasses import asdict, replace

    from dia_ode.engine import TrainConfig

    cfg = replace(TrainConfig(model="rknet", epochs=2, model_options={"width": 8}), seed=seed, **changes)
    run = folder / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"command": "train", **asdict(cfg), "versions": {"torch": "x"}}))
    (run / "summary.json").write_text(json.dumps({"test_acc": acc, "test_loss": 0.3, "epochs": cfg.epochs}))
    return run


@pytest.mark.parametrize("change,field", [
    ({"dataset": "fashion"}, "dataset"), ({"epochs": 3}, "epochs"), ({"lr": 0.05}, "lr"),
    ({"model_options": {"width": 16}}, "model_options"), ({"task": "detection"}, "task"),
    ({"model": "odenet"}, "model"), ({"extended_from": (1,)}, "extended_from"),
])
def test_aggregate_runs_refuses_runs_trained_differently_naming_the_field(tmp_path, change, field):
    from dia_ode.studies.seeds import aggregate_runs

    a = _fake_run(tmp_path, "a", seed=0)
    b = _fake_run(tmp_path, "b", seed=1, **change)
    with pytest.raises(ValueError, match=f"different {field} cannot be pooled") as err:
        aggregate_runs([a, b], n_test=359)
    assert "\n" not in str(err.value) and str(a) in str(err.value) and str(b) in str(err.value)


def test_aggregate_runs_pools_what_differs_only_by_seed_device_or_data_dir(tmp_path):
    from dia_ode.studies.seeds import aggregate_runs

    runs = [_fake_run(tmp_path, "a", seed=0, acc=0.9), _fake_run(tmp_path, "b", seed=1, acc=0.8, device="cpu"),
            _fake_run(tmp_path, "c", seed=2, acc=0.7, data_dir="/elsewhere")]
    pooled = aggregate_runs(runs, n_test=359)
    assert pooled["n"] == 3 and pooled["seeds"] == [0, 1, 2]
    assert pooled["metrics"]["test_acc"]["mean"] == pytest.approx(0.8)


def test_compare_rows_of_one_model_from_different_datasets_are_refused():
    rows = [_row("rknet", 0, 0.90, 6.0), {**_row("rknet", 1, 0.92, 6.0), "dataset": "fashion"}]
    with pytest.raises(ValueError, match="different dataset cannot be pooled"):
        aggregate_rows(rows)
    configs = [{"model": "rknet", "dataset": "digits", "epochs": e, "seed": s} for e, s in ((2, 0), (5, 1))]
    with pytest.raises(ValueError, match="different epochs cannot be pooled: epochs=2 .* but epochs=5"):
        aggregate_rows([{**_row("rknet", s, 0.9, 6.0), "config": c} for s, c in enumerate(configs)])
    # other models may differ (compare gives each its recipe); one model's runs are what is pooled
    other = {**_row("odenet", 0, 0.8, 20.0), "config": {"model": "odenet", "dataset": "digits", "lr": 0.01}}
    mine = {**_row("rknet", 0, 0.9, 6.0), "config": configs[0]}
    assert [p["n"] for p in aggregate_rows([mine, other])] == [1, 1]


def test_compare_from_refuses_runs_of_one_model_trained_differently(tmp_path):
    a, b = _fake_run(tmp_path, "a", seed=0), _fake_run(tmp_path, "b", seed=1, epochs=4)
    result = invoke("compare", "--from", a, "--from", b, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "--from" in error and "different epochs" in error and "Traceback" not in result.output
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # refused before anything was evaluated or written
