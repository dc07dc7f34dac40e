"""The steps-follow-stiffness claim: the runs it lists, the step/radius pairs it measures on micro runs,
and its verdict rule on synthetic intervals (dia_ode/studies/claims/stepsize_stiffness.py)."""

import dataclasses
import math

import numpy as np
import pytest

from dia_ode.analysis.attention_nulls import untrained_model
from dia_ode.analysis.intervals import mean_interval
from dia_ode.analysis.step_radius import step_radius_pairs
from dia_ode.engine import run_training
from dia_ode.rundir import load_run, write_json
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.stepsize_stiffness import MODELS, RADIUS_SAMPLES, stiffness_verdict
from dia_ode.studies.report.budgets import get_budget

CLAIM = get_claim("steps-follow-stiffness")
SMOKE = get_budget("smoke")
MICRO = dataclasses.replace(SMOKE, samples=16)  # fewer traced images: the test stays fast


def test_runs_list_se_and_dia_resnet20_for_every_seed():
    specs = CLAIM.runs(SMOKE)
    assert [(s.config.model, s.config.seed) for s in specs] == [(m, seed) for m in MODELS for seed in SMOKE.seeds]
    assert MODELS == ("se_resnet20", "dia_resnet20")
    for s in specs:
        assert (s.config.dataset, s.config.epochs, s.config.model_options) == ("digits", 1, {"base_width": 4})
        assert s.recorders == ()
    assert len({s.key() for s in specs}) == len(specs)
    cpu = CLAIM.runs(get_budget("cpu"))
    assert len(cpu) == 6 and {s.config.model_options["base_width"] for s in cpu} == {16}
    nothing = dataclasses.replace(SMOKE, datasets=("cifar10",))  # no CIFAR files without --data-dir
    assert CLAIM.runs(nothing) == []
    assert CLAIM.measure({}, nothing).verdict.status == "not testable here"


@pytest.fixture(scope="module")
def micro_runs(tmp_path_factory):
    """The smoke budget's runs: se_resnet20 and dia_resnet20, width 4, 1 epoch, 2 seeds."""
    run_dirs = {}
    for spec in CLAIM.runs(MICRO):
        run_dir = tmp_path_factory.mktemp(f"{spec.config.model}-seed{spec.config.seed}")
        write_json(run_dir / "config.json", dataclasses.asdict(spec.config))  # what load_run reads back
        run_training(spec.config, run_dir, progress=False)
        run_dirs[spec.key()] = run_dir
    return run_dirs


def test_measure_pools_every_stage_against_the_untrained_network(micro_runs):
    result = CLAIM.measure(micro_runs, MICRO)
    for model in MODELS:
        trained = result.measured[f"{model} Spearman(h_k, rho(J_k)), all stages pooled"]
        untrained = result.references[f"{model} Spearman(h_k, rho(J_k)), all stages pooled"]
        assert trained.n == untrained.n == len(MICRO.seeds)
        assert all(-1 <= v <= 1 for v in trained.values + untrained.values)
        assert f"{model} Spearman(h_k, rho(J_k)), within stages" in result.references
    # the numbers are the library's: the first se_resnet20 run, recomputed here, trained and untrained
    spec = CLAIM.runs(MICRO)[0]
    run = load_run(micro_runs[spec.key()])
    x, _ = run.test_batch(MICRO.samples)
    pairs = step_radius_pairs(run.model, x, RADIUS_SAMPLES)
    null = step_radius_pairs(untrained_model(run.model_spec, spec.config.seed), x, RADIUS_SAMPLES)
    name = "se_resnet20 Spearman(h_k, rho(J_k)), all stages pooled"
    assert result.measured[name].values[0] == pytest.approx(pairs["spearman"]["rho"])
    assert result.references[name].values[0] == pytest.approx(null["spearman"]["rho"])
    # resnet20: 3 stages x 3 blocks, the downsampling first blocks of stages 1 and 2 have no radius
    assert list(pairs["stage"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.isnan(pairs["radius"][[3, 6]]).all() and np.isfinite(np.delete(pairs["radius"], [3, 6])).all()
    assert pairs["spearman"]["n"] == 7 and (pairs["h"] != null["h"]).any()  # one epoch moved the steps
    # the verdict is the rule applied to the measured intervals
    pooled = {m: f"{m} Spearman(h_k, rho(J_k)), all stages pooled" for m in MODELS}
    expected = stiffness_verdict({m: (result.measured[pooled[m]], result.references[pooled[m]]) for m in MODELS})
    assert result.verdict == expected
    assert [row["network"] for row in result.table] == ["trained", "untrained"] * 2
    assert [name for name, _ in result.figures] == ["h_vs_radius"]
    assert len(result.figures[0][1].axes) == 2


def _iv(*values):
    return mean_interval(values)


def test_verdict_reproduced_when_every_model_lies_below_zero_and_below_its_untrained_network():
    verdict = stiffness_verdict({"se": (_iv(-0.8, -0.7, -0.75), _iv(0.1, 0.0, 0.05)),
                                 "dia": (_iv(-0.9, -0.85, -0.88), _iv(-0.2, -0.1, -0.15))})
    assert verdict.status == "reproduced"


@pytest.mark.parametrize("trained, untrained, why", [
    ((-0.2, 0.3, 0.1), (0.1, 0.0, 0.05), "includes 0"),  # interval straddles 0
    ((0.6, 0.7, 0.65), (0.1, 0.0, 0.05), "includes 0 or is positive"),  # positive
    ((-0.8, -0.7, -0.75), (-0.8, -0.7, -0.72), "overlaps the untrained"),  # negative, but so was the untrained net
])
def test_verdict_not_reproduced(trained, untrained, why):
    verdict = stiffness_verdict({"se": (_iv(-0.8, -0.7, -0.75), _iv(0.1, 0.0, 0.05)),
                                 "dia": (_iv(*trained), _iv(*untrained))})
    assert verdict.status == "not reproduced" and why in verdict.reason and "of dia" in verdict.reason
    assert "of se" not in verdict.reason  # only the model that fails is named


def test_verdict_not_testable_without_intervals():
    assert stiffness_verdict({}).status == "not testable here"
    one_seed = stiffness_verdict({"se": (_iv(-0.8), _iv(0.1))})
    assert one_seed.status == "not testable here" and "se" in one_seed.reason
    undefined = stiffness_verdict({"se": (_iv(-0.8, math.nan), _iv(0.1, 0.0))})  # rho undefined for one seed
    assert undefined.status == "not testable here"
