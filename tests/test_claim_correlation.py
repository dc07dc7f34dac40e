"""The cross-layer-correlation claim: the SE min_hidden option, the per-epoch recorder, measure() on micro
runs (with the homogeneity of features and gate logits), the positive control, and the verdict rule on
synthetic intervals (dia_ode/studies/claims/correlation.py)."""

import dataclasses
import math

import pytest
import torch
from click.testing import CliRunner

from dia_ode import create_model
from dia_ode.analysis import attention_nulls
from dia_ode.analysis.attention_nulls import permuted_correlation, untrained_model
from dia_ode.analysis.correlation import PROTOCOLS, attention_vectors, protocol_correlation
from dia_ode.analysis.homogeneity import LABELS, MEASURES, stage_homogeneity
from dia_ode.analysis.intervals import mean_interval
from dia_ode.attention.registry import get_attention
from dia_ode.attention.se import SqueezeExcite
from dia_ode.cli import main
from dia_ode.rundir import load_run, read_jsonl, write_json
from dia_ode.solvers import trace
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.correlation import (CONTROL_RHOS, CONTROL_TOLERANCE, MIN_GATE_MOVED, MIN_GATE_SPREAD,
                                                RECORDER, RECORDER_SAMPLES, THRESHOLD, control_verdict,
                                                correlation_verdict, gates_learned, positive_control,
                                                stage_shows_claim)
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.report.budgets import get_budget

CLAIM = get_claim("cross-layer-correlation")
SMOKE = get_budget("smoke")


def _hidden_units(model) -> list[int]:
    return [m.excite[0].out_features for m in model.modules() if isinstance(m, SqueezeExcite)]


def test_min_hidden_sets_the_fewest_bottleneck_units_and_reaches_models():
    assert SqueezeExcite(16, reduction=16).excite[0].out_features == 1  # the default is unchanged
    assert SqueezeExcite(16, reduction=16, min_hidden=4).excite[0].out_features == 4
    assert SqueezeExcite(64, reduction=4, min_hidden=4).excite[0].out_features == 16  # C // r when larger
    with pytest.raises(ValueError, match="min_hidden"):
        SqueezeExcite(16, min_hidden=0)
    # widths 4 / 8 / 16 with r = 4 give 1 / 2 / 4 hidden units; min_hidden lifts them all to 4
    assert sorted(set(_hidden_units(create_model("se_resnet20", base_width=4, reduction=4)))) == [1, 2, 4]
    assert set(_hidden_units(create_model("se_resnet20", base_width=4, reduction=4, min_hidden=4))) == {4}
    assert "min_hidden" in get_attention("se").options() and get_attention("se").option_defaults()["min_hidden"] == 1
    out = CliRunner().invoke(main, ["ls", "--options", "se_resnet20"]).output
    assert [line.split() for line in out.splitlines() if line.split()[:1] == ["min_hidden"]] == \
        [["min_hidden", "int", "1"]]


def test_runs_list_one_se_resnet_per_seed_with_the_recorder():
    specs = CLAIM.runs(SMOKE)
    assert [s.config.seed for s in specs] == list(SMOKE.seeds)
    for s in specs:
        assert (s.config.model, s.config.dataset, s.config.epochs) == ("se_resnet20", "digits", SMOKE.epochs)
        assert s.config.model_options == {"reduction": 4, "min_hidden": 4, "base_width": SMOKE.width}
        assert s.config.model_options == {**SE_OPTIONS, "base_width": SMOKE.width}  # the one shared constant
        assert s.recorders == (RECORDER,)
    cpu = CLAIM.runs(get_budget("cpu"))
    assert sorted({s.config.model for s in cpu}) == ["se_resnet20", "se_resnet56"] and len({s.key() for s in cpu}) == 6
    nothing = dataclasses.replace(SMOKE, datasets=("cifar10",))  # no CIFAR files without --data-dir
    assert CLAIM.runs(nothing) == []
    assert CLAIM.measure({}, nothing).verdict.status == "not testable here"


@pytest.fixture(scope="module")
def micro_runs(train_claim_runs):
    """The smoke budget's runs (se_resnet20, width 4, 1 epoch, 2 seeds), trained with the recorder."""
    return train_claim_runs(CLAIM.runs(SMOKE))


