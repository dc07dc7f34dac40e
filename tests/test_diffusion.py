"""The diffusion task end to end: options, loss and evaluation, the weights' moving average, `dia-ode sample`.

The samplers' mathematics (closed-form forward process, DDIM eta = 1 against DDPM, the probability-flow
ODE of a Gaussian) is tests/test_diffusion_parts.py; here tiny UNets go through the trainer and the CLI.
"""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dia_ode.cli import main
from dia_ode.data import load_dataset
from dia_ode.engine import TrainConfig, resume_training, run_training
from dia_ode.engine.ema import make_ema
from dia_ode.models import create_model
from dia_ode.rundir import load_checkpoint, load_run, start_run
from dia_ode.solvers import stages_of
from dia_ode.tasks import get_task
from tests.test_inputs import assert_usage_error

TINY_UNET = {"base_width": 8, "blocks": 1}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_task_options_are_checked_by_name_and_value():
    task = get_task("diffusion", {"schedule": "cosine", "timesteps": 200})
    assert task.timesteps == 200 and task.schedule.alphas_cumprod[-1] < 1e-3
    for options, needle in (({"sched": "linear"}, "no option sched"), ({"schedule": "quadratic"}, "schedule must"),
                            ({"timesteps": 2}, "timesteps must"), ({"timesteps": 10.5}, "timesteps must"),
                            ({"sample_every": -1}, "sample_every must")):
        with pytest.raises(ValueError, match=needle):
            get_task("diffusion", options)
    with pytest.raises(ValueError, match="takes no options"):
        get_task("classification", {"schedule": "linear"})


def test_evaluation_scores_every_image_in_every_quarter_with_fixed_noise():
    task = get_task("diffusion", {"timesteps": 100})
    data = load_dataset("digits")
    model = create_model("unet_s", in_channels=1, **TINY_UNET)
    batches = lambda: task.batches(data.val, 64, dataset=data, device=torch.device("cpu"))  # noqa: E731
    first, second = task.evaluate(model, batches()), task.evaluate(model, batches())
    assert first == second  # the same noise and timesteps at every evaluation: epochs are comparable
    quarters = [first[f"loss_q{k}"] for k in range(1, 5)]
    assert first["loss"] == pytest.approx(sum(quarters) / 4)
    x, _, (offset, size) = next(batches())
    assert -1 <= x.min() < -0.9 and 0.9 < x.max() <= 1  # pixels scaled to [-1, 1]
    assert (offset, size) == (0, len(x))
    loss, sums = task.loss(model, (x, None, (offset, size)))
    assert loss.requires_grad and sums["count"] == len(x) and sums["loss"] == pytest.approx(loss.item() * len(x))


def test_a_rank_draws_its_part_of_the_global_batch_timesteps_and_noise():
    """Under torchrun each rank's loss is its slice of what one process draws for the whole batch."""
    task = get_task("diffusion", {"timesteps": 100})
    data = load_dataset("digits")
    model = create_model("unet_s", in_channels=1, **TINY_UNET)
    cpu = torch.device("cpu")
    whole = next(task.batches(data.val, 10, dataset=data, device=cpu))
    parts = [next(task.batches(data.val, 10, dataset=data, device=cpu, shard=(rank, 3))) for rank in range(3)]
    assert [p[2] for p in parts] == [(0, 10), (4, 10), (7, 10)]  # tensor_split of 10 into 3: 4, 3, 3
    torch.manual_seed(5)
    one = task.loss(model, whole)[1]["loss"]
    shards = []
    for part in parts:
        torch.manual_seed(5)  # the trainer seeds every rank alike
        shards.append(task.loss(model, part)[1]["loss"])
    assert sum(shards) == pytest.approx(one, rel=1e-5)


def test_the_moving_average_warms_up_then_decays_at_its_rate():
    model = nn.Linear(1, 1, bias=False)
    ema = make_ema(model, 0.9)
    expected = None
    for n, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0] + [0.0] * 40):
        model.weight.data.fill_(value)
        ema.update_parameters(model)
        d = min(0.9, (1 + n) / (10 + n))  # n updates before this one: 2/11, 3/12, ... then 0.9
        expected = value if expected is None else d * expected + (1 - d) * value  # the first one copies
        assert float(ema.module.weight.detach()) == pytest.approx(expected)


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(model="unet_s", task="diffusion", epochs=2, batch_size=32, train_examples=64,
                                 optimizer="adamw", lr=2e-3, weight_decay=0.0, augment=False, ema_decay=0.99,
                                 device="cpu", model_options=TINY_UNET,
                                 task_options={"timesteps": 50, "sample_every": 1}), **changes})


