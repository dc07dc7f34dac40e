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
from dia_ode.studies.claims.dia_vs_se import (ACCURACY_CEILING, MODELS, OVERHEAD_TOLERANCE, PAPER_GAIN,
                                              accuracy_verdict,
                                              improvement_verdict, outcome_accuracy, overhead_by_depth, overhead_text,
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
    # the parameter part counts the overhead over depth without training: DIA's is one cell per stage
    parts = result.parts
    series = overhead_by_depth(MICRO.width, 10)
    assert parts["parameters"] == parameter_verdict(series) and parts["parameters"].status == "reproduced"
    assert [depth for depth, _, _ in series["basic"]] == [20, 56, 110] and series["bottleneck"][-1][0] == 164
    counted = {m: sum(p.numel() for p in create_model(m, base_width=4).parameters())
               for m in ("resnet56", "se_resnet56", "dia_resnet56")}  # on the CPU, as an independent count
    assert series["basic"][1] == (56, counted["se_resnet56"] - counted["resnet56"],
                                  counted["dia_resnet56"] - counted["resnet56"])
    assert any(overhead_text(series) in note for note in result.notes)
    assert parts["accuracy"] == accuracy_verdict(diff, result.references["resnet20 test accuracy"])
    assert result.verdict == improvement_verdict(parts["accuracy"], parts["parameters"])
    assert result.verdict.reason.startswith("accuracy: ")


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


def _series(basic_dia=(14392, 14392, 14392), basic_se=(2373, 7119, 14238)):
    return {"basic": [(d, se, dia) for d, se, dia in zip((20, 56, 110), basic_se, basic_dia)],
            "bottleneck": [(29, 33684, 218848), (164, 202104, 218848)]}


@pytest.mark.parametrize("series, status, words", [
    (_series(), "reproduced", "does not grow with depth"),
    (_series(basic_dia=(14392, 14400, 14392)), "reproduced", "within 8 parameters"),  # a few parameters apart
    (_series(basic_dia=(14392, 14401, 14392)), "not reproduced", "DIA's overhead changes with depth in the basic"),
    (_series(basic_dia=(14392, 14410, 14428)), "not reproduced", "DIA's overhead changes"),  # +1 per block
    (_series(basic_se=(2373, 2373, 2373)), "not reproduced", "SE's overhead does not grow with depth in the basic"),
    (_series(basic_se=(2373, 2381, 14238)), "not reproduced", "SE's overhead does not grow"),  # +8: not growth
])
def test_parameter_part_needs_a_constant_dia_overhead_and_a_growing_se_one(series, status, words):
    assert OVERHEAD_TOLERANCE == 8
    verdict = parameter_verdict(series)
    assert verdict.status == status and words in verdict.reason
    assert "basic blocks, depths 20/56/110" in verdict.reason and "bottleneck blocks, depths 29/164" in verdict.reason


def test_parameter_part_refuses_a_family_with_one_depth():
    with pytest.raises(ValueError, match="two or more depths per block family: bottleneck"):
        parameter_verdict({"basic": _series()["basic"], "bottleneck": [(164, 202104, 218848)]})
    with pytest.raises(ValueError, match="two or more depths"):
        parameter_verdict({})


def test_the_measured_overheads_reproduce_the_parameter_part_at_the_budgets_width():
    series = overhead_by_depth(16, 10)
    assert series["basic"] == [(20, 2373, 14392), (56, 7119, 14392), (110, 14238, 14392)]
    assert series["bottleneck"] == [(29, 33684, 218848), (164, 202104, 218848)]
    assert parameter_verdict(series).status == "reproduced"


@pytest.mark.parametrize("accuracy, parameters, status", [
    ("reproduced", "reproduced", "reproduced"),
    ("reproduced", "not reproduced", "not reproduced"),
    ("not reproduced", "reproduced", "not reproduced"),
    ("not testable here", "reproduced", "not testable here"),
    ("precondition not met", "reproduced", "precondition not met"),  # the headline part decides
    ("inconclusive", "not reproduced", "inconclusive"),
    ("reproduced", "not testable here", "not testable here"),
])
def test_overall_verdict_is_the_headline_part_unless_it_is_reproduced(accuracy, parameters, status):
    verdict = improvement_verdict(Verdict(accuracy, "acc why"), Verdict(parameters, "par why"))
    assert verdict.status == status and verdict.reason == "accuracy: acc why; parameters: par why"


def test_paired_difference_pairs_by_seed_and_skips_failed_runs():
    d = paired_difference([0.9, 0.8, float("nan")], [0.85, 0.7, 0.5])
    assert d.n == 2 and d.values == pytest.approx((0.05, 0.1))
