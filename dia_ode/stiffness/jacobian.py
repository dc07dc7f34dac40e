"""Jacobians of a vector field at one point: matrix-free operators and the dense reference.

The stiffness of x' = f(x) near a point is read from the Jacobian J = df/dx there (Hairer & Wanner,
Solving ODEs II, IV.1-2). For a network block x is a feature map of 16k+ numbers, so J is never
formed: ARPACK only needs products J v (and J^T v for the logarithmic norm). J v comes from
`torch.func.linearize`, which traces the forward-mode graph once and replays it for every product
(about 5x cheaper per product than calling `torch.func.jvp` each time); J^T v from `torch.func.vjp`,
also built once. `dense_jacobian` (`torch.func.jacrev`) is the reference the operators are tested
against (tests/test_stiffness.py).
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator

VectorField = Callable[[torch.Tensor], torch.Tensor]


def _check_square(f_x: torch.Tensor, x: torch.Tensor) -> None:
    if f_x.shape != x.shape:
        raise ValueError(f"the vector field must map x to the same shape: x is {tuple(x.shape)}, "
                         f"f(x) is {tuple(f_x.shape)} (a shape-changing map has no eigenvalues)")


class JacobianOperator(LinearOperator):
    """J = df/dx at x as a scipy LinearOperator on flat float64 vectors of length n = x.numel().

    Products are computed in x's dtype on x's device; the float64 numpy vectors ARPACK passes in are
    cast on the way in and back on the way out. Counts of products are kept for reports.

    Args:
        f: maps a tensor shaped like x to one of the same shape (a block in eval mode, batch of 1).
        x: the point; it is detached, never modified.
    """

    def __init__(self, f: VectorField, x: torch.Tensor) -> None:
        self.x = x.detach()
        self.f = f
        # linearize runs f once and traces its forward-mode graph; products replay that graph.
        # They run under no_grad: replaying an in-place op (ReLU(inplace=True)) on a graph that still
        # holds parameters requiring grad is refused by autograd, and no gradient is wanted here.
        with warnings.catch_warnings():
            # torch's constant folding inside linearize warns about its own internal get_attr nodes.
            warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node",
                                    category=UserWarning)
            self.f_x, self._jvp = torch.func.linearize(f, self.x)
        _check_square(self.f_x, self.x)
        self._vjp = None  # built on the first J^T v: most callers (eigs) never need it
        self.n_matvec = 0
        self.n_rmatvec = 0
        n = self.x.numel()
        super().__init__(dtype=np.dtype(np.float64), shape=(n, n))

    def _to_tensor(self, v: np.ndarray) -> torch.Tensor:
        v = np.ascontiguousarray(v, dtype=np.float64).reshape(self.x.shape)
        return torch.from_numpy(v).to(device=self.x.device, dtype=self.x.dtype)

    @staticmethod
    def _to_numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().reshape(-1).to(device="cpu", dtype=torch.float64).numpy()

    def _matvec(self, v: np.ndarray) -> np.ndarray:
        self.n_matvec += 1
        with torch.no_grad():
            return self._to_numpy(self._jvp(self._to_tensor(v)))

    def _rmatvec(self, v: np.ndarray) -> np.ndarray:
        self.n_rmatvec += 1
        if self._vjp is None:
            _, self._vjp = torch.func.vjp(self.f, self.x)
        (jt_v,) = self._vjp(self._to_tensor(v))
        return self._to_numpy(jt_v)


def jacobian_operator(f: VectorField, x: torch.Tensor) -> JacobianOperator:
    """The Jacobian of f at x as a matrix-free operator (n = x.numel()).

    Args:
        f: vector field mapping a tensor shaped like x to the same shape.
        x: the point (for a network block: one sample with a batch dim of 1, e.g. (1, C, H, W)).

    Returns:
        A LinearOperator with matvec J v (via torch.func.linearize) and rmatvec J^T v (via
        torch.func.vjp), both built once; float64 numpy vectors in and out.

    Raises:
        ValueError: f(x) does not have x's shape.
    """
    return JacobianOperator(f, x)


def dense_jacobian(f: VectorField, x: torch.Tensor, chunk_size: int | None = None) -> np.ndarray:
    """The full Jacobian df/dx at x as a float64 array (n, n), row i = d f_i / dx (reference path).

    Args:
        f: vector field mapping a tensor shaped like x to the same shape.
        x: the point.
        chunk_size: rows computed per vmapped backward pass (None: all at once; smaller saves memory).

    Raises:
        ValueError: f(x) does not have x's shape.
    """
    x = x.detach()
    n = x.numel()
    jac = torch.func.jacrev(f, chunk_size=chunk_size)(x)  # x.shape + x.shape
    if jac.shape != x.shape + x.shape:
        _check_square(torch.empty(jac.shape[:jac.dim() - x.dim()]), x)
    return jac.detach().reshape(n, n).to(device="cpu", dtype=torch.float64).numpy()
