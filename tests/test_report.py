"""Tests for the reproduction report's framework (dia_ode/studies/report, `dia-ode report`): the study
cache (reuse, resume after a kill, version refusal), recorders, launchers (local, local:N, submitit's
local executor), dry runs, the written files and bad input."""

from __future__ import annotations

import dataclasses
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dia_ode.analysis.intervals import mean_interval
from dia_ode.analysis.power import minimal_detectable_effect, seeds_needed
from dia_ode.cli import main
from dia_ode.cli.train import train
from dia_ode.engine import TrainConfig
from dia_ode.rundir import RunLocked, read_jsonl, read_summary, write_json
from dia_ode.studies.claims import CLAIMS
from dia_ode.studies.claims.correlation_recorder import RECORDER
from dia_ode.studies.report import recorders
from dia_ode.studies.report.budgets import BUDGETS, Budget, get_budget
from dia_ode.studies.report.cache import STUDY_FILE, execute, open_study, run_path, run_state
from dia_ode.studies.report.claim import KINDS, VERDICTS, AbstractClaim, ClaimResult, RunSpec, Verdict, run_outcome
from dia_ode.studies.report.command_line import train_command
from dia_ode.studies.report.launchers import SlurmLauncher, create_launcher
from dia_ode.studies.report.markdown import report_markdown
from dia_ode.studies.report.portable import portable
from dia_ode.studies.report.report import run_report


def tiny_spec(seed: int, epochs: int = 1, recorders_: tuple[str, ...] = ()) -> RunSpec:
    return RunSpec(TrainConfig(model="resnet20", epochs=epochs, batch_size=256, augment=False, device="cpu",
                               seed=seed, model_options={"base_width": 2}), recorders_)


class FakeClaim(AbstractClaim):
    """Two tiny runs; the measure is their test accuracies (or raises, to test the report's guard)."""

    id = "fake"
    kind = "paper"
    statement = "tiny networks learn digits"
    paper = "none: a test claim"

    def __init__(self, specs: list[RunSpec], fail: bool = False) -> None:
        self.specs, self.fail = specs, fail

    def runs(self, budget: Budget) -> list[RunSpec]:
        return list(self.specs)

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        if self.fail:
            raise RuntimeError("the measure broke\non two lines")
        acc = mean_interval([read_summary(run_dir)["test_acc"] for run_dir in run_dirs.values()])
        chance = mean_interval([0.1] * len(run_dirs))
        return ClaimResult({"test accuracy": acc}, {"test accuracy": chance},
                           Verdict("reproduced" if acc.mean > 0.1 else "not reproduced", "above chance or not"),
                           table=[{"runs": len(run_dirs)}], notes=["a note"])


class PoweredClaim(FakeClaim):
    """FakeClaim whose accuracy is also a comparison, with an effect to plan seeds for."""

    def measure(self, run_dirs: dict[str, Path], budget: Budget) -> ClaimResult:
        result = super().measure(run_dirs, budget)
        spread = mean_interval([0.01, -0.02, 0.015])  # a paired difference of three seeds
        return ClaimResult({**result.measured, "a - b (paired)": spread}, result.references, result.verdict,
                           comparisons={"a - b (paired)": 0.0324, "test accuracy": None})


@pytest.fixture
def fake(monkeypatch):
    def register(specs, fail=False):
        monkeypatch.setitem(CLAIMS, "fake", FakeClaim(specs, fail))
    return register


def report(*args) -> object:
    return CliRunner().invoke(main, ["report", "--no-progress", *args])


# ---- the smoke report through the CLI ------------------------------------------------------------

