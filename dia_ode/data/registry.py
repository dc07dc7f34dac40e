"""Dataset names -> loaders, and the seeded train / val / test split of every dataset.

Datasets: ``digits`` (scikit-learn's embedded 8x8 digits, the default), ``mnist`` and ``fashion-mnist``
(IDX files) and ``cifar10``/``cifar100`` (local python pickle batches). For detection: the generated
``digit-scenes`` and ``fashion-scenes`` (data/scenes.py: their own seeded train / val / test scenes;
split_seed seeds them, train_examples sets the number of training scenes) and ``coco``, a user's COCO
folder (data/coco_folder.py). A new dataset is a loader file plus one row of DATASETS (or
DETECTION_DATASETS).

Where a dataset's files are read from, first match wins: the data_dir given (`--data-dir`); the
folder DATA_ENV/<name> when the environment variable names a root and that folder exists (one root for
every dataset, so that commands which never take a folder, such as `dia-ode report`, find CIFAR-100 at
$DIA_ODE_DATA/cifar100); the dataset's default folder (Debian's Fashion-MNIST).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from dia_ode.data.augment import Augment
from dia_ode.data.cifar import cifar_loader
from dia_ode.data.coco_folder import load_coco_folder
from dia_ode.data.dataset import DataError, Dataset, Official, Split, channel_stats, held_out, subset
from dia_ode.data.digits import load_digits_official
from dia_ode.data.idx import FASHION_MNIST_DIR, idx_loader
from dia_ode.data.scenes import DetectionDataset, DetectionSplit, digit_scenes, fashion_scenes
from dia_ode.util import unknown_name


DATA_ENV = "DIA_ODE_DATA"  # a root folder with one subfolder per dataset, named like the dataset


def data_root_folder(key: str) -> Path | None:
    """DATA_ENV/<key> when the variable is set and that folder exists, else None."""
    root = os.environ.get(DATA_ENV)
    folder = Path(root).expanduser() / key if root else None
    return folder if folder is not None and folder.is_dir() else None


class _Spec(NamedTuple):
    loader: Callable[[Path | None, bool], Official]  # (root, with_train) -> (train, official test)
    num_classes: int
    augment: Augment
    needs_dir: bool
    default_dir: Path | None = None


DATASETS: dict[str, _Spec] = {
    "digits": _Spec(load_digits_official, 10, Augment(pad=1, flip=False), needs_dir=False),  # never flip digits
    "mnist": _Spec(idx_loader("mnist"), 10, Augment(pad=2, flip=False), needs_dir=True),
    "fashion-mnist": _Spec(idx_loader("fashion-mnist"), 10, Augment(pad=2, flip=True), needs_dir=True,
                           default_dir=FASHION_MNIST_DIR),
    "cifar10": _Spec(cifar_loader("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                                   "test_batch", b"labels", 10),
                     10, Augment(pad=4, flip=True), needs_dir=True),
    "cifar100": _Spec(cifar_loader("cifar-100-python", ["train"], "test", b"fine_labels", 100),
                      100, Augment(pad=4, flip=True), needs_dir=True),
}


def _digit_scenes(root: Path | None, seed: int, val_fraction: float, train_examples: int | None) -> DetectionDataset:
    return digit_scenes(seed=seed, **({} if train_examples is None else {"n_train": train_examples}))


def _coco(root: Path | None, seed: int, val_fraction: float, train_examples: int | None) -> DetectionDataset:
    if root is None:
        raise DataError("dataset 'coco' needs --data-dir (a COCO folder: annotations/instances_*.json + images)")
    if not root.is_dir():
        raise DataError(f"data dir {root} {'is not a directory' if root.exists() else 'does not exist'}")
    return load_coco_folder(root, val_fraction=val_fraction, seed=seed, train_examples=train_examples)


def _fashion_scenes(root: Path | None, seed: int, val_fraction: float,
                    train_examples: int | None) -> DetectionDataset:
    return fashion_scenes(root or FASHION_MNIST_DIR, seed=seed,
                          **({} if train_examples is None else {"n_train": train_examples}))


# Detection datasets: (folder or None, seed, val_fraction, train_examples) -> DetectionDataset. The scenes
# are generated (data/scenes.py, their own seeded splits); coco is a user's folder (data/coco_folder.py).
DETECTION_DATASETS: dict[str, Callable[..., DetectionDataset]] = {"digit-scenes": _digit_scenes,
                                                                   "fashion-scenes": _fashion_scenes, "coco": _coco}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted([*DATASETS, *DETECTION_DATASETS])



def _locate(name: str, data_dir: str | os.PathLike | None, val_fraction: float,
            test_fraction: float) -> tuple[str, _Spec, Path | None]:
    """(canonical name, spec, folder) of a dataset; DataError for a bad name, fraction or folder."""
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(unknown_name("dataset", name, list_datasets()))
    spec = DATASETS[key]
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {fraction}")
    root: Path | None = None
    if spec.needs_dir:
        data_dir = data_dir if data_dir is not None else data_root_folder(key)
        if data_dir is None and spec.default_dir is None:
            raise DataError(f"dataset {key!r} needs --data-dir (a folder with its files) or ${DATA_ENV}/{key}")
        root = Path(data_dir if data_dir is not None else spec.default_dir).expanduser()
        if not root.is_dir():
            problem = "is not a directory" if root.exists() else "does not exist"
            hint = "" if data_dir is not None else " (the default; pass --data-dir)"
            raise DataError(f"data dir {root} {problem}{hint}")
    return key, spec, root


def _checked_official(key: str, root: Path | None, official: Official) -> Official:
    """A loader's (train, official test), refused when the official test split is empty (a run on it would
    end with test metrics of null); the loaders of files name the file first (IDX: data/idx.py)."""
    _, test = official
    if test is not None and len(test) == 0:
        raise DataError(f"{key}: the official test split in {root} holds no samples")
    return official


def load_test_split(name: str, data_dir: str | os.PathLike | None = None, *, test_fraction: float = 0.2,
                    split_seed: int = 0) -> Split | DetectionSplit:
    """The test split exactly as load_dataset makes it, without reading a training set that has its
    own files (IDX, CIFAR); digits, which has no official test split, is read whole (it is embedded)."""
    key = name.strip().lower().replace("_", "-")
    if key in DETECTION_DATASETS:  # generated test scenes depend on the seed alone, not on the train count
        root = None if data_dir is None else Path(data_dir).expanduser()
        return DETECTION_DATASETS[key](root, split_seed, 0.1, 1).test
    key, spec, root = _locate(name, data_dir, 0.0, test_fraction)
    train, test = _checked_official(key, root, spec.loader(root, False))
    if test is None:  # held out first with the same generator as load_dataset
        _, out = held_out(len(train), test_fraction, torch.Generator().manual_seed(split_seed))
        test = subset(train, out)
    return test


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, split_seed: int = 0,
                 train_examples: int | None = None) -> Dataset | DetectionDataset:
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
        train_examples: Keep a random subset of this many training samples (drawn after the val split
            from the same generator, so val and test do not depend on it); None keeps them all. The
            normalisation statistics are those of the subset, the data the model sees.

    Raises:
        DataError: Unknown name, missing or malformed data, or fractions that leave no training data.
    """
    key = name.strip().lower().replace("_", "-")
    if key in DETECTION_DATASETS:
        if train_examples is not None and train_examples < 1:
            raise DataError(f"{key}: train_examples={train_examples} must be >= 1", option="train_examples")
        root = None if data_dir is None else Path(data_dir).expanduser()
        return DETECTION_DATASETS[key](root, split_seed, val_fraction, train_examples)
    key, spec, root = _locate(name, data_dir, val_fraction, test_fraction)
    train, test = _checked_official(key, root, spec.loader(root, True))
    generator = torch.Generator().manual_seed(split_seed)
    if test is None:
        keep, out = held_out(len(train), test_fraction, generator)
        train, test = subset(train, keep), subset(train, out)
    keep, out = held_out(len(train), val_fraction, generator)
    train, val = subset(train, keep), subset(train, out)
    if train_examples is not None:
        if not 0 < train_examples <= len(train):
            raise DataError(f"{key}: train_examples={train_examples} is not in [1, {len(train)}] (the training "
                            f"samples left after the val split)", option="train_examples")
        train = subset(train, torch.randperm(len(train), generator=generator)[:train_examples].sort().values)
    if len(train) == 0:
        raise DataError(f"{key}: val_fraction={val_fraction} and test_fraction={test_fraction} "
                        f"leave no training samples")

    _, C, H, W = train.images.shape
    if H != W:  # models and Dataset.image_size assume square images
        raise DataError(f"{key}: images are {H}x{W}, expected square images")
    mean, std = channel_stats(train.images)
    return Dataset(name=key, train=train, val=val, test=test, num_classes=spec.num_classes, in_channels=C,
                   image_size=H, mean=mean, std=std, augment=spec.augment)

