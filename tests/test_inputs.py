"""Bad input at the command line and in user files: non-finite numbers, empty lists, pickles that carry code.

Every float option refuses nan/inf and every comma-list option an empty list, before any run directory
exists; CIFAR batches load through a restricted unpickler and checkpoints through torch's weights_only
loader, and a file carrying code is refused with one line naming it (and never runs).
"""

import builtins
import io
import json
import os
import pickle
import struct
import warnings
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dia_ode.cli import main
from dia_ode.cli.options import CommaList, FiniteFloat, parse_model_options
from dia_ode.data import DataError, load_dataset, read_idx
from dia_ode.data.safe_pickle import UnsafePickleError, restricted_load
from dia_ode.engine import TrainConfig
from dia_ode.rundir.checkpoints import CheckpointError, load_checkpoint


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_usage_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    for needle in needles:
        assert needle in error_lines[0], result.output
    return error_lines[0]


def _options(command: click.Command, path=()):
    """(command path, option) for every option of every (sub)command of the CLI."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _options(sub, (*path, name))
    for param in command.params:
        if isinstance(param, click.Option):
            yield path, param


OPTIONS = list(_options(main))
FLOAT_OPTIONS = [(path, p.opts[0]) for path, p in OPTIONS if isinstance(p.type, click.types.FloatParamType)]
LIST_OPTIONS = [(path, p.opts[0]) for path, p in OPTIONS if isinstance(p.type, CommaList)]


# --- the command line -------------------------------------------------------------------------------------


def test_every_float_and_comma_list_option_uses_the_checked_types():
    assert len(FLOAT_OPTIONS) >= 7 and len(LIST_OPTIONS) >= 3  # train 5, compare --lr, stiffness --mu; 3 lists
    for path, param in OPTIONS:
        kind = param.type.item if isinstance(param.type, CommaList) else param.type
        if isinstance(kind, click.types.FloatParamType):
            assert isinstance(kind, FiniteFloat), (path, param.opts)
        if "comma-separated" in (param.help or "").lower():  # a list parsed by hand must refuse '' itself
            assert isinstance(param.type, CommaList) or param.callback is not None, (path, param.opts)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("path, option", FLOAT_OPTIONS, ids=[" ".join((*p, o)) for p, o in FLOAT_OPTIONS])
def test_non_finite_floats_are_usage_errors_before_any_run_directory(tmp_path, path, option, value):
    out = tmp_path / "out"
    result = invoke(*path, "--out", out, option, value)
    assert_usage_error(result, option, "not a finite number")
    assert not out.exists()  # no run directory, and no empty --out either


@pytest.mark.parametrize("value", ["", " , ", ",,"])
@pytest.mark.parametrize("path, option", LIST_OPTIONS, ids=[" ".join((*p, o)) for p, o in LIST_OPTIONS])
def test_empty_comma_lists_are_usage_errors_before_any_run_directory(tmp_path, path, option, value):
    out = tmp_path / "out"
    result = invoke(*path, "--out", out, option, value)
    assert_usage_error(result, option, "empty list")
    assert not out.exists()  # no run directory, and no empty --out either


def test_finite_float_keeps_its_range_and_a_list_converts_its_items():
    with pytest.raises(click.BadParameter, match="not a finite number"):
        FiniteFloat(min=0).convert("nan", None, None)
    with pytest.raises(click.BadParameter, match=">0"):
        FiniteFloat(min=0, min_open=True).convert("0", None, None)
    assert FiniteFloat(0, 1).convert("0.5", None, None) == 0.5
    assert CommaList(FiniteFloat()).convert(" -1, -1e3 ,", None, None) == [-1.0, -1000.0]
    with pytest.raises(click.BadParameter, match="not a finite number"):
        CommaList(FiniteFloat()).convert("-1,inf", None, None)


@pytest.mark.parametrize("pair", ["reduction=nan", "reduction=1e999", "reduction=-inf",
                                  "dia_resnet20:reduction=Infinity", "dia_resnet20:reduction=[1, -1e999]"])
def test_non_finite_model_options_are_refused_naming_model_and_key(tmp_path, pair):
    result = invoke("train", "--out", tmp_path, "--model-option", pair)
    assert_usage_error(result, "--model-option", "dia_resnet20", "reduction", "not a finite number")
    assert not any(tmp_path.iterdir())


def test_parse_model_options_passes_finite_values_and_words_through():
    assert parse_model_options(("rtol=1e-5", "method=rk4", "sizes=[1, 2.5]"), "odenet") == {
        "rtol": 1e-5, "method": "rk4", "sizes": [1, 2.5]}
    with pytest.raises(click.BadParameter, match="odenet: rtol=inf"):
        parse_model_options(("odenet:rtol=inf",), "odenet")
    assert parse_model_options(("odenet:rtol=inf",), "resnet20") == {}  # another model's pair is not parsed


def test_compare_names_the_model_of_a_non_finite_option(tmp_path):
    result = invoke("compare", "--out", tmp_path, "--models", "resnet20,odenet", "--model-option", "odenet:rtol=nan")
    assert_usage_error(result, "--model-option", "odenet", "rtol")
    assert not any(tmp_path.iterdir())


# --- CIFAR batches: a restricted unpickler ------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str (SHORT_BINSTRING / BINSTRING), like the official batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _py2_batch_bytes(batch: dict) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(batch)
    # numpy 1 (which wrote the real files) names numpy.core; protocol 2 has no frames, so a rename is safe
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 5", b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


@pytest.mark.parametrize("writer", ["python2", "protocol2", "protocol4", "protocol5"])
def test_restricted_unpickler_reads_cifar_format_batches(tmp_path, writer):
    batch = _batch(3)
    path = tmp_path / "data_batch_1"
    if writer == "python2":
        path.write_bytes(_py2_batch_bytes(batch))
        assert b"cnumpy.core.multiarray\n_reconstruct" in path.read_bytes()
    else:
        path.write_bytes(pickle.dumps(batch, protocol=int(writer[-1])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core deprecation note either
        loaded = restricted_load(path, encoding="bytes")
    assert loaded.keys() == batch.keys() and loaded[b"labels"] == batch[b"labels"]
    assert loaded[b"data"].dtype == np.uint8 and np.array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"filenames"] == batch[b"filenames"]


def test_cifar10_loads_python2_format_batches(tmp_path):
    batches = {name: _batch(4, seed=i) for i, name in enumerate([*(f"data_batch_{i}" for i in range(1, 6)),
                                                                "test_batch"])}
    for name, batch in batches.items():
        (tmp_path / name).write_bytes(_py2_batch_bytes(batch))
    data = load_dataset("cifar10", tmp_path)
    assert torch.equal(data.test.images.reshape(4, -1), torch.from_numpy(batches["test_batch"][b"data"]))
    assert data.test.labels.tolist() == batches["test_batch"][b"labels"]


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Eval:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


def _crafted_cifar(folder: Path, payload) -> Path:
    """A CIFAR-10 folder whose data_batch_1 carries `payload` next to real-looking data."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps(_batch(2), protocol=2))
    (folder / "data_batch_1").write_bytes(pickle.dumps({**_batch(2), b"x": payload}, protocol=2))
    return folder / "data_batch_1"