def test_smoke_report_with_the_euler_claim_writes_every_file(tmp_path):
    result = report("--budget", "smoke", "--claims", "euler-step", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (study,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert {"study.json", "report.md", "report.json", "config.json"} <= {p.name for p in study.iterdir()}
    assert json.loads((study / STUDY_FILE).read_text())["format"] == "dia_ode.study"
    data = json.loads((study / "report.json").read_text())
    (claim,) = data["claims"]
    assert claim["id"] == "euler-step" and claim["verdict"]["status"] == "reproduced"
    assert data["budget"]["name"] == "smoke" and data["machine"]["cores"] >= 1
    assert all(iv["n"] == 2 for iv in claim["measured"].values())  # the smoke budget's two seeds
    text = (study / "report.md").read_text()
    assert "### euler-step" in text and "reproduced" in text and "n=2" in text and "wall time" in text
    assert claim["kind"] == "construction" and "## Construction checks and the project's hypotheses" in text


def test_every_comparison_prints_its_power_and_the_seeds_the_papers_effect_needs(tmp_path, monkeypatch):
    monkeypatch.setitem(CLAIMS, "fake", PoweredClaim([tiny_spec(0), tiny_spec(1)]))
    study = tmp_path / "study"
    result = report("--claims", "fake", "--study", str(study))
    assert result.exit_code == 0, result.output
    claim = json.loads((study / "report.json").read_text())["claims"][0]
    rows = {row["comparison"]: row for row in claim["power"]}
    spread = mean_interval([0.01, -0.02, 0.015])
    assert rows["a - b (paired)"]["mde"] == pytest.approx(minimal_detectable_effect(spread.std, 3))
    assert rows["a - b (paired)"]["seeds_needed"] == seeds_needed(0.0324, spread.std) > 3
    assert rows["test accuracy"]["effect"] is None and rows["test accuracy"]["seeds_needed"] is None
    text = (study / "report.md").read_text()
    assert "smallest effect detected (80% power)" in text
    line = next(line for line in text.splitlines() if line.startswith("| a - b (paired) | 3 |"))  # the power row
    assert f"| {seeds_needed(0.0324, spread.std)} |" in line and "0.0324" in line
    with pytest.raises(ValueError, match="not measured"):
        ClaimResult({}, {}, Verdict("reproduced", "x"), comparisons={"missing": None})


def test_a_fake_claim_trains_each_run_once_and_a_rerun_trains_nothing(tmp_path, fake, epochs_trained):
    fake([tiny_spec(0), tiny_spec(1), tiny_spec(0)])  # a repeated spec is one run
    study = tmp_path / "study"
    first = report("--claims", "fake", "--study", str(study))
    assert first.exit_code == 0, first.output
    assert sorted(epochs_trained) == [(0, 0), (1, 0)]
    runs = sorted((study / "runs").iterdir())
    assert len(runs) == 2 and all(run_state(r) == "done" for r in runs)
    stamps = {r: (r / "metrics.jsonl").stat().st_mtime_ns for r in runs}
    second = report("--claims", "fake", "--study", str(study))
    assert second.exit_code == 0, second.output
    assert len(epochs_trained) == 2  # nothing trained again
    assert stamps == {r: (r / "metrics.jsonl").stat().st_mtime_ns for r in runs}
    claim = json.loads((study / "report.json").read_text())["claims"][0]
    assert claim["measured"]["test accuracy"]["n"] == 2 and claim["references"]["test accuracy"]["mean"] == 0.1
    assert "fake: reproduced" in second.output or "fake: not reproduced" in second.output


def test_a_killed_report_resumes_without_retraining_finished_runs(tmp_path, fake, epochs_trained, monkeypatch):
    """A interrupt (as Ctrl-C or SIGTERM) after run A finished and run B saved its first epoch."""
    kill = {"armed": True}

    def probe(run_dir):
        def record(epoch, row):
            if kill["armed"] and run_dir.name.endswith("seed1"):
                raise KeyboardInterrupt  # before its record is written: the resume must add it
            return {"seen": epoch}
        return record

    monkeypatch.setitem(recorders.RECORDERS, "probe", probe)
    a, b = tiny_spec(0, recorders_=("probe",)), tiny_spec(1, epochs=2, recorders_=("probe",))
    fake([a, b])
    study = tmp_path / "study"
    killed = report("--claims", "fake", "--study", str(study))
    assert killed.exit_code == 130 and "resume with" in killed.output
    run_a, run_b = run_path(a, study), run_path(b, study)
    assert run_state(run_a) == "done" and run_state(run_b) == "resume"
    before = ((run_a / "metrics.jsonl").read_bytes(), (run_a / "metrics.jsonl").stat().st_mtime_ns)
    kill["armed"] = False
    epochs_trained.clear()
    resumed = report("--claims", "fake", "--study", str(study))
    assert resumed.exit_code == 0, resumed.output
    assert epochs_trained == [(1, 1)]  # only B's second epoch
    assert before == ((run_a / "metrics.jsonl").read_bytes(), (run_a / "metrics.jsonl").stat().st_mtime_ns)
    assert [r["epoch"] for r in read_jsonl(run_b / "metrics.jsonl")] == [1, 2]
    assert [r["epoch"] for r in read_jsonl(run_b / "records" / "probe.jsonl")] == [1, 2]
    assert read_jsonl(run_a / "records" / "probe.jsonl") == [{"epoch": 1, "seen": 0}]


def test_a_long_study_resumes_mid_run_and_reports_the_points_it_has(tmp_path, epochs_trained, monkeypatch):
    """The long budget's shape at a tiny size (2 seeds of 3 epochs on digits): killed after seed 0's second
    checkpoint, measured as it stands (--no-train), then resumed: only the missing epochs train."""
    tiny = dataclasses.replace(get_budget("long"), seeds=(0, 1), epochs=3, datasets=("digits",), width=4, samples=32,
                               batch_size=256, val_fraction=0.1)
    monkeypatch.setitem(BUDGETS, "long", tiny)
    real, kill = recorders.RECORDERS[RECORDER], {"armed": True}

    def killing(run_dir):
        record = real(run_dir)

        def wrapped(epoch, row):
            if kill["armed"] and run_dir.name.endswith("seed0") and epoch == 1:
                raise KeyboardInterrupt  # after epoch 2's checkpoint, before its record
            return record(epoch, row)
        return wrapped

    monkeypatch.setitem(recorders.RECORDERS, RECORDER, killing)
    study = tmp_path / "study"
    args = ("--budget", "long", "--claims", "cross-layer-correlation", "--study", str(study))
    assert report(*args).exit_code == 130
    seed0, seed1 = [run_path(spec, study) for spec in CLAIMS["cross-layer-correlation"].runs(tiny)]
    records = seed0 / "records" / f"{RECORDER}.jsonl"
    assert run_state(seed0) == "resume" and not seed1.exists() and [r["epoch"] for r in read_jsonl(records)] == [1]

    def dose(claim):  # (epoch, seeds) of the dose-response's table rows, and the note on each seed's progress
        return ([(row["epoch"], row["seeds"]) for row in claim["table"] if "steps" in row],
                next(note for note in claim["notes"] if "dose-response:" in note))

    epochs_trained.clear()
    so_far = report(*args, "--no-train")
    assert so_far.exit_code == 0, so_far.output
    assert epochs_trained == []  # measured as it stands
    claim = json.loads((study / "report.json").read_text())["claims"][0]
    rows, progress = dose(claim)
    assert rows == [(1, 1)] * 3 and "seed 1: not started" in progress
    assert "seed 0: 1 of 3 epochs recorded" in progress and "stopped (interrupted)" in progress
    assert claim["verdict"]["status"] == "not testable here" and "no run finished" in claim["verdict"]["reason"]
    assert "figures/cross-layer-correlation_se_resnet20_dose_response.png" in claim["figures"]
    kill["armed"] = False
    resumed = report(*args)
    assert resumed.exit_code == 0, resumed.output
    assert epochs_trained == [(0, 2), (1, 0), (1, 1), (1, 2)]  # seed 0's third epoch, seed 1 from its start
    assert [r["epoch"] for r in read_jsonl(records)] == [1, 2, 3]  # epoch 2's record repaired from its checkpoint
    claim = json.loads((study / "report.json").read_text())["claims"][0]
    rows, progress = dose(claim)
    assert rows == [(epoch, 2) for epoch in (1, 2, 3) for _ in range(3)]
    assert "seed 0: 3 of 3 epochs recorded" in progress and "seed 1: 3 of 3 epochs recorded" in progress
    assert "no run finished" not in claim["verdict"]["reason"]


def test_no_train_trains_nothing_and_a_claim_needing_finished_runs_waits_for_them(tmp_path, fake, epochs_trained):
    fake([tiny_spec(0)])
    result = report("--claims", "fake", "--study", str(tmp_path / "s"), "--no-train")
    assert result.exit_code == 0, result.output
    assert epochs_trained == [] and not (tmp_path / "s" / "runs").exists()
    (claim,) = json.loads((tmp_path / "s" / "report.json").read_text())["claims"]
    assert claim["verdict"]["status"] == "not testable here"
    assert "is not finished; the report run on this study without --no-train" in claim["verdict"]["reason"]


def test_a_measure_that_raises_is_reported_not_testable_and_the_report_completes(tmp_path, fake):
    fake([tiny_spec(0)], fail=True)
    result = report("--claims", "fake,euler-step", "--study", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "s" / "report.json").read_text())
    fake_entry, euler = data["claims"]
    assert fake_entry["verdict"]["status"] == "not testable here"
    assert fake_entry["verdict"]["reason"].startswith("RuntimeError: the measure broke on two lines; the error fixed")
    assert fake_entry["verdict"]["reason"].endswith("would test it")  # says what would test it
    assert euler["verdict"]["status"] == "reproduced"
    assert "!! fake: NOT TESTABLE HERE -- RuntimeError: the measure broke" in result.stderr  # loud, on stderr


# ---- dry run and launchers -----------------------------------------------------------------------

def test_dry_run_lists_every_run_with_its_train_command_and_trains_nothing(tmp_path, fake, epochs_trained):
    specs = [tiny_spec(0), tiny_spec(1)]
    fake(specs)
    result = report("--claims", "fake,euler-step", "--dry-run", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("# euler-step: no training runs")
    for spec, line in zip(specs, lines[1:]):
        assert line.startswith(spec.key()) and f"seed={spec.config.seed}" in line and "epochs=1" in line
        assert line.endswith(train_command(spec.config))
    assert not epochs_trained and not any(tmp_path.iterdir())


def test_train_command_uses_only_options_train_has():
    cfg = TrainConfig(model="dia_vit_tiny", epochs=3, seed=4, augment=False, gamma=0.2,
                      model_options={"image_size": 8, "sam": "eca", "tag": "12"})
    line = train_command(cfg)
    words = shlex.split(line.split("  #")[0])
    flags = {w for w in words if w.startswith("--")}
    assert flags <= {o for p in train.params for o in p.opts + p.secondary_opts}
    assert "--optimizer" in flags and "--lr" in flags  # a recipe model gets its recipe-bound fields
    assert "sam=eca" in words and "tag='12'" in words and line.endswith("# also: gamma=0.2")


def test_train_command_gives_the_acceleration_fields_as_train_reads_them():
    cfg = TrainConfig(model="resnet20", precision="bf16", compile=True, compile_mode="max-autotune",
                      channels_last=True)
    words = shlex.split(train_command(cfg))
    assert words[words.index("--precision") + 1] == "bf16" and words[words.index("--compile-mode") + 1] == "max-autotune"
    assert "--compile" in words and "--channels-last" in words and "True" not in words
    assert "--compile" not in shlex.split(train_command(TrainConfig(model="resnet20")))


@pytest.mark.slow
def test_local_2_trains_runs_in_two_processes(tmp_path, fake):
    specs = [tiny_spec(0), tiny_spec(1)]
    fake(specs)
    result = report("--claims", "fake", "--launcher", "local:2", "--study", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    assert all(run_state(run_path(s, tmp_path / "s")) == "done" for s in specs)


@pytest.mark.slow
def test_slurm_launcher_through_submitits_local_executor(tmp_path):
    pytest.importorskip("submitit")
    spec = tiny_spec(2)
    study = open_study(tmp_path / "s", "smoke")
    outcomes = SlurmLauncher({"cluster": "local", "time": "5", "cpus": "1"}).run([spec], study)
    assert outcomes == {spec.key(): run_path(spec, study)}
    assert run_state(run_path(spec, study)) == "done" and (study / "submitit").is_dir()


def test_a_run_that_fails_makes_only_its_claim_untestable(tmp_path):
    bad = RunSpec(TrainConfig(model="resnet20", dataset="fashion-mnist", data_dir=str(tmp_path / "none"), epochs=1))
    data = run_report([FakeClaim([bad]), CLAIMS["euler-step"]], get_budget("smoke"), tmp_path / "s",
                      create_launcher("local"))
    fake_entry, euler = data["claims"]
    assert fake_entry["verdict"]["status"] == "not testable here" and euler["verdict"]["status"] == "reproduced"
    assert fake_entry["verdict"]["reason"].startswith(f"run {bad.key()} (resnet20, seed 0) failed: DataError")
    assert "error" in fake_entry["runs"][0] and (tmp_path / "s" / "report.md").is_file()


def test_a_diverged_run_is_a_result_the_claim_measures(tmp_path, monkeypatch):
    from dia_ode.tasks import classification

    diverging = RunSpec(TrainConfig(model="resnet20", epochs=1, batch_size=256, device="cpu",
                                    model_options={"base_width": 2}, lr=0.5))
    real = classification.F.cross_entropy
    monkeypatch.setattr(classification.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("inf"))
    seen = []

    class CountsDivergence(FakeClaim):
        def measure(self, run_dirs, budget):
            seen.extend(read_summary(d).get("status") for d in run_dirs.values())
            return ClaimResult({}, {}, Verdict("not reproduced", "it diverged"))

    data = run_report([CountsDivergence([diverging])], get_budget("smoke"), tmp_path / "s", create_launcher("local"))
    assert seen == ["failed"]  # the claim got the diverged run's directory, its summary saying why it stopped
    assert data["claims"][0]["verdict"] == {"status": "not reproduced", "reason": "it diverged"}


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["--claims", "nope"], "--claims"),
    (["--budget", "huge"], "--budget"),
    (["--launcher", "local:0"], "--launcher"),
    (["--launcher", "pbs"], "--launcher"),
    (["--launcher", "slurm", "--launcher-option", "queue=x"], "--launcher-option"),
    (["--launcher", "slurm", "--launcher-option", "time=soon"], "--launcher-option"),
    (["--launcher-option", "time"], "--launcher-option"),
    (["--launcher", "local", "--launcher-option", "time=5"], "--launcher-option"),
    (["--launcher", "slurm", "--launcher-option", "cluster=pbs"], "--launcher-option"),
    (["--seed", "3"], "--seed"),  # the budget's seeds decide: refused, not silently ignored
    (["--device", "cpu"], "--device"),
])
def test_bad_options_exit_2_naming_the_option(tmp_path, args, option):
    result = report(*args, "--out", str(tmp_path))
    assert result.exit_code == 2 and option in result.output, result.output
    assert not any(tmp_path.iterdir())  # refused before anything is made
    assert "Traceback" not in result.output


