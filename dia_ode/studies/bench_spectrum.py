"""How fast and how exact the matrix-free spectrum is on one residual block.

`bench_spectrum` times the top-k (largest magnitude) eigenvalues of the Jacobian of one BasicBlock's
branch (eval mode, random BN statistics, one sample) at a CIFAR-sized feature map, and at a smaller
one compares with the dense reference (jacrev + numpy eig): the speed-up and the relative error of
the matched eigenvalues. Times are the fastest of `rounds` calls (other processes only ever add time).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from dia_ode.models.blocks import BasicBlock
from dia_ode.stiffness.jacobian import dense_jacobian
from dia_ode.stiffness.eigen import sort_eigenvalues, spectrum_with_info


def random_block(channels: int) -> BasicBlock:
    """A BasicBlock(channels, channels) in eval mode with random BN statistics and affine parameters
    (identity statistics would make the block a plain conv-relu-conv)."""
    block = BasicBlock(channels, channels)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return block.eval()


def _fastest(fn: Callable[[], object], rounds: int) -> tuple[float, object]:
    """(fastest wall time of `rounds` calls, the last result)."""
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def matched_relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """max_i |approx_i - exact_j(i)| / |exact_j(i)| under the one-to-one matching that minimises the total
    distance (conjugate pairs and near-ties may come in another order)."""
    cost = np.abs(approx[:, None] - exact[None, :])
    rows, cols = linear_sum_assignment(cost)
    return float(np.max(cost[rows, cols] / np.abs(exact[cols])))


def bench_spectrum(channels: int = 16, size: int = 32, k: int = 6, compare_size: int = 16, seed: int = 0,
                   rounds: int = 3) -> dict:
    """Time and accuracy of `spectrum` (ARPACK path, which="LM") on one residual block.

    Args:
        channels: C of the block and its input.
        size: H = W of the timed input (n = C H W; 16x32x32 = 16,384).
        k: eigenvalues asked for.
        compare_size: H = W of the input compared with the dense reference (16x16x16 = 4,096).
        seed: torch seed of the block and the inputs.
        rounds: timed calls of the matrix-free path; the dense path runs once (it takes minutes).

    Returns:
        {"n", "seconds", "matvecs"} of the timed size, and "compare_n", "dense_seconds" (jacrev + eig,
        default threads), "dense_jacobian_seconds", "matrix_free_seconds", "speedup" (dense /
        matrix-free), "relative_error" (max over the k matched eigenvalues), "eigenvalues" (the k
        matrix-free ones at compare_n, complex), "threads" (torch threads outside spectrum).
    """
    torch.manual_seed(seed)
    block = random_block(channels)
    x = torch.randn(1, channels, size, size)
    x_small = torch.randn(1, channels, compare_size, compare_size)

    def run(point: torch.Tensor) -> tuple[np.ndarray, dict]:
        return spectrum_with_info(block.branch, point, k, "LM", method="arpack")

    seconds, (_, info) = _fastest(lambda: run(x), rounds)
    mf_seconds, (values, _) = _fastest(lambda: run(x_small), rounds)
    start = time.perf_counter()
    jac = dense_jacobian(block.branch, x_small)  # (n, n) float64
    jac_seconds = time.perf_counter() - start
    exact = np.linalg.eigvals(jac)
    dense_seconds = time.perf_counter() - start
    # compare with a few more dense values than k: a conjugate pair may straddle the k-th place
    exact = sort_eigenvalues(exact, "LM")[:k + 2]
    return {"n": x.numel(), "seconds": seconds, "matvecs": info["matvecs"], "compare_n": x_small.numel(),
            "dense_seconds": dense_seconds, "dense_jacobian_seconds": jac_seconds,
            "matrix_free_seconds": mf_seconds, "speedup": dense_seconds / mf_seconds,
            "relative_error": matched_relative_error(values, exact), "eigenvalues": values,
            "threads": torch.get_num_threads()}
