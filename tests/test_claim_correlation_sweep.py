"""The setup sweep of the cross-layer correlation: which setups each budget lists, setups whose dataset is
missing, measure() on the smoke runs, and the sweep's verdict rule (dia_ode/studies/claims/correlation_sweep.py)."""

import pytest

from dia_ode.analysis import attention_nulls
from dia_ode.analysis.intervals import mean_interval
from dia_ode.studies.claims import correlation_sweep, get_claim
from dia_ode.studies.claims.correlation import RECORDER, correlation_verdict
from dia_ode.studies.claims.correlation_sweep import sweep_setups, sweep_verdict
from dia_ode.studies.claims.se_options import SE_OPTIONS
from dia_ode.studies.report.budgets import get_budget
from dia_ode.studies.report.claim import Verdict

CLAIM = get_claim("cross-layer-correlation-sweep")
SMOKE = get_budget("smoke")


def _configs(budget):
    return {s.label: s.runs(budget)[0].config for s in sweep_setups(budget)}


def test_each_setup_varies_one_factor_of_the_base_setup():
    smoke = _configs(SMOKE)
    base = smoke["base: se_resnet20, r=4, digits"]
    assert (base.model, base.dataset, base.epochs) == ("se_resnet20", "digits", SMOKE.epochs)
    assert base.model_options == {**SE_OPTIONS, "base_width": SMOKE.width}
    assert base == get_claim("cross-layer-correlation").runs(SMOKE)[0].config  # one run serves both claims
    reduction = smoke["SE reduction: se_resnet20, r=16, digits"]
    assert reduction.model_options == {"reduction": 16, "base_width": SMOKE.width}
    assert smoke["bottleneck: se_resnet29, r=16, digits"].model == "se_resnet29"
    assert smoke[f"length: se_resnet20, r=4, digits, {2 * SMOKE.epochs} epochs"].epochs == 2 * SMOKE.epochs
    assert not any(c.dataset != "digits" for c in smoke.values())  # CI's smoke budget needs no dataset files

    cpu = _configs(get_budget("cpu"))
    fashion = {label: c for label, c in cpu.items() if c.dataset == "fashion-mnist"}
    assert sorted((c.model, c.train_examples, c.val_fraction) for c in fashion.values()) == \
        [("se_resnet20", 10_000, 0.02), ("se_resnet29", 5_000, 0.02)]
    assert cpu["length: se_resnet20, r=4, digits, 60 epochs"].epochs == 60
    full = _configs(get_budget("full"))
    assert full["paper: se_resnet164, r=16, cifar10"].model_options["reduction"] == 16
    assert all(c.train_examples is None for c in full.values())
    for budget in ("smoke", "cpu", "full"):
        specs = [spec for s in sweep_setups(get_budget(budget)) for spec in s.runs(get_budget(budget))]
        assert len({spec.key() for spec in specs}) == len(specs)  # every setup is a distinct run
        assert all(spec.recorders == (RECORDER,) for spec in specs)


def test_a_setup_whose_dataset_is_missing_is_left_out_with_a_note(monkeypatch):
    cpu = get_budget("cpu")
    monkeypatch.setattr(correlation_sweep, "dataset_available", lambda name: name == "digits")
    specs = CLAIM.runs(cpu)
    assert {s.config.dataset for s in specs} == {"digits"} and len(specs) == 4 * len(cpu.seeds)
    result = CLAIM.measure({}, cpu)  # no run was made: every setup is measured as having no finished run
    assert sum("left out, dataset not available here: dataset:" in note for note in result.notes) == 2
    assert result.verdict.status == "not testable here"


@pytest.fixture(scope="module")
def sweep_runs(train_claim_runs):
    """The smoke budget's sweep (4 digits setups, 2 seeds, width 4, 1-2 epochs), trained with the recorder."""
    return train_claim_runs(CLAIM.runs(SMOKE))


