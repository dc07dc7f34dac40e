"""The dia-stabilises-training claim and what it needs: the skip / batch_norm model options of the CIFAR
ResNets, per-stage gradient norms, the runs at the smoke budget, measure() on hand-made run
directories and the verdict rule on synthetic intervals (dia_ode/studies/claims/stabilisation.py)."""

import copy
import dataclasses
import math
import shutil

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dia_ode import create_model
from dia_ode.analysis.gradients import stage_gradient_norms
from dia_ode.analysis.intervals import Interval, mean_interval
from dia_ode.cli import main
from dia_ode.cli.options import parse_model_options
from dia_ode.engine import TrainConfig, run_training
from dia_ode.rundir import read_summary, write_json
from dia_ode.solvers import trace
from dia_ode.studies.claims import get_claim
from dia_ode.studies.claims.stabilisation import (ABLATIONS, MAX_BASELINE_FAILURES, NOT_CONTROLS, STEP_CONTROLS,
                                                  WARMUP, ablation_verdict, arm_configs, choose_baseline,
                                                  trained_threshold, warmup_epochs)
from dia_ode.tasks import get_task
from dia_ode.studies.report.budgets import get_budget
from dia_ode.studies.report.claim import RunSpec

CLAIM = get_claim("dia-stabilises-training")
SMOKE = get_budget("smoke")
X = torch.randn(4, 1, 8, 8)


def test_ls_options_lists_skip_and_batch_norm_as_typed_keywords():
    out = CliRunner().invoke(main, ["ls", "--options", "resnet20"]).output
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["skip"], ["batch_norm"])]
    assert rows == [["skip", "bool", "True"], ["batch_norm", "bool", "True"]]
    assert parse_model_options(("skip=False", "batch_norm=False"), "resnet20") == {"skip": False, "batch_norm": False}
    with pytest.raises(ValueError, match="skip"):
        create_model("resnet20", skip="no")


@pytest.mark.parametrize("name", ["resnet20", "se_resnet20", "dia_resnet20", "dia_preresnet20"])
def test_every_attention_builds_and_runs_without_skip_or_batch_norm(name):
    for options in ({"skip": False}, {"batch_norm": False}, {"skip": False, "batch_norm": False}):
        model = create_model(name, base_width=4, in_channels=1, **options)
        out = model(X)
        assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_skip_false_removes_the_shortcut():
    torch.manual_seed(0)
    with_skip = create_model("dia_resnet20", base_width=4, in_channels=1).eval()
    without = create_model("dia_resnet20", base_width=4, in_channels=1, skip=False).eval()
    assert not any("projection" in name for name, _ in without.named_parameters())  # no unused projections
    assert any("projection" in name for name, _ in with_skip.named_parameters())
    without.load_state_dict(with_skip.state_dict(), strict=False)  # same weights where both have them
    assert not torch.allclose(with_skip(X), without(X))
    for t in trace(without, X):
        for k in range(len(t)):
            replaced = torch.relu(t.steps[k] * t.updates[k])  # post(h_k f_k): the state is replaced
            assert torch.allclose(t.states[k + 1], replaced, atol=1e-6)
            if t.states[k].shape == t.updates[k].shape:  # not an Euler step of the state
                assert not torch.allclose(t.states[k + 1], torch.relu(t.states[k] + t.steps[k] * t.updates[k]))


def test_batch_norm_false_leaves_no_batch_norm_and_gives_convs_zero_biases():
    for name in ("resnet20", "se_resnet20", "dia_resnet20", "preresnet20"):
        assert any(isinstance(m, nn.BatchNorm2d) for m in create_model(name, base_width=4).modules())
        model = create_model(name, base_width=4, batch_norm=False)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(m.bias is not None and not m.bias.any() for m in convs)