def _consecutive_r(model, x, protocol):
    with torch.no_grad():
        return [protocol_correlation(attention_vectors(t), protocol)["mean_r_consecutive"] for t in trace(model, x)]


def test_the_recorder_writes_r_of_the_epochs_model_and_of_the_untrained_network(micro_runs):
    run_dir = next(iter(micro_runs.values()))
    rows = read_jsonl(run_dir / "records" / f"{RECORDER}.jsonl")
    assert [r["epoch"] for r in rows] == [1] and rows[0]["samples"] == RECORDER_SAMPLES
    run = load_run(run_dir)
    x, _ = run.test_batch(RECORDER_SAMPLES)
    untrained = untrained_model(run.model_spec, run.config["seed"])
    stages = rows[0]["stages"]
    assert len(stages) == 3 and all(s["spread"] >= 0 and s["moved"] > 0 for s in stages)
    for protocol in ("per_sample", "centred"):
        trained, before = _consecutive_r(run.model, x, protocol), _consecutive_r(untrained, x, protocol)
        assert [s[protocol]["mean_r_consecutive"] for s in stages] == pytest.approx(trained, abs=1e-9)
        assert [s[protocol]["untrained_consecutive"] for s in stages] == pytest.approx(before, abs=1e-9)
        # the permuted null between consecutive blocks too, like the trained curve (seed 0's permutations)
        with torch.no_grad():
            permuted = [permuted_correlation(attention_vectors(t), protocol, draws=4, seed=s)["mean_r_consecutive"]
                        for s, t in enumerate(trace(run.model, x))]
        assert [s[protocol]["permuted_consecutive"] for s in stages] == pytest.approx(permuted, abs=1e-9)
    # the homogeneity of features and gate logits, of the epoch's model and of the untrained network
    with torch.no_grad():
        trained, before = [stage_homogeneity(t) for t in trace(run.model, x)], [stage_homogeneity(t) for t in
                                                                                trace(untrained, x)]
    for s, stage in enumerate(stages):
        assert set(stage["homogeneity"]) == set(MEASURES)
        for m, entry in stage["homogeneity"].items():
            assert entry["mean_r_consecutive"] == pytest.approx(trained[s][m]["mean_r_consecutive"], abs=1e-9)
            assert entry["untrained_consecutive"] == pytest.approx(before[s][m]["mean_r_consecutive"], abs=1e-9)


