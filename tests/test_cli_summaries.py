"""Every command that makes a run directory leaves summary.json with its results, so `dia-ode ls runs`
shows a run that finished as finished; a guard fails when a command is added without a case here."""

import click
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dia_ode.cli import main
from dia_ode.rundir import has_results, read_summary
from dia_ode.rundir.listing import list_runs


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


TINY = ("--model-option", "base_width=4", "--epochs", 1, "--train-examples", 64, "--no-progress")
TRAINED = {  # what the analysis commands read, each as small as its task allows
    "classifier": ("--model", "dia_resnet20", *TINY),
    "diffusion": ("--task", "diffusion", "--model", "dia_unet_s", "--model-option", "base_width=8", "--model-option",
                  "blocks=1", "--epochs", 1, "--train-examples", 64, "--task-option", "timesteps=40", "--no-progress"),
    "detector": ("--task", "detection", "--dataset", "digit-scenes", "--model", "resnet20", "--model-option",
                 "base_width=4", "--epochs", 1, "--train-examples", 16, "--batch-size", 8, "--no-progress"),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{"classifier", "diffusion", "detector"}: tiny trained runs; "images": a folder of two images."""
    out = tmp_path_factory.mktemp("trained")
    for name, args in TRAINED.items():
        result = invoke("train", *args, "--out", out, "--name", name)
        assert result.exit_code == 0, result.output
    runs = {p.name.split("-")[-1]: p for p in out.iterdir()}
    runs["images"] = out / "images"
    runs["images"].mkdir()
    for k in range(2):
        Image.fromarray((torch.rand(48, 80) * 255).byte().numpy()).save(runs["images"] / f"photo{k}.png")
    return runs


def _tiny_sweep(monkeypatch):
    from dia_ode.studies import sampling

    monkeypatch.setattr(sampling, "SWEEP", (sampling.Setting("ddim", steps=2),))


# command line (after `dia-ode`) of every command that makes a run directory, on tiny settings; a case
# named "<command> --<option>" is a second code path of the same command
CASES = {
    "train": lambda runs: ["train", "--model", "resnet20", *TINY],
    "train --seeds": lambda runs: ["train", "--model", "resnet20", *TINY, "--seeds", "0,1"],
    "bench train-step": lambda runs: ["bench", "train-step", "--models", "resnet20", "--batch-size", 2,
                                      "--image-size", 8, "--steps", 1, "--rounds", 1],
    "bench ops": lambda runs: ["bench", "ops", "--models", "resnet20", "--batch-size", 2, "--image-size", 8,
                               "--model-option", "base_width=4"],
    "bench stiffness": lambda runs: ["bench", "stiffness", "--channels", 2, "--size", 3, "--compare-size", 3,
                                     "--k", 2],
    "bench solve-batch": lambda runs: ["bench", "solve-batch", "--batch", 4, "--t1", 1, "--rounds", 1],
    "bench stiff-switch": lambda runs: ["bench", "stiff-switch", "--stiff-methods", "rodas4", "--no-explicit"],
    "correlate": lambda runs: ["correlate", runs["classifier"], "--samples", 8, "--permutations", 2],
    "stepsize": lambda runs: ["stepsize", runs["classifier"], "--samples", 4],
    "stiffness": lambda runs: ["stiffness", runs["classifier"], "--samples", 1, "--k", 2],
    "stiffness --problem": lambda runs: ["stiffness", "--problem", "vdp", "--mu", 10, "--points", 3],
    "compare": lambda runs: ["compare", "--from", runs["classifier"], "--samples", 4],
    "report": lambda runs: ["report", "--budget", "smoke", "--claims", "euler-step", "--no-progress"],
    "integrate": lambda runs: ["integrate", "--problem", "vdp", "--mu", 1, "--t1", 1, "--no-reference"],
    "controllers": lambda runs: ["controllers", "--problems", "brusselator", "--tolerances", "1e-3",
                                 "--controllers", "pi,pid:H312PID", "--no-baselines"],
    "controllers train": lambda runs: ["controllers", "train", "--t1", 1, "--members", 1, "--held-out", 1,
                                       "--iterations", 1, "--population", 1],
    "detect": lambda runs: ["detect", runs["detector"], "--images", runs["images"], "--show", 1],
    "sample": lambda runs: ["sample", runs["diffusion"], "--no-quality", "--num", 2, "--sampler", "ddim",
                            "--steps", 2],
    "sample --sweep": lambda runs: ["sample", runs["diffusion"], "--sweep", "--feature-run", runs["classifier"],
                                    "--num", 4],
}
SETUP = {"sample --sweep": _tiny_sweep}  # a case's monkeypatching (the sweep's grid: one cheap setting)
# commands that make no run directory, and groups whose bare call runs a subcommand's case
NO_RUN_DIR = {"ls": "lists models, datasets and runs; writes nothing"}
RUNS_SUBCOMMAND = {"bench": "bench train-step"}


@pytest.mark.slow  # the fixture trains a classifier, a diffusion model and a detector
@pytest.mark.parametrize("case", list(CASES))
def test_every_command_leaves_a_summary_and_is_listed_finished(case, trained, tmp_path, monkeypatch):
    if case in SETUP:
        SETUP[case](monkeypatch)
    result = invoke(*CASES[case](trained), "--out", tmp_path)
    assert result.exit_code == 0, result.output
    listed = list_runs(tmp_path)
    assert listed, f"{case} made no run directory"
    for info in listed:
        summary = read_summary(info.path)
        assert has_results(summary) and set(summary) - {"status"}, f"{info.path.name}: summary {summary}"
        assert info.status == "finished", f"{info.path.name} is listed {info.status}"
    assert "incomplete" not in invoke("ls", "runs", "--out", tmp_path).output


def test_the_controllers_summary_gives_both_stiffness_readings_and_says_what_they_mean(tmp_path):
    result = invoke(*CASES["controllers"]({}), "--out", tmp_path)
    assert result.exit_code == 0, result.output
    (info,) = list_runs(tmp_path)
    summary = read_summary(info.path)
    assert [row["solver"] for row in summary["rows"]] == ["ours dopri5 + pi", "ours dopri5 + pid:H312PID"]
    assert all({"stiff_fraction", "flagged_fraction"} <= set(row) for row in summary["rows"])
    note = summary["notes"]["stiffness"]
    assert "stiff_fraction" in note and "flagged_fraction" in note and "streak" in note
    assert note in result.output and note in (info.path / "controllers.md").read_text()


def test_a_failed_solve_is_listed_failed_with_its_trace_kept(tmp_path):
    result = invoke("integrate", "--problem", "vdp", "--mu", 1, "--t1", 3, "--max-steps", 5, "--no-reference",
                    "--out", tmp_path)
    assert result.exit_code == 1 and "max steps reached" in result.output
    (info,) = list_runs(tmp_path)
    assert info.status == "failed" and "max steps reached" in read_summary(info.path)["error"]
    assert (info.path / "trace.json").is_file()


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()):
    """Every command path under `group` ("bench train-step"); a group that runs without a subcommand
    is a path too. Through list_commands / get_command, so lazily loaded commands count."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command, path = group.get_command(ctx, name), (*prefix, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield " ".join(path)
            yield from _command_paths(command, path)
        else:
            yield " ".join(path)


def test_every_registered_command_has_a_summary_case_or_says_why_not():
    covered = {case.split(" --")[0] for case in CASES} | set(NO_RUN_DIR) | set(RUNS_SUBCOMMAND)
    missing = sorted(set(_command_paths(main)) - covered)
    assert not missing, (f"commands without a case in CASES: {', '.join(missing)}; add a tiny command line "
                         f"there (or to NO_RUN_DIR with the reason it makes no run directory)")
    assert set(RUNS_SUBCOMMAND.values()) <= set(CASES)
