"""The analysis commands (correlate, stepsize, stiffness) on tiny trained runs."""

import json
from dataclasses import asdict

import pytest
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.rundir import start_run
from dia_ode.engine import TrainConfig, run_training


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _train(out, model):
    cfg = TrainConfig(model=model, epochs=1, batch_size=128, device="cpu", model_options={"base_width": 4})
    run_dir = start_run(out, f"train-{model}", {"command": "train", **asdict(cfg)}, argv=["test"])
    run_training(cfg, run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    return {name: _train(out, name) for name in ("dia_resnet20", "resnet20")}


def _output_dir(out):
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_correlate_writes_matrices_per_stage(runs, tmp_path):
    result = invoke("correlate", runs["dia_resnet20"], "--samples", 16, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out = _output_dir(tmp_path)
    stages = json.loads((out / "correlation.json").read_text())
    assert len(stages) == 3
    for s in stages:
        matrix = s["per_sample"]["matrix"]
        assert len(matrix) == len(matrix[0]) == 3 and matrix[0][0] == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["mean_r"]["per_sample"]) == 3
    for name in ("config.json", "cmd.txt", "figures/correlation_per_sample.png", "figures/correlation_batch_mean.pdf"):
        assert (out / name).is_file(), name
    assert "stage 2, per_sample: r =" in result.output  # stages numbered from 0, as in the JSON


def test_correlate_on_a_plain_model_is_a_usage_error(runs, tmp_path):
    result = invoke("correlate", runs["resnet20"], "--out", tmp_path)
    assert result.exit_code == 2 and "has no attention" in result.output


def test_stepsize_pairs_steps_with_stiffness(runs, tmp_path):
    result = invoke("stepsize", runs["dia_resnet20"], "--samples", 8, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out = _output_dir(tmp_path)
    stages = json.loads((out / "stepsize.json").read_text())
    assert len(stages) == 3
    for s in stages:
        assert len(s["steps"]["block_mean"]) == 3 and all(0 < h < 1 for h in s["steps"]["block_mean"])
        assert len(s["stiffness_block"]) == 2  # one difference quotient per pair of consecutive blocks
        assert set(s["spearman_block"]) >= {"rho", "pvalue", "n"}
    assert (out / "figures" / "stepsize_vs_stiffness.png").is_file()


def test_stepsize_of_the_quick_start_model_says_per_stage_why_spearman_is_na_and_what_to_train(runs, tmp_path):
    result = invoke("stepsize", runs["dia_resnet20"], "--samples", 8, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    advice = "train a deeper model, e.g. dia_resnet44 (7 blocks per stage)"
    lines = [line for line in result.output.splitlines() if line.startswith("stage ")]
    assert len(lines) == 3 and all("Spearman n/a (3 blocks: only" in line and advice in line for line in lines), lines
    out = _output_dir(tmp_path)
    stages = json.loads((out / "stepsize.json").read_text())
    assert all(s["spearman_block"]["reason"].endswith("need >= 4") for s in stages)
    assert [s["spearman_block"]["instead"] for s in stages] == [advice] * 3
    assert json.loads((out / "summary.json").read_text())["spearman_block_instead"] == [advice] * 3


def test_stiffness_of_a_run_writes_spectra_per_block(runs, tmp_path):
    result = invoke("stiffness", runs["dia_resnet20"], "--samples", 1, "--k", 3, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out = _output_dir(tmp_path)
    rows = [r for r in json.loads((out / "stiffness.json").read_text())["blocks"] if not r["skipped"]]
    assert len(rows) == 7  # 9 blocks, the first blocks of stages 2 and 3 change shape
    assert all(len(r["eigenvalues"]) == 3 and r["spectral_radius"] > 0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [0, 1, 2]
    assert (out / "figures" / "step_eigenvalues_stage0.png").is_file()


def test_stiffness_of_van_der_pol(tmp_path):
    result = invoke("stiffness", "--problem", "vdp", "--mu", 1000, "--points", 5, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out = _output_dir(tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_spectral_radius"] == pytest.approx(3000, rel=1e-3)  # at (2, 0): -3 mu
    indices = json.loads((out / "stiffness.json").read_text())
    assert len(indices["t"]) == 5 and (out / "figures" / "indices_over_time.png").is_file()


@pytest.mark.parametrize("args,needle", [
    (["stiffness"], "either RUN_DIR or --problem"),
    (["stiffness", "--problem", "rossler"], "--problem"),
    (["stiffness", "--problem", "robertson", "--mu", "3"], "mu"),
    (["stiffness", "--problem", "linear", "--eigenvalues", "-1,abc"], "--eigenvalues"),
    (["stepsize", "/nonexistent/run"], "RUN_DIR"),
])
def test_bad_analysis_input_is_a_one_line_usage_error(tmp_path, args, needle):
    result = invoke(*args, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert needle in error


def test_a_discrete_run_has_no_solver_record_and_record_only_is_refused(runs, tmp_path):
    history = [json.loads(line) for line in (runs["dia_resnet20"] / "metrics.jsonl").read_text().splitlines()]
    assert not any("stiff_fraction" in row for row in history)  # the record is a continuous model's
    result = invoke("stiffness", runs["dia_resnet20"], "--record-only", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--record-only" in result.output and "no solver record" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_a_run_dir_without_checkpoint_is_refused(runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((runs["dia_resnet20"] / "config.json").read_text())
    for command in ("correlate", "stepsize", "stiffness"):
        result = invoke(command, broken, "--out", tmp_path / "out")
        assert result.exit_code == 2 and "has no checkpoint" in result.output, command


def test_correlate_and_stepsize_of_a_continuous_model_point_to_stiffness_and_compare(tmp_path):
    cfg = TrainConfig(model="odenet", epochs=1, batch_size=256, device="cpu", model_options={"width": 4})
    run_dir = start_run(tmp_path / "trained", "train-odenet", {"command": "train", **asdict(cfg)}, argv=["test"])
    run_training(cfg, run_dir, progress=False)
    for command in ("correlate", "stepsize"):  # `stiffness` reads continuous runs: tests/test_stiffness_continuous.py
        result = invoke(command, run_dir, "--out", tmp_path / "out")
        assert result.exit_code == 2 and "dia-ode compare" in result.output, command
    assert not (tmp_path / "out").exists()  # no run directory was made, nor an empty --out
