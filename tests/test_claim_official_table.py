"""The official-accuracy-table claim: runs only at the full budget with CIFAR-100, the official recipes,
"not testable here" with what would test it, and the verdict rules on synthetic summaries and verdicts
(dia_ode/studies/claims/official_table.py)."""

import math

import pytest

from dia_ode.engine.optim import learning_rate
from dia_ode.rundir import write_json
from dia_ode.studies.claims import get_claim, official_table
from dia_ode.studies.claims.official_table import (PRECEDENCE, ROWS, gpu_hours, residual_blocks, table_verdict,
                                                   untestable_reason)
from dia_ode.studies.report.budgets import get_budget
from dia_ode.studies.report.claim import VERDICTS, RunSpec, Verdict

CLAIM = get_claim("official-accuracy-table")
SMOKE, FULL = get_budget("smoke"), get_budget("full")


@pytest.fixture
def cifar100(monkeypatch):
    """CIFAR-100 loads (as it would from a default folder); the claim never reads the files itself."""
    monkeypatch.setattr(official_table, "dataset_available", lambda name: name == "cifar100")


@pytest.fixture
def no_cifar100(monkeypatch):
    monkeypatch.setattr(official_table, "dataset_available", lambda name: False)


def test_the_table_is_the_papers():
    assert [(r.backbone, r.plain, r.dia, r.paper) for r in ROWS] == [
        ("ResNet164", "resnet164", "dia_resnet164", (0.7343, 0.7667)),
        ("PreResNet164", "preresnet164", "dia_preresnet164", (0.7653, 0.7820)),
        ("WRN52-4", "wrn52_4", "dia_wrn52_4", (0.7975, 0.8099)),
        ("ResNeXt101 8x32", "resnext101_8x32d", "dia_resnext101_8x32d", (0.8118, 0.8246))]
    assert [r.gain for r in ROWS] == [0.0324, 0.0167, 0.0124, 0.0128]
    assert CLAIM.kind == "paper" and "73.43 -> 76.67" in CLAIM.paper


@pytest.mark.parametrize("budget", ["smoke", "cpu", "full"])
def test_without_cifar100_no_budget_trains(budget, no_cifar100):
    assert CLAIM.runs(get_budget(budget)) == []


def test_with_cifar100_only_the_full_budget_trains(cifar100):
    assert CLAIM.runs(SMOKE) == [] and CLAIM.runs(get_budget("cpu")) == []
    specs = CLAIM.runs(FULL)
    assert len(specs) == len(ROWS) * 2 * len(FULL.seeds) == 40 and len({s.key() for s in specs}) == 40
    assert {(s.config.dataset, s.config.val_fraction, s.config.batch_size, s.config.optimizer, s.config.lr,
             s.config.momentum, s.config.nesterov, s.config.schedule, s.config.augment) for s in specs} == \
        {("cifar100", 0.0, 128, "sgd", 0.1, 0.9, False, "step", True)}


def test_cifar100_under_the_data_root_reaches_the_report(tmp_path, monkeypatch):
    import pickle

    import numpy as np

    from dia_ode.data import DATA_ENV
    from dia_ode.studies.report.budgets import dataset_available

    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 4), ("test", 2)):
        batch = {b"data": np.zeros((n, 3072), dtype=np.uint8), b"fine_labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    dataset_available.cache_clear()  # it remembers what loaded: start from nothing, leave nothing behind
    try:
        monkeypatch.setenv(DATA_ENV, str(tmp_path))
        assert len(CLAIM.runs(FULL)) == 40
        dataset_available.cache_clear()
        monkeypatch.delenv(DATA_ENV)
        assert CLAIM.runs(FULL) == []
    finally:
        dataset_available.cache_clear()


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.backbone)
def test_each_row_trains_its_official_recipe(row, cifar100):
    specs = [s for s in CLAIM.runs(FULL) if s.config.model in (row.plain, row.dia)]
    assert [(s.config.model, s.config.seed) for s in specs] == [(m, seed) for m in (row.plain, row.dia)
                                                                for seed in FULL.seeds]
    for spec in specs:
        cfg = spec.config
        assert (cfg.epochs, cfg.weight_decay, cfg.gamma) == (row.epochs, row.weight_decay, row.gamma)
        # the lr drops by gamma exactly at the official epochs (0-based: the epoch that starts lower)
        lrs = [learning_rate(cfg, epoch) for epoch in range(cfg.epochs)]
        drops = [e for e in range(1, cfg.epochs) if not math.isclose(lrs[e], lrs[e - 1])]
        assert drops == list(row.drops) and all(math.isclose(lrs[e], lrs[e - 1] * row.gamma) for e in drops)
    options = {s.config.model: s.config.model_options for s in specs}
    expected = {"ResNet164": ({}, {}), "PreResNet164": ({}, {"branch_bn": True}),
                "WRN52-4": ({"dropout": 0.3}, {"dropout": 0.3, "branch_bn": True}), "ResNeXt101 8x32": ({}, {})}
    assert (options[row.plain], options[row.dia]) == expected[row.backbone]


def test_without_cifar100_it_is_not_testable_with_what_would_test_it(no_cifar100):
    result = CLAIM.measure({}, SMOKE)
    assert result.verdict.status == "not testable here" and result.parts == {}
    reason = result.verdict.reason
    for words in ("CIFAR-100 does not load here", "cifar-100-python/train", "--data-dir", "--budget full",
                  "40 runs (4 backbones x plain and DIA x 5 seeds)", "GPU-hours on one H200", "G1"):
        assert words in reason
    assert CLAIM.measure({}, FULL).verdict == result.verdict  # absent data: the same at every budget
    assert [row["paper plain %"] for row in result.table] == ["73.43", "76.53", "79.75", "81.18"]
    assert [row["paper DIA %"] for row in result.table] == ["76.67", "78.20", "80.99", "82.46"]
    assert {row["ours plain"] for row in result.table} == {"not run"}
    assert any("best test accuracy over all epochs" in note for note in result.notes)


