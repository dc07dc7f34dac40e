"""Tests for dia_ode.data: dataset loading and splits, IDX/CIFAR readers, augmentation, batching.

File-format tests write tiny fake files into tmp_path; only the digits and (when installed)
Fashion-MNIST tests read real data.
"""

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dia_ode.data import (DATA_ENV, Augment, DataError, Dataset, Split, iterate_batches, list_datasets, load_dataset,
                          read_idx, to_float)

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _rows(split: Split) -> Counter:
    """Multiset of (pixels, label) samples, to compare splits whatever their order."""
    return Counter((img.numpy().tobytes(), int(y)) for img, y in zip(split.images, split.labels))


def _assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_list_datasets() -> None:
    assert list_datasets() == ["cifar10", "cifar100", "coco", "digit-scenes", "digits", "fashion-mnist",
                               "fashion-scenes", "mnist"]


def test_digits_shapes_and_split_sizes(digits: Dataset) -> None:
    n = len(load_digits().target)
    n_test = round(0.2 * n)
    n_val = round(0.1 * (n - n_test))
    assert (len(digits.train), len(digits.val), len(digits.test)) == (n - n_test - n_val, n_val, n_test)
    assert digits.train.images.shape[1:] == (1, 8, 8) and digits.train.images.dtype == torch.uint8
    assert digits.train.labels.dtype == torch.int64
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert digits.augment == Augment(pad=1, flip=False)
    assert int(digits.train.images.max()) == 255  # 16 scaled to 255


def test_digits_splits_partition_the_data(digits: Dataset) -> None:
    bunch = load_digits()
    pixels = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    everything = Counter((img.tobytes(), int(y)) for img, y in zip(pixels, bunch.target))
    union = _rows(digits.train) + _rows(digits.val) + _rows(digits.test)
    assert union == everything  # a multiset equality: every sample in exactly one split


def test_digits_split_seed(digits: Dataset) -> None:
    again = load_dataset("digits", split_seed=0)
    other = load_dataset("digits", split_seed=1)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(again, name).images, getattr(digits, name).images)
        assert torch.equal(getattr(again, name).labels, getattr(digits, name).labels)
    assert _rows(other.test) != _rows(digits.test)


def test_train_examples_draws_a_seeded_subset_of_train_and_leaves_val_and_test_alone(digits: Dataset) -> None:
    small = load_dataset("digits", train_examples=300)
    assert len(small.train) == 300
    assert _rows(small.val) == _rows(digits.val) and _rows(small.test) == _rows(digits.test)
    assert not _rows(small.train) - _rows(digits.train)  # a subset of the full training split
    assert _rows(load_dataset("digits", train_examples=300).train) == _rows(small.train)  # seeded
    assert _rows(load_dataset("digits", train_examples=300, split_seed=1).train) != _rows(small.train)
    assert small.mean != digits.mean  # normalised by the data the model sees
    everything = load_dataset("digits", train_examples=len(digits.train))
    assert _rows(everything.train) == _rows(digits.train)
    for bad in (0, len(digits.train) + 1):
        with pytest.raises(DataError) as err:
            load_dataset("digits", train_examples=bad)
        _assert_one_line(err, f"train_examples={bad}", f"[1, {len(digits.train)}]")
        assert err.value.option == "train_examples"


