"""The continuous-dia-nfe claim: the runs it lists, what measure() reads from a real micro run and from
hand-made summaries, and its verdict rule on synthetic intervals (dia_ode/studies/claims/continuous_nfe.py)."""

import dataclasses
import math

import pytest

from dia_ode.analysis.intervals import mean_interval
from dia_ode.engine import run_training
from dia_ode.rundir import write_json
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.continuous_nfe import (DIA, MARGIN, PLAIN, TOLERANCES, accuracy_not_worse,
                                                   nfe_verdict)
from dia_ode.studies.report.budgets import get_budget

CLAIM = get_claim("continuous-dia-nfe")
SMOKE = get_budget("smoke")


def test_runs_list_both_models_at_every_tolerance_and_seed():
    specs = CLAIM.runs(SMOKE)
    assert [(s.config.model_options["rtol"], s.config.model, s.config.seed) for s in specs] == \
        [(tol, model, seed) for tol in TOLERANCES for model in (PLAIN, DIA) for seed in SMOKE.seeds]
    assert TOLERANCES == (1e-3, 1e-5)
    for s in specs:
        opts = s.config.model_options
        assert opts == {"width": SMOKE.width, "rtol": opts["rtol"], "atol": opts["rtol"]}
        assert (s.config.dataset, s.config.epochs) == ("digits", SMOKE.epochs)
    assert len({s.key() for s in specs}) == len(specs) == 8
    assert CLAIM.runs(dataclasses.replace(SMOKE, datasets=("cifar10",))) == []


def test_a_trained_run_gives_the_numbers_measure_reads(tmp_path):
    """A real micro run (odenet, width 4, 1 epoch at the tight tolerance): its summary carries a test NFE and
    accuracy, and measure() reports them as odenet's reference."""
    spec = next(s for s in CLAIM.runs(SMOKE) if s.config.model == PLAIN and s.config.model_options["rtol"] == 1e-5)
    write_json(tmp_path / "config.json", dataclasses.asdict(spec.config))
    summary = run_training(spec.config, tmp_path, progress=False)
    assert summary["nfe_test"] >= 8 and 0 <= summary["test_acc"] <= 1  # dopri5: >= one step of 6 + 2 evaluations
    budget = dataclasses.replace(SMOKE, seeds=(spec.config.seed,))
    result = CLAIM.measure({s.key(): tmp_path for s in CLAIM.runs(budget)}, budget)  # one run stands for all
    nfe = result.references["test NFE, tolerance 1e-05: dia_odenet (reference odenet)"]
    assert nfe.values == (summary["nfe_test"],)
    assert result.measured["NFE ratio dia_odenet / odenet, tolerance 1e-05"].mean == 1
    assert result.verdict.status == "not testable here"  # one seed: no interval


def _fake_runs(tmp_path, budget, nfe, acc, failed=()):
    """Run directories holding only summary.json: nfe[(tol, model)] and acc[(tol, model)] per seed lists."""
    run_dirs = {}
    for spec in CLAIM.runs(budget):
        cfg = spec.config
        tol, i = cfg.model_options["rtol"], budget.seeds.index(cfg.seed)
        run_dir = tmp_path / spec.key()
        run_dir.mkdir()
        if (tol, cfg.model, cfg.seed) in failed:
            summary = {"status": "failed", "error": "TrainingDiverged: loss is nan"}
        else:
            summary = {"status": "finished", "nfe_test": nfe[tol, cfg.model][i], "test_acc": acc[tol, cfg.model][i]}
        write_json(run_dir / "summary.json", summary)
        run_dirs[spec.key()] = run_dir
    return run_dirs


THREE = dataclasses.replace(SMOKE, seeds=(0, 1, 2))
ACC = {(tol, m): [0.95, 0.96, 0.97] for tol in TOLERANCES for m in (PLAIN, DIA)}


def test_measure_pairs_the_ratio_by_seed(tmp_path):
    nfe = {(1e-3, PLAIN): [14, 20, 26], (1e-3, DIA): [14, 14, 20], (1e-5, PLAIN): [26, 32, 38],
           (1e-5, DIA): [20, 20, 26]}
    result = CLAIM.measure(_fake_runs(tmp_path, THREE, nfe, ACC), THREE)
    ratio = result.measured["NFE ratio dia_odenet / odenet, tolerance 1e-05"]
    assert ratio.values == pytest.approx((20 / 26, 20 / 32, 26 / 38))  # per seed, not a ratio of means
    name = "test NFE, tolerance 0.001: dia_odenet (reference odenet)"
    assert result.references[name].mean == pytest.approx(20) and result.measured[name].mean == pytest.approx(16)
    assert [row["tolerance"] for row in result.table] == ["0.001", "1e-05"]
    assert result.measured["test accuracy dia_odenet - odenet (paired), tolerance 0.001"].values == (0, 0, 0)
    # at 1e-3 the first seed saves nothing: the ratio's interval reaches 1, so the claim fails there
    assert result.verdict.status == "not reproduced" and "holds at 1e-05 only" in result.verdict.reason