def test_with_cifar100_a_smaller_budget_says_the_full_one_would_test_it(cifar100):
    verdict = CLAIM.measure({}, SMOKE).verdict
    assert verdict.status == "not testable here"
    assert verdict.reason.startswith("the smoke budget does not train the papers' recipes; `dia-ode report --budget "
                                     "full --claims official-accuracy-table` would test it: 40 runs")


def test_the_gpu_hours_are_blocks_times_the_measured_step_per_block():
    assert [residual_blocks(r.plain) for r in ROWS] == [54, 54, 24, 33]
    assert [residual_blocks(r.dia) for r in ROWS] == [54, 54, 24, 33]
    # ResNet164: 391 steps of 128 images x 180 epochs, 54 blocks x (14.0 + 39.0) / 27 ms per step pair, 5 seeds
    assert gpu_hours(ROWS[0], 5) == pytest.approx(5 * 391 * 180 * 54 * 53 / 27 / 3.6e6)
    total = sum(gpu_hours(r, 5) for r in ROWS)
    assert f"at least {total:.0f} GPU-hours" in untestable_reason(SMOKE, False)


def _runs(tmp_path, accuracy):
    """Run directories with summaries: accuracy(row, model, seed) -> test_acc, or a summary dict."""
    run_dirs = {}
    for row in ROWS:
        for model in (row.plain, row.dia):
            for seed in FULL.seeds:
                key = RunSpec(row.config(model, FULL, seed)).key()
                value = accuracy(row, model, seed)
                (tmp_path / key).mkdir(parents=True)
                write_json(tmp_path / key / "summary.json",
                           value if isinstance(value, dict) else {"status": "finished", "test_acc": value})
                run_dirs[key] = tmp_path / key
    return run_dirs


def _gain(offsets):
    """Accuracies with DIA `offsets[backbone]` (per seed) above a plain backbone at the paper's level."""
    def accuracy(row, model, seed):
        return row.paper[0] + (offsets[row.backbone][seed] if model == row.dia else 0.0)
    return accuracy


CLEAR = (0.02, 0.03, 0.025, 0.02, 0.03)


def test_measure_reads_every_row_and_reproduces_when_every_row_gains(tmp_path, cifar100):
    result = CLAIM.measure(_runs(tmp_path, _gain({row.backbone: CLEAR for row in ROWS})), FULL)
    assert list(result.parts) == [row.backbone for row in ROWS]
    assert all(v.status == "reproduced" for v in result.parts.values())
    assert result.verdict.status == "reproduced" and result.verdict == table_verdict(result.parts)
    diff = result.measured["WRN52-4: dia - plain accuracy (paired by seed)"]
    assert diff.values == pytest.approx(CLEAR)
    assert result.references["wrn52_4 test accuracy"].mean == pytest.approx(0.7975)
    assert all(row["ours dia - plain (paired)"].startswith("[") for row in result.table)


def test_measure_uses_each_rows_own_gain_and_counts_a_diverged_run_at_chance(tmp_path, cifar100):
    holds_0 = (-0.01, 0.03, 0.0, 0.01, -0.005)  # interval about [-0.015, 0.025]: holds 0, below ResNet164's 0.0324
    offsets = {row.backbone: CLEAR for row in ROWS}
    result = CLAIM.measure(_runs(tmp_path, _gain({**offsets, "ResNet164": holds_0, "WRN52-4": holds_0})), FULL)
    assert result.parts["ResNet164"].status == "not reproduced"  # stops below +0.0324
    assert result.parts["WRN52-4"].status == "inconclusive"  # reaches +0.0124
    assert result.verdict.status == "not reproduced" and result.verdict.reason.startswith("ResNet164: ")

    diverged = {"status": "failed", "error": "TrainingDiverged: loss is nan"}

    def accuracy(row, model, seed):
        return diverged if (model, seed) == ("dia_resnext101_8x32d", 0) else _gain(offsets)(row, model, seed)
    result = CLAIM.measure(_runs(tmp_path / "d", accuracy), FULL)
    assert result.measured["dia_resnext101_8x32d test accuracy"].values[0] == 0.01  # chance, 100 classes
    assert result.parts["ResNeXt101 8x32"].status == "inconclusive"  # one seed far below: a wide interval
    assert result.verdict.status == "inconclusive"
    assert any("dia_resnext101_8x32d run 0 diverged" in note for note in result.notes)


@pytest.mark.parametrize("statuses, status", [
    (["reproduced"] * 4, "reproduced"),
    (["reproduced", "reproduced", "reproduced", "inconclusive"], "inconclusive"),
    (["reproduced", "precondition not met", "inconclusive", "reproduced"], "precondition not met"),
    (["reproduced", "not testable here", "precondition not met", "reproduced"], "not testable here"),
    (["not testable here", "reproduced", "not reproduced", "inconclusive"], "not reproduced"),
])
def test_the_table_is_reproduced_only_when_every_row_is(statuses, status):
    assert set(PRECEDENCE) == set(VERDICTS)
    parts = {row.backbone: Verdict(s, f"why {i}") for i, (row, s) in enumerate(zip(ROWS, statuses))}
    verdict = table_verdict(parts)
    assert verdict.status == status
    named = [f"{row.backbone}: why {i}" for i, (row, s) in enumerate(zip(ROWS, statuses)) if s == status]
    assert all(name in verdict.reason for name in named)
