"""Tests for dia_ode.rundir and the test split loader: a run directory loaded back without the trainer
or the training set (checkpoint versions 1 and 2), strict JSON and atomic writes.

One tiny run (dia_resnet20 at base_width 4, one epoch of digits, no figures) is trained once for the module.
"""

import json
import re
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from dia_ode.data import DataError, load_dataset, load_test_split
from dia_ode.data import idx as idx_module
from dia_ode.engine import TrainConfig, build_model, run_training
from dia_ode.engine import trainer as trainer_module
from dia_ode.rundir import (CHECKPOINT, CheckpointError, LoadedRun, append_jsonl, atomic_write_bytes,
                            load_checkpoint, load_run, read_jsonl, save_checkpoint, start_run, to_jsonable,
                            write_json, write_jsonl)
from dia_ode.rundir import loaded as loaded_module

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
CFG = TrainConfig(model="dia_resnet20", epochs=1, batch_size=128, device="cpu", model_options={"base_width": 4})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """(run directory, dataset) of one epoch of CFG, trained through the engine into a start_run directory."""
    run_dir = start_run(tmp_path_factory.mktemp("runs"), "train", {"command": "train", **asdict(CFG)}, argv=["t"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_module, "plot_history", lambda *args, **kwargs: None)
        run_training(CFG, run_dir, progress=False, dataset=digits)
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path):
    """A private copy of the trained run, free to edit."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def _forbid_load_dataset(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_run read the training set")

    monkeypatch.setattr(loaded_module, "load_dataset", refuse)


def _assert_same_split(a, b):
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


# --------------------------------------------------------------------------------------------------
# load_test_split


@pytest.mark.parametrize("split_seed,test_fraction", [(0, 0.2), (1, 0.2), (0, 0.35)])
def test_load_test_split_is_load_datasets_test_split_for_digits(split_seed, test_fraction):
    whole = load_dataset("digits", split_seed=split_seed, test_fraction=test_fraction)
    test = load_test_split("digits", split_seed=split_seed, test_fraction=test_fraction)
    assert len(test) == round(test_fraction * 1797)
    _assert_same_split(test, whole.test)


@pytest.mark.parametrize("gz", [False, True])
def test_load_test_split_of_idx_files_never_reads_the_training_files(tmp_path, monkeypatch, gz, fake_mnist):
    arrays = fake_mnist(tmp_path, gz)
    expected = load_dataset("mnist", tmp_path).test
    test = load_test_split("mnist", tmp_path)
    _assert_same_split(test, expected)
    assert torch.equal(test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))

    read = []
    real_read_idx = idx_module.read_idx
    monkeypatch.setattr(idx_module, "read_idx", lambda path: read.append(Path(path).name) or real_read_idx(path))
    load_test_split("mnist", tmp_path)
    assert read and all(name.startswith("t10k-") for name in read)

    suffix = ".gz" if gz else ""
    for stem in IDX_STEMS[:2]:  # corrupt the training files: the test split does not notice
        (tmp_path / (stem + suffix)).write_bytes(b"\xff not an IDX file")
    _assert_same_split(load_test_split("mnist", tmp_path), expected)
    with pytest.raises(DataError, match="train-images"):
        load_dataset("mnist", tmp_path)


def test_load_test_split_of_idx_files_needs_no_training_files(tmp_path, fake_mnist):
    fake_mnist(tmp_path, gz=False)
    expected = load_dataset("mnist", tmp_path).test
    for stem in IDX_STEMS[:2]:
        (tmp_path / stem).unlink()
    _assert_same_split(load_test_split("mnist", tmp_path), expected)


# --------------------------------------------------------------------------------------------------
# load_run


def test_load_run_rebuilds_the_model_from_the_checkpoint(trained, monkeypatch):
    _forbid_load_dataset(monkeypatch)  # a version-2 checkpoint has all it needs
    run = load_run(trained)
    ckpt = load_checkpoint(trained / CHECKPOINT)
    assert isinstance(run, LoadedRun) and ckpt["version"] == 2
    assert run.model_spec == ckpt["model_spec"] == {
        "name": "dia_resnet20", "options": {"num_classes": 10, "in_channels": 1, "base_width": 4}}
    assert (run.model_name, run.dataset_name, run.task, run.epoch) == ("dia_resnet20", "digits", "classification", 1)
    assert run.config == json.loads((trained / "config.json").read_text())
    state = run.model.state_dict()
    assert state.keys() == ckpt["model"].keys()
    for key, value in ckpt["model"].items():
        assert torch.equal(state[key], value), key
    assert not run.model.training
    rebuilt = build_model(run.model_spec, "cpu")  # the spec alone gives the same architecture
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}


def test_load_run_normalises_the_test_split_like_training(trained, digits, monkeypatch):
    _forbid_load_dataset(monkeypatch)
    run = load_run(trained)
    assert run.mean == digits.mean and run.std == digits.std  # the training split's statistics
    _assert_same_split(run.test, digits.test)
    x, y = run.test_batch(5)
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.float32
    m, s = digits.mean[0], digits.std[0]
    torch.testing.assert_close(x, (digits.test.images[:5].float() / 255 - m) / s, rtol=0, atol=1e-6)
    assert torch.equal(y, digits.test.labels[:5])
    ys = torch.cat([labels for _, labels in run.test_batches(batch_size=100)])
    assert torch.equal(ys, digits.test.labels)
    # the loaded model computes what the trained weights compute
    reference = build_model(run.model_spec, "cpu")
    reference.load_state_dict(load_checkpoint(trained / CHECKPOINT)["model"])
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), reference.eval()(x), rtol=0, atol=0)


def _rewrite_as_version_1(run_dir):
    path = run_dir / CHECKPOINT
    payload = torch.load(path, weights_only=True)
    del payload["model_spec"], payload["normalisation"]
    payload["version"] = 1
    torch.save(payload, path)


def test_a_version_1_checkpoint_loads_from_its_config(run_copy, trained, digits, monkeypatch):
    _rewrite_as_version_1(run_copy)
    ckpt = load_checkpoint(run_copy / CHECKPOINT)
    assert ckpt["version"] == 1 and "model_spec" not in ckpt and "normalisation" not in ckpt
    calls = []
    real = loaded_module.load_dataset
    monkeypatch.setattr(loaded_module, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    run = load_run(run_copy)
    assert len(calls) == 1  # the fallback: statistics and data-derived options from the dataset
    assert run.model_spec == {"name": "dia_resnet20", "options": {"num_classes": 10, "in_channels": 1, "base_width": 4}}
    assert run.mean == digits.mean and run.std == digits.std and run.epoch == 1
    for key, value in load_checkpoint(trained / CHECKPOINT)["model"].items():
        assert torch.equal(run.model.state_dict()[key], value), key


@pytest.mark.parametrize("version", [1, 2])
def test_config_json_naming_another_model_is_refused(run_copy, version):
    if version == 1:
        _rewrite_as_version_1(run_copy)
    config = json.loads((run_copy / "config.json").read_text())
    write_json(run_copy / "config.json", {**config, "model": "resnet20"})
    with pytest.raises(CheckpointError, match="config.json names 'resnet20'"):
        load_run(run_copy)


def test_a_checkpoint_of_a_model_this_version_cannot_build_is_refused(run_copy):
    path = run_copy / CHECKPOINT
    payload = torch.load(path, weights_only=True)
    payload["model_spec"] = {"name": "dia_resnet21", "options": {}}
    torch.save(payload, path)
    config = json.loads((run_copy / "config.json").read_text())
    write_json(run_copy / "config.json", {**config, "model": "dia_resnet21"})
    with pytest.raises(CheckpointError, match="cannot build"):
        load_run(run_copy)


def test_load_run_refuses_what_is_not_a_run(run_copy, tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_run(tmp_path / "empty")
    path = run_copy / CHECKPOINT
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 3}, path)
    with pytest.raises(CheckpointError, match="version 3"):
        load_run(run_copy)
    path.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(run_copy)


def test_a_checkpoint_whose_weights_do_not_fit_is_refused(run_copy):
    path = run_copy / CHECKPOINT
    payload = torch.load(path, weights_only=True)
    payload["model_spec"]["options"]["base_width"] = 8  # weights of width 4 into a model of width 8
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_run(run_copy)


# --------------------------------------------------------------------------------------------------
# strict JSON, atomic writes


def test_write_json_is_strict_json(tmp_path):
    obj = {"nan": float("nan"), "inf": float("inf"), "ninf": -float("inf"),
           "nested": [1.5, float("nan"), {"x": np.nan}], "np": np.float64("nan"),
           "tensor": torch.tensor([1.0, float("inf")]), "ok": 0.25}
    write_json(tmp_path / "a.json", obj)
    text = (tmp_path / "a.json").read_text()

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    back = json.loads(text, parse_constant=refuse)  # NaN, Infinity, -Infinity would raise here
    assert back == {"nan": None, "inf": None, "ninf": None, "nested": [1.5, None, {"x": None}], "np": None,
                    "tensor": [1.0, None], "ok": 0.25}
    assert text.endswith("\n") and to_jsonable(float("nan")) is None


def test_jsonl_files_are_strict_json_too(tmp_path):
    path = tmp_path / "m.jsonl"
    write_jsonl(path, [{"a": float("nan")}, {"a": 1.0}])
    append_jsonl(path, {"a": float("-inf"), "b": np.int64(3)})
    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in {line}"))
    assert read_jsonl(path) == [{"a": None}, {"a": 1.0}, {"a": None, "b": 3}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_atomic_write_leaves_no_temp_file_after_an_exception(tmp_path, error):
    def failing_writer(f):
        f.write(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write_bytes(tmp_path / "new.bin", failing_writer)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file
    (tmp_path / "old.bin").write_bytes(b"old")
    with pytest.raises(type(error)):
        atomic_write_bytes(tmp_path / "old.bin", failing_writer)
    assert [p.name for p in tmp_path.iterdir()] == ["old.bin"] and (tmp_path / "old.bin").read_bytes() == b"old"


def test_atomic_write_gives_the_file_the_mode_open_would(tmp_path):
    atomic_write_bytes(tmp_path / "f.bin", lambda f: f.write(b"new"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.bin").read_bytes() == b"new"
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    save_checkpoint(tmp_path / "c.pt", epoch=1, model={}, optimizer={}, history=[], config={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "f.bin"]


@pytest.mark.parametrize("text, message", [("{bad", "cannot be read (JSONDecodeError"), ("[1, 2]", "not a training run"),
                                           ('{"model": "x"}', "not a training run")])
def test_an_unreadable_config_json_is_one_checkpoint_error(run_copy, text, message):
    (run_copy / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=re.escape(message)) as err:
        load_run(run_copy)
    assert "\n" not in str(err.value)