def test_mean_std_are_of_the_train_split(digits: Dataset) -> None:
    train = digits.train.images.numpy() / 255.0
    assert digits.mean == pytest.approx((train.mean(),), abs=1e-12)
    assert digits.std == pytest.approx((train.std(),), abs=1e-12)
    every = np.concatenate([s.images.numpy() for s in (digits.train, digits.val, digits.test)]) / 255.0
    assert abs(digits.mean[0] - every.mean()) > 1e-6  # not the statistics of all the data


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path: Path, suffix: str, write_idx) -> None:
    array = np.random.default_rng(1).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    write_idx(tmp_path / f"x{suffix}", array)
    back = read_idx(tmp_path / f"x{suffix}")
    assert back.dtype == np.uint8 and back.shape == (3, 4, 5) and np.array_equal(back, array)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx_files(tmp_path: Path, gz: bool, fake_mnist) -> None:
    arrays = fake_mnist(tmp_path, gz)
    data = load_dataset("mnist", tmp_path, val_fraction=0.25, test_fraction=0.9)  # test_fraction ignored
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(data.test.labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    ids = torch.cat([data.train.images[:, 0, 0, 0], data.val.images[:, 0, 0, 0]]).long()
    assert len(data.val) == 3 and sorted(ids.tolist()) == list(range(12))
    train_labels = arrays["train-labels-idx1-ubyte"]
    for split in (data.train, data.val):
        assert torch.equal(split.labels, torch.from_numpy(train_labels[split.images[:, 0, 0, 0].numpy()]).long())
    assert (data.in_channels, data.image_size, data.num_classes) == (1, 6, 10)
    val_ids = [load_dataset("mnist", tmp_path, val_fraction=0.25, split_seed=seed).val.images[:, 0, 0, 0].tolist()
               for seed in (0, 1)]
    assert val_ids[0] == data.val.images[:, 0, 0, 0].tolist() and val_ids[1] != val_ids[0]


@pytest.mark.parametrize("header, body", [
    (bytes([1, 0, 8, 1]), b""),  # bad magic
    (bytes([0, 0, 0x0D, 1]) + np.int32(2).astype(">i4").tobytes(), b"\0" * 8),  # float32 dtype code
    (bytes([0, 0, 8, 2]) + np.array([2, 3], ">i4").tobytes(), b"\0" * 5),  # truncated data
    (bytes([0, 0, 8, 3]) + np.int32(2).astype(">i4").tobytes(), b""),  # header shorter than its dims
], ids=["magic", "dtype", "truncated", "short-header"])
def test_malformed_idx_raises(tmp_path: Path, header: bytes, body: bytes) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(header + body)
    with pytest.raises(DataError) as err:
        read_idx(path)
    _assert_one_line(err, "malformed IDX file", str(path))


def test_malformed_idx_in_dataset_raises(tmp_path: Path, fake_mnist) -> None:
    fake_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x0c" + b"\0" * 3)  # 12 said, 3 given
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path)
    _assert_one_line(err, "train-labels-idx1-ubyte")


def _write_cifar(folder: Path, files: dict[str, int], label_key: bytes, num_classes: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    batches = {}
    for name, n in files.items():
        batches[name] = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                         label_key: rng.integers(0, num_classes, size=n).tolist(), b"batch_label": b"fake"}
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f)
    return batches


@pytest.mark.parametrize("variant, subfolder", [
    ("cifar10", ""), ("cifar10", "cifar-10-batches-py"), ("cifar100", ""), ("cifar100", "cifar-100-python")])
def test_cifar_pickles(tmp_path: Path, variant: str, subfolder: str) -> None:
    if variant == "cifar10":
        files, test_file, key, classes = {f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch", b"labels", 10
    else:
        files, test_file, key, classes = {"train": 20}, "test", b"fine_labels", 100
    batches = _write_cifar(tmp_path / subfolder, {**files, test_file: 3}, key, classes)
    data = load_dataset(variant, tmp_path)
    assert (data.num_classes, data.in_channels, data.image_size) == (classes, 3, 32)
    assert len(data.train) + len(data.val) == 20 and len(data.val) == 2 and len(data.test) == 3
    assert torch.equal(data.test.images.reshape(3, -1), torch.from_numpy(batches[test_file][b"data"]))
    assert data.test.labels.tolist() == batches[test_file][key]
    # Channel planes: the first 1024 values of a row are the red image, row-major.
    assert torch.equal(data.test.images[1, 0, 2], torch.from_numpy(batches[test_file][b"data"][1, 64:96]))
    assert data.augment == Augment(pad=4, flip=True)


def test_a_dataset_is_found_under_the_data_root_of_the_environment(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "root"
    batches = _write_cifar(root / "cifar100" / "cifar-100-python", {"train": 20, "test": 3}, b"fine_labels", 100)
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataError) as err:  # no folder anywhere: the message names both ways to give one
        load_dataset("cifar100")
    _assert_one_line(err, "--data-dir", f"${DATA_ENV}/cifar100")
    monkeypatch.setenv(DATA_ENV, str(root))
    data = load_dataset("cifar100")
    assert data.test.labels.tolist() == batches["test"][b"fine_labels"]
    other = tmp_path / "given"  # a folder given on the command line wins over the environment's
    given = _write_cifar(other, {"train": 20, "test": 5}, b"fine_labels", 100)
    assert load_dataset("cifar100", other).test.labels.tolist() == given["test"][b"fine_labels"]
    with pytest.raises(DataError) as err:  # a root without this dataset's folder: as if unset
        load_dataset("cifar10")
    _assert_one_line(err, "--data-dir", f"${DATA_ENV}/cifar10")


def test_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path / "nope")
    _assert_one_line(err, str(tmp_path / "nope"), "does not exist")
    with pytest.raises(DataError) as err:
        load_dataset("foo")
    _assert_one_line(err, "'foo'", "cifar10, cifar100, coco, digit-scenes, digits, fashion-mnist, fashion-scenes, mnist")
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    _assert_one_line(err, "mnist", "--data-dir")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path)
    _assert_one_line(err, "no CIFAR-10 batches", "data_batch_1", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path)
    _assert_one_line(err, "no mnist IDX files", str(tmp_path))
    assert issubclass(DataError, ValueError)


