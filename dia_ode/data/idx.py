"""MNIST-style IDX files (plain or gzipped): MNIST and Fashion-MNIST.

Debian's ``dataset-fashion-mnist`` installs Fashion-MNIST under /usr/share/datasets/fashion-mnist,
which is used when no --data-dir is given. The reader is ours: there is no CPU torchvision here.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch

from dia_ode.data.dataset import DataError, Official, Split, checked_split, one_line

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist
_IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")



# IDX files hold uint8 images of a few dozen pixels: EMNIST's largest split is 0.55 GB. A header that
# declares more is refused before a byte of its body is read (its body would be allocated first).
MAX_IDX_BYTES = 4 << 30
_CHUNK = 1 << 20  # bytes read at a time: a body grows with the data that is really there, never the claim


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of uint8 values into a writable array with the file's dims.

    Layout: two zero bytes, dtype code 0x08 (uint8), ndim, ndim big-endian int32 dims, the values.
    The header is checked first (dtype, dims, a declared size of at most MAX_IDX_BYTES); the body is
    then streamed in chunks and read no further than one byte past the declared size, so a gzip file
    that expands far beyond its header (a decompression bomb) is refused without being expanded.

    Args:
        path: The file; gzipped when its name ends in ``.gz``.

    Raises:
        DataError: On an unreadable or malformed file.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            return _read_idx_stream(f, path)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {one_line(err)}") from None


def _read_exactly(f: BinaryIO, n: int) -> bytearray:
    """Up to n bytes of f (fewer at its end), read in chunks."""
    data = bytearray()
    while len(data) < n:
        chunk = f.read(min(_CHUNK, n - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def _read_idx_stream(f: BinaryIO, path: Path) -> np.ndarray:
    magic = _read_exactly(f, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise DataError(f"malformed IDX file {path}: bad magic number")
    if magic[2] != 0x08:  # the dtype code of uint8, the only one MNIST-like files use
        raise DataError(f"malformed IDX file {path}: dtype code 0x{magic[2]:02x}, expected 0x08 (uint8)")
    ndim = magic[3]
    raw_dims = _read_exactly(f, 4 * ndim)
    if ndim == 0 or len(raw_dims) < 4 * ndim:
        raise DataError(f"malformed IDX file {path}: header too short for {ndim} dims")
    dims = tuple(int(d) for d in np.frombuffer(bytes(raw_dims), dtype=">i4"))
    if min(dims) < 0:  # int32 dims: a negative one would pass the size check below as a product
        raise DataError(f"malformed IDX file {path}: negative dims {dims}")
    size = math.prod(dims)  # Python ints: np.prod would wrap around on huge dims
    if size > MAX_IDX_BYTES:
        raise DataError(f"malformed IDX file {path}: its header declares dims {dims}, {size / 1e9:.3g} GB of "
                        f"uint8 values, more than the {MAX_IDX_BYTES / 1e9:.3g} GB an IDX file is read up to")
    body = _read_exactly(f, size)
    if len(body) < size:
        raise DataError(f"malformed IDX file {path}: {4 + len(raw_dims) + len(body)} bytes, dims {dims} need "
                        f"{4 + len(raw_dims) + size}")
    if f.read(1):  # one byte past the declared size is enough to refuse: the rest is never expanded
        raise DataError(f"malformed IDX file {path}: more data than its header's dims {dims} declare "
                        f"({4 + len(raw_dims) + size} bytes)")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)  # writable: a bytearray's buffer


def _idx_split(images_path: Path, labels_path: Path, num_classes: int = 10) -> Split:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"IDX files {images_path.name} {images.shape} and {labels_path.name} "
                        f"{labels.shape} are not (N, H, W) images with (N,) labels")
    if len(labels) == 0:  # an empty test split would end a training run with test metrics of null
        raise DataError(f"IDX files {images_path} and {labels_path.name} hold no samples (dims "
                        f"{images.shape} and {labels.shape})")
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

