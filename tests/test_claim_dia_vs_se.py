"""The dia-improves-backbone claim: its runs at the smoke budget, measure() on micro runs and the
verdict rule on synthetic intervals (dia_ode/studies/claims/dia_vs_se.py)."""

import dataclasses
import math
import shutil

import pytest

from dia_ode import create_model
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.engine import run_training
from dia_ode.rundir import read_summary, write_json
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.dia_vs_se import (ACCURACY_CEILING, MODELS, PAPER_GAIN, accuracy_verdict,
                                              outcome_accuracy, paired_difference)
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
    # the verdict is the accuracy rule's alone: the parameter overhead over depth is claim depth-independent-overhead
    assert result.verdict == accuracy_verdict(diff, result.references["resnet20 test accuracy"])
    assert result.parts == {} and not any("overhead" in note for note in result.notes)


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


BELOW_CEILING = _iv(0.95, 0.96, 0.94)


@pytest.mark.parametrize("diff, status, words", [
    ((0.02, 0.03, 0.025), "reproduced", "lies above 0"),
    ((-0.02, -0.03, -0.025), "not reproduced", "does not improve"),
    ((-0.001, 0.001, 0.0), "not reproduced", "stops below the paper's gain"),
    ((-0.01, 0.02, 0.005), "inconclusive", "holds both 0 and the paper's gain"),
    ((0.02,), "not testable here", "no interval"),
])
def test_accuracy_part_each_branch(diff, status, words):
    verdict = accuracy_verdict(_iv(*diff), BELOW_CEILING)
    assert verdict.status == status and words in verdict.reason


def test_accuracy_at_its_ceiling_is_a_precondition_not_met_with_the_number():
    assert ACCURACY_CEILING == 0.98
    gain = _iv(0.02, 0.03, 0.025)  # even a clear gain: the ceiling leaves no room for the paper's
    at = accuracy_verdict(gain, _iv(0.98, 0.98))
    assert at.status == "precondition not met" and "accuracy at its ceiling" in at.reason
    assert "0.9800 >= 0.98" in at.reason and "would test it" in at.reason
    assert accuracy_verdict(gain, _iv(0.9799, 0.9799)).status == "reproduced"  # just below: the rule decides
    assert accuracy_verdict(_iv(0.02,), _iv(0.99, 0.99)).status == "not testable here"  # no interval comes first


def test_a_difference_holding_0_is_inconclusive_only_while_it_reaches_the_papers_gain():
    assert PAPER_GAIN == 0.0324
    plain = _iv(0.90, 0.91)  # below the ceiling: the rule decides

    def difference(low, high):
        return Interval((low + high) / 2, 0.01, 3, low, high, 0.95, (low, (low + high) / 2, high))
    assert accuracy_verdict(difference(-0.01, 0.0324), plain).status == "inconclusive"
    below = accuracy_verdict(difference(-0.01, 0.0323), plain)
    assert below.status == "not reproduced" and "stops below the paper's gain" in below.reason
    assert accuracy_verdict(difference(-0.03, -0.001), plain).status == "not reproduced"
    assert accuracy_verdict(difference(0.001, 0.05), plain).status == "reproduced"
    # a row's own gain (claim official-accuracy-table) moves the threshold and is named in the reason
    assert accuracy_verdict(difference(-0.01, 0.0124), plain, gain=0.0124).status == "inconclusive"
    other = accuracy_verdict(difference(-0.01, 0.0123), plain, gain=0.0124)
    assert other.status == "not reproduced" and "the paper's gain +0.0124" in other.reason


def test_paired_difference_pairs_by_seed_and_skips_failed_runs():
    d = paired_difference([0.9, 0.8, float("nan")], [0.85, 0.7, 0.5])
    assert d.n == 2 and d.values == pytest.approx((0.05, 0.1))