def _batch(seed: int = 0, shape: tuple[int, ...] = (16, 2, 7, 7)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 0.9 + 0.1  # no zeros


def test_augment_identity() -> None:
    x = _batch()
    assert torch.equal(Augment()(x, torch.Generator().manual_seed(0)), x)


def test_augment_crop_is_a_shift() -> None:
    x, pad = _batch(), 2
    out = Augment(pad=pad)(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    H, W = x.shape[-2:]
    found = []
    for i in range(len(x)):
        shifts = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                  if torch.equal(out[i], padded[i, :, dy:dy + H, dx:dx + W])]
        assert len(shifts) == 1, f"sample {i} is not a single shift of its padded input"
        found.append(shifts[0])
    assert len(set(found)) > 1  # offsets vary across the batch
    expected = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=torch.Generator().manual_seed(3))
    assert found == [tuple(o) for o in expected.tolist()]  # the documented draw


def test_augment_flip() -> None:
    x = _batch(shape=(32, 1, 5, 5))
    out = Augment(flip=True)(x, torch.Generator().manual_seed(5))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped ^ kept).all())  # each sample exactly one of the two
    assert torch.equal(flipped, torch.rand(32, generator=torch.Generator().manual_seed(5)) < 0.5)
    assert 0 < int(flipped.sum()) < 32


def test_augment_same_seed_same_output() -> None:
    x, aug = _batch(), Augment(pad=3, flip=True)
    a = aug(x, torch.Generator().manual_seed(11))
    b = aug(x, torch.Generator().manual_seed(11))
    c = aug(x, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _id_split(n: int = 23) -> Split:
    images = torch.arange(n * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 1, 2, 2)
    return Split(images, torch.arange(n))  # label = sample id


def test_to_float_normalises() -> None:
    images = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    out = to_float(images, mean=(0.5, 0.2), std=(0.5, 0.1))
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]]), atol=1e-6)


def test_iterate_batches_in_order() -> None:
    split = _id_split()
    batches = list(iterate_batches(split, 5, mean=(0.5,), std=(0.25,)))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(torch.cat([b[1] for b in batches]), split.labels)
    assert torch.allclose(x, (split.images.float() / 255 - 0.5) / 0.25)
    assert [len(y) for _, y in iterate_batches(split, 5, mean=(0.5,), std=(0.25,), drop_last=True)] == [5] * 4


def test_iterate_batches_shuffle_covers_each_sample_once() -> None:
    split = _id_split()
    ys = [y for _, y in iterate_batches(split, 5, mean=(0.5,), std=(0.25,), shuffle=True,
                                        generator=torch.Generator().manual_seed(0))]
    seen = torch.cat(ys)
    assert sorted(seen.tolist()) == list(range(23)) and not torch.equal(seen, split.labels)
    kept = torch.cat([y for _, y in iterate_batches(split, 5, mean=(0.5,), std=(0.25,), shuffle=True,
                                                    generator=torch.Generator().manual_seed(0), drop_last=True)])
    assert len(kept) == 20 and len(set(kept.tolist())) == 20


def test_iterate_batches_deterministic_under_seed() -> None:
    split, aug = _id_split(), Augment(pad=1, flip=True)

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(iterate_batches(split, 4, mean=(0.5,), std=(0.25,), shuffle=True, augment=aug,
                                    generator=torch.Generator().manual_seed(seed)))

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_augment_before_normalisation() -> None:
    split = Split(torch.full((8, 1, 4, 4), 255, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64))
    x = torch.cat([x for x, _ in iterate_batches(split, 8, mean=(0.5,), std=(0.5,), augment=Augment(pad=2),
                                                 generator=torch.Generator().manual_seed(0))])
    values = set(x.unique().tolist())
    assert values <= {-1.0, 1.0} and -1.0 in values  # black padding normalised to (0 - 0.5) / 0.5


def test_fashion_mnist_installed() -> None:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
    data = load_dataset("fashion-mnist")
    assert len(data.train) + len(data.val) == 60000 and len(data.val) == 6000 and len(data.test) == 10000
    assert data.train.images.shape[1:] == (1, 28, 28) and data.image_size == 28
    assert sorted(data.test.labels.unique().tolist()) == list(range(10))
    assert data.augment == Augment(pad=2, flip=True)
