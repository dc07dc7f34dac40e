"""CIFAR-10 / CIFAR-100 from the python pickle batches on a user's disk.

The batches are pickles, so they are read with the restricted unpickler of safe_pickle.py: a crafted
batch in a downloaded folder is refused, never run.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dia_ode.data.dataset import DataError, Official, checked_split, one_line
from dia_ode.data.safe_pickle import UnsafePickleError, restricted_load


def _unpickle(path: Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        batch = restricted_load(path, encoding="bytes")  # "bytes": the format's own (written by Python 2)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except UnsafePickleError as err:
        raise DataError(f"CIFAR batch {path} holds code or objects the safe loader refuses ({err}); "
                        f"not loaded") from None
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, IndexError, KeyError, TypeError,
            ValueError) as err:
        raise DataError(f"cannot read CIFAR batch {path}: {one_line(err)}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != data.shape[:1]:
        raise DataError(f"CIFAR batch {path}: data {data.shape}, labels {labels.shape}; want (N, 3072), (N,)")
    return torch.from_numpy(data).view(-1, 3, 32, 32), torch.from_numpy(labels)  # rows are R, G, B planes


def cifar_loader(subfolder: str, train_files: Sequence[str], test_file: str, label_key: bytes,
                  num_classes: int) -> Callable[[Path], Official]:
    def load(root: Path, with_train: bool = True) -> Official:
        needed = (*train_files, test_file) if with_train else (test_file,)
        folder = next((d for d in (root, root / subfolder) if all((d / n).is_file() for n in needed)), None)
        if folder is None:
            raise DataError(f"no CIFAR-{num_classes} batches ({', '.join(needed)}) in {root}[/{subfolder}]")
        train = None
        if with_train:
            images, labels = zip(*(_unpickle(folder / n, label_key) for n in train_files))
            train = checked_split(torch.cat(images), torch.cat(labels), num_classes, folder)
        test = checked_split(*_unpickle(folder / test_file, label_key), num_classes, folder / test_file)
        return train, test

    return load