def test_a_study_of_another_version_or_not_a_study_is_refused(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / STUDY_FILE).write_text(json.dumps({"format": "dia_ode.study", "version": 0}))
    result = report("--claims", "euler-step", "--study", str(old))
    assert result.exit_code == 2 and "--study" in result.output and str(old / STUDY_FILE) in result.output
    assert "version 0" in result.output and len(result.output.strip().splitlines()[-1]) < 300
    dry = report("--claims", "euler-step", "--study", str(old), "--dry-run")
    assert dry.exit_code == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = report("--claims", "euler-step", "--study", str(other))
    assert refused.exit_code == 2 and "not a study directory" in refused.output
    with pytest.raises(ValueError, match="unknown recorder 'nope'"):
        execute(RunSpec(TrainConfig(), ("nope",)), open_study(tmp_path / "s", "smoke"))


# ---- review fixes: the cache key, run outcomes, the study's integrity, recorders, commands ----------

def test_the_cache_key_is_pinned_so_a_change_is_deliberate():
    """Every TrainConfig field, defaults included, is hashed: a new field or a changed default changes
    every key and a study retrains. If this fails on purpose, update the keys here, and bump CACHE_VERSION
    (claim.py) too when what an existing key's run means has changed (a new field with a default that
    keeps the old behaviour, like train_examples, does not: the old runs are only no longer found). A field
    listed in KEY_NEUTRAL_DEFAULTS keeps every key at its default: the acceleration fields did."""
    from dia_ode.studies.claims.dia_vs_se import backbone_config

    assert tiny_spec(0).key() == "5ef1b858715e1b3c"
    # the cpu study's resnet20 run of seed 0 (the directory name the report found it under)
    assert RunSpec(backbone_config("resnet20", get_budget("cpu"), 0, "digits")).key() == "33f3626e1275c8ee"


