"""The dia-improves-backbone claim: its runs at the smoke budget, measure() on micro runs and the
verdict rule on synthetic intervals (dia_ode/studies/claims/dia_vs_se.py)."""

import dataclasses
import math
import shutil

import pytest

from dia_ode import create_model
from dia_ode.analysis.intervals import mean_interval
from dia_ode.engine import run_training
from dia_ode.rundir import read_summary, write_json
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.dia_vs_se import (MODELS, accuracy_verdict, improvement_verdict, outcome_accuracy,
                                              paired_difference, parameter_verdict)
from dia_ode.studies.report.claim import Verdict
from dia_ode.studies.report.budgets import get_budget

CLAIM = get_claim("dia-improves-backbone")
SMOKE = get_budget("smoke")
MICRO = dataclasses.replace(SMOKE, seeds=(0, 1), epochs=1, width=4)


def test_runs_train_plain_se_and_dia_with_one_recipe_for_every_seed():
    specs = CLAIM.runs(SMOKE)
    assert [(s.config.model, s.config.seed) for s in specs] == [(m, seed) for m in MODELS for seed in SMOKE.seeds]
    assert len({s.key() for s in specs}) == len(specs)
    for s in specs:
        assert (s.config.dataset, s.config.epochs, s.config.model_options) == \
            ("digits", SMOKE.epochs, {"base_width": SMOKE.width})
    # same recipe: the configs differ in model and seed only
    strip = [{**dataclasses.asdict(s.config), "model": None, "seed": None} for s in specs]
    assert all(d == strip[0] for d in strip)
    assert CLAIM.runs(dataclasses.replace(SMOKE, datasets=("cifar10",))) == []  # no CIFAR files here


@pytest.fixture(scope="module")
def micro_runs(tmp_path_factory):
    """Seed 0 of each model trained (width 4, 1 epoch); seed 1 a copy with its test accuracy moved, to
    keep the test fast (measure reads summaries only)."""
    run_dirs, trained = {}, {}
    for spec in CLAIM.runs(MICRO):
        run_dir = tmp_path_factory.mktemp(f"{spec.config.model}{spec.config.seed}")
        if spec.config.seed == 0:
            run_training(spec.config, run_dir, progress=False)
            trained[spec.config.model] = run_dir
        else:
            shutil.copytree(trained[spec.config.model], run_dir, dirs_exist_ok=True)
            summary = read_summary(run_dir)
            write_json(run_dir / "summary.json", {**summary, "test_acc": summary["test_acc"] * 0.9})
        run_dirs[spec.key()] = run_dir
    return run_dirs


def test_measure_reads_accuracies_parameter_counts_and_paired_differences(micro_runs):
    result = CLAIM.measure(micro_runs, MICRO)
    acc = {s.config.model: [] for s in CLAIM.runs(MICRO)}
    for spec in CLAIM.runs(MICRO):
        acc[spec.config.model].append(read_summary(micro_runs[spec.key()])["test_acc"])
    assert result.references["resnet20 test accuracy"].values == tuple(acc["resnet20"])
    assert result.measured["dia_resnet20 test accuracy"].values == tuple(acc["dia_resnet20"])
    diff = result.measured["dia - plain accuracy (paired by seed)"]
    assert diff.values == pytest.approx([d - p for d, p in zip(acc["dia_resnet20"], acc["resnet20"])])
    params = {m: sum(p.numel() for p in create_model(m, base_width=4, in_channels=1).parameters()) for m in MODELS}
    assert [row["params"] for row in result.table] == [params[m] for m in MODELS]
    assert [row["extra params"] for row in result.table] == [params[m] - params["resnet20"] for m in MODELS]
    # at depth 20 one DIA cell per stage outweighs SE's modules: the parameter part fails, reported on its
    # own beside the accuracy part, at the trained scale and at the paper's (resnet164, counted untrained)
    parts = result.parts
    assert parts["parameters"].status == "not reproduced" and "resnet164" in parts["parameters"].reason
    assert parts["accuracy"] == accuracy_verdict(diff)
    assert result.verdict.status == "not reproduced" and result.verdict.reason.startswith("accuracy: ")
    assert any("+218,848" in note for note in result.notes)  # DIA's extra at resnet164, 100 classes


def test_a_diverged_run_counts_at_chance_and_a_failed_one_is_left_out(tmp_path):
    for name, summary in {"div": {"status": "failed", "error": "TrainingDiverged: loss is nan"},
                          "steps": {"status": "failed", "error": "StepBudgetExceeded: 10000 steps"},
                          "killed": {"status": "interrupted", "error": "KeyboardInterrupt"},
                          "ok": {"test_acc": 0.75}}.items():
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "summary.json", summary)
    assert outcome_accuracy(tmp_path / "div", 0.1) == 0.1 and outcome_accuracy(tmp_path / "steps", 0.1) == 0.1
    assert outcome_accuracy(tmp_path / "ok", 0.1) == 0.75
    assert math.isnan(outcome_accuracy(tmp_path / "killed", 0.1))


def _iv(*values):
    return mean_interval(values)


@pytest.mark.parametrize("diff, status, words", [
    ((0.02, 0.03, 0.025), "reproduced", "lies above 0"),
    ((-0.02, -0.03, -0.025), "not reproduced", "does not improve"),
    ((-0.01, 0.02, 0.005), "not reproduced", "within noise"),
    ((0.02,), "not testable here", "no interval"),
])
def test_accuracy_part_each_branch(diff, status, words):
    verdict = accuracy_verdict(_iv(*diff))
    assert verdict.status == status and words in verdict.reason


@pytest.mark.parametrize("extras, status", [
    ({"resnet20": (100, 500), "resnet164": (1000, 5000)}, "reproduced"),
    ({"resnet20": (500, 500), "resnet164": (1000, 5000)}, "not reproduced"),  # equal is not fewer
    ({"resnet20": (100, 500), "resnet164": (6000, 5000)}, "not reproduced"),  # fails at the paper's scale
])
def test_parameter_part_needs_fewer_at_every_scale(extras, status):
    verdict = parameter_verdict(extras)
    assert verdict.status == status and all(scale in verdict.reason for scale in extras)


@pytest.mark.parametrize("accuracy, parameters, status", [
    ("reproduced", "reproduced", "reproduced"),
    ("reproduced", "not reproduced", "not reproduced"),
    ("not reproduced", "reproduced", "not reproduced"),
    ("not testable here", "reproduced", "not testable here"),
    ("reproduced", "not testable here", "not reproduced"),
])
def test_overall_verdict_combines_the_parts(accuracy, parameters, status):
    verdict = improvement_verdict(Verdict(accuracy, "acc why"), Verdict(parameters, "par why"))
    assert verdict.status == status and verdict.reason == "accuracy: acc why; parameters: par why"


def test_paired_difference_pairs_by_seed_and_skips_failed_runs():
    d = paired_difference([0.9, 0.8, float("nan")], [0.85, 0.7, 0.5])
    assert d.n == 2 and d.values == pytest.approx((0.05, 0.1))
