"""The steps-follow-stiffness claim: the runs it lists, the step/radius pairs it measures on micro runs,
and its verdict rule on synthetic intervals (dia_ode/studies/claims/stepsize_stiffness.py)."""

import dataclasses
import math

import numpy as np
import pytest

from dia_ode.analysis.attention_nulls import untrained_model
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.analysis.step_radius import step_radius_pairs, within_stage_rank_correlation
from dia_ode.analysis.stepsize import rank_correlation
from dia_ode.rundir import load_run, write_json
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.claims.stepsize_stiffness import (DECISIVE_RHO, MODELS, RADIUS_SAMPLES, depth_verdicts,
                                                       model_outcome, stiffness_verdict)
from dia_ode.studies.report.budgets import get_budget

CLAIM = get_claim("steps-follow-stiffness")
SMOKE = get_budget("smoke")
MICRO = dataclasses.replace(SMOKE, samples=16)  # fewer traced images: the test stays fast


def test_runs_list_se_and_dia_resnet20_for_every_seed():
    specs = CLAIM.runs(SMOKE)
    assert [(s.config.model, s.config.seed) for s in specs] == [(m, seed) for m in MODELS for seed in SMOKE.seeds]
    assert MODELS == ("se_resnet20", "dia_resnet20")
    options = {"se_resnet20": {**SE_OPTIONS, "base_width": 4}, "dia_resnet20": {"base_width": 4}}
    for s in specs:
        assert (s.config.dataset, s.config.epochs, s.config.model_options) == ("digits", 1, options[s.config.model])
        assert s.recorders == ()
    # the SE network is the one cross-layer-correlation studies: the same options, one constant
    assert {s.config.model_options["min_hidden"] for s in specs if s.config.model == "se_resnet20"} == {4}
    assert all(s.config.model_options == {**SE_OPTIONS, "base_width": SMOKE.width}
               for s in get_claim("cross-layer-correlation").runs(SMOKE))
    assert len({s.key() for s in specs}) == len(specs)
    cpu = CLAIM.runs(get_budget("cpu"))
    assert len(cpu) == 12 and {s.config.model_options["base_width"] for s in cpu} == {16}
    # above the smoke budget the same attentions at depth 56 too, the SE one with the same SE options
    deep = [s.config for s in cpu if s.config.model.endswith("56")]
    assert [(c.model, c.seed) for c in deep] == [(m, seed) for m in ("se_resnet56", "dia_resnet56")
                                                 for seed in (0, 1, 2)]
    assert all(c.model_options == {**SE_OPTIONS, "base_width": 16} for c in deep if c.model.startswith("se_"))
    assert {s.config.model for s in CLAIM.runs(get_budget("full"))} == {*MODELS, "se_resnet56", "dia_resnet56"}
    nothing = dataclasses.replace(SMOKE, datasets=("cifar10",))  # no CIFAR files without --data-dir
    assert CLAIM.runs(nothing) == []
    assert CLAIM.measure({}, nothing).verdict.status == "not testable here"


@pytest.fixture(scope="module")
def micro_runs(train_claim_runs):
    """The smoke budget's runs: se_resnet20 and dia_resnet20, width 4, 1 epoch, 2 seeds."""
    return train_claim_runs(CLAIM.runs(MICRO))