def test_measure_gives_every_stage_and_protocol_with_its_nulls_and_the_rules_verdict(micro_runs):
    result = CLAIM.measure(micro_runs, SMOKE)
    names = [f"se_resnet20 {p} r (consecutive blocks), stage {s}" for s in range(3) for p in ("per_sample", "centred")]
    # per stage: each protocol and homogeneity measure at the end, and the dose-response's one recorded epoch
    assert set(names) <= set(result.measured) and len(result.table) == 3 * (len(PROTOCOLS) + len(MEASURES) + 1)
    assert {row["protocol"] for row in result.table} == {*PROTOCOLS, *LABELS.values(), "per_sample, over steps"}
    for name in names:
        assert result.measured[name].n == 2
        assert f"{name}, untrained" in result.references and f"{name}, channels permuted" in result.references
    # the seeds' values are the trained networks' r on the budget's test images
    by_seed = [_consecutive_r(load_run(d).model, load_run(d).test_batch(SMOKE.samples)[0], "per_sample")
               for d in micro_runs.values()]
    for s in range(3):
        iv = result.measured[f"se_resnet20 per_sample r (consecutive blocks), stage {s}"]
        assert iv.values == pytest.approx([r[s] for r in by_seed], abs=1e-9)
    # the nulls enter as differences paired by seed: trained - untrained of each seed
    for s in range(3):
        name = f"se_resnet20 per_sample r (consecutive blocks), stage {s}"
        for null, ref in (("untrained", f"{name}, untrained"), ("permuted", f"{name}, channels permuted")):
            gain = result.measured[f"se_resnet20 per_sample r minus the {null} null (paired by seed), stage {s}"]
            assert gain.values == pytest.approx([t - u for t, u in zip(result.measured[name].values,
                                                                       result.references[ref].values)])
    triples = {"se_resnet20": [tuple(result.measured[f"se_resnet20 per_sample r{suffix}, stage {s}"] for suffix in
                                     (" (consecutive blocks)", " minus the untrained null (paired by seed)",
                                      " minus the permuted null (paired by seed)"))
                               for s in range(3)]}
    learned = {"se_resnet20": [(result.measured[f"se_resnet20 gate distance from the untrained gates, stage {s}"],
                                result.measured[f"se_resnet20 gate spread over images, stage {s}"]) for s in range(3)]}
    assert all(iv.n == 2 and iv.mean > 0 for pair in learned["se_resnet20"] for iv in pair)
    assert result.verdict == correlation_verdict(triples, learned)
    assert [name for name, _ in result.figures] == ["se_resnet20_r_over_epochs", "se_resnet20_dose_response"]
    dose = [row for row in result.table if "steps" in row]  # the smoke budget shows the dose-response too
    assert [(row["stage"], row["epoch"], row["seeds"]) for row in dose] == [(0, 1, 2), (1, 1, 2), (2, 1, 2)]
    assert any("centred r by stage" in note for note in result.notes)
    # the homogeneity measures: reported per stage next to the untrained network, paired in the table
    runs = [load_run(d) for d in micro_runs.values()]
    homogeneity = []
    for run in runs:
        x = run.test_batch(SMOKE.samples)[0]
        with torch.no_grad():
            homogeneity.append([stage_homogeneity(t) for t in trace(run.model, x)])
    for s in range(3):
        for m, label in LABELS.items():
            name = f"se_resnet20 {label} (consecutive blocks), stage {s}"
            assert result.measured[name].values == pytest.approx([h[s][m]["mean_r_consecutive"] for h in homogeneity],
                                                                 abs=1e-9)
            assert result.references[f"{name}, untrained"].n == 2
    row = next(r for r in result.table if r["protocol"] == LABELS["state_cosine"])
    assert set(row) == {"setup", "stage", "protocol", "trained", "untrained", "all_pairs", "trained - untrained"}
    # the positive control is part of the result: its planted and measured r, and a note
    for rho in CONTROL_RHOS:
        iv = result.measured[f"positive control: per_sample r of gates planted at r = {rho:g} (consecutive blocks)"]
        assert iv.n == len(SMOKE.seeds) and abs(iv.mean - rho) <= CONTROL_TOLERANCE
    assert any(note.startswith("positive control") and "planted 0.85, measured 0.8" in note and
               "recovers every planted r within 0.05" in note for note in result.notes)
    assert not any("left out" in note for note in result.notes)


def test_measure_leaves_out_a_diverged_run_with_a_note(micro_runs, tmp_path):
    diverged = dict(micro_runs)
    spec = CLAIM.runs(SMOKE)[1]
    write_json(tmp_path / "summary.json", {"status": "failed", "error": "TrainingDiverged: non-finite loss"})
    diverged[spec.key()] = tmp_path  # no checkpoint: measuring it as a trained network would fail
    result = CLAIM.measure(diverged, SMOKE)
    assert f"se_resnet20 seed {spec.config.seed} (diverged)" in " ".join(result.notes)
    assert result.measured["se_resnet20 per_sample r (consecutive blocks), stage 0"].n == 1
    assert result.verdict.status == "not testable here"  # one finished seed: no interval
    assert f"seed {spec.config.seed}: 0 of 1 epochs recorded (0 steps), diverged" in " ".join(result.notes)


def _iv(*values):
    return mean_interval(values)


HIGH, LOW = _iv(0.80, 0.82, 0.81), _iv(0.30, 0.32, 0.31)
GAIN, NO_GAIN = _iv(0.50, 0.55, 0.52), _iv(-0.02, 0.03, 0.01)  # paired differences trained - null