def test_stage_gradient_norms_are_the_gradient_of_each_stage_and_leave_the_model_alone():
    model = create_model("se_resnet20", base_width=4, in_channels=1).eval()
    y = torch.arange(4)
    before = copy.deepcopy(model.state_dict())
    norms = stage_gradient_norms(model, (X, y), get_task("classification"))
    assert list(norms) == ["stages.0", "stages.1", "stages.2"] and all(v > 0 for v in norms.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    assert all(p.grad is None for p in model.parameters())
    net = copy.deepcopy(model).train()
    nn.functional.cross_entropy(net(X), y).backward()
    expected = torch.cat([p.grad.flatten() for p in net.stages[1].parameters()]).norm()
    assert norms["stages.1"] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="feature_info"):
        stage_gradient_norms(nn.Linear(2, 2), (X, y), get_task("classification"))


def test_runs_cover_every_ablation_and_model_and_share_the_reference_runs_of_claim_a():
    specs = CLAIM.runs(SMOKE)
    assert len(specs) == (1 + len(ABLATIONS)) * 3 * len(SMOKE.seeds) == len({s.key() for s in specs})
    keys = {s.key() for s in specs}
    assert {s.key() for s in get_claim("dia-improves-backbone").runs(SMOKE)} <= keys  # the unablated references
    configs = [s.config for s in specs]
    assert sum(c.model_options.get("skip") is False for c in configs) == 3 * len(SMOKE.seeds)
    assert sum(c.model_options.get("batch_norm") is False for c in configs) == 3 * len(SMOKE.seeds)
    assert sum(not c.augment for c in configs) == 3 * len(SMOKE.seeds)
    # above the smoke budget the backbone is deeper: a 20-layer plain network does not degrade on digits
    cpu = {s.config.model for s in CLAIM.runs(get_budget("cpu"))}
    assert cpu == {"resnet56", "se_resnet56", "dia_resnet56"}
    assert all(c.schedule == "cosine" and "h" not in c.model_options for c in configs)  # no control at smoke


def test_runs_above_the_smoke_budget_add_the_warmed_up_baseline_and_the_small_step_controls():
    cpu = get_budget("cpu")
    specs = CLAIM.runs(cpu)
    n = len(cpu.seeds)
    assert len(specs) == len({s.key() for s in specs}) == ((1 + len(ABLATIONS)) * (3 + 1) + len(ABLATIONS) * 3 - 1) * n
    warm = [s.config for s in specs if s.config.schedule == "warmup_cosine"]
    assert len(warm) == (1 + len(ABLATIONS)) * n and {c.model for c in warm} == {"resnet56"}
    assert {c.warmup_epochs for c in warm} == {1.0} and all("h" not in c.model_options for c in warm)
    for h in (0.5, 0.25, "learned"):
        runs = [s.config for s in specs if s.config.model_options.get("h") == h]
        without_skip = 0 if h == "learned" else n  # NOT_CONTROLS: a step from 0 without skips never trains
        assert len(runs) == len(ABLATIONS) * n - n + without_skip and {c.model for c in runs} == {"resnet56"}
        assert sum(c.model_options.get("skip") is False for c in runs) == without_skip
        assert sum(not c.augment for c in runs) == n and all(c.schedule == "cosine" for c in runs)
    # a control differs from the plain run of its ablation and seed by the control alone
    plain = arm_configs(cpu, "digits")["no_bn", "resnet56"][0]
    learned = arm_configs(cpu, "digits")["no_bn", "resnet56 h=learned"][0]
    assert dataclasses.replace(learned, model_options=plain.model_options) == plain
    warmed = arm_configs(cpu, "digits")["no_augment", f"resnet56 {WARMUP}"][0]
    assert dataclasses.replace(warmed, schedule="cosine", warmup_epochs=0.0) == \
        arm_configs(cpu, "digits")["no_augment", "resnet56"][0]
    assert warmup_epochs(dataclasses.replace(cpu, epochs=1)) == 0.5  # the warm-up ends before training does


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("micro")
    cfg = TrainConfig(model="resnet20", epochs=1, model_options={"base_width": 4})
    write_json(run_dir / "config.json", {"command": "train", **dataclasses.asdict(cfg)})  # as the report's cache does
    run_training(cfg, run_dir, progress=False)
    return run_dir


