"""The Fréchet distance between two Gaussians fitted to feature vectors (FID's formula).

FID (Heusel et al. 2017, arXiv 1706.08500) fits a Gaussian to the Inception features of real and of
generated images and reports ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)). The Inception
network cannot be downloaded here, so the features come from a classifier this project trains on the
same data; the number is a Fréchet distance in that network's feature space, comparable only with
others measured by the same network (always shown next to the real train / test floor). The matrix
square root is scipy.linalg.sqrtm (a well-kept implementation; torchmetrics is not installed here).
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), covariance (d, d)) of features (n, d), float64, n >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features of shape (n >= 2, d), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 sqrt(cov1 cov2)); a tiny ridge where the product is singular."""
    root = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(root).all():  # singular product (fewer samples than dimensions): regularise
        ridge = np.eye(cov1.shape[0]) * 1e-6
        root = linalg.sqrtm((cov1 + ridge) @ (cov2 + ridge))
    root = root.real  # rounding leaves a negligible imaginary part
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root))


def feature_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians of two feature sets (n_a, d) and (n_b, d)."""
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