def test_measure_leaves_out_failed_runs_and_says_so(tmp_path):
    nfe = {(tol, m): [14, 14, 14] for tol in TOLERANCES for m in (PLAIN, DIA)}
    failed = {(1e-5, DIA, 0), (1e-5, DIA, 1)}
    result = CLAIM.measure(_fake_runs(tmp_path, THREE, nfe, ACC, failed), THREE)
    assert result.measured["NFE ratio dia_odenet / odenet, tolerance 0.001"].n == 3
    assert result.measured["NFE ratio dia_odenet / odenet, tolerance 1e-05"].n == 1  # one pair of runs left
    assert sum("TrainingDiverged" in note for note in result.notes) == 2
    assert result.verdict.status == "not testable here" and "1e-05" in result.verdict.reason


def _iv(*values):
    return mean_interval(values)


GOOD_ACC = _iv(0.0, 0.002, -0.001)  # paired dia - plain accuracy: low end above -MARGIN


def test_verdict_reproduced_and_the_target():
    below_target = nfe_verdict({1e-3: (_iv(0.55, 0.6, 0.65), GOOD_ACC), 1e-5: (_iv(0.5, 0.55, 0.6), GOOD_ACC)})
    assert below_target.status == "reproduced"
    assert "target ratio <= 0.75 is met at 0.001, 1e-05" in below_target.reason  # upper ends 0.72 and 0.67
    below_one = nfe_verdict({1e-3: (_iv(0.8, 0.85, 0.9), GOOD_ACC), 1e-5: (_iv(0.55, 0.6, 0.65), GOOD_ACC)})
    assert below_one.status == "reproduced" and "met at 1e-05" in below_one.reason  # 0.97: below 1, not 0.75
    missed = nfe_verdict({1e-3: (_iv(0.6, 0.65, 0.7), GOOD_ACC)})  # upper end 0.77
    assert missed.status == "reproduced" and "met at no tolerance" in missed.reason
    better = _iv(0.06, 0.07, 0.08)  # dia above plain is not worse
    assert nfe_verdict({1e-3: (_iv(0.6, 0.65, 0.7), better)}).status == "reproduced"


def test_accuracy_margin_is_paired_and_one_point():
    assert accuracy_not_worse(_iv(-0.005, -0.006, -0.007)) and MARGIN == 0.01  # a loss within the margin
    assert not accuracy_not_worse(_iv(-0.012, -0.011, -0.013))  # a loss beyond it, however tight
    # unpaired, dia (0.90, 0.95, 0.99) overlaps plain (0.95, 0.96, 0.97); paired, the loss may reach 8 points
    assert not accuracy_not_worse(_iv(0.90 - 0.95, 0.95 - 0.96, 0.99 - 0.97))


@pytest.mark.parametrize("ratio, acc", [
    ((1.0, 1.0, 1.0), GOOD_ACC),  # the same NFE: E2's measurement
    ((0.7, 1.1, 0.9), GOOD_ACC),  # the interval reaches 1
    ((0.6, 0.65, 0.7), _iv(-0.15, -0.145, -0.14)),  # fewer NFE, worse accuracy
])
def test_verdict_not_reproduced(ratio, acc):
    verdict = nfe_verdict({1e-3: (_iv(0.6, 0.65, 0.7), GOOD_ACC), 1e-5: (_iv(*ratio), acc)})
    assert verdict.status == "not reproduced" and "holds at 0.001 only" in verdict.reason


def test_verdict_not_testable():
    assert nfe_verdict({}).status == "not testable here"
    one_seed = nfe_verdict({1e-3: (_iv(0.6), _iv(0.0))})
    assert one_seed.status == "not testable here" and "0.001" in one_seed.reason
    assert "two or more finished seeds" in one_seed.reason and "would test it" in one_seed.reason
    assert nfe_verdict({1e-3: (_iv(0.6, math.nan), GOOD_ACC)}).status == "not testable here"
