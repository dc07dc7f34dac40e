import json
from dataclasses import replace
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from cli_checks import assert_one_line_usage_error
from dia_ode.cli import main

RUN_FILES = ["config.json", "cmd.txt", "metrics.jsonl", "summary.json", "checkpoints/last.pt",
             "figures/training.png", "figures/training.pdf"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def only_run_dir(out):
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1
    return dirs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = invoke("train", "--epochs", 1, "--no-progress", "--out", out, "--seed", 3)
    assert result.exit_code == 0, result.output
    return out, only_run_dir(out), result


def test_train_writes_every_run_directory_file(trained):
    out, run_dir, result = trained
    assert run_dir.name == "00000-train-dia_resnet20-digits"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "dia_resnet20" and config["seed"] == 3 and "torch" in config["versions"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["epochs"] == 1
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert "test_acc=" in result.output


def test_resume_from_the_cli_continues_the_same_directory(tmp_path):
    assert invoke("train", "--epochs", 1, "--no-progress", "--out", tmp_path, "--model", "resnet20").exit_code == 0
    run_dir = only_run_dir(tmp_path)
    result = invoke("train", "--resume", run_dir, "--epochs", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert len((run_dir / "cmd.txt").read_text().splitlines()) == 2
    assert only_run_dir(tmp_path) == run_dir





@pytest.mark.parametrize("args,needles", [
    (["--model", "dia_resnet21"], ["--model", "dia_resnet21"]),
    (["--dataset", "imagenet"], ["--dataset", "imagenet"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--epochs", "-3"], ["--epochs"]),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], ["/nonexistent/mnist"]),
    (["--dataset", "cifar10"], ["--data-dir"]),
    (["--model", "eca_resnet20", "--reduction", "4"], ["--model", "reduction"]),
    (["--resume", "/nonexistent/run"], ["--resume", "/nonexistent/run"]),
    (["--task", "segmentation"], ["--task", "segmentation"]),
    (["--model", "vit_tiny", "--model-option", "patch_size=3"], ["--model", "patch_size=3", "8"]),
    (["--model", "cbam_vit_tiny"], ["--model", "cbam_vit_tiny"]),
    (["--schedule", "cosine", "--warmup-epochs", "2"], ["warmup_epochs", "warmup_cosine"]),
    (["--optimizer", "lamb"], ["--optimizer", "lamb"]),
    (["--model", "vit_tiny", "--model-option", "heads=abc"], ["--model", "option 'heads' takes int, got 'abc'"]),
    (["--model", "odenet", "--model-option", "rtol=abc"], ["--model", "option 'rtol' takes float, got 'abc'"]),
    (["--model", "rknet", "--model-option", "odenet:rtol=1e-5"], ["--model-option", "target odenet", "rknet"]),
    (["--model-option", "nope:width=3"], ["--model-option", "unknown model 'nope'"]),
    (["--train-examples", "0"], ["--train-examples", "0"]),
    (["--train-examples", "100000"], ["--train-examples", "train_examples=100000", "[1, 1294]"]),
    (["--val-fraction", "1"], ["--val-fraction"]),
])
def test_bad_train_input_is_a_one_line_usage_error(tmp_path, args, needles):
    out = [] if "--resume" in args else ["--out", tmp_path]  # --resume refuses --out: the run dir is fixed
    result = invoke("train", "--no-progress", *out, *args)
    assert_one_line_usage_error(result, *needles)
    assert not any(tmp_path.iterdir())  # nothing half-made is left behind


def test_corrupt_or_foreign_checkpoint_for_resume_is_a_usage_error(tmp_path, trained):
    _, good_dir, _ = trained
    for name, content in (("corrupt", b"\x00garbage"), ("foreign", None)):
        run_dir = tmp_path / name
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "config.json").write_text((good_dir / "config.json").read_text())
        if content is None:
            torch.save({"model": {}}, run_dir / "checkpoints" / "last.pt")
        else:
            (run_dir / "checkpoints" / "last.pt").write_bytes(content)
        assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--no-progress"), "--resume", "last.pt")


def test_resume_refuses_options_it_would_ignore(trained):
    _, run_dir, _ = trained
    assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--model", "resnet20", "--lr", 0.5), "--model", "--lr")


def test_resume_with_another_task_is_a_usage_error_naming_task(trained):
    _, run_dir, _ = trained
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == "classification"
    with pytest.MonkeyPatch.context() as mp:  # a second task, as the diffusion and detection issues will add
        from dia_ode import tasks
        mp.setitem(tasks.TASKS, "denoise", tasks.ClassificationTask)
        task_option = next(p for p in main.commands["train"].params if p.name == "task")
        mp.setattr(task_option.type, "choices", ["classification", "denoise"])
        assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--task", "denoise", "--no-progress"),
                            "--task", "denoise", "classification")


def test_a_short_vit_run_scales_the_recipe_warm_up_and_a_broken_config_is_named_on_resume(tmp_path):
    result = invoke("train", "--model", "vit_tiny", "--epochs", 1, "--model-option", "dim=8", "--model-option",
                    "depth=1", "--model-option", "heads=2", "--out", tmp_path, "--no-progress")
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["optimizer"], config["schedule"], config["batch_size"]) == ("adamw", "warmup_cosine", 128)
    assert config["warmup_epochs"] == pytest.approx(5 / 150)  # the recipe's 5 of 150 epochs, for 1 epoch
    (run_dir / "config.json").write_text("[1, 2]")
    assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--no-progress"), "--resume", "not a run configuration")


def test_a_model_that_does_not_serve_the_task_is_a_usage_error(tmp_path, monkeypatch):
    from dia_ode.models import registry

    entry = registry.model_entry("resnet20")
    monkeypatch.setitem(registry._ENTRIES, "detnet20", replace(entry, name="detnet20", tasks=("detection",)))
    result = invoke("train", "--model", "detnet20", "--out", tmp_path, "--no-progress")
    assert_one_line_usage_error(result, "--task", "detnet20", "classification")
    assert not any(tmp_path.iterdir())


def test_divergence_exits_1_with_one_line_and_says_what_is_kept(tmp_path, monkeypatch):
    from dia_ode.tasks import classification as train_module

    real = train_module.F.cross_entropy
    monkeypatch.setattr(train_module.F, "cross_entropy", lambda *a, **k: real(*a, **k) * float("inf"))
    result = invoke("train", "--epochs", 1, "--no-progress", "--out", tmp_path, "--model", "resnet20")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: training diverged: loss is inf at epoch 1, step 1")
    assert "nothing is kept" in result.output and "Traceback" not in result.output
    assert not any(tmp_path.iterdir())  # no epoch finished: no half-made run directory either


def test_ls_lists_models_attention_and_datasets():
    result = invoke("ls")
    assert result.exit_code == 0
    for needle in ("dia_resnet164", "preresnet164", "shared", "DIA-LSTM", "digits", "fashion-mnist"):
        assert needle in result.output
    only_dia = invoke("ls", "models", "--pattern", "dia_*").output.splitlines()[1:]
    assert only_dia and all(line.strip().startswith("dia_") for line in only_dia)
    continuous = invoke("ls", "models", "--kind", "continuous").output.splitlines()
    assert continuous[0] == "models (3):" and all("odenet" in line and "continuous" in line for line in continuous[1:])
    vit = invoke("ls", "models", "--family", "vit", "--attention", "dia").output
    assert "dia_vit_tiny" in vit and "optimizer=adamw" in vit and "dia_resnet20" not in vit


def test_ls_options_lists_a_models_options_with_types_and_defaults():
    out = invoke("ls", "--options", "dia_vit_tiny").output.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert rows["heads"] == ["int", "4"] and rows["patch_size"] == ["int", "or", "None", "None"]
    assert rows["reduction"] == ["int", "4"] and rows["split_controller"] == ["bool", "False"]  # DIA's and ViT's
    assert "spatial_kernel" not in invoke("ls", "--options", "se_resnet20").output  # SE takes reduction only
    assert_one_line_usage_error(invoke("ls", "--options", "nope"), "--options", "nope")


def test_ls_options_lists_the_engine_options_of_a_continuous_model():
    out = invoke("ls", "--options", "odenet").output.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert rows["backend"] == ["str", "'torchdiffeq'"] and rows["controller"] == ["str", "'i'"]
    assert rows["per_sample"] == ["bool", "False"]


@pytest.mark.parametrize("options, option", [
    (["controller=xyz"], "unknown controller 'xyz'"),
    (["backend=dia_ode", "controller=pid:H999"], "controller 'pid:H999'"),
    (["backend=dia_ode", "controller=dia:{tmp}"], "controller 'dia:"),  # a directory, not a trained controller run
    (["backend=dia_ode", "method=rk4", "step_size=0.1", "per_sample=true"], "per_sample=true"),
    (["controller=pi"], "controller 'pi' needs backend=dia_ode"),
    (["per_sample=true"], "per_sample=true needs backend=dia_ode"),
    (["backend=torch"], "unknown backend 'torch'"),
    (["backend=dia_ode", "kinetic_energy=0.1"], "kinetic_energy=0.1 with backend=dia_ode"),
])
def test_bad_engine_model_options_exit_2_with_one_line_naming_the_option(tmp_path, options, option):
    args = [arg for pair in options for arg in ("--model-option", pair.format(tmp=tmp_path))]
    result = invoke("train", "--model", "odenet", *args, "--epochs", 1, "--no-progress", "--out", tmp_path / "runs")
    assert_one_line_usage_error(result, "--model-option", option)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bench_train_step_prints_ratios_and_writes_json(tmp_path):
    # --out given to the group reaches the subcommand
    result = invoke("bench", "--out", tmp_path, "train-step", "--models", "resnet20,se_resnet20,dia_resnet20",
                    "--batch-size", 2, "--image-size", 8, "--steps", 1, "--rounds", 2)
    assert result.exit_code == 0, result.output
    assert "dia_resnet20/resnet20:" in result.output and "dia_resnet20/se_resnet20:" in result.output
    rows = json.loads((only_run_dir(tmp_path) / "bench.json").read_text())
    assert [r["model"] for r in rows] == ["resnet20", "se_resnet20", "dia_resnet20"]
    assert rows[0]["ratio_to_first"] == 1.0
    assert rows[2]["params"] > rows[0]["params"] and len(rows[2]["step_seconds_all"]) == 2


def test_bench_rejects_unknown_models(tmp_path):
    assert_one_line_usage_error(invoke("bench", "train-step", "--models", "resnet20,nope", "--out", tmp_path), "nope")


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "dia_ode", "ls", "datasets"], capture_output=True, text=True)
    assert result.returncode == 0 and "digits" in result.stdout