@pytest.mark.parametrize("field, value", [("precision", "bf16"), ("compile", True), ("channels_last", True)])
def test_a_key_neutral_field_enters_the_key_once_it_leaves_its_default(field, value):
    spec = tiny_spec(0)
    changed = RunSpec(dataclasses.replace(spec.config, **{field: value}), spec.recorders)
    assert changed.key() != spec.key()


@pytest.mark.parametrize("summary, outcome, state", [
    ({"test_acc": 0.5}, "finished", "stale"),  # no status: not the trainer's record, retrained by the cache
    ({"status": "failed", "error": "TrainingDiverged: loss is nan at epoch 1, step 3"}, "diverged", "done"),
    ({"status": "failed", "error": "StepBudgetExceeded: dopri5 took 10000 steps"}, "diverged", "done"),
    ({"status": "interrupted", "error": "KeyboardInterrupt"}, "failed", "new"),
    ({"status": "failed", "error": "DataError: no files"}, "failed", "new"),
    (None, "failed", "new"),
])
def test_run_outcome_and_terminal_errors(tmp_path, summary, outcome, state):
    """One rule for every claim; a deterministic failure (TERMINAL_ERRORS) is reused, never retried."""
    if summary is not None:
        write_json(tmp_path / "summary.json", summary)
    assert run_outcome(tmp_path) == outcome and run_state(tmp_path) == state