def test_a_stage_shows_the_claim_only_above_the_threshold_and_both_paired_nulls():
    assert stage_shows_claim(HIGH, GAIN, GAIN)
    assert not stage_shows_claim(LOW, GAIN, GAIN)  # above the nulls, below 0.5
    assert not stage_shows_claim(HIGH, NO_GAIN, GAIN)  # what the untrained network gives already
    assert not stage_shows_claim(HIGH, GAIN, NO_GAIN)  # what permuted channels give
    assert stage_shows_claim(_iv(0.8), GAIN, GAIN) is None  # one seed: no interval
    assert stage_shows_claim(HIGH, _iv(0.5), GAIN) is None
    assert LOW.low < THRESHOLD < HIGH.low


def test_pairing_by_seed_separates_what_unpaired_intervals_cannot():
    trained, untrained = (0.70, 0.80, 0.90), (0.66, 0.77, 0.86)  # every seed gains 0.03-0.04 by training
    assert _iv(*trained).low < _iv(*untrained).high  # unpaired: the intervals overlap
    gain = _iv(*(t - u for t, u in zip(trained, untrained)))
    assert gain.low > 0 and stage_shows_claim(_iv(*trained), gain, GAIN)
    lost = _iv(*(u - t for t, u in zip(trained, untrained)))  # the same numbers, trained below untrained
    assert not stage_shows_claim(_iv(*trained), lost, GAIN)


LEARNED = (_iv(0.08, 0.09, 0.10), _iv(0.06, 0.07, 0.08))  # (moved from the untrained gates, spread over images)
# the cpu budget's gates (experiments/README.md R1): moved 0.016-0.038, spread 0.003-0.043
STILL = (_iv(0.016, 0.017, 0.018), _iv(0.007, 0.008, 0.006))


def test_the_verdict_branches():
    learned = {"m": [LEARNED] * 3}
    assert correlation_verdict({"m": [(HIGH, GAIN, GAIN)] * 3}, learned).status == "reproduced"
    assert correlation_verdict({"m": [(HIGH, GAIN, GAIN)] * 2 + [(LOW, GAIN, GAIN)]}, learned).status == "reproduced"
    assert correlation_verdict({"m": [(HIGH, GAIN, GAIN)] + [(LOW, GAIN, GAIN)] * 2}, learned).status == \
        "not reproduced"
    both = correlation_verdict({"a": [(HIGH, GAIN, GAIN)] * 3, "b": [(HIGH, NO_GAIN, GAIN)] * 3},
                               {"a": [LEARNED] * 3, "b": [LEARNED] * 3})
    assert both.status == "not reproduced" and "b: 0 of 3" in both.reason  # every model must show it
    undefined = correlation_verdict({"m": [(HIGH, GAIN, GAIN), (_iv(math.nan, 0.5), GAIN, GAIN)]}, learned)
    assert undefined.status == "not testable here" and "would test it" in undefined.reason
    unfinished = correlation_verdict({"a": [(HIGH, GAIN, GAIN)] * 3, "b": []}, {"a": [LEARNED] * 3, "b": []})
    assert unfinished.status == "not testable here" and "b: no run finished" in unfinished.reason
    assert correlation_verdict({}, {}).status == "not testable here"


def test_gates_learned_needs_both_movement_and_spread_at_their_thresholds():
    assert MIN_GATE_MOVED == MIN_GATE_SPREAD == 0.05
    at, below = _iv(0.05, 0.05), _iv(0.0499, 0.0499)
    assert gates_learned(at, at)  # at the threshold: learned
    assert not gates_learned(below, at) and not gates_learned(at, below)  # each threshold on its own
    assert gates_learned(*LEARNED) and not gates_learned(*STILL)
    assert not gates_learned(_iv(0.038, 0.038), _iv(0.043, 0.043))  # the cpu budget's largest of both