def test_load_run_gives_the_trained_model_and_rejects_a_run_without_checkpoint(trained, tmp_path):
    from dia_ode.rundir import CheckpointError
    from dia_ode.rundir import load_run

    _, run_dir, _ = trained
    run = load_run(run_dir)
    assert run.epoch == 1 and not run.model.training
    x, y = run.test_batch(5)
    assert x.shape == (5, 1, 8, 8) and y.shape == (5,)
    saved = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        load_run(tmp_path)


def test_train_examples_and_val_fraction_shape_the_splits_and_the_saved_config(tmp_path):
    result = invoke("train", "--epochs", 1, "--no-progress", "--out", tmp_path, "--train-examples", 200,
                    "--val-fraction", 0.2)
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["train_examples"], config["val_fraction"]) == (200, 0.2)
    accuracy = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["train_acc"]
    assert accuracy * 200 == pytest.approx(round(accuracy * 200))  # a count out of the 200 examples seen
    from dia_ode.rundir import load_run

    assert load_run(run_dir).test_batch(4)[0].shape == (4, 1, 8, 8)  # the run reloads with its config


def test_model_option_reaches_the_constructor(tmp_path):
    result = invoke("train", "--model", "resnet20", "--model-option", "base_width=4", "--epochs", 1,
                    "--no-progress", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "config.json").read_text())["model_options"] == {"base_width": 4}
    from dia_ode import create_model

    expected = sum(p.numel() for p in create_model("resnet20", in_channels=1, base_width=4).parameters())
    assert json.loads((run_dir / "summary.json").read_text())["params"] == expected


