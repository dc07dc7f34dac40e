"""Faulty inputs that must end in one line, or change nothing (issue 26, item 5).

Memory: an IDX file is checked by its header before its body is read, and its body is read no further
than the header declares (a gzip bomb stops there); `integrate --points` and `sample --num` are checked
against this machine's memory before anything is allocated. A refused `train --resume --epochs` leaves
config.json and cmd.txt as they were. `--name` refuses a trailing newline. The cached feature network
is keyed by the data folder too. An empty IDX test split is refused when loaded. `detect --images`
skips links that leave the folder and undecodable files, as the COCO loader skips them.
"""

import gzip
import importlib
import json
import shutil
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.data import DataError, load_dataset, load_test_split, read_idx


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_usage_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    for needle in needles:
        assert needle in error_lines[0], result.output
    return error_lines[0]


def _one_line(err, *needles):
    message = str(err.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message


def _idx_header(*dims: int) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + np.asarray(dims, dtype=">i4").tobytes()


def _peak_bytes(job) -> int:
    """The peak of Python-traced allocations while job() runs (bytes objects and numpy buffers included)."""
    tracemalloc.start()
    try:
        job()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- IDX: the header first, then no more than it declares -------------------------------------------------

def test_an_idx_header_declaring_a_billion_images_is_refused_before_its_body_is_read(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:  # 784 GB declared, 8 MB of zeros given
        f.write(_idx_header(10**9, 28, 28) + bytes(8 << 20))
    with pytest.raises(DataError) as err:
        read_idx(path)
    _one_line(err, str(path), "declares")
    assert _peak_bytes(lambda: pytest.raises(DataError, read_idx, path)) < (1 << 20)


@pytest.mark.parametrize("gz", [True, False])
def test_an_idx_file_longer_than_its_header_declares_is_refused_while_streaming(tmp_path, gz):
    # a bomb-like file: a tiny declared size, then 32 MB of zeros (32 kB gzipped) it must not read whole
    path = tmp_path / ("t10k-labels-idx1-ubyte" + (".gz" if gz else ""))
    data = _idx_header(4) + bytes(4) + bytes(32 << 20)
    if gz:
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(data)
    else:
        path.write_bytes(data)
    with pytest.raises(DataError) as err:
        read_idx(path)
    _one_line(err, str(path), "more data than")
    assert _peak_bytes(lambda: pytest.raises(DataError, read_idx, path)) < (1 << 20)


def test_an_empty_idx_test_split_is_refused_when_loaded(tmp_path, fake_mnist):
    fake_mnist(tmp_path, gz=False, n_test=0)
    for load in (load_dataset, load_test_split):
        with pytest.raises(DataError) as err:
            load("mnist", tmp_path)
        _one_line(err, "t10k-", "no samples")


# --- memory: sizes checked before anything is allocated ---------------------------------------------------

@pytest.mark.parametrize("points", [10**12, 2_000_000_000])
def test_integrate_refuses_more_save_points_than_memory_holds(tmp_path, points):
    result = invoke("integrate", "--points", points, "--no-reference", "--out", tmp_path)
    assert_usage_error(result, "--points", "GB", "lower --points")
    assert not list(tmp_path.iterdir())


def test_integrate_memory_limit_follows_this_machines_memory(tmp_path, monkeypatch):
    from dia_ode.cli import runtime

    monkeypatch.setattr(runtime, "memory_bytes", lambda: 10**6)  # a 1 MB machine
    result = invoke("integrate", "--points", 100_000, "--no-reference", "--out", tmp_path)
    assert_usage_error(result, "--points", "lower --points")


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("diffusion")
    done = invoke("train", "--task", "diffusion", "--model", "dia_unet_s", "--model-option", "base_width=8",
                  "--model-option", "blocks=1", "--epochs", 1, "--train-examples", 16, "--batch-size", 16,
                  "--task-option", "timesteps=10", "--no-progress", "--out", out)
    assert done.exit_code == 0, done.output
    (run_dir,) = out.iterdir()
    return run_dir


@pytest.mark.parametrize("num, batch", [(10**12, 10**12), (10**9, 500)])
def test_sample_refuses_more_images_than_memory_holds(tmp_path, diffusion_run, num, batch):
    result = invoke("sample", diffusion_run, "--no-quality", "--num", num, "--batch-size", batch, "--out", tmp_path)
    assert_usage_error(result, "--num", "GB", "lower --num")
    assert not list(tmp_path.iterdir())


# --- a refused resume changes nothing ----------------------------------------------------------------------

def test_a_refused_resume_extension_leaves_config_and_cmd_untouched(tmp_path, fake_mnist):
    data = tmp_path / "mnist"
    data.mkdir()
    fake_mnist(data, gz=False, n_train=12, n_test=4)
    done = invoke("train", "--dataset", "mnist", "--data-dir", data, "--model", "resnet20", "--model-option",
                  "base_width=4", "--epochs", 1, "--batch-size", 8, "--no-progress", "--out", tmp_path / "runs")
    assert done.exit_code == 0, done.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    before = {name: (run_dir / name).read_bytes() for name in ("config.json", "cmd.txt")}
    shutil.rmtree(data)  # the Trainer refuses the resume: its data folder is gone
    refused = invoke("train", "--resume", run_dir, "--epochs", 2, "--no-progress")
    assert_usage_error(refused, str(data))
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert json.loads(before["config.json"])["epochs"] == 1


def test_a_resume_refused_by_the_trainer_writes_nothing(tmp_path, monkeypatch):
    from dia_ode.engine import TrainConfig, resume_training, run_training, trainer
    from dia_ode.rundir import start_run

    cfg = TrainConfig(model="resnet20", model_options={"base_width": 4}, epochs=1, batch_size=128)
    run_dir = start_run(tmp_path, "train", {"command": "train", **cfg.__dict__}, argv=["t"])
    run_training(cfg, run_dir, progress=False)
    before = {name: (run_dir / name).read_bytes() for name in ("config.json", "cmd.txt")}

    def refuse(**kwargs):
        raise ValueError("precision bf16 is not supported on this device")

    monkeypatch.setattr(trainer, "check_acceleration", refuse)
    with pytest.raises(ValueError, match="bf16"):
        resume_training(run_dir, epochs=2, progress=False, command="dia-ode train --resume RUN --epochs 2")
    assert {name: (run_dir / name).read_bytes() for name in before} == before


# --- --name ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["abc\n", "abc\r\n", "\nabc", "a" * 40 + "\n"])
def test_a_run_name_with_a_newline_is_refused(tmp_path, tag):
    result = invoke("integrate", "--problem", "robertson", "--t1", 0.01, "--points", 2, "--no-reference",
                    "--name", tag, "--out", tmp_path)
    assert_usage_error(result, "--name")
    assert not list(tmp_path.iterdir())


# --- the cached feature network is keyed by the data folder -----------------------------------------------

def test_two_data_folders_give_two_cached_feature_networks(tmp_path, monkeypatch):
    from dia_ode.analysis import sample_quality
    from dia_ode.rundir import write_json

    trained = []

    def fake_training(cfg, run_dir, progress=False):
        trained.append(cfg.data_dir)
        write_json(Path(run_dir) / "summary.json", {"status": "finished"})

    monkeypatch.setenv("DIA_ODE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample_quality, "run_training", fake_training)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    a = sample_quality.cached_feature_run("mnist", data_dir=str(first))
    b = sample_quality.cached_feature_run("mnist", data_dir=str(second))
    assert a != b and trained == [str(first), str(second)]
    monkeypatch.chdir(tmp_path)  # the same folder by another spelling is the same network
    assert sample_quality.cached_feature_run("mnist", data_dir="a/../a") == a and len(trained) == 2


# --- detect --images: links out of the folder and undecodable files are skipped ----------------------------

def _fake_detection_run(tmp_path):
    from dia_ode.models import create_model

    model = create_model("resnet20", head="detection", num_classes=3, in_channels=1, base_width=4).eval()
    return SimpleNamespace(task="detection", model=model, model_name="resnet20", run_dir=tmp_path,
                           test=SimpleNamespace(images=torch.zeros(1, 1, 32, 32, dtype=torch.uint8)),
                           mean=(0.5,), std=(0.5,))


def test_detect_images_skips_links_out_of_the_folder_and_undecodable_files(tmp_path, monkeypatch):
    from PIL import Image

    detect_module = importlib.import_module("dia_ode.cli.detect")  # the package's `detect` is the command

    monkeypatch.setattr(detect_module, "load_run", lambda run_dir, device: _fake_detection_run(tmp_path))
    folder, outside = tmp_path / "images", tmp_path / "secret"
    folder.mkdir(), outside.mkdir()
    Image.fromarray((torch.rand(24, 40) * 255).byte().numpy()).save(folder / "a.png")
    Image.fromarray((torch.rand(24, 40) * 255).byte().numpy()).save(outside / "private.png")
    (folder / "b_broken.png").write_bytes(b"not an image")
    (folder / "c_link.png").symlink_to(outside / "private.png")
    (folder / "d_inside.png").symlink_to(folder / "a.png")  # a link that stays inside is an image like any
    result = invoke("detect", tmp_path / "run", "--images", folder, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    (out_dir,) = (tmp_path / "out").iterdir()
    summary = json.loads((out_dir / "detect.json").read_text())
    assert summary["files"] == ["a.png", "d_inside.png"] and summary["images"] == 2
    assert summary["skipped"]["outside"] == ["c_link.png"] and len(summary["skipped"]["unreadable"]) == 1
    assert "skipped 1 link(s)" in result.output and "skipped 1 image(s)" in result.output
    assert "b_broken.png" in result.output

    for path in (folder / "a.png", folder / "d_inside.png"):
        path.unlink()
    nothing = invoke("detect", tmp_path / "run", "--images", folder, "--out", tmp_path / "out")
    assert_usage_error(nothing, "--images", "no readable image")