def test_a_run_directory_holding_another_key_is_refused(tmp_path, fake):
    spec = tiny_spec(0)
    study = open_study(tmp_path / "s", "smoke")
    run_dir = run_path(spec, study)
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json", {"command": "train", "key": "0123456789abcdef"})
    write_json(run_dir / "summary.json", {"test_acc": 0.9})
    with pytest.raises(ValueError, match=f"{run_dir} holds the run of cache key 0123456789abcdef, not {spec.key()}"):
        execute(spec, study)
    fake([spec])
    dry = report("--claims", "fake", "--study", str(study), "--dry-run")
    assert dry.exit_code == 2 and "--study" in dry.output and "0123456789abcdef" in dry.output


def test_a_resume_repairs_records_only_under_the_run_lock(tmp_path):
    spec = tiny_spec(0, recorders_=("probe",))
    recorders.RECORDERS["probe"] = lambda run_dir: (lambda epoch, row: {"seen": epoch})
    try:
        study = open_study(tmp_path / "s", "smoke")
        run_dir = execute(spec, study)
        (run_dir / "summary.json").unlink()  # as if killed after its checkpoint: state "resume"
        write_json(run_dir / "records" / "probe.jsonl", {"epoch": 9})  # a line the repair would drop
        records = (run_dir / "records" / "probe.jsonl").read_bytes()
        holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                                   f"fd = os.open({str(run_dir / '.lock')!r}, os.O_RDWR | os.O_CREAT); "
                                   "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(RunLocked):
                execute(spec, study)
        finally:
            holder.kill()
            holder.wait()
        assert (run_dir / "records" / "probe.jsonl").read_bytes() == records  # untouched by the refused resume
    finally:
        recorders.RECORDERS.pop("probe")


