"""`dia-ode integrate`: the files a solve writes, its numbers against the library's, and bad input."""

import json

import pytest
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.numerics import PIController, batched, solve
from dia_ode.stiffness.problems import get_problem


def invoke(*args):
    return CliRunner().invoke(main, ["integrate", *map(str, args)])


def test_integrate_writes_the_trace_summary_and_figures_of_the_librarys_solve(tmp_path):
    result = invoke("--problem", "vdp", "--mu", 1, "--t1", 3, "--rtol", 1e-7, "--atol", 1e-7, "--points", 11,
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    for name in ("config.json", "summary.json", "trace.json", "figures/solution.png", "figures/solution.pdf",
                 "figures/steps.png", "figures/steps.pdf"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    vdp = get_problem("vdp", mu=1.0)
    same = solve(batched(vdp.f), vdp.y0[None], 0.0, 3.0, controller=PIController(), rtol=1e-7, atol=1e-7)
    assert summary["result"] == "success" and summary["nfe"] == int(same.stats["nfe"][0])
    assert summary["num_rejected"] == int(same.stats["num_rejected"][0])
    assert summary["max_abs_error"] < 1e-5 and summary["stiff_fraction"] == 0.0
    trace = json.loads((run_dir / "trace.json").read_text())
    assert len(trace["t"]) == summary["num_steps"] and sum(trace["accepted"]) == summary["num_accepted"]
    assert trace["t"][-1] + trace["h"][-1] == pytest.approx(3.0)
    assert "success; nfe" in result.output


def test_an_exhausted_step_budget_keeps_the_trace_and_names_the_option(tmp_path):
    result = invoke("--problem", "vdp", "--mu", 1, "--t1", 3, "--max-steps", 5, "--no-reference", "--out", tmp_path)
    assert result.exit_code == 1 and "max steps reached" in result.output and "raise --max-steps" in result.output
    run_dir = next(tmp_path.iterdir())
    assert len(json.loads((run_dir / "trace.json").read_text())["t"]) == 5


@pytest.mark.parametrize("args, needles", [
    (["--method", "rk45"], ["--method", "rk45"]),
    (["--controller", "p"], ["--controller"]),
    (["--rtol", "0"], ["--rtol"]),
    (["--t0", "2", "--t1", "1"], ["--t1", "must be greater than --t0"]),
    (["--mu", "-1"], ["--mu"]),
    (["--controller", "pi", "--preset", "H211PI"], ["--preset", "pid"]),
    (["--controller", "pid", "--preset", "H999"], ["--preset", "H999"]),
    (["--method", "euler"], ["--step-size", "euler"]),
    (["--problem", "robertson", "--mu", "3"], ["mu", "robertson"]),
    (["--device", "cuda"], ["--device", "CPU"]),
    (["--method", "rk4", "--step-size", "0.1", "--stiff-switch"], ["--stiff-switch"]),
])
def test_bad_integrate_input_is_a_one_line_usage_error(tmp_path, args, needles):
    result = invoke(*args, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and all(needle in error[0] for needle in needles), result.output
    assert not any(tmp_path.iterdir())


def test_the_stiff_switch_is_reported_step_by_step(tmp_path):
    result = invoke("--problem", "robertson", "--t1", 10, "--rtol", 1e-4, "--atol", 1e-8, "--stiff-switch",
                    "--stiff-method", "rodas3", "--no-reference", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    trace = json.loads((run_dir / "trace.json").read_text())
    assert summary["num_implicit_steps"] == sum(a and m == "rodas3" for a, m in zip(trace["accepted"], trace["method"]))
    assert summary["num_implicit_steps"] > 0 and trace["method"][0] == "dopri5"
    assert "stiff switch:" in result.output and "accepted steps on rodas3" in result.output
    implicit = [r for a, m, r in zip(trace["accepted"], trace["method"], trace["h_rho"]) if a and m == "rodas3"]
    assert implicit and all(r is not None and r > 0 for r in implicit)  # the switch-back test's exact h * rho
    exact = invoke("--problem", "vdp", "--mu", 1000, "--t1", 0.2, "--exact-spectrum", "--no-reference",
                   "--out", tmp_path / "exact")
    assert exact.exit_code == 0, exact.output
    steps = json.loads((next((tmp_path / "exact").iterdir()) / "trace.json").read_text())
    assert all((r is not None) == a for a, r in zip(steps["accepted"], steps["h_rho"]))  # NaN -> null when rejected


@pytest.mark.parametrize("fast, stable", [(-100.0, True), (-1000.0, False)])
def test_fixed_rk4_steps_are_stable_only_inside_the_stability_bound(tmp_path, fast, stable):
    # h * |lambda| = 1 lies inside rk4's bound 2.785 on the real axis, 10 far outside: the fast mode grows
    result = invoke("--problem", "linear", "--eigenvalues", f"-1,{fast}", "--method", "rk4", "--step-size", 0.01,
                    "--t1", 0.5, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((next(tmp_path.iterdir()) / "summary.json").read_text())
    assert summary["num_accepted"] == 50 and summary["num_rejected"] == 0
    assert summary["nfe"] == 4 * 50 + 1  # four stages a step; the first stage of the next step at the end
    assert (summary["max_abs_error"] < 1e-2) == stable  # rk4 is accurate to ~1% of the fast mode at h|l| = 1
    assert stable or summary["max_abs_error"] > 1e10


# ---- dia-ode controllers (the benchmark) --------------------------------------------------------------

def bench(*args):
    return CliRunner().invoke(main, ["controllers", *map(str, args)])


def test_the_controller_benchmark_puts_every_solver_on_one_problem_in_one_table(tmp_path):
    result = bench("--problems", "brusselator", "--tolerances", "1e-4", "--controllers", "i,pid:H211PI",
                   "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    rows = json.loads((run_dir / "controllers.json").read_text())["rows"]
    from dia_ode.studies.bench_controllers import torchode_available
    extra = ["torchode dopri5"] if torchode_available() else []  # the optional extra, in the test extra too
    assert [r["solver"] for r in rows] == ["ours dopri5 + i", "ours dopri5 + pid:H211PI", "scipy RK45", "scipy Radau",
                                          "scipy LSODA", "torchdiffeq dopri5", *extra]
    assert all(r["result"] == "success" and r["error"] < 1e-2 and r["nfe"] > 0 for r in rows)
    problem = get_problem("brusselator")
    ours = solve(problem.f, problem.y0[None], 0.0, 20.0, rtol=1e-4, atol=1e-4)  # the I controller, the default
    assert rows[0]["nfe"] == int(ours.stats["nfe"][0]) and rows[0]["rejected"] == int(ours.stats["num_rejected"][0])
    assert rows[3]["njev"] > 0 and rows[2]["rejected"] is None  # scipy: Jacobians counted, rejections unknown
    table = (run_dir / "controllers.md").read_text()
    assert table.count("\n| Brusselator") == 6 + len(extra)
    assert ("torchode is not installed" in table) == (not extra)
    if extra:  # per-sample steps with its own I controller: counted like ours
        assert rows[-1]["accepted"] + rows[-1]["rejected"] > 0 and rows[-1]["nfe"] >= 6 * rows[-1]["accepted"]
    assert (run_dir / "figures" / "work_precision.png").is_file()
    only = bench("--problems", "brusselator", "--tolerances", "1e-3", "--controllers", "pi", "--no-baselines",
                 "--out", tmp_path)
    assert only.exit_code == 0 and only.output.count("solver=") == 1


@pytest.mark.parametrize("args, needles", [
    (["--controllers", "pid:H999"], ["--controllers", "H999"]),
    (["--controllers", "pi:H211PI"], ["--controllers", "takes no preset"]),
    (["--problems", "brusselator", "--mu", "5"], ["--mu", "vdp"]),
    (["--tolerances", "0"], ["--tolerances"]),
    (["--problems", "rossler"], ["--problems", "rossler"]),
])
def test_bad_benchmark_input_is_a_one_line_usage_error(tmp_path, args, needles):
    result = bench(*args, "--out", tmp_path)
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and all(needle in error[0] for needle in needles), result.output
    assert not any(tmp_path.iterdir())


def test_controllers_train_writes_a_controller_that_integrate_and_the_benchmark_use(tmp_path):
    trained = CliRunner().invoke(main, ["controllers", "train", "--t1", 2, "--members", 2, "--held-out", 2,
                                        "--iterations", 1, "--population", 1, "--out", tmp_path / "t"])
    assert trained.exit_code == 0, trained.output
    run_dir = next((tmp_path / "t").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["objective"]) == 1 and len(summary["held_out"]["nfe_dia"]) == 2
    assert (run_dir / "controller.pt").is_file() and "held-out members: nfe DIA / PI" in trained.output
    used = invoke("--problem", "vdp", "--mu", 2, "--t1", 2, "--controller", "dia", "--controller-run", run_dir,
                  "--no-reference", "--out", tmp_path / "i")
    assert used.exit_code == 0 and "dopri5 + dia: success" in used.output
    bench_row = bench("--problems", "brusselator", "--tolerances", "1e-3", "--controllers", f"dia:{run_dir}",
                      "--no-baselines", "--out", tmp_path / "b")
    assert bench_row.exit_code == 0 and "+ dia:" in bench_row.output
    wrong = invoke("--controller", "dia", "--controller-run", next((tmp_path / "i").iterdir()), "--out", tmp_path)
    assert wrong.exit_code == 2 and "--controller-run" in wrong.output and "holds no DIA controller" in wrong.output
    alone = invoke("--controller", "dia", "--out", tmp_path)
    assert alone.exit_code == 2 and "go together" in alone.output
    reversed_range = CliRunner().invoke(main, ["controllers", "train", "--mu-range", "10,1", "--out", tmp_path])
    assert reversed_range.exit_code == 2 and "--mu-range" in reversed_range.output
    wrong_family = CliRunner().invoke(main, ["controllers", "train", "--family", "linear", "--mu-range", "1,2",
                                             "--out", tmp_path])
    assert wrong_family.exit_code == 2 and "--mu-range is not an option of the linear family" in wrong_family.output
    linear = CliRunner().invoke(main, ["controllers", "train", "--family", "linear", "--members", 2, "--held-out", 2,
                                       "--iterations", 1, "--population", 1, "--out", tmp_path / "lin"])
    assert linear.exit_code == 0, linear.output
    summary = json.loads((next((tmp_path / "lin").iterdir()) / "summary.json").read_text())
    assert len(summary["held_out"]["members"]) == 2 and "linear family" in linear.output


def test_bench_solve_batch_times_both_solvers_on_the_same_batch(tmp_path):
    result = CliRunner().invoke(main, ["bench", "solve-batch", "--batch", 8, "--t1", 2, "--rounds", 1,
                                       "--out", tmp_path])
    assert result.exit_code == 0, result.output
    bench_json = json.loads((next(tmp_path.iterdir()) / "bench.json").read_text())
    assert bench_json["all_succeeded"] and bench_json["torchdiffeq_accepted"] > 0
    assert bench_json["ratio"] == pytest.approx(bench_json["ours_seconds_per_step"]
                                                / bench_json["torchdiffeq_seconds_per_step"])
    assert bench_json["ratio_no_test"] == pytest.approx(bench_json["ours_no_test_seconds_per_step"]
                                                        / bench_json["torchdiffeq_seconds_per_step"])
    assert 1 <= bench_json["ours_mean_accepted"] <= bench_json["ours_max_accepted"]
    assert "ratio" in result.output


def test_bench_stiff_switch_puts_the_switch_beside_lsoda_on_both_problems(tmp_path):
    result = CliRunner().invoke(main, ["bench", "stiff-switch", "--stiff-methods", "rodas4", "--no-explicit",
                                       "--out", tmp_path])
    assert result.exit_code == 0, result.output
    run_dir = next(tmp_path.iterdir())
    rows = json.loads((run_dir / "bench.json").read_text())["rows"]
    assert [r["solver"] for r in rows] == ["scipy LSODA", "ours dopri5 + PI -> rodas4"] * 2
    for lsoda, ours in (rows[0:2], rows[2:4]):
        assert lsoda["nfe_ratio"] == 1.0 and ours["nfe_ratio"] == pytest.approx(ours["nfe"] / lsoda["nfe"])
        assert ours["implicit_steps"] > 0 and ours["error"] <= 1.0
    assert (run_dir / "bench.md").read_text() in result.output
    wrong = CliRunner().invoke(main, ["bench", "stiff-switch", "--stiff-methods", "bdf", "--out", tmp_path / "x"])
    assert wrong.exit_code == 2 and "--stiff-methods" in wrong.output
