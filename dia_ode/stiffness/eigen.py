"""A few eigenvalues of the Jacobian of a vector field at one point.

Stiffness and the stability of an explicit step are read from the extreme eigenvalues of J = df/dx
(Hairer & Wanner, Solving ODEs II, IV.1-2): the largest in magnitude (LM) bound the stable step, the
ones with largest / smallest real part (LR / SR) say whether the flow expands or contracts. For large
n we ask ARPACK's implicitly restarted Arnoldi method (`scipy.sparse.linalg.eigs`) for k of them on
the matrix-free operator of jacobian.py, from a fixed start vector so that runs are reproducible;
for small n the dense eigenvalues of `dense_jacobian` are cheaper and exact. ARPACK's own BLAS calls
are held to one thread so that they do not fight torch's threads inside the products.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from scipy.sparse.linalg import eigs
from threadpoolctl import threadpool_limits

from dia_ode.stiffness.jacobian import VectorField, dense_jacobian, jacobian_operator

WHICH = ("LM", "LR", "SR")
METHODS = ("auto", "arpack", "dense")
# Up to this n, jacrev + dense eig beats building linearize + Arnoldi (measured crossover ~512 for a
# BasicBlock on 2 cores); ARPACK also needs k < n - 1.
DENSE_MAX_N = 256


def check_which(which: str) -> None:
    """Raise ValueError with the valid names unless `which` is one of WHICH."""
    if which not in WHICH:
        raise ValueError(f"unknown which '{which}'; valid: {', '.join(WHICH)}")


def sort_eigenvalues(values: np.ndarray, which: str = "LM") -> np.ndarray:
    """Eigenvalues ordered by the criterion: largest |λ| first (LM), largest Re λ first (LR) or
    smallest Re λ first (SR); ties (conjugate pairs) put the positive imaginary part first."""
    check_which(which)
    values = np.asarray(values, dtype=np.complex128)
    primary = {"LM": -np.abs(values), "LR": -values.real, "SR": values.real}[which]
    return values[np.lexsort((-values.imag, primary))]  # lexsort: the last key is the primary one


def choose_method(n: int, k: int, method: str = "auto") -> str:
    """Which path `spectrum` takes for n unknowns and k eigenvalues: "dense" or "arpack".

    "auto" is dense when n <= DENSE_MAX_N or k >= n - 1 (ARPACK's eigs needs k < n - 1).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")
    if method == "arpack" and k >= n - 1:
        raise ValueError(f"ARPACK needs k < n - 1; got k={k}, n={n} (use method='dense')")
    if method == "auto":
        return "dense" if n <= DENSE_MAX_N or k >= n - 1 else "arpack"
    return method


def start_vector(n: int) -> np.ndarray:
    """The fixed ARPACK start vector: standard normal from a seeded generator (not all-ones, which a
    structured Jacobian, e.g. a convolution's, can leave orthogonal to eigenvectors)."""
    return np.random.default_rng(0).standard_normal(n)


@contextmanager
def limited_threads(threads: int | None = 1) -> Iterator[None]:
    """BLAS at one thread (ARPACK's own work is sequential) and torch at `threads` (None: unchanged).

    Why one torch thread by default: the products are small convolutions, and on a busy 2-core
    machine two OpenMP threads made one 16x32x32 product 7 ms instead of 0.5 ms (and a 4x8x8 one
    70 ms instead of 0.2 ms): the threads wait for each other at every op.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


def default_tol(dtype: torch.dtype) -> float:
    """ARPACK's relative residual tolerance for products computed in `dtype`: 0 (machine precision)
    for float64; for float32 products 1e-6, a little above their rounding noise (eps = 1.2e-7), which
    ARPACK's residuals cannot go below."""
    return 0.0 if dtype == torch.float64 else 1e-6


def spectrum_with_info(f: VectorField, x: torch.Tensor, k: int = 6, which: str = "LM", *,
                       method: str = "auto", tol: float | None = None, ncv: int | None = None,
                       maxiter: int | None = None, threads: int | None = 1) -> tuple[np.ndarray, dict]:
    """`spectrum` plus a record of how it was computed.

    Returns:
        (eigenvalues, info) with info = {"path": "arpack" | "dense", "n": n, "matvecs": products
        used (n for dense: one per Jacobian row), "seconds": wall time}.
    """
    check_which(which)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = x.numel()
    path = choose_method(n, k, method)
    start = time.perf_counter()
    with limited_threads(threads):
        if path == "dense":
            values = sort_eigenvalues(np.linalg.eigvals(dense_jacobian(f, x)), which)[:k]
            matvecs = n
        else:
            op = jacobian_operator(f, x)
            values = eigs(op, k=k, which=which, v0=start_vector(n), ncv=ncv, maxiter=maxiter,
                          tol=default_tol(x.dtype) if tol is None else tol, return_eigenvectors=False)
            values = sort_eigenvalues(values, which)
            matvecs = op.n_matvec
    return values, {"path": path, "n": n, "matvecs": matvecs, "seconds": time.perf_counter() - start}


def spectrum(f: VectorField, x: torch.Tensor, k: int = 6, which: str = "LM", *, method: str = "auto",
             tol: float | None = None, ncv: int | None = None, maxiter: int | None = None,
             threads: int | None = 1) -> np.ndarray:
    """k eigenvalues of the Jacobian of f at x, matrix-free (ARPACK) or dense for small n.

    Args:
        f: vector field mapping a tensor shaped like x to the same shape (a block: eval mode, batch 1).
        x: the point.
        k: how many eigenvalues. The dense path returns min(k, n).
        which: "LM" largest magnitude, "LR" largest real part, "SR" smallest real part.
        method: "auto" (dense when n <= DENSE_MAX_N or k >= n - 1), "arpack" or "dense".
        tol: ARPACK relative tolerance (None: default_tol of x's dtype).
        ncv: ARPACK Krylov basis size (None: scipy's max(2k + 1, 20)).
        maxiter: ARPACK restarts (None: scipy's 10 n).
        threads: torch threads while computing (None: leave as set); BLAS always runs on one.

    Returns:
        Complex array (k,), sorted by the criterion (largest |λ| / largest Re λ first, smallest Re λ
        first for SR).

    Raises:
        ValueError: unknown which or method, or f changes the shape of x.
    """
    return spectrum_with_info(f, x, k, which, method=method, tol=tol, ncv=ncv, maxiter=maxiter,
                              threads=threads)[0]
