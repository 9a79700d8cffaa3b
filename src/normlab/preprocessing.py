"""Input normalization: centering, standardization and whitening.

For least squares L(w) = (1/2n)‖Xw − y‖², the Hessian is H = XᵀX / n. Standardized
columns give diag(H) = 1; whitened columns give H = I, the perfectly conditioned problem.
Chapter ``01_why_normalize``.
"""

from __future__ import annotations

import numpy as np


def least_squares_hessian(x: np.ndarray) -> np.ndarray:
    """H = XᵀX / n, the (constant) Hessian of (1/2n)‖Xw − y‖²."""
    x = _as_matrix(x)
    return x.T @ x / x.shape[0]


def standardize(x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None,
                eps: float = 1e-12) -> np.ndarray:
    """(x − mean) / std per column, with statistics from ``x`` unless given (e.g. train statistics)."""
    x = _as_matrix(x)
    mean = x.mean(axis=0) if mean is None else np.asarray(mean, dtype=float)
    std = x.std(axis=0) if std is None else np.asarray(std, dtype=float)
    return (x - mean) / np.maximum(std, eps)


def whitening_matrix(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """ZCA whitening W = Σ^{-1/2}: (x − mean) W has identity covariance (1/n normalisation)."""
    x = _as_matrix(x)
    centered = x - x.mean(axis=0)
    cov = centered.T @ centered / x.shape[0]
    lam, q = np.linalg.eigh(cov)
    if lam[0] <= eps * lam[-1]:
        raise ValueError("the feature covariance is singular: drop constant or duplicated "
                         "columns before whitening")
    return (q / np.sqrt(lam)) @ q.T


def whiten(x: np.ndarray) -> np.ndarray:
    """Centre the columns and decorrelate them to unit variance (ZCA)."""
    x = _as_matrix(x)
    return (x - x.mean(axis=0)) @ whitening_matrix(x)


def add_intercept(x: np.ndarray) -> np.ndarray:
    """Append a column of ones, so a linear model's bias is one more weight."""
    x = _as_matrix(x)
    return np.column_stack([x, np.ones(x.shape[0])])


def _as_matrix(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of shape (samples, features); got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to compute statistics; got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the input contains NaN or infinite values")
    return x