def test_gates_that_did_not_learn_make_the_precondition_not_met_with_numbers_and_thresholds():
    verdict = correlation_verdict({"se_resnet20": [(LOW, NO_GAIN, NO_GAIN)] * 3}, {"se_resnet20": [STILL] * 3})
    assert verdict.status == "precondition not met"
    assert "the attention did not learn" in verdict.reason and "moved >= 0.05" in verdict.reason
    assert "spread >= 0.05" in verdict.reason and "learned in 0 of 3 stages" in verdict.reason
    assert "moved 0.017/0.017/0.017" in verdict.reason and "spread 0.007/0.007/0.007" in verdict.reason
    # gates that learned in more than half of the stages meet it, and the r rule decides
    two_of_three = {"m": [LEARNED, LEARNED, STILL]}
    assert correlation_verdict({"m": [(LOW, NO_GAIN, NO_GAIN)] * 3}, two_of_three).status == "not reproduced"
    assert correlation_verdict({"m": [(HIGH, GAIN, GAIN)] * 3}, two_of_three).status == "reproduced"
    one_of_three = {"m": [LEARNED, STILL, STILL]}
    assert correlation_verdict({"m": [(LOW, NO_GAIN, NO_GAIN)] * 3}, one_of_three).status == "precondition not met"
    # even a high r does not count when the gates did not learn: the claim is about trained attention
    assert correlation_verdict({"m": [(HIGH, GAIN, GAIN)] * 3}, {"m": [STILL] * 3}).status == "precondition not met"


def test_a_model_whose_gates_learned_and_fail_decides_against_the_claim():
    stages = {"a": [(LOW, NO_GAIN, NO_GAIN)] * 3, "b": [(LOW, NO_GAIN, NO_GAIN)] * 3}
    mixed = correlation_verdict(stages, {"a": [LEARNED] * 3, "b": [STILL] * 3})
    assert mixed.status == "not reproduced" and "too few stages of a, whose gates learned" in mixed.reason
    shown = {"a": [(HIGH, GAIN, GAIN)] * 3, "b": [(HIGH, GAIN, GAIN)] * 3}
    assert correlation_verdict(shown, {"a": [LEARNED] * 3, "b": [STILL] * 3}).status == "precondition not met"


def test_the_positive_control_recovers_every_planted_r_in_every_draw():
    for budget in ("smoke", "cpu", "full"):
        control = positive_control(get_budget(budget).seeds)
        assert list(control) == list(CONTROL_RHOS) == [0.0, 0.5, 0.85]
        for rho, iv in control.items():
            assert iv.n == len(get_budget(budget).seeds)
            assert max(abs(v - rho) for v in iv.values) <= CONTROL_TOLERANCE / 2  # room to spare
        assert control_verdict(control) is None


def test_a_control_off_by_more_than_the_tolerance_or_undefined_makes_the_instrument_broken():
    at = {0.0: _iv(0.01, -0.01), 0.85: _iv(0.85 - CONTROL_TOLERANCE + 1e-9, 0.84)}  # within the tolerance
    assert control_verdict(at) is None
    off = control_verdict({0.0: _iv(0.0, 0.01), 0.85: _iv(0.84, 0.85 - CONTROL_TOLERANCE - 0.001)})
    assert off.status == "not testable here" and "the instrument is broken" in off.reason
    assert "(planted 0.85, measured 0.840/0.799)" in off.reason and "planted 0, " not in off.reason
    assert control_verdict({0.5: _iv(0.5, math.nan)}).status == "not testable here"


def _halved(a, protocol):
    """A broken protocol: the right matrix, but a statistic that reports half the consecutive r."""
    out = protocol_correlation(a, protocol)
    return {**out, "mean_r_consecutive": out["mean_r_consecutive"] / 2}


def test_a_broken_protocol_fails_the_positive_control_and_the_claim_is_not_testable(micro_runs, monkeypatch):
    monkeypatch.setattr(attention_nulls, "protocol_correlation", _halved)  # what the claim measures gates with
    result = CLAIM.measure(micro_runs, SMOKE)
    assert result.verdict.status == "not testable here"
    reason = result.verdict.reason
    assert "the instrument is broken" in reason and "planted 0.85, measured 0.4" in reason
    assert "planted 0, " not in reason  # half of 0 is still 0: the control needs a planted correlation to fail
    iv = result.measured["positive control: per_sample r of gates planted at r = 0.85 (consecutive blocks)"]
    assert iv.mean == pytest.approx(0.85 / 2, abs=0.02)
    assert any("does NOT recover" in note for note in result.notes)
    # the runs are still measured and reported, with the broken statistic
    assert result.measured["se_resnet20 per_sample r (consecutive blocks), stage 0"].n == 2