def test_the_crafted_payload_is_live_under_plain_pickle(tmp_path):
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Eval(marker)))  # what pickle.load did with a downloaded batch
    assert marker.exists()


@pytest.mark.parametrize("payload, refused", [(_System, f"GLOBAL {os.system.__module__}.system"),
                                              (_Eval, "GLOBAL __builtin__.eval")])  # protocol 2: Python 2's name
def test_a_cifar_batch_carrying_code_is_refused_and_never_runs(tmp_path, payload, refused):
    marker = tmp_path / "marker"
    batch_file = _crafted_cifar(tmp_path / "cifar", payload(marker))
    with pytest.raises(UnsafePickleError, match=refused):
        restricted_load(batch_file, encoding="bytes")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path / "cifar")
    assert str(batch_file) in str(err.value) and "\n" not in str(err.value)
    out = tmp_path / "out"
    result = invoke("train", "--out", out, "--dataset", "cifar10", "--data-dir", tmp_path / "cifar", "--epochs", 1)
    assert_usage_error(result, str(batch_file), refused, "safe loader refuses")
    assert not marker.exists()
    assert not out.exists()  # no run directory, and no empty --out either


def test_only_latin1_codecs_and_numpy_globals_are_admitted(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"x": __import__("collections").OrderedDict()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="GLOBAL collections.OrderedDict"):
        restricted_load(path)
    # _codecs.encode(text, "zlib"): a tiny file that decompresses into a huge allocation
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(UnsafePickleError, match="codec 'zlib'"):
        restricted_load(path)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00nope\x86R.")
    with pytest.raises(UnsafePickleError, match="codec 'nope'"):
        restricted_load(path)
    path.write_bytes(pickle.dumps(b"\xe9", protocol=2))  # the codec Python 3 itself writes for bytes
    assert b"latin1" in path.read_bytes() and restricted_load(path) == b"\xe9"