def test_a_run_keeps_its_moving_average_evaluates_and_loads_it_and_resumes_exactly(tmp_path):
    whole = start_run(tmp_path, "whole", {"command": "train", **_config().__dict__})
    summary = run_training(_config(), whole, progress=False)
    ckpt = load_checkpoint(whole / "checkpoints" / "last.pt")
    assert ckpt["ema"]["updates"] == 2 * 2  # 64 examples in batches of 32, two epochs
    raw = ckpt["model"]
    averaged = ckpt["ema"]["weights"]
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)
    loaded = load_run(whole)
    assert all(torch.equal(loaded.model.state_dict()[k], averaged[k]) for k in averaged)  # the average samples
    assert loaded.mean == (0.5,) and loaded.std == (0.5,)
    assert (whole / "figures" / "samples" / "epoch_0001.png").is_file()
    assert (whole / "figures" / "samples" / "epoch_0002.pdf").is_file()
    assert summary["test_loss"] == pytest.approx(np.mean([summary[f"test_loss_q{k}"] for k in range(1, 5)]))

    class Crash(Exception):
        pass

    def crash_after_first_epoch(epoch, row):
        if epoch == 0:
            raise Crash

    split = start_run(tmp_path, "split", {"command": "train", **_config().__dict__})
    with pytest.raises(Crash):
        run_training(_config(), split, progress=False, on_epoch_end=crash_after_first_epoch)
    resumed = resume_training(split, progress=False)
    assert resumed["test_loss"] == summary["test_loss"]
    again = load_checkpoint(split / "checkpoints" / "last.pt")["ema"]
    assert again["updates"] == 4 and all(torch.equal(again["weights"][k], averaged[k]) for k in averaged)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny diffusion run and a tiny classifier on digits, through the CLI."""
    out = tmp_path_factory.mktemp("runs")
    diffusion = invoke("train", "--task", "diffusion", "--model", "dia_unet_s", "--model-option", "base_width=8",
                       "--model-option", "blocks=1", "--epochs", 1, "--train-examples", 64, "--task-option",
                       "timesteps=40", "--task-option", "sample_every=1", "--no-progress", "--out", out,
                       "--name", "diffusion")
    assert diffusion.exit_code == 0, diffusion.output
    classifier = invoke("train", "--model", "resnet20", "--epochs", 1, "--train-examples", 64, "--no-progress",
                        "--out", out, "--name", "classifier")
    assert classifier.exit_code == 0, classifier.output
    runs = {p.name.split("-")[-1]: p for p in out.iterdir()}
    return runs["diffusion"], runs["classifier"], out


def _sample(trained, *args):
    diffusion, classifier, out = trained
    return invoke("sample", diffusion, "--feature-run", classifier, "--out", out / "samples", "--num", 24, *args)


def _sample_images(trained, *args):
    """Samples without the quality numbers (no feature network)."""
    diffusion, _, out = trained
    return invoke("sample", diffusion, "--no-quality", "--out", out / "samples", "--num", 24, *args)


def test_sampling_through_the_cli_writes_every_promised_file(trained):
    result = _sample(trained, "--sampler", "ddim", "--steps", 5)
    assert result.exit_code == 0, result.output
    out_dir = next((trained[2] / "samples").glob("*ddim-5"))
    with np.load(out_dir / "samples.npz") as npz:
        assert npz["images"].shape == (24, 1, 8, 8) and npz["images"].dtype == np.uint8
    for name in ("samples.png", "samples.pdf"):
        assert (out_dir / "figures" / name).is_file()
    row = json.loads((out_dir / "sample.json").read_text())
    assert row["sampler"] == "ddim" and row["nfe"] == 5 and row["seconds"] > 0
    quality = row["quality"]
    assert quality["fid"] > 0 and quality["fid_floor"] > 0 and quality["fid_ratio"] == pytest.approx(
        quality["fid"] / quality["fid_floor"])
    assert 0 <= quality["confident"] <= 1 and sum(quality["class_histogram"]) == pytest.approx(1, abs=1e-3)
    assert "FID" in result.output and "floor" in result.output


def test_the_ode_sampler_reports_its_steps_and_a_fixed_method_its_exact_cost(trained):
    result = _sample_images(trained, "--sampler", "ode", "--steps", 3)  # rk4 by default
    assert result.exit_code == 0, result.output
    row = json.loads((next((trained[2] / "samples").glob("*ode-rk4-3-steps")) / "sample.json").read_text())
    assert row["nfe"] == 12 and row["solver"]["num_accepted"] == 3 and len(row["solver"]["step"]) == 3
    assert "quality" not in row
    result = _sample_images(trained, "--sampler", "ode", "--rtol", 1e-2)
    assert result.exit_code == 0, result.output
    out_dir = next((trained[2] / "samples").glob("*ode-dopri5-rtol-1e-02"))
    solver = json.loads((out_dir / "sample.json").read_text())["solver"]
    assert solver["num_accepted"] == len(solver["step"]) >= 1 and (out_dir / "figures" / "steps.png").is_file()


def test_the_ode_sampler_runs_on_dia_ode_with_per_sample_or_batch_steps(trained):
    rows = {}
    for steps in ("--batch-steps", "--per-sample"):
        result = _sample_images(trained, "--sampler", "ode", "--rtol", 1e-2, "--backend", "dia_ode", "--controller",
                                "pid:H211PI", steps)
        assert result.exit_code == 0, result.output
        out_dir = next((trained[2] / "samples").glob(f"*ode-dopri5-rtol-1e-02-dia_ode-pid_H211PI-{steps[2:]}"))
        rows[steps] = json.loads((out_dir / "sample.json").read_text())
        assert (out_dir / "figures" / "steps.png").is_file()
    batch, alone = rows["--batch-steps"], rows["--per-sample"]
    assert batch["backend"] == "dia_ode" and batch["controller"] == "pid:H211PI" and alone["per_sample"]
    assert batch["solver"]["nfe_max"] == batch["nfe"]  # one step for the batch: every sample pays the same
    assert alone["solver"]["nfe_max"] >= alone["nfe"] > 0  # per sample: the mean, and the most any one needed
    assert len(alone["solver"]["step"]) >= 1  # the first sample's steps


def test_bad_ode_engine_sample_options_are_one_line_with_exit_code_2(trained):
    assert_usage_error(_sample_images(trained, "--sampler", "ode", "--controller", "pi"), "--controller",
                       "needs backend=dia_ode")
    assert_usage_error(_sample_images(trained, "--sampler", "ode", "--backend", "dia_ode", "--controller", "pid:X"),
                       "--controller", "unknown PID preset 'X'")
    assert_usage_error(_sample_images(trained, "--sampler", "ode", "--backend", "dia_ode", "--steps", 3,
                                      "--per-sample"), "--per-sample", "fixed-step method 'rk4'")
    assert_usage_error(_sample_images(trained, "--sampler", "ode", "--per-sample"), "--per-sample",
                       "needs backend=dia_ode")
    assert_usage_error(_sample_images(trained, "--sampler", "ddim", "--steps", 2, "--backend", "dia_ode"),
                       "--backend", "apply to --sampler ode")


def test_a_sweep_tables_fid_against_nfe_for_several_runs(trained, monkeypatch):
    from dia_ode.studies import sampling

    monkeypatch.setattr(sampling, "SWEEP", (sampling.Setting("ddim", steps=2), sampling.Setting("ode", method="euler",
                                                                                              steps=2)))
    diffusion, classifier, out = trained
    result = invoke("sample", diffusion, diffusion, "--sweep", "--feature-run", classifier, "--num", 16, "--out",
                    out / "sweeps")
    assert result.exit_code == 0, result.output
    out_dir = next((out / "sweeps").iterdir())
    rows = json.loads((out_dir / "sweep.json").read_text())
    assert [(r["setting"], r["nfe"]) for r in rows] == [("ddim 2", 2), ("ode euler 2 steps", 2)] * 2
    table = (out_dir / "sweep.md").read_text()
    assert table.count("| dia_unet_s |") == 4 and "floor" in table
    assert (out_dir / "figures" / "fid_vs_nfe.png").is_file()


def test_the_feature_network_is_trained_once_and_cached(tmp_path, monkeypatch):
    from dia_ode.analysis import sample_quality

    monkeypatch.setenv("DIA_ODE_CACHE", str(tmp_path))
    monkeypatch.setattr(sample_quality, "FEATURE_RECIPE", {"model": "resnet20", "epochs": 1, "train_examples": 32})
    first = sample_quality.cached_feature_run("digits")
    assert first.parent == tmp_path / "feature-nets" and (first / "summary.json").is_file()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging folder left behind
    monkeypatch.setattr(sample_quality, "run_training", lambda *a, **k: pytest.fail("trained again"))
    assert sample_quality.cached_feature_run("digits") == first


def test_the_analysis_commands_trace_a_unet_at_a_diffusion_time(trained):
    diffusion, classifier, out = trained
    result = invoke("correlate", diffusion, "--diffusion-time", 30, "--samples", 8, "--out", out / "analysis")
    assert result.exit_code == 0, result.output
    config = json.loads((next((out / "analysis").glob("*correlate*")) / "config.json").read_text())
    assert config["diffusion_time"] == 30
    stages = json.loads((next((out / "analysis").glob("*correlate*")) / "correlation.json").read_text())
    assert len(stages) == len(stages_of(load_run(diffusion).model)) == 5  # two levels down, the middle, two up
    result = invoke("stepsize", diffusion, "--samples", 8, "--out", out / "analysis")  # default T // 2
    assert result.exit_code == 0, result.output
    assert json.loads((next((out / "analysis").glob("*stepsize*")) / "config.json").read_text())["diffusion_time"] == 20
    assert_usage_error(invoke("stepsize", diffusion, "--diffusion-time", 40, "--out", out), "timesteps are 0 .. 39")
    assert_usage_error(invoke("stepsize", classifier, "--diffusion-time", 3, "--out", out), "applies to diffusion")
    assert_usage_error(invoke("stiffness", diffusion, "--out", out), "timestep embedding")


def test_bad_sampling_input_is_one_line_with_exit_code_2(trained):
    diffusion, classifier, out = trained
    assert_usage_error(invoke("sample", classifier, "--out", out), "trained task 'classification'", "not diffusion")
    assert_usage_error(_sample(trained, "--sampler", "ddim", "--steps", 0), "--steps")
    assert_usage_error(_sample(trained, "--sampler", "heun"), "--sampler")
    assert_usage_error(_sample(trained, "--num", 0), "--num")
    assert_usage_error(_sample_images(trained, "--sampler", "ode", "--rtol", 1e-9, "--max-steps", 2),
                       "max_num_steps=2", "raise --max-steps", "--rtol")
    assert_usage_error(_sample_images(trained, "--sampler", "ode", "--steps", 5, "--max-steps", 2),
                       "max_num_steps=2", "fewer --steps")
    assert_usage_error(_sample(trained, "--sampler", "ddpm", "--steps", 10), "--steps")
    assert_usage_error(_sample(trained, "--sampler", "ode", "--method", "rk4"), "needs --steps")
    assert_usage_error(invoke("sample", diffusion, "--feature-run", diffusion, "--out", out, "--num", 4),
                       "--feature-run", "must be a classification run on digits")
    assert_usage_error(invoke("train", "--task", "diffusion", "--task-option", "schedul=cosine", "--out", out),
                       "--task-option", "no option schedul")
    assert_usage_error(invoke("train", "--task", "diffusion", "--ema-decay", 1.0, "--out", out), "--ema-decay")


def test_the_train_step_benchmark_times_a_unet_by_its_ddpm_step(tmp_path):
    result = invoke("bench", "train-step", "--models", "unet_s,dia_unet_s", "--image-size", 8, "--in-channels", 1,
                    "--batch-size", 4, "--steps", 1, "--rounds", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    rows = json.loads((next(tmp_path.iterdir()) / "bench.json").read_text())
    assert [r["model"] for r in rows] == ["unet_s", "dia_unet_s"] and rows[1]["params"] > rows[0]["params"]
    assert "dia_unet_s/unet_s" in result.output


def test_a_batchnorm_classifier_keeps_a_moving_average_too(tmp_path):
    cfg = TrainConfig(model="resnet20", epochs=1, train_examples=64, batch_size=32, ema_decay=0.9, device="cpu",
                      model_options={"base_width": 4})
    run_dir = start_run(tmp_path, "bn", {"command": "train", **cfg.__dict__})
    summary = run_training(cfg, run_dir, progress=False)
    averaged = load_checkpoint(run_dir / "checkpoints" / "last.pt")["ema"]["weights"]
    tracked = [k for k in averaged if k.endswith("num_batches_tracked")]
    assert tracked and all(int(averaged[k]) == 2 for k in tracked)  # counts copied, not averaged
    assert 0 <= summary["test_acc"] <= 1


def test_sampling_options_that_would_be_ignored_are_refused(trained):
    diffusion, classifier, out = trained
    assert_usage_error(_sample(trained, "--no-quality", "--sampler", "ddim", "--steps", 2), "--feature-run")
    assert_usage_error(invoke("sample", diffusion, "--num", 1, "--feature-run", classifier, "--out", out), "--num")
    assert_usage_error(invoke("sample", diffusion, "--sweep", "--sampler", "ddim", "--feature-run", classifier,
                              "--out", out), "--sweep", "--sampler")
    assert_usage_error(_sample(trained, "--sampler", "ddim", "--rtol", 1e-4), "--rtol")
    assert_usage_error(_sample(trained, "--sampler", "ddim", "--steps", 41), "T = 40")
    assert_usage_error(invoke("compare", "--from", diffusion, "--out", out), "trained diffusion")


def test_one_ddim_step_starts_at_the_last_timestep():
    from dia_ode.tasks.diffusion_samplers import ddim_sample
    from dia_ode.tasks.noise_schedule import make_schedule

    seen = []
    ddim_sample(lambda x, t: seen.append(float(t[0])) or torch.zeros_like(x), make_schedule("linear", 50), (2, 1),
                1, torch.Generator())
    assert seen == [49.0]