def test_the_framework_imports_no_claim_and_finds_claim_recorders_through_the_registry():
    code = ("import sys; import dia_ode.studies.report.cache, dia_ode.studies.report.report; "
            "assert not [m for m in sys.modules if m.startswith('dia_ode.studies.claims')], 'a claim imported'; "
            "from dia_ode.studies.report.recorders import RECORDERS, check_recorders; "
            "check_recorders(['attention_correlation']); print(sorted(RECORDERS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "attention_correlation" in out.stdout


def test_read_jsonl_drops_only_a_last_line_cut_short(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(path, partial_last=True) == [{"epoch": 1}, {"epoch": 2}]
    with pytest.raises(ValueError):
        read_jsonl(path)
    path.write_text('{"epo\n{"epoch": 2}\n')
    with pytest.raises(ValueError):  # a broken line in the middle is damage, not a kill during an append
        read_jsonl(path, partial_last=True)


def test_claim_commands_follow_the_budget_and_parts_reach_the_report(tmp_path, fake):
    claim = CLAIMS["dia-improves-backbone"]
    smoke, cpu = claim.commands(get_budget("smoke")), claim.commands(get_budget("cpu"))
    assert smoke.startswith("dia-ode report --budget smoke --claims dia-improves-backbone; by hand: dia-ode train")
    assert "--epochs 1 " in smoke and "base_width=4" in smoke and "--epochs 15 " in cpu and "base_width=16" in cpu

    class TwoParts(FakeClaim):
        def measure(self, run_dirs, budget):
            return ClaimResult({}, {}, Verdict("not reproduced", "one part failed"),
                               parts={"first": Verdict("reproduced", "fine"), "second": Verdict("not reproduced", "no")})

    data = run_report([TwoParts([])], get_budget("smoke"), tmp_path / "s")
    entry = data["claims"][0]
    assert entry["command"] == "dia-ode report --budget smoke --claims fake"
    assert entry["parts"]["second"] == {"status": "not reproduced", "reason": "no"}
    text = (tmp_path / "s" / "report.md").read_text()
    assert "- first: **reproduced.** fine" in text and "- second: **not reproduced.** no" in text


def test_report_markdown_puts_each_null_under_its_statistic():
    from dia_ode.studies.report.markdown import _statistics

    iv = {name: mean_interval(values).to_dict() for name, values in
          (("r, stage 0", [0.1, 0.2]), ("r, stage 0, untrained", [0.0, 0.1]), ("r, stage 1", [0.3, 0.4]),
           ("chance", [0.1, 0.1]))}
    measured = {k: iv[k] for k in ("r, stage 0", "r, stage 1")}
    references = {k: iv[k] for k in ("r, stage 0, untrained", "r, stage 1", "chance")}
    names = [row.split("|")[1].strip() for row in _statistics(measured, references)[2:-1]]
    assert names == ["r, stage 0", "↳ untrained (reference)", "r, stage 1", "chance (reference)"]
    stage_1 = _statistics(measured, references)[4]
    assert stage_1.count("[") == 2  # the same-name reference sits in its column


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc: Linux, where CI runs)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the process ended while we looked
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc")
def test_an_interrupted_local_pool_ends_its_children_and_starts_no_queued_run(tmp_path):
    """A SIGTERM sent to the report alone (cli/runtime.py turns it into KeyboardInterrupt, as Python does
    with SIGINT) must stop the runs in the children and drop the queued ones, not wait for all of them."""
    script = ("import sys\n"
              "from dia_ode.engine import TrainConfig\n"
              "from dia_ode.studies.report.cache import open_study\n"
              "from dia_ode.studies.report.claim import RunSpec\n"
              "from dia_ode.studies.report.launchers import LocalLauncher\n"
              "study = open_study(sys.argv[1], 'smoke')\n"
              "specs = [RunSpec(TrainConfig(model='resnet20', epochs=500, batch_size=256, augment=False, device='cpu',"
              " seed=s, model_options={'base_width': 2})) for s in range(4)]\n"
              "print('ready', flush=True)\n"
              "LocalLauncher(2).run(specs, study)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "s")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        for _ in range(1800):  # both workers training (3 min: spawning two torch processes on a loaded machine)
            if len(list((tmp_path / "s" / "runs").glob("*/config.json"))) == 2:
                break
            time.sleep(0.1)
        workers = [pid for pid in _children(parent.pid)
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 2
        parent.send_signal(signal.SIGINT)  # to the parent only: the children get no signal from us
        parent.wait(timeout=180)  # seconds when alone; a loaded 2-core machine took over 60
    finally:
        parent.kill()
        parent.wait()
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert len(list((tmp_path / "s" / "runs").iterdir())) == 2  # the two queued runs never started


# ---- verdicts, kinds and what the written files name ---------------------------------------------

def test_a_verdict_is_one_of_exactly_five():
    assert VERDICTS == ("reproduced", "not reproduced", "inconclusive", "precondition not met", "not testable here")
    for status in VERDICTS:
        assert Verdict(status, "why").status == status
    with pytest.raises(ValueError, match="unknown verdict 'maybe'; valid: reproduced, not reproduced, inconclusive"):
        Verdict("maybe", "why")
    with pytest.raises(ValueError, match="unknown verdict"):
        Verdict("not testable", "why")  # close to a verdict is not one


def test_a_claim_class_must_name_one_of_the_kinds():
    assert set(KINDS) == {"paper", "construction", "hypothesis"}
    with pytest.raises(ValueError, match="claim class NoKind has kind None; valid: paper, construction, hypothesis"):
        class NoKind(AbstractClaim):  # nothing to inherit a kind from
            id = "no-kind"
    with pytest.raises(ValueError, match="claim class Opinion has kind 'opinion'"):
        class Opinion(FakeClaim):
            kind = "opinion"

    class Hypothesis(FakeClaim):  # a valid kind is accepted, an inherited one too
        kind = "hypothesis"

    assert Hypothesis([]).kind == "hypothesis" and FakeClaim([]).kind == "paper"
    expected = {"euler-step": "construction", "continuous-dia-nfe": "hypothesis"}
    assert {cid: c.kind for cid, c in CLAIMS.items()} == {cid: expected.get(cid, "paper") for cid in CLAIMS}


def _kind_claim(claim_id: str, kind: str, status: str) -> FakeClaim:
    """A claim of `kind` without runs whose measure gives `status`."""
    cls = type(f"Claim_{kind}", (FakeClaim,), {"id": claim_id, "kind": kind, "measure": lambda self, run_dirs, budget:
                                                ClaimResult({}, {}, Verdict(status, f"{claim_id} why"))})
    return cls([])


def test_report_json_carries_the_kind_and_report_md_keeps_the_papers_scorecard_apart(tmp_path):
    claims = [_kind_claim("check", "construction", "reproduced"), _kind_claim("headline", "paper", "inconclusive"),
              _kind_claim("ours", "hypothesis", "not reproduced"), _kind_claim("second", "paper", "precondition not met")]
    data = run_report(claims, get_budget("smoke"), tmp_path / "s")
    written = json.loads((tmp_path / "s" / "report.json").read_text())
    assert [(c["id"], c["kind"]) for c in written["claims"]] == [("check", "construction"), ("headline", "paper"),
                                                                 ("ours", "hypothesis"), ("second", "paper")]
    text = (tmp_path / "s" / "report.md").read_text()
    assert text == report_markdown(data)
    papers, others = text.split("## The papers' claims\n", 1)[1].split("## Construction checks and the project's "
                                                                       "hypotheses\n", 1)
    assert "| claim | verdict |" in papers and "| headline | inconclusive |" in papers
    assert "| second | precondition not met |" in papers
    assert "### headline" in papers and "### second" in papers and "check" not in papers and "ours" not in papers
    assert "| check | construction | reproduced |" in others and "| ours | hypothesis | not reproduced |" in others
    assert "### check" in others and "### ours" in others and "headline" not in others
    only_checks = report_markdown({**data, "claims": [c for c in data["claims"] if c["kind"] != "paper"]})
    assert "The papers' claims" not in only_checks  # an empty group is left out


def test_report_files_name_no_path_of_the_machine(tmp_path):
    study = tmp_path / "deep" / "study"
    elsewhere = tmp_path / "data" / "none"

    class NamesPaths(FakeClaim):
        id = "paths"

        def measure(self, run_dirs, budget):
            (run_dir,) = run_dirs.values()
            return ClaimResult({}, {}, Verdict("not reproduced", f"read {run_dir}/summary.json and {elsewhere}."),
                               notes=[f"study {study.resolve()}", f"a link's path {study}"])

    bad = RunSpec(TrainConfig(model="resnet20", dataset="fashion-mnist", data_dir=str(elsewhere), epochs=1))
    ok = tiny_spec(0)
    done = run_path(ok, open_study(study, "smoke"))  # a finished run the cache reuses: nothing trains
    done.mkdir(parents=True)
    write_json(done / "config.json", {"command": "train", "key": ok.key()})
    write_json(done / "summary.json", {"test_acc": 0.5})
    data = run_report([FakeClaim([bad]), NamesPaths([ok])], get_budget("smoke"), study, create_launcher("local"))
    failed, paths = data["claims"]
    assert failed["verdict"]["status"] == "not testable here" and "DataError" in failed["verdict"]["reason"]
    for name in ("report.md", "report.json"):
        text = (study / name).read_text()
        assert str(tmp_path) not in text and str(study.resolve()) not in text and str(study) not in text, name
    written = json.loads((study / "report.json").read_text())
    assert written["study"] == "study"
    assert written["claims"][1]["runs"][0]["run_dir"] == str(run_path(ok, study).relative_to(study))
    reason = written["claims"][1]["verdict"]["reason"]
    assert reason == f"read {run_path(ok, study).relative_to(study)}/summary.json and …/none."
    assert written["claims"][1]["notes"] == ["study study", "a link's path study"]
    assert "- study: `study`" in (study / "report.md").read_text()


def test_portable_rewrites_absolute_paths_and_leaves_other_slashes_alone(tmp_path):
    study = tmp_path / "s"
    text = (f"{study}/runs/k-train/summary.json; {study}, /usr/share/datasets/fashion-mnist; "
            "dia/plain 1 / classes C -> C/4 tests/test_report.py https://github.com/gbup-group/DIANet 0.016/0.017")
    expected = ("runs/k-train/summary.json; s, …/fashion-mnist; "
                "dia/plain 1 / classes C -> C/4 tests/test_report.py https://github.com/gbup-group/DIANet 0.016/0.017")
    assert portable({"a": [text, 3, None], f"{study}/x": (1.5,)}, study) == {"a": [expected, 3, None], "x": [1.5]}
