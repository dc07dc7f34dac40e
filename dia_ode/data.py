"""Datasets held in memory as raw uint8 tensors, batch iteration and torch-only augmentations.

The datasets are small, so whole splits live in memory as uint8 (Fashion-MNIST train is 47 MB) and
batches are converted, augmented and normalised on the target device. Every random draw comes from an
explicit ``torch.Generator``, so one seed replays bit-identical epochs (training resume relies on it).
There is no CPU torchvision, hence the hand-written IDX/CIFAR readers and vectorised crop/flip.
Datasets: ``digits`` (scikit-learn's embedded 8x8 digits, the default), ``mnist`` and ``fashion-mnist``
(IDX files, plain or gzipped; Debian's ``dataset-fashion-mnist`` installs the latter under
/usr/share/datasets/fashion-mnist) and ``cifar10``/``cifar100`` (local python pickle batches).
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Augment", "DataError", "Dataset", "Split", "iterate_batches", "list_datasets",
           "load_dataset", "read_idx", "to_float"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


class DataError(ValueError):
    """Bad data input: unknown dataset, missing folder or file, malformed file, bad split sizes."""


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split held in memory.

    Attributes:
        images: Raw pixels, (N, C, H, W) uint8.
        labels: Class indices, (N,) int64.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        if x.dtype != torch.uint8 or x.dim() != 4 or y.dtype != torch.int64 or y.shape != x.shape[:1]:
            raise DataError(f"a split needs (N, C, H, W) uint8 images and (N,) int64 labels, got "
                            f"{tuple(x.shape)} {x.dtype} and {tuple(y.shape)} {y.dtype}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __repr__(self) -> str:  # the dataclass repr would print every pixel
        return f"Split(images={tuple(self.images.shape)} uint8, labels={tuple(self.labels.shape)} int64)"


@dataclass(frozen=True)
class Augment:
    """Random crop with zero padding and random horizontal flip, applied to a whole batch at once.

    Draws, in order, from the given CPU generator: crop offsets ``torch.randint(0, 2 * pad + 1, (B, 2))``
    (row, column), then flips ``torch.rand(B) < 0.5``; nothing for a disabled part.

    Attributes:
        pad: Pixels of zero padding on each side before cropping back to H x W; 0 disables the crop.
        flip: Whether to flip each sample left-right with probability 0.5.
    """

    pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"Augment pad must be >= 0, got {self.pad}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the augmented batch, with the shape, dtype and device of ``x``.

        Args:
            x: Batch (B, C, H, W) float in [0, 1] units (so the padding is black), on any device.
            generator: CPU generator that supplies all randomness.
        """
        B, _, H, W = x.shape
        if self.pad > 0:
            p = self.pad
            offsets = torch.randint(0, 2 * p + 1, (B, 2), generator=generator).to(x.device)  # (B, 2)
            rows = offsets[:, :1] + torch.arange(H, device=x.device)  # (B, H)
            cols = offsets[:, 1:] + torch.arange(W, device=x.device)  # (B, W)
            padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
            b = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
            # Advanced indices split by the channel slice put the broadcast dims first: (B, H, W, C).
            x = padded[b, :, rows[:, :, None], cols[:, None, :]]
            x = x.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
        if self.flip:
            flip = (torch.rand(B, generator=generator) < 0.5).to(x.device)  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset's three splits and what a model and the train loop need to know about it.

    Attributes:
        name: Canonical dataset name (see :func:`list_datasets`).
        train: Training split.
        val: Validation split, carved from the training data with a fixed seed.
        test: Official test split, or a seeded hold-out where the dataset has none.
        num_classes: Number of classes.
        in_channels: Image channels C.
        image_size: Image height H (= width W).
        mean: Per-channel mean of the train split in [0, 1] units.
        std: Per-channel (population) standard deviation of the train split in [0, 1] units.
        augment: The dataset's default training augmentation.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: " + " ".join(str(err).split())


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of uint8 values into a writable array with the file's dims.

    Layout: two zero bytes, dtype code 0x08 (uint8), ndim, ndim big-endian int32 dims, the values.

    Args:
        path: The file; gzipped when its name ends in ``.gz``.

    Raises:
        DataError: On an unreadable or malformed file.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {_one_line(err)}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"malformed IDX file {path}: bad magic number")
    if raw[2] != 0x08:  # the dtype code of uint8, the only one MNIST-like files use
        raise DataError(f"malformed IDX file {path}: dtype code 0x{raw[2]:02x}, expected 0x08 (uint8)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"malformed IDX file {path}: header too short for {ndim} dims")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims)) + 4 + 4 * ndim
    if len(raw) != expected:
        raise DataError(f"malformed IDX file {path}: {len(raw)} bytes, dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _idx_split(images_path: Path, labels_path: Path, num_classes: int = 10) -> Split:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"IDX files {images_path.name} {images.shape} and {labels_path.name} "
                        f"{labels.shape} are not (N, H, W) images with (N,) labels")
    images_t = torch.from_numpy(images)[:, None]  # (N, 1, H, W)
    return _checked_split(images_t, torch.from_numpy(labels), num_classes, labels_path)


def _checked_split(images: torch.Tensor, labels: torch.Tensor, num_classes: int, source: Path) -> Split:
    labels = labels.to(torch.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels in {source} outside 0..{num_classes - 1}")
    return Split(images.contiguous(), labels)


_Official = tuple[Split, Split | None]  # (train, official test or None: load_dataset holds one out)


def _load_digits(_: Path | None) -> _Official:
    from sklearn.datasets import load_digits  # ships its data inside the wheel
    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    return Split(torch.from_numpy(pixels)[:, None], torch.from_numpy(bunch.target).long()), None


def _idx_loader(name: str) -> Callable[[Path], _Official]:
    torchvision_folder = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]

    def load(root: Path) -> _Official:
        # Files in <dir>, <dir>/<name> or torchvision's <dir>/<Class>/raw; each plain or gzipped.
        for folder in (root, root / name, root / torchvision_folder / "raw"):
            paths = [next((p for p in (folder / s, folder / f"{s}.gz") if p.is_file()), None)
                     for s in _IDX_STEMS]
            if all(paths):
                return _idx_split(*paths[:2]), _idx_split(*paths[2:])
        raise DataError(f"no {name} IDX files ({', '.join(s + '[.gz]' for s in _IDX_STEMS)}) in {root}")

    return load


def _unpickle(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(path, "rb") as f:
            # encoding="bytes" is the format's own (written by Python 2); the file is the user's own.
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"cannot read CIFAR batch {path}: {_one_line(err)}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
        raise DataError(f"CIFAR batch {path}: data {data.shape}, labels {labels.shape}; want (N, 3072), (N,)")
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels)  # rows are R, G, B planes


def _cifar_loader(subfolder: str, train_files: Sequence[str], test_file: str, label_key: bytes,
                  num_classes: int) -> Callable[[Path], _Official]:
    def load(root: Path) -> _Official:
        needed = (*train_files, test_file)
        folder = next((d for d in (root, root / subfolder) if all((d / n).is_file() for n in needed)), None)
        if folder is None:
            raise DataError(f"no CIFAR-{num_classes} batches ({', '.join(needed)}) in {root}[/{subfolder}]")
        images, labels = zip(*(_unpickle(folder / n, label_key) for n in train_files))
        train = _checked_split(torch.cat(images), torch.cat(labels), num_classes, folder)
        test = _checked_split(*_unpickle(folder / test_file, label_key), num_classes, folder / test_file)
        return train, test

    return load


class _Spec(NamedTuple):
    loader: Callable[[Path | None], _Official]
    num_classes: int
    augment: Augment
    needs_dir: bool
    default_dir: Path | None = None


_DATASETS: dict[str, _Spec] = {
    "digits": _Spec(_load_digits, 10, Augment(pad=1, flip=False), needs_dir=False),  # never flip digits
    "mnist": _Spec(_idx_loader("mnist"), 10, Augment(pad=2, flip=False), needs_dir=True),
    "fashion-mnist": _Spec(_idx_loader("fashion-mnist"), 10, Augment(pad=2, flip=True), needs_dir=True,
                           default_dir=FASHION_MNIST_DIR),
    "cifar10": _Spec(_cifar_loader("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                                   "test_batch", b"labels", 10),
                     10, Augment(pad=4, flip=True), needs_dir=True),
    "cifar100": _Spec(_cifar_loader("cifar-100-python", ["train"], "test", b"fine_labels", 100),
                      100, Augment(pad=4, flip=True), needs_dir=True),
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(_DATASETS)


def _held_out(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (kept, held out) index sets, each sorted, held out = round(fraction * n)."""
    perm = torch.randperm(n, generator=generator)
    n_out = int(round(fraction * n))
    return perm[n_out:].sort().values, perm[:n_out].sort().values


def _subset(split: Split, index: torch.Tensor) -> Split:
    return Split(split.images[index], split.labels[index])


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std in [0, 1] units of (N, C, H, W) uint8 images."""
    # A 256-bin histogram per channel is exact in float64 and never makes a float copy of the images.
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()  # (256,)
        m = float((counts * values).sum() / counts.sum())
        var = float((counts * (values - m) ** 2).sum() / counts.sum())
        mean.append(m)
        std.append(var ** 0.5 if var > 0 else 1.0)  # a constant channel: std 1 keeps to_float finite
    return tuple(mean), tuple(std)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """Load a dataset into memory and split it into train / val / test.

    Splits come from ``torch.randperm`` under ``torch.Generator().manual_seed(split_seed)``. An official
    test split is the test split; otherwise (digits) round(test_fraction * N) samples are held out
    first. Val is then round(val_fraction * n) of the n remaining training samples.

    Args:
        name: One of :func:`list_datasets`.
        data_dir: Folder with the dataset's files. Ignored for digits; required for mnist and cifar;
            for fashion-mnist None means /usr/share/datasets/fashion-mnist (Debian's package).
        val_fraction: Fraction of the training data held out for validation, in [0, 1).
        test_fraction: Fraction held out for testing where there is no official test split, in [0, 1).
        split_seed: Seed of the split permutation.

    Raises:
        DataError: Unknown name, missing or malformed data, or fractions that leave no training data.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}")
    spec = _DATASETS[key]
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {fraction}")

    root: Path | None = None
    if spec.needs_dir:
        if data_dir is None and spec.default_dir is None:
            raise DataError(f"dataset {key!r} needs --data-dir (a folder with its files)")
        root = Path(data_dir if data_dir is not None else spec.default_dir).expanduser()
        if not root.is_dir():
            problem = "is not a directory" if root.exists() else "does not exist"
            hint = "" if data_dir is not None else " (the default; pass --data-dir)"
            raise DataError(f"data dir {root} {problem}{hint}")
    train, test = spec.loader(root)

    generator = torch.Generator().manual_seed(split_seed)
    if test is None:
        keep, out = _held_out(len(train), test_fraction, generator)
        train, test = _subset(train, keep), _subset(train, out)
    keep, out = _held_out(len(train), val_fraction, generator)
    train, val = _subset(train, keep), _subset(train, out)
    if len(train) == 0:
        raise DataError(f"{key}: val_fraction={val_fraction} and test_fraction={test_fraction} "
                        f"leave no training samples")

    _, C, H, W = train.images.shape
    if H != W:  # models and Dataset.image_size assume square images
        raise DataError(f"{key}: images are {H}x{W}, expected square images")
    mean, std = _channel_stats(train.images)
    return Dataset(name=key, train=train, val=val, test=test, num_classes=spec.num_classes, in_channels=C,
                   image_size=H, mean=mean, std=std, augment=spec.augment)


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return (x - m) / s


def to_float(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Convert raw (B, C, H, W) uint8 pixels to float32 (x / 255 - mean) / std on their device.

    Args:
        images: Raw pixels.
        mean: Per-channel mean in [0, 1] units.
        std: Per-channel standard deviation in [0, 1] units.
    """
    return _normalise(images.float() / 255.0, mean, std)


def iterate_batches(split: Split, batch_size: int, *, mean: Sequence[float], std: Sequence[float],
                    shuffle: bool = False, generator: torch.Generator | None = None,
                    augment: Augment | None = None, device: torch.device | str = "cpu",
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield one epoch of (images, labels) batches.

    All draws come from ``generator``: the epoch's ``torch.randperm(N)`` when shuffling, then each
    batch's augmentation; a fresh generator with the same seed replays bit-identical batches.

    Args:
        split: The split to iterate over.
        batch_size: Samples per batch (the last batch may be smaller unless ``drop_last``).
        mean: Per-channel mean in [0, 1] units (normalisation).
        std: Per-channel standard deviation in [0, 1] units.
        shuffle: Whether to visit the samples in random order.
        generator: CPU generator for shuffling and augmentation; None uses torch's global generator.
        augment: Augmentation applied in [0, 1] units before normalisation; None for none.
        device: Where the yielded tensors live.
        drop_last: Whether to drop a final batch smaller than ``batch_size``.

    Yields:
        Normalised images (B, C, H, W) float32 and labels (B,) int64, both on ``device``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = generator if generator is not None else torch.default_generator
    n = len(split)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start:start + batch_size]
        # Move uint8 (4x fewer bytes than float) and convert on the device.
        x = split.images[index].to(device).float() / 255.0  # (B, C, H, W) in [0, 1]
        if augment is not None:
            x = augment(x, gen)
        yield _normalise(x, mean, std), split.labels[index].to(device)