# accuracies by (ablation, model) for seeds 0, 1, 2: no_skip and no_bn show the claim, no_augment does not
ACC = {("none", "resnet20"): (0.95, 0.96, 0.97), ("none", "se_resnet20"): (0.95, 0.96, 0.97),
       ("none", "dia_resnet20"): (0.95, 0.96, 0.97),
       ("no_skip", "resnet20"): (0.60, 0.62, 0.61), ("no_skip", "se_resnet20"): (0.7, 0.7, 0.7),
       ("no_skip", "dia_resnet20"): (0.90, 0.91, 0.92),
       ("no_bn", "resnet20"): (None, 0.3, 0.3), ("no_bn", "se_resnet20"): (0.5, 0.5, 0.6),
       ("no_bn", "dia_resnet20"): (0.80, 0.82, 0.81),
       ("no_augment", "resnet20"): (0.95, 0.96, 0.97), ("no_augment", "se_resnet20"): (0.95, 0.96, 0.97),
       ("no_augment", "dia_resnet20"): (0.95, 0.96, 0.97)}


def _hand_made_runs(one_run, tmp_path, accuracies, budget):
    """Copies of one finished run, one per (ablation, arm, seed), with the test accuracies given (None: diverged)."""
    run_dirs, configs = {}, arm_configs(budget, "digits")
    assert set(accuracies) == set(configs)
    for arm, values in accuracies.items():
        for config, acc in zip(configs[arm], values):
            key = RunSpec(config).key()
            run_dir = tmp_path / key
            shutil.copytree(one_run, run_dir)
            summary = read_summary(run_dir)
            write_json(run_dir / "summary.json", {**summary, "test_acc": acc} if acc is not None else
                       {"status": "failed", "error": "TrainingDiverged: loss is nan at epoch 1, step 3"})
            run_dirs[key] = run_dir
    return run_dirs


BUDGET = dataclasses.replace(SMOKE, seeds=(0, 1, 2), samples=16)


def test_measure_on_hand_made_runs_gives_the_rules_verdict(one_run, tmp_path):
    result = CLAIM.measure(_hand_made_runs(one_run, tmp_path, ACC, BUDGET), BUDGET)
    assert result.measured["no_bn resnet20 test accuracy"].values == (0.1, 0.3, 0.3)  # diverged: chance
    assert result.references["dia_resnet20 test accuracy (unablated)"].mean == pytest.approx(0.96)
    assert result.verdict.status == "reproduced" and "holds in no_skip, no_bn" in result.verdict.reason
    assert "2 of 2 testable" in result.verdict.reason
    assert "no_augment: precondition not met (the backbone does not degrade" in result.verdict.reason
    assert any("no_bn resnet20 run 0 diverged" in note for note in result.notes)
    row = next(r for r in result.table if (r["ablation"], r["model"]) == ("no_bn", "resnet20"))
    assert row["diverged"] == 1
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in row["grad norm per stage (trained)"].split(" / "))
    assert row["grad norm per stage (trained)"] != row["grad norm per stage (untrained)"]


def test_measure_reads_the_plain_unablated_baseline_for_the_precondition(one_run, tmp_path):
    stalled = {**ACC, ("none", "resnet20"): (0.426, 0.635, 0.145)}  # the cpu budget's resnet56 baseline
    result = CLAIM.measure(_hand_made_runs(one_run, tmp_path, stalled, BUDGET), BUDGET)
    assert result.verdict.status == "precondition not met"
    assert result.verdict.reason.startswith("the baseline failed to train") and "2 of 3 seeds" in result.verdict.reason


def _ivs(values):
    return {a: mean_interval(v) for a, v in zip(ABLATIONS, values)}


DROP, FLAT, GAIN = (-0.3, -0.31, -0.29), (0.01, -0.01, 0.0), (0.2, 0.21, 0.19)
TRAINED, CHANCE = [0.95, 0.96, 0.97], 0.1