def test_measure_gives_each_setup_its_own_verdict_and_statistics(sweep_runs):
    result = CLAIM.measure(sweep_runs, SMOKE)
    labels = [s.label for s in sweep_setups(SMOKE)]
    assert list(result.parts) == labels
    assert result.verdict == sweep_verdict(result.parts)
    for label in labels:
        assert result.measured[f"{label} per_sample r (consecutive blocks), stage 0"].n == len(SMOKE.seeds)
        assert any(note.startswith(f"{label}: ") and "test accuracy" in note for note in result.notes)
    assert {row["setup"] for row in result.table} == set(labels)
    assert len(result.figures) == len(labels)
    # the base setup is the main claim's run, measured the same way: the same numbers
    main = get_claim("cross-layer-correlation").measure(sweep_runs, SMOKE)
    assert result.measured["base: se_resnet20, r=4, digits per_sample r (consecutive blocks), stage 1"].values == \
        pytest.approx(main.measured["se_resnet20 per_sample r (consecutive blocks), stage 1"].values)
    # the length setup's curve covers its 2 epochs, the others' 1
    assert any(note.startswith("length: ") and "epochs 1 -> 2" in note for note in result.notes)
    assert any(note.startswith("base: ") and "epochs 1 -> 1" in note for note in result.notes)
    # the homogeneity and the positive control come with every setup's numbers, as in the main claim
    assert result.measured["base: se_resnet20, r=4, digits gate logit Pearson r (consecutive blocks), stage 2"].values \
        == pytest.approx(main.measured["se_resnet20 gate logit Pearson r (consecutive blocks), stage 2"].values)
    assert sum(name.startswith("positive control: ") for name in result.measured) == 3


def _iv(*values):
    return mean_interval(values)


def test_the_sweep_is_reproduced_by_one_setup_and_names_it():
    yes, no = Verdict("reproduced", "."), Verdict("not reproduced", ".")
    untested = Verdict("not testable here", ".")
    assert sweep_verdict({"a": no, "b": yes}) == Verdict("reproduced", "the claim holds in 1 of 2 setups: b")
    assert sweep_verdict({"a": no, "b": untested}).status == "not reproduced"
    assert "(1 not testable)" in sweep_verdict({"a": no, "b": untested}).reason
    assert sweep_verdict({"a": untested}).status == "not testable here"
    assert "would test it" in sweep_verdict({"a": untested}).reason
    assert sweep_verdict({}).status == "not testable here"
    high, gain, learned = _iv(0.8, 0.82, 0.81), _iv(0.5, 0.55, 0.52), (_iv(0.1, 0.1), _iv(0.1, 0.1))
    assert correlation_verdict({"a": [(high, gain, gain)] * 3}, {"a": [learned] * 3}).status == "reproduced"


def test_the_sweep_is_precondition_not_met_only_when_no_measured_setup_tested_the_claim():
    yes, no = Verdict("reproduced", "."), Verdict("not reproduced", ".")
    still, untested = Verdict("precondition not met", "."), Verdict("not testable here", ".")
    assert sweep_verdict({"a": still, "b": still}).status == "precondition not met"
    assert sweep_verdict({"a": still, "b": untested}) == \
        Verdict("precondition not met", "the gates did not learn in any of the 1 measured setups, so none tests the "
                                        "claim (1 not testable)")
    against = sweep_verdict({"a": still, "b": no})  # where the gates learned, the claim failed
    assert against.status == "not reproduced" and "where the gates learned: b; in 1 the gates did not learn" in \
        against.reason
    assert sweep_verdict({"a": still, "b": yes}).status == "reproduced"  # one setup that shows it is enough


def test_a_broken_protocol_makes_the_sweep_not_testable_whatever_its_setups_give(monkeypatch):
    monkeypatch.setattr(correlation_sweep, "dataset_available", lambda name: name == "digits")
    monkeypatch.setattr(attention_nulls, "protocol_correlation", lambda a, protocol: {"mean_r_consecutive": 0.0})
    verdict = CLAIM.measure({}, get_budget("cpu")).verdict  # an instrument that sees no correlation anywhere
    assert verdict.status == "not testable here" and "the instrument is broken" in verdict.reason
    assert "planted 0.5, measured 0.000/0.000/0.000; planted 0.85, measured 0.000/0.000/0.000" in verdict.reason