def test_measure_reads_the_within_stage_rho_paired_with_the_untrained_network(micro_runs):
    result = CLAIM.measure(micro_runs, MICRO)
    for model in MODELS:
        for what in ("within stages", "all stages pooled"):
            trained = result.measured[f"{model} Spearman(h_k, rho(J_k)), {what}"]
            untrained = result.references[f"{model} Spearman(h_k, rho(J_k)), {what}"]
            gain = result.measured[f"{model} Spearman(h_k, rho(J_k)), {what}, trained minus untrained (paired by seed)"]
            assert trained.n == untrained.n == len(MICRO.seeds)
            assert all(-1 <= v <= 1 for v in trained.values + untrained.values)
            assert gain.values == pytest.approx([t - u for t, u in zip(trained.values, untrained.values)])
    # the numbers are the library's: the first se_resnet20 run, recomputed here, trained and untrained
    spec = CLAIM.runs(MICRO)[0]
    run = load_run(micro_runs[spec.key()])
    x, _ = run.test_batch(MICRO.samples)
    pairs = step_radius_pairs(run.model, x, RADIUS_SAMPLES)
    null = step_radius_pairs(untrained_model(run.model_spec, spec.config.seed), x, RADIUS_SAMPLES)
    for key, what in (("spearman", "all stages pooled"), ("spearman_within_stage", "within stages")):
        name = f"se_resnet20 Spearman(h_k, rho(J_k)), {what}"
        assert result.measured[name].values[0] == pytest.approx(pairs[key]["rho"], nan_ok=True)
        assert result.references[name].values[0] == pytest.approx(null[key]["rho"], nan_ok=True)
    # resnet20: 3 stages x 3 blocks, the downsampling first blocks of stages 1 and 2 have no radius
    assert list(pairs["stage"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.isnan(pairs["radius"][[3, 6]]).all() and np.isfinite(np.delete(pairs["radius"], [3, 6])).all()
    assert pairs["spearman"]["n"] == pairs["spearman_within_stage"]["n"] == 7
    assert (pairs["h"] != null["h"]).any()  # one epoch moved the steps
    # the verdict is the rule applied to the within-stage intervals
    within = {m: f"{m} Spearman(h_k, rho(J_k)), within stages" for m in MODELS}
    expected = stiffness_verdict({m: (result.measured[within[m]],
                                      result.measured[f"{within[m]}, trained minus untrained (paired by seed)"])
                                  for m in MODELS})
    assert result.verdict == expected
    assert [row["network"] for row in result.table] == ["trained", "untrained"] * 2
    for model in MODELS:  # the notes give each model's paired shift from the untrained network
        shift = result.measured[f"{within[model]}, trained minus untrained (paired by seed)"]
        assert any(note.startswith(f"{model}: within-stage Spearman") and "paired shift from the untrained network"
                   in note and shift.format('.2f') in note for note in result.notes)
    assert [name for name, _ in result.figures] == ["h_vs_radius"]
    assert len(result.figures[0][1].axes) == 2


def test_measure_leaves_out_a_diverged_run_with_a_note(micro_runs, tmp_path):
    spec = CLAIM.runs(MICRO)[0]  # se_resnet20, seed 0
    write_json(tmp_path / "summary.json", {"status": "failed", "error": "TrainingDiverged: non-finite loss"})
    result = CLAIM.measure({**micro_runs, spec.key(): tmp_path}, MICRO)
    assert f"se_resnet20 seed {spec.config.seed} (diverged)" in " ".join(result.notes)
    assert result.measured["se_resnet20 Spearman(h_k, rho(J_k)), within stages"].n == len(MICRO.seeds) - 1
    assert result.measured["dia_resnet20 Spearman(h_k, rho(J_k)), within stages"].n == len(MICRO.seeds)


def test_the_within_stage_rho_drops_a_trend_between_stages():
    # the later stage has a larger radius and smaller steps, but within each stage h *rises* with the radius
    stage = np.array([0, 0, 0, 1, 1, 1])
    radius = np.array([1.0, 1.1, 1.2, 10.0, 11.0, 12.0])
    h = np.array([0.9, 0.95, 1.0, 0.1, 0.15, 0.2])
    assert rank_correlation(h, radius)["rho"] < -0.3  # pooled: "steps follow stiffness", from the stages alone
    assert within_stage_rank_correlation(h, radius, stage)["rho"] > 0.8  # within stages: the opposite
    # a block without a radius (a downsampling block) does not enter its stage's mean
    radius_nan = np.array([10.0, 11.0, 12.0, np.nan, 1.0, 1.2])
    h_nan = np.array([0.9, 0.95, 1.0, 50.0, 0.1, 0.2])  # a huge h on the block without a radius
    assert within_stage_rank_correlation(h_nan, radius_nan, stage) == \
        within_stage_rank_correlation(np.delete(h_nan, 3), np.delete(radius_nan, 3), np.delete(stage, 3))


def _iv(*values):
    return mean_interval(values)


def test_verdict_reproduced_when_every_model_lies_below_zero_and_below_its_untrained_network_paired():
    verdict = stiffness_verdict({"se": (_iv(-0.8, -0.7, -0.75), _iv(-0.8, -0.7, -0.75)),
                                 "dia": (_iv(-0.9, -0.85, -0.88), _iv(-0.2, -0.1, -0.15))})
    assert verdict.status == "reproduced" and "within-stage" in verdict.reason


@pytest.mark.parametrize("trained, gain, why", [
    ((-0.05, 0.05, 0.0), (-0.3, -0.2, -0.25), "includes 0"),  # straddles 0, and leaves out -0.3
    ((0.6, 0.7, 0.65), (0.5, 0.6, 0.55), "includes 0 or is positive"),  # positive
    ((-0.8, -0.7, -0.75), (-0.05, 0.04, 0.0), "not below the untrained"),  # negative, but so was the untrained net
])
def test_verdict_not_reproduced(trained, gain, why):
    verdict = stiffness_verdict({"se": (_iv(-0.8, -0.7, -0.75), _iv(-0.8, -0.7, -0.75)),
                                 "dia": (_iv(*trained), _iv(*gain))})
    assert verdict.status == "not reproduced" and why in verdict.reason and "of dia" in verdict.reason
    assert "of se" not in verdict.reason  # only the model that fails is named
    assert "rules the claim out" in verdict.reason


def _interval(low, high):
    return Interval((low + high) / 2, 0.1, 3, low, high, 0.95, (low, high, (low + high) / 2))


def test_an_interval_admits_both_readings_when_it_holds_0_and_a_decisive_negative_rho():
    assert DECISIVE_RHO == 0.3
    shows = _interval(-0.9, -0.5)
    assert model_outcome(shows, shows) == "shows"
    assert model_outcome(_interval(-0.3, 0.1), shows) == "inconclusive"  # reaches -0.3: admits both
    assert model_outcome(_interval(-0.29, 0.1), shows) == "against"  # stops short of -0.3: rules it out
    assert model_outcome(shows, _interval(-0.6, 0.2)) == "inconclusive"  # the paired shift admits both
    assert model_outcome(shows, _interval(-0.2, 0.2)) == "against"
    assert model_outcome(_interval(-0.5, 0.3), _interval(-0.1, 0.3)) == "against"  # one failing interval rules out
    assert model_outcome(_interval(-0.5, 0.3), _interval(-0.4, 0.3)) == "inconclusive"
    assert model_outcome(_iv(-0.5), shows) is None


def test_verdict_inconclusive_when_the_intervals_admit_both_readings():
    # the cpu budget's within-stage rho (experiments/README.md R1): se -0.21 [-1, 1], dia 0.11 [-1, 1]
    wide_se, wide_dia = _interval(-1.0, 1.0), _interval(-1.0, 1.0)
    verdict = stiffness_verdict({"se_resnet20": (wide_se, _interval(-0.9, 0.8)),
                                 "dia_resnet20": (wide_dia, _interval(-1.2, 1.1))})
    assert verdict.status == "inconclusive" and "se_resnet20, dia_resnet20" in verdict.reason
    assert "-0.3" in verdict.reason and "minus untrained" in verdict.reason  # the paired shift is named
    shows = (_iv(-0.9, -0.85, -0.88), _iv(-0.2, -0.1, -0.15))
    assert stiffness_verdict({"se": shows, "dia": (wide_dia, _interval(-0.9, 0.8))}).status == "inconclusive"
    # a model that rules the claim out decides: the claim needs every model
    against = (_iv(-0.05, 0.05, 0.0), _iv(-0.05, 0.05, 0.0))
    mixed = stiffness_verdict({"se": (wide_se, _interval(-0.9, 0.8)), "dia": against})
    assert mixed.status == "not reproduced" and "of dia" in mixed.reason


def test_verdict_not_testable_without_intervals():
    assert stiffness_verdict({}).status == "not testable here"
    one_seed = stiffness_verdict({"se": (_iv(-0.8), _iv(-0.5))})
    assert one_seed.status == "not testable here" and "se" in one_seed.reason
    undefined = stiffness_verdict({"se": (_iv(-0.8, math.nan), _iv(-0.5, -0.4))})  # rho undefined for one seed
    assert undefined.status == "not testable here"
    unpaired = stiffness_verdict({"se": (_iv(-0.8, -0.7), _iv(-0.5, math.nan))})  # the untrained rho undefined
    assert unpaired.status == "not testable here"
    unfinished = stiffness_verdict({"se": (_iv(-0.8, -0.7), _iv(-0.5, -0.4)), "dia": None})  # every dia run diverged
    assert unfinished.status == "not testable here" and "dia: no run finished" in unfinished.reason


SHOWS = (_iv(-0.9, -0.85, -0.88), _iv(-0.2, -0.1, -0.15))
RULES_OUT = (_iv(-0.05, 0.05, 0.0), _iv(-0.05, 0.05, 0.0))
BOTH = (_interval(-1.0, 1.0), _interval(-0.9, 0.8))


def test_one_depth_is_the_rule_alone_without_parts():
    models = {"se_resnet20": SHOWS, "dia_resnet20": SHOWS}
    assert depth_verdicts({20: models}) == (stiffness_verdict(models), {})


@pytest.mark.parametrize("deep, status, part", [
    ((SHOWS, SHOWS), "reproduced", "reproduced"),
    ((SHOWS, RULES_OUT), "not reproduced", "not reproduced"),  # a depth that rules the claim out decides
    ((SHOWS, BOTH), "inconclusive", "inconclusive"),
    ((SHOWS, None), "not testable here", "not testable here"),  # no dia_resnet56 run finished
])
def test_the_verdict_needs_every_model_at_both_depths(deep, status, part):
    shallow = {"se_resnet20": SHOWS, "dia_resnet20": SHOWS}
    verdict, parts = depth_verdicts({20: shallow, 56: dict(zip(("se_resnet56", "dia_resnet56"), deep))})
    assert verdict.status == status and parts["depth 20"].status == "reproduced"
    assert parts["depth 56"].status == part and list(parts) == ["depth 20", "depth 56"]
    if status == "not reproduced":
        assert "of dia_resnet56" in verdict.reason and "of se_resnet" not in verdict.reason
    # the same at the other depth: neither depth is the one that counts
    flipped, flipped_parts = depth_verdicts({20: dict(zip(("se_resnet20", "dia_resnet20"), deep)),
                                             56: {"se_resnet56": SHOWS, "dia_resnet56": SHOWS}})
    assert flipped.status == status and flipped_parts["depth 20"].status == part


DEEP = dataclasses.replace(get_budget("cpu"), seeds=SMOKE.seeds, epochs=1, width=4, samples=16)


@pytest.mark.slow  # trains and eigen-solves two resnet56 networks per seed
def test_measure_at_both_depths_gives_each_depth_a_part(micro_runs, train_claim_runs):
    deep_specs = [s for s in CLAIM.runs(DEEP) if s.config.model.endswith("56")]
    assert {s.key() for s in CLAIM.runs(DEEP)} - {s.key() for s in deep_specs} == set(micro_runs)  # same resnet20 runs
    result = CLAIM.measure({**micro_runs, **train_claim_runs(deep_specs)}, DEEP)
    assert list(result.parts) == ["depth 20", "depth 56"]
    within = "Spearman(h_k, rho(J_k)), within stages"
    pairs = {m: (result.measured[f"{m} {within}"], result.measured[f"{m} {within}, trained minus untrained (paired by "
                                                                      f"seed)"])
             for m in (*MODELS, "se_resnet56", "dia_resnet56")}
    assert result.verdict == stiffness_verdict(pairs)
    assert result.parts["depth 56"] == stiffness_verdict({m: pairs[m] for m in ("se_resnet56", "dia_resnet56")})
    rows = [row for row in result.table if row["model"] == "dia_resnet56"]
    assert [row["pairs per seed"] for row in rows] == ["25", "25"]  # 27 blocks less 2 downsampling ones
    assert len(result.figures[0][1].axes) == 4