@pytest.mark.parametrize("drops, gains, status, words", [
    ((DROP, DROP, DROP), (GAIN, GAIN, GAIN), "reproduced", "3 of 3 testable ablations: holds in no_skip, no_bn, "
                                                           "no_augment"),
    ((DROP, DROP, DROP), (GAIN, GAIN, FLAT), "reproduced", "2 of 3 testable"),
    ((DROP, DROP, FLAT), (GAIN, GAIN, GAIN), "reproduced",
     "no_augment: precondition not met (the backbone does not degrade"),
    # a backbone that does not degrade leaves that ablation's precondition unmet, not a failure of the claim
    ((DROP, FLAT, FLAT), (GAIN, FLAT, FLAT), "reproduced", "1 of 1 testable ablations: holds in no_skip"),
    ((DROP, DROP, FLAT), (GAIN, FLAT, GAIN), "not reproduced", "1 of 2 testable ablations (needs more than half)"),
    ((DROP, DROP, DROP), (GAIN, FLAT, FLAT), "not reproduced", "DIA is not above"),
    ((FLAT, FLAT, FLAT), (GAIN, GAIN, GAIN), "precondition not met", "no ablation degrades the backbone"),
    ((DROP, DROP, (0.1,)), (GAIN, GAIN, GAIN), "not testable here", "no interval for no_augment"),
])
def test_verdict_rule_each_branch(drops, gains, status, words):
    verdict = ablation_verdict(_ivs(drops), _ivs(gains), {"plain": TRAINED}, CHANCE)
    assert verdict.status == status and words in verdict.reason
    assert "no small-step control was trained at this budget" in verdict.reason or status != "reproduced"


@pytest.mark.parametrize("baseline, failures", [
    ([0.426, 0.635, 0.145], "2 of 3 seeds (0.4260, 0.1450"),  # the cpu budget's plain resnet56
    ([0.5499, 0.96, 0.97], "1 of 3 seeds (0.5499"),  # just below halfway from chance 0.1 to 1
    ([0.1, 0.96, 0.97], "1 of 3 seeds (0.1000"),  # a diverged seed counts at chance
    ([0.1, 0.1, 0.1], "3 of 3 seeds"),
])
def test_a_baseline_that_failed_to_train_is_a_precondition_not_met(baseline, failures):
    assert trained_threshold(CHANCE) == pytest.approx(0.55) and MAX_BASELINE_FAILURES == 0
    verdict = ablation_verdict(_ivs((DROP, DROP, DROP)), _ivs((GAIN, GAIN, GAIN)), {"plain": baseline}, CHANCE)
    assert verdict.status == "precondition not met" and verdict.reason.startswith("the baseline failed to train")
    assert failures in verdict.reason and "below 0.5500 (halfway from chance 0.1000 to 1)" in verdict.reason
    assert "at most 0 allowed" in verdict.reason


def test_a_baseline_at_the_threshold_or_a_failed_run_left_out_meets_the_precondition():
    for baseline in ([0.55, 0.96, 0.97], [math.nan, 0.96, 0.97]):
        verdict = ablation_verdict(_ivs((DROP, DROP, DROP)), _ivs((GAIN, GAIN, GAIN)), {"plain": baseline}, CHANCE)
        assert verdict.status == "reproduced"
    # no interval comes before the precondition: the data are missing, not the baseline
    missing = ablation_verdict(_ivs((DROP, DROP, (0.1,))), _ivs((GAIN, GAIN, GAIN)), {"plain": [0.1, 0.1, 0.1]},
                               CHANCE)
    assert missing.status == "not testable here" and "would test it" in missing.reason


# --------------------------------------------------------------------------------------------------
# the controls: the warmed-up baseline and the small steps


STALLED, WARMED = [0.426, 0.635, 0.145], [0.95, 0.96, 0.97]  # the cpu budget's plain resnet56; trained


