"""The cross-layer correlation against SGD steps (dia_ode/studies/claims/correlation_dose.py) and the two
budgets sized for it (long, gpu in dia_ode/studies/report/budgets.py): their fields and RunSpecs, the
fallback of the other claims, the points from hand-written records of finished and unfinished seeds,
and the figure with its null bands."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.data import load_dataset
from dia_ode.engine import TrainConfig
from dia_ode.rundir import write_json
from dia_ode.studies.claims import CLAIMS, get_claim
from dia_ode.studies.claims.correlation import MIN_GATE_MOVED, RECORDER
from dia_ode.studies.claims.correlation_dose import dose_points, dose_response, epoch_steps, plot_dose_response
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.report import budgets
from dia_ode.studies.report.budgets import check_device, get_budget, sized_budget, unsized_reason
from dia_ode.studies.report.claim import RunSpec
from dia_ode.studies.report.report import dry_run_lines, plan, run_report

CLAIM = get_claim("cross-layer-correlation")
LONG, GPU = get_budget("long"), get_budget("gpu")
FASHION_TRAIN = 60_000


@pytest.fixture
def fashion_listed(monkeypatch):
    """Fashion-MNIST counted as available (runs() only builds configs; no file is read)."""
    monkeypatch.setattr(budgets, "dataset_available", lambda name: name in ("digits", "fashion-mnist"))


# ---- the budgets ---------------------------------------------------------------------------------

def test_long_budget_records_span_460_to_20700_steps():
    assert (LONG.seeds, LONG.epochs, LONG.datasets, LONG.width) == ((0, 1, 2), 45, ("fashion-mnist",), 16)
    assert (LONG.batch_size, LONG.val_fraction, LONG.device) == (128, 0.02, "auto")
    assert LONG.claims == ("cross-layer-correlation",) and LONG.fallback == "cpu"
    per_epoch = math.ceil(round(FASHION_TRAIN * (1 - LONG.val_fraction)) / LONG.batch_size)
    assert per_epoch == 460 and 300 <= per_epoch < 500  # the first record: the low end of the dose-response
    assert per_epoch * LONG.epochs == 20_700 >= 20_000  # the last
    assert LONG.train_fields() == {"batch_size": 128, "val_fraction": 0.02}
    for name in ("smoke", "cpu", "full"):  # the other budgets set nothing: their runs and keys stay as they were
        assert get_budget(name).train_fields() == {} and get_budget(name).claims is None


def test_gpu_budget_is_the_same_dose_response_with_more_seeds_on_cuda():
    assert GPU.device == "cuda" and len(GPU.seeds) == 5 > len(LONG.seeds)
    assert (GPU.epochs, GPU.batch_size, GPU.val_fraction, GPU.datasets) == (LONG.epochs, 128, 0.02, LONG.datasets)
    assert GPU.claims == LONG.claims and GPU.fallback is None
    assert GPU.train_fields() == {"batch_size": 128, "val_fraction": 0.02, "device": "cuda"}


@pytest.mark.parametrize("budget", [LONG, GPU], ids=["long", "gpu"])
def test_the_dose_budgets_train_se_resnet20_on_all_of_fashion_mnist_with_the_recorder(budget, fashion_listed):
    specs = CLAIM.runs(budget)
    assert [s.config.seed for s in specs] == list(budget.seeds) and len({s.key() for s in specs}) == len(specs)
    for s in specs:
        cfg = s.config
        assert (cfg.model, cfg.dataset, cfg.epochs, cfg.batch_size) == ("se_resnet20", "fashion-mnist", 45, 128)
        assert (cfg.val_fraction, cfg.train_examples, cfg.device) == (0.02, None, budget.device)
        assert cfg.model_options == {**SE_OPTIONS, "base_width": 16} and s.recorders == (RECORDER,)
    if _fashion_here():  # the real split, where the files are
        assert epoch_steps(specs[0].config) == 460


def _fashion_here() -> bool:
    try:
        load_dataset("fashion-mnist", val_fraction=0.02)
    except Exception:  # noqa: BLE001 -- absent files (CI): the arithmetic above is the check
        return False
    return True


def test_gpu_and_long_runs_differ_only_in_seeds_and_device(fashion_listed):
    long_runs, gpu_runs = CLAIM.runs(LONG), CLAIM.runs(GPU)
    assert dataclasses.replace(gpu_runs[0].config, device="auto") == long_runs[0].config
    assert not {s.key() for s in long_runs} & {s.key() for s in gpu_runs}  # a GPU study reuses no CPU run


def test_other_claims_run_at_the_fallback_budget_or_not_at_all():
    claims = [CLAIMS["dia-improves-backbone"], CLAIMS["cross-layer-correlation-sweep"]]
    assert sized_budget(LONG, "dia-improves-backbone") is get_budget("cpu")
    assert sized_budget(GPU, "dia-improves-backbone") is None
    assert sized_budget(get_budget("cpu"), "cross-layer-correlation") is get_budget("cpu")
    long_plan, cpu_plan = plan(claims, LONG), plan(claims, get_budget("cpu"))
    assert list(long_plan[0]) == list(cpu_plan[0]) and long_plan[1] == cpu_plan[1]  # the cpu budget's runs, same keys
    assert plan(claims, GPU) == ({}, {claim.id: [] for claim in claims})
    reason = unsized_reason(GPU, "dia-improves-backbone")
    assert dry_run_lines(claims[:1], GPU) == [f"# dia-improves-backbone: not measured ({reason})"]


def test_a_claim_under_a_budget_not_sized_for_it_says_so(tmp_path):
    euler = [CLAIMS["euler-step"]]
    data = run_report(euler, LONG, tmp_path / "long")
    (entry,) = data["claims"]
    assert entry["budget"] == "cpu" and entry["notes"][0].startswith("measured at the cpu budget: the long budget")
    assert entry["command"].startswith("dia-ode report --budget cpu --claims euler-step")
    (entry,) = run_report(euler, GPU, tmp_path / "gpu")["claims"]
    assert entry["verdict"]["status"] == "not testable here" and entry["runs"] == []
    assert "sized for cross-layer-correlation alone" in entry["verdict"]["reason"]
    assert "--budget cpu --claims euler-step" in entry["verdict"]["reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_the_gpu_budget_without_cuda_is_one_line_and_exit_2(tmp_path, fashion_listed):
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        check_device(GPU)
    check_device(LONG)  # auto: no refusal
    result = CliRunner().invoke(main, ["report", "--budget", "gpu", "--claims", "cross-layer-correlation",
                                       "--study", str(tmp_path / "s"), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--budget" in errors[0] and "torch sees no CUDA device" in errors[0]
    assert not (tmp_path / "s").exists()  # refused before anything is made
    listed = CliRunner().invoke(main, ["report", "--budget", "gpu", "--claims", "cross-layer-correlation", "--dry-run"])
    assert listed.exit_code == 0, listed.output  # a dry run needs no GPU
    assert len(listed.output.splitlines()) == len(GPU.seeds) and "--device cuda" in listed.output


# ---- the points from hand-written records --------------------------------------------------------

TINY = TrainConfig(model="se_resnet20", dataset="digits", epochs=3, batch_size=64, device="cpu")


def _record(epoch: int, r: list, moved: float = 0.02, spread: float = 0.01) -> dict:
    """One line of records/attention_correlation.jsonl with what the dose-response reads (r per stage)."""
    return {"epoch": epoch, "samples": 64, "stages": [
        {"stage": s, "moved": moved + s, "spread": spread, "spread_untrained": 0.002, "mean_gate": 0.5,
         "per_sample": {"mean_r": v, "mean_r_consecutive": v, "untrained": -0.1,
                        "untrained_consecutive": -0.1 + 0.1 * s,
                        "permuted": 0.0, "permuted_consecutive": 0.05 * s}}
        for s, v in enumerate(r)]}


def _fake_run(path, records: list[dict], summary: dict | None, cut_line: bool = False):
    (path / "records").mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    (path / "records" / f"{RECORDER}.jsonl").write_text(text + ('{"epoch": 9, "sta' if cut_line else ""))
    if summary is not None:
        write_json(path / "summary.json", summary)
    return path


@pytest.fixture
def three_seeds(tmp_path):
    """Seed 0 finished 3 epochs; seed 1 stopped after 2 (its last line cut short by a kill); seed 2 not started."""
    specs = [RunSpec(dataclasses.replace(TINY, seed=seed), (RECORDER,)) for seed in (0, 1, 2)]
    done = _fake_run(tmp_path / "s0", [_record(e, [0.1 * e, 0.2, None if e == 3 else 0.3]) for e in (1, 2, 3)],
                     {"status": "finished", "test_acc": 0.9})
    stopped = _fake_run(tmp_path / "s1", [_record(e, [0.3 * e, 0.4, 0.5]) for e in (1, 2)],
                        {"status": "interrupted", "error": "KeyboardInterrupt"}, cut_line=True)
    return specs, {specs[0].key(): done, specs[1].key(): stopped, specs[2].key(): tmp_path / "never"}


def test_epoch_steps_are_the_batches_of_the_training_split():
    images = len(load_dataset("digits", val_fraction=TINY.val_fraction).train)
    assert epoch_steps(TINY) == math.ceil(images / 64)
    assert epoch_steps(dataclasses.replace(TINY, batch_size=images)) == 1


def test_dose_points_are_every_recorded_epoch_over_the_seeds_that_reached_it(three_seeds):
    specs, run_dirs = three_seeds
    dose = dose_response("se", specs, run_dirs, (MIN_GATE_MOVED,))
    steps = epoch_steps(TINY)
    assert [(p.epoch, p.steps, p.seeds) for p in dose.points] == [(1, steps, 2), (2, 2 * steps, 2), (3, 3 * steps, 1)]
    first = dose.points[0].stages[0]
    assert first["trained"].values == pytest.approx((0.1, 0.3)) and first["trained"].low is not None
    assert first["untrained"].mean == pytest.approx(-0.1) and dose.points[1].stages[2]["permuted"].mean == 0.1
    assert dose.points[0].stages[1]["moved"].mean == pytest.approx(1.02)
    assert dose.points[2].stages[0]["trained"].low is None  # one seed: no interval, the mean only
    assert math.isnan(dose.points[2].stages[2]["trained"].mean)  # an undefined r stays undefined
    # the table: one row per point and stage, with the steps, the seeds and r with its nulls
    assert len(dose.rows) == 3 * 3
    row = dose.rows[3]
    assert (row["stage"], row["steps"], row["epoch"], row["seeds"]) == (0, 2 * steps, 2, 2)
    assert row["trained"].startswith("0.400 ± 0.283 [") and row["protocol"] == "per_sample, over steps"
    assert {"untrained", "permuted", "moved", "spread"} <= set(row)
    # how far each seed got, finished or not
    progress = dose.notes[0]
    assert f"seed 0: 3 of 3 epochs recorded ({3 * steps:,} steps), finished" in progress
    assert f"seed 1: 2 of 3 epochs recorded ({2 * steps:,} steps), stopped (interrupted)" in progress
    assert "seed 2: not started" in progress
    assert [name for name, _ in dose.figures] == ["se_dose_response"]


def test_no_record_yet_gives_the_progress_and_no_figure(tmp_path):
    specs = [RunSpec(dataclasses.replace(TINY, seed=seed), (RECORDER,)) for seed in (0, 1)]
    dose = dose_response("se", specs, {})
    assert dose.points == [] and dose.rows == [] and dose.figures == []
    assert dose.notes[0].endswith("seed 0: not started; seed 1: not started")


def test_dose_points_of_records_with_gaps_between_seeds():
    points = dose_points([[_record(1, [0.1, 0.1, 0.1])], [_record(2, [0.5, 0.5, 0.5])]], steps_per_epoch=10)
    assert [(p.steps, p.seeds) for p in points] == [(10, 1), (20, 1)]


def test_the_figure_has_a_log_axis_of_steps_both_null_bands_and_the_gates_panel(three_seeds):
    specs, run_dirs = three_seeds
    points = dose_response("se", specs, run_dirs).points
    fig = plot_dose_response(points, "se on digits", thresholds=(0.05, 0.05))
    ax_r, ax_g = fig.axes[:2]
    assert ax_r.get_xscale() == ax_g.get_xscale() == "log" and ax_r.get_xlabel() == "SGD steps"
    bands = {c.get_label(): c for c in ax_r.collections if c.get_label().endswith("(range over stages and seeds)")}
    assert set(bands) == {"untrained network (range over stages and seeds)",
                          "channels permuted (range over stages and seeds)"}
    # each band spans the null's range over stages and seeds: untrained -0.1 + 0.1 s by construction
    y = bands["untrained network (range over stages and seeds)"].get_paths()[0].vertices[:, 1]
    assert (y.min(), y.max()) == pytest.approx((-0.1, 0.1))
    y = bands["channels permuted (range over stages and seeds)"].get_paths()[0].vertices[:, 1]
    assert (y.min(), y.max()) == pytest.approx((0.0, 0.1))
    labels = [line.get_label() for line in ax_g.get_lines()]
    assert {"stage 0, moved", "stage 0, spread", "stage 2, spread"} <= set(labels)
    assert labels.count("precondition: 0.05") == 1  # equal thresholds: one line
    trained = next(line for line in ax_r.get_lines() if line.get_label() == "stage 0, trained")
    assert np.allclose(trained.get_xdata(), [p.steps for p in points])


def test_one_point_still_draws_visible_bands():
    points = dose_points([[_record(1, [0.1, 0.2, 0.3])]], steps_per_epoch=21)
    ax_r = plot_dose_response(points, "one epoch").axes[0]
    x = next(c for c in ax_r.collections if c.get_label().startswith("untrained")).get_paths()[0].vertices[:, 0]
    assert x.min() < 21 < x.max()