@pytest.mark.parametrize("pair,needle", [("base_width", "KEY=VALUE"), ("rtol=1e-5", "rtol")])
def test_bad_model_option_is_a_usage_error(tmp_path, pair, needle):
    assert_one_line_usage_error(invoke("train", "--model", "resnet20", "--model-option", pair, "--out", tmp_path), needle)


def test_resume_with_fewer_epochs_is_refused_and_leaves_the_run_usable(tmp_path):
    assert invoke("train", "--model", "resnet20", "--model-option", "base_width=4", "--epochs", 2, "--no-progress",
                  "--out", tmp_path).exit_code == 0
    run_dir = only_run_dir(tmp_path)
    config_before = (run_dir / "config.json").read_text()
    assert_one_line_usage_error(invoke("train", "--resume", run_dir, "--epochs", 1, "--no-progress"), "--epochs", "2 epochs")
    assert (run_dir / "config.json").read_text() == config_before
    assert len((run_dir / "cmd.txt").read_text().splitlines()) == 1  # a refused resume is not recorded
    result = invoke("train", "--resume", run_dir, "--no-progress")  # saved device and epochs: nothing to do
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "config.json").read_text())["device"] == "auto"


def test_step_budget_exhaustion_is_one_line_not_a_traceback(tmp_path):
    result = invoke("train", "--model", "odenet", "--model-option", "max_num_steps=1", "--model-option", "width=4",
                    "--epochs", 1, "--no-progress", "--out", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: the ODE solver gave up: ")
    assert "max_num_steps=1" in result.output


def test_a_failed_dia_ode_solve_in_training_is_one_line_with_its_samples_and_codes(tmp_path):
    result = invoke("train", "--model", "odenet", "--model-option", "backend=dia_ode", "--model-option",
                    "per_sample=true", "--model-option", "max_num_steps=1", "--model-option", "width=4",
                    "--epochs", 1, "--no-progress", "--out", tmp_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: the ODE solver gave up: dia_ode ODE solve (dopri5) failed for ")
    assert "samples (" in last and "max steps reached" in last and "raise max_num_steps=1" in last


@pytest.mark.parametrize("pair", ["in_channels=3", "num_classes=4"])
def test_dataset_driven_model_options_are_refused(tmp_path, pair):
    assert_one_line_usage_error(invoke("train", "--model-option", pair, "--out", tmp_path), "--model-option",
                        pair.split("=")[0])


@pytest.mark.parametrize("pair", ["reduction=0", "kernel_size=0", "base_width=0"])
def test_out_of_range_attention_and_width_options_are_usage_errors(tmp_path, pair):
    model = "eca_resnet20" if pair.startswith("kernel") else "se_resnet20"
    assert_one_line_usage_error(invoke("train", "--model", model, "--model-option", pair, "--out", tmp_path),
                        pair.split("=")[0])


def test_unwritable_out_is_a_usage_error(tmp_path):
    assert_one_line_usage_error(invoke("train", "--out", "/proc/not-a-place-for-runs"), "--out")
    (tmp_path / "a-file").write_text("")
    assert_one_line_usage_error(invoke("train", "--out", tmp_path / "a-file" / "runs"), "--out", "cannot create")


def test_a_refused_command_leaves_no_empty_out_folder(tmp_path):
    assert_one_line_usage_error(invoke("train", "--lr", "nan", "--out", tmp_path / "new" / "runs"), "--lr")
    assert not (tmp_path / "new").exists()
    result = invoke("train", "--epochs", 1, "--no-progress", "--model", "resnet20", "--model-option", "base_width=2",
                    "--out", tmp_path / "new" / "runs")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "new" / "runs").iterdir())) == 1  # made with the run directory