def test_a_learned_step_without_skips_is_no_control_since_nothing_reaches_a_weight():
    assert NOT_CONTROLS == {("no_skip", "h=learned")}
    model = create_model("resnet20", base_width=4, in_channels=1, h="learned", skip=False)
    nn.functional.cross_entropy(model(X), torch.arange(4)).backward()
    assert all(not p.grad.any() for name, p in model.named_parameters() if not name.startswith("head"))
    with_skip = create_model("resnet20", base_width=4, in_channels=1, h="learned")
    nn.functional.cross_entropy(with_skip(X), torch.arange(4)).backward()
    assert all(s.controller.alpha.grad.all() for s in with_skip.stages)  # with the skip path the steps learn


def test_the_plain_baseline_is_preferred_and_the_warmed_up_one_stands_in_where_it_fails():
    assert choose_baseline({"plain": TRAINED, "warmed-up plain": WARMED}, CHANCE) == "plain"
    assert choose_baseline({"plain": STALLED, "warmed-up plain": WARMED}, CHANCE) == "warmed-up plain"
    assert choose_baseline({"plain": STALLED, "warmed-up plain": [0.55, 0.96, 0.97]}, CHANCE) == "warmed-up plain"
    assert choose_baseline({"plain": STALLED, "warmed-up plain": [0.5499, 0.96, 0.97]}, CHANCE) is None
    assert choose_baseline({"plain": STALLED}, CHANCE) is None


def test_a_warmed_up_baseline_that_trains_meets_the_precondition_and_the_reason_says_so():
    drops, gains = _ivs((DROP, DROP, DROP)), _ivs((GAIN, GAIN, GAIN))
    verdict = ablation_verdict(drops, gains, {"plain": STALLED, "warmed-up plain": WARMED}, CHANCE)
    assert verdict.status == "reproduced"
    assert ("judged on the warmed-up plain baseline, since the plain unablated backbone stays below 0.5500 "
            "(halfway from chance 0.1000 to 1) in 2 of 3 seeds (0.4260, 0.1450)") in verdict.reason
    plain = ablation_verdict(drops, gains, {"plain": TRAINED, "warmed-up plain": STALLED}, CHANCE)
    assert plain.status == "reproduced" and "judged on" not in plain.reason  # the plain one trains: no stand-in
    neither = ablation_verdict(drops, gains, {"plain": STALLED, "warmed-up plain": [0.5499, 0.96, 0.97]}, CHANCE)
    assert neither.status == "precondition not met" and neither.reason.startswith("the baseline failed to train")
    assert "the plain unablated backbone stays below" in neither.reason
    assert "the warmed-up plain unablated backbone stays below 0.5500 (halfway from chance 0.1000 to 1) in 1 of 3 " \
           "seeds (0.5499)" in neither.reason


def _interval(low, high):
    return Interval((low + high) / 2, 0.1, 3, low, high, 0.95, (low, high, (low + high) / 2))


ABOVE, HOLDS_0 = _interval(0.001, 0.3), _interval(0.0, 0.3)  # the two sides of "lies above 0"


def _controls(**ablation_intervals):
    """ablation -> control -> dia - control: ABOVE for every control unless given as {ablation: {control: iv}}."""
    return {a: {c: ablation_intervals.get(a, {}).get(c, ABOVE) for c in STEP_CONTROLS} for a in ABLATIONS}


def test_dia_beyond_every_small_step_control_is_reproduced():
    verdict = ablation_verdict(_ivs((DROP, DROP, DROP)), _ivs((GAIN, GAIN, GAIN)), {"plain": TRAINED}, CHANCE,
                               _controls())
    assert verdict.status == "reproduced"
    assert "above the degraded backbone and every small-step control (h=0.5, h=0.25, h=learned) in 3 of 3" in \
        verdict.reason and "no small-step control was trained" not in verdict.reason


