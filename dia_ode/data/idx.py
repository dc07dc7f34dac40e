"""MNIST-style IDX files (plain or gzipped): MNIST and Fashion-MNIST.

Debian's ``dataset-fashion-mnist`` installs Fashion-MNIST under /usr/share/datasets/fashion-mnist,
which is used when no --data-dir is given. The reader is ours: there is no CPU torchvision here.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dia_ode.data.dataset import DataError, Official, Split, checked_split, one_line

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")



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
        raise DataError(f"cannot read IDX file {path}: {one_line(err)}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"malformed IDX file {path}: bad magic number")
    if raw[2] != 0x08:  # the dtype code of uint8, the only one MNIST-like files use
        raise DataError(f"malformed IDX file {path}: dtype code 0x{raw[2]:02x}, expected 0x08 (uint8)")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"malformed IDX file {path}: header too short for {ndim} dims")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if min(dims) < 0:  # int32 dims: a negative one would pass the size check below as a product
        raise DataError(f"malformed IDX file {path}: negative dims {dims}")
    expected = math.prod(dims) + 4 + 4 * ndim  # Python ints: np.prod would wrap around on huge dims
    if len(raw) != expected:
        raise DataError(f"malformed IDX file {path}: {len(raw)} bytes, dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _idx_split(images_path: Path, labels_path: Path, num_classes: int = 10) -> Split:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"IDX files {images_path.name} {images.shape} and {labels_path.name} "
                        f"{labels.shape} are not (N, H, W) images with (N,) labels")
    images_t = torch.from_numpy(images)[:, None]  # (N, 1, H, W)
    return checked_split(images_t, torch.from_numpy(labels), num_classes, labels_path)



def idx_loader(name: str) -> Callable[[Path], Official]:
    torchvision_folder = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]

    def load(root: Path, with_train: bool = True) -> Official:
        # Files in <dir>, <dir>/<name> or torchvision's <dir>/<Class>/raw; each plain or gzipped.
        stems = _IDX_STEMS if with_train else _IDX_STEMS[2:]  # the test split alone needs only t10k-*
        for folder in (root, root / name, root / torchvision_folder / "raw"):
            paths = [next((p for p in (folder / s, folder / f"{s}.gz") if p.is_file()), None) for s in stems]
            if all(paths):
                return (_idx_split(*paths[:2]) if with_train else None), _idx_split(*paths[-2:])
        raise DataError(f"no {name} IDX files ({', '.join(s + '[.gz]' for s in stems)}) in {root}")

    return load