# --- checkpoints: torch's weights_only loader, one clean line ---------------------------------------------


class Custom:
    """Any class of the user's own: weights_only refuses it like code."""


def _crafted_checkpoints(folder: Path, marker: Path) -> dict[str, Path]:
    files = {"zip": folder / "zip.pt", "legacy_torch": folder / "legacy_torch.pt",
             "plain_pickle": folder / "plain_pickle.pt", "custom_class": folder / "custom.pt"}
    torch.save({"format": "dia_ode.checkpoint", "model": _System(marker)}, files["zip"])
    torch.save({"model": _System(marker)}, files["legacy_torch"], _use_new_zipfile_serialization=False)
    files["plain_pickle"].write_bytes(pickle.dumps({"model": _System(marker)}, protocol=4))
    torch.save({"model": Custom()}, files["custom_class"])
    return files


def test_a_checkpoint_carrying_code_is_one_clean_line_without_warnings(tmp_path, recwarn):
    marker = tmp_path / "marker"
    files = _crafted_checkpoints(tmp_path, marker)
    expected = {"zip": f"GLOBAL {os.system.__module__}.system", "legacy_torch": f"GLOBAL {os.system.__module__}.system",
                "plain_pickle": "Unsupported operand", "custom_class": "Custom"}
    for kind, path in files.items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert "\n" not in message and len(message) < 300, message
        assert str(path) in message and "safe loader refuses" in message and expected[kind] in message, message
        assert "weights_only" not in message  # torch's advice to turn the check off is not repeated
    assert not marker.exists()
    assert [str(w.message) for w in recwarn] == []  # torch's "Detected pickle protocol 4" UserWarning included


def test_resume_from_a_checkpoint_carrying_code_is_one_usage_error(tmp_path, recwarn):
    marker = tmp_path / "marker"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(TrainConfig(epochs=1))))
    for path in _crafted_checkpoints(tmp_path, marker).values():
        (run_dir / "checkpoints" / "last.pt").write_bytes(path.read_bytes())
        result = invoke("train", "--resume", run_dir, "--no-progress")
        assert_usage_error(result, "--resume", "last.pt", "safe loader refuses", "not loaded")
        assert "UserWarning" not in result.output
    assert not marker.exists() and not recwarn.list


def test_an_idx_file_with_negative_dims_is_a_data_error(tmp_path):
    # (-2) x (-3) = 6 values: the size check alone passed it on to reshape, which raised a bare ValueError
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 2]) + np.asarray([-2, -3], dtype=">i4").tobytes() + bytes(6))
    with pytest.raises(DataError, match="negative dims"):
        read_idx(path)