@pytest.mark.parametrize("matched, status", [
    ({"no_skip": {"h=0.25": HOLDS_0}}, "reproduced"),  # 2 of 3 ablations beyond every control
    ({"no_skip": {"h=0.25": HOLDS_0}, "no_bn": {"h=learned": _interval(-0.2, 0.1)}}, "not reproduced"),  # 1 of 3
])
def test_a_small_step_that_does_as_well_as_dia_is_no_finding(matched, status):
    verdict = ablation_verdict(_ivs((DROP, DROP, DROP)), _ivs((GAIN, GAIN, GAIN)), {"plain": TRAINED}, CHANCE,
                               _controls(**matched))
    assert verdict.status == status
    assert "no_skip: DIA stays above the plain backbone, but a small step does the same (dia - h=0.25 " \
           "[0.0000, 0.3000])" in verdict.reason
    assert ("no_bn: DIA stays above the plain backbone, but a small step does the same (dia - h=learned "
            "[-0.2000, 0.1000])" in verdict.reason) == ("no_bn" in matched)


def test_a_control_matters_only_where_the_backbone_degrades_and_dia_stabilises():
    # no_augment does not degrade; no_bn's DIA is not above the baseline: their controls are not read
    controls = _controls(no_augment={"h=0.5": HOLDS_0}, no_bn={"h=0.5": HOLDS_0})
    verdict = ablation_verdict(_ivs((DROP, DROP, FLAT)), _ivs((GAIN, FLAT, GAIN)), {"plain": TRAINED}, CHANCE,
                               controls)
    assert verdict.status == "not reproduced" and "1 of 2 testable" in verdict.reason
    assert "a small step does the same" not in verdict.reason


def test_a_control_without_an_interval_is_not_testable():
    controls = _controls(no_bn={"h=learned": mean_interval([0.1])})
    verdict = ablation_verdict(_ivs((DROP, DROP, DROP)), _ivs((GAIN, GAIN, GAIN)), {"plain": TRAINED}, CHANCE,
                               controls)
    assert verdict.status == "not testable here" and "dia - h=learned in no_bn" in verdict.reason


CPU = dataclasses.replace(get_budget("cpu"), seeds=(0, 1, 2), samples=16)


def _at_depth_56(accuracies):
    return {(a, m.replace("20", "56")): values for (a, m), values in accuracies.items()}


def test_measure_with_controls_reads_the_warmed_up_baseline_and_names_a_matching_control(one_run, tmp_path):
    accuracies = _at_depth_56({**ACC, ("none", "resnet20"): tuple(STALLED)})  # the plain baseline stalls
    accuracies |= {(a, f"resnet56 {WARMUP}"): ACC[a, "resnet20"] for a in ("none", *ABLATIONS)}
    accuracies |= {(a, f"resnet56 {c}"): ACC[a, "resnet20"] for a in ABLATIONS for c in STEP_CONTROLS
                   if (a, c) not in NOT_CONTROLS}
    accuracies["no_skip", "resnet56 h=0.25"] = (0.90, 0.91, 0.92)  # as good as DIA where the skips are gone
    result = CLAIM.measure(_hand_made_runs(one_run, tmp_path, accuracies, CPU), CPU)
    assert result.verdict.status == "not reproduced", result.verdict.reason
    assert "judged on the warmed-up plain baseline, since the plain unablated backbone" in result.verdict.reason
    assert "no_skip: DIA stays above the warmed-up plain backbone, but a small step does the same (dia - h=0.25" \
        in result.verdict.reason and "holds in no_bn" in result.verdict.reason and "1 of 2" in result.verdict.reason
    assert result.measured["no_skip: dia - h=0.25 (paired)"].values == pytest.approx((0.0, 0.0, 0.0))
    assert result.measured["no_skip: dia - warmed-up plain (paired)"].values == pytest.approx((0.3, 0.29, 0.31))
    assert result.references[f"resnet56 {WARMUP} test accuracy (unablated)"].mean == pytest.approx(0.96)
    assert "no_bn: dia - h=learned (paired)" in result.comparisons and "no_skip: dia - h=learned (paired)" not in \
        result.measured
    assert any(note.startswith("controls: resnet56 warm-up") and "the verdict's baseline: warmed-up plain" in note
               for note in result.notes)
    assert {row["model"] for row in result.table} >= {f"resnet56 {c}" for c in (WARMUP, *STEP_CONTROLS)}
