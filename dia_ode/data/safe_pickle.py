"""A pickle loader that builds data, never runs code: for the CIFAR "python version" batches.

A pickle is a program: every GLOBAL opcode imports a callable and REDUCE calls it, so `pickle.load`
on a downloaded file runs whatever the file names (os.system included). The CIFAR batches need only
plain containers (dict, list, bytes, str, int) and numpy arrays, so `find_class`, the one door through
which a pickle reaches a callable, admits the few numpy globals that rebuild an array and nothing else,
as torch.load(weights_only=True) does for checkpoints (the Python docs' "Restricting Globals" recipe).
"""

from __future__ import annotations

import codecs
import os
import pickle
from typing import Any, Callable

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that the restricted loader refuses; the message (one line) names it."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """`_codecs.encode` limited to latin-1: how Python 3 spells bytes (an array's raw data) at protocol < 3.

    Any other codec is refused: some (zlib, bz2) turn a small file into a huge allocation.
    """
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):  # no such codec, or not a name
        name = None
    if name != "iso8859-1":
        raise UnsafePickleError(f"_codecs.encode with codec {encoding!r} (only latin-1 spells bytes)")
    return codecs.encode(text, "latin-1")


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    # Taken from numpy's own __reduce__ results, so the private module (numpy.core in numpy 1,
    # numpy._core in numpy 2) is never imported by name; both spellings occur in files on disk.
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct (protocols 0-4)
    scalar = np.float64(0).__reduce__()[0]  # multiarray.scalar
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5, Python 3.14's default)
    admitted = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        admitted[f"{core}.multiarray", "_reconstruct"] = reconstruct
        admitted[f"{core}.multiarray", "scalar"] = scalar
        admitted[f"{core}.numeric", "_frombuffer"] = frombuffer
    return admitted


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose globals are the numpy array constructors only (see the module docstring).

    Containers and scalars (dict, list, tuple, bytes, str, int, float, bool, None) have opcodes of
    their own and need no global; everything else raises UnsafePickleError naming the global.
    """

    ADMITTED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ADMITTED[module, name]
        except KeyError:
            raise UnsafePickleError(f"GLOBAL {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("a persistent id (the file refers to objects outside itself)")


def restricted_load(path: str | os.PathLike, encoding: str = "ASCII") -> Any:
    """Unpickle `path` with :class:`RestrictedUnpickler`.

    Args:
        path: The pickle file.
        encoding: How Python 2 `str` objects are decoded; "bytes" keeps them as bytes (CIFAR's own).

    Raises:
        UnsafePickleError: the file names a global other than the numpy array constructors.
        OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError: unreadable or malformed file.
    """
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, encoding=encoding).load()