def test_run_files_get_the_usual_permissions(trained):
    _, run_dir, _ = trained
    modes = {name: (run_dir / name).stat().st_mode & 0o777 for name in ("config.json", "summary.json", "cmd.txt")}
    assert len(set(modes.values())) == 1, modes  # atomic writes match files written with open()


def test_bench_stiffness_reports_speedup_and_error(tmp_path):
    result = invoke("bench", "stiffness", "--channels", 2, "--size", 6, "--compare-size", 5, "--k", 3,
                    "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((only_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["n"] == 2 * 6 * 6 and summary["compare_n"] == 2 * 5 * 5
    assert summary["relative_error"] < 1e-4 and summary["speedup"] > 0
    assert "speed-up" in result.output


def test_load_run_refuses_weights_that_do_not_fit_the_configured_model(trained, tmp_path):
    import shutil

    from dia_ode.rundir import CheckpointError
    from dia_ode.rundir import load_run

    _, run_dir, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model": "se_resnet20"}))
    with pytest.raises(CheckpointError, match="holds model 'dia_resnet20', but config.json names 'se_resnet20'"):
        load_run(copy)


def test_an_option_given_to_every_model_names_the_model_and_advises_targeting(tmp_path):
    result = invoke("compare", "--models", "rknet,odenet", "--model-option", "rtol=1e-5", "--out", tmp_path)
    assert_one_line_usage_error(result, "--model-option", "model 'rknet' takes no option 'rtol'", "MODEL:KEY=VALUE")
    assert not any(tmp_path.iterdir())
    result = invoke("train", "--model", "odenet", "--model-option", "rtol=abc", "--out", tmp_path)
    assert_one_line_usage_error(result, "--model-option", "option 'rtol' takes float, got 'abc'")
    assert "MODEL:KEY=VALUE" not in result.output  # one model: nothing to target


def test_a_usage_error_of_another_torchrun_rank_alone_is_printed_with_its_rank(monkeypatch, capsys):
    import dia_ode.cli as cli

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(cli, "RANK_ERROR_DELAY_S", 0.0)
    monkeypatch.setattr(sys, "argv", ["dia-ode", "train", "--batch-size", "0"])
    with pytest.raises(SystemExit) as stop:
        cli.run()
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rank 1: Error: Invalid value for '--batch-size'"), err


def test_a_resume_joins_torchrun_on_the_device_the_run_was_started_with(tmp_path):
    from dia_ode.cli.train import resume_device
    from dia_ode.rundir import start_run

    cpu_run = start_run(tmp_path / "a", "train", {"command": "train", "device": "cpu"}, argv=["test"])
    assert resume_device(cpu_run, "auto") == "cpu"  # not --device's default: on a GPU machine that joined NCCL
    gpu_run = start_run(tmp_path / "b", "train", {"command": "train", "device": "cuda"}, argv=["test"])
    assert resume_device(gpu_run, "auto") == "cuda"
    assert resume_device(tmp_path / "missing", "auto") == "auto"  # resuming it reports the missing run


def test_ls_models_shows_the_tasks_each_model_serves():
    from dia_ode.models import model_entry

    lines = invoke("ls", "models").output.splitlines()[1:]
    tasks = {line.split()[0]: line.split()[3] for line in lines}  # name, family, kind, tasks[, recipe]
    assert tasks["dia_resnet20"] == "classification,detection" and tasks["dia_unet_s"] == "diffusion"
    assert tasks["odenet"] == "classification"
    assert all(listed == ",".join(model_entry(name).tasks) for name, listed in tasks.items())
