"""More experiments of chapter ``08_initialization``: the mean and variance of activations through depth.

- :func:`activation_moments`: a deep MLP at initialization (float64, no bias, x ~ N(0, I)) with ReLU
  and ELU (He's Var[W] = 2/n) and SELU (LeCun's 1/n); at every layer the mean, the variance and
  the mean over the root mean square of the activations. Claim: :func:`elu_mean_between_relu_and_selu`.
- :func:`normalization_propagation`: Arpit et al.'s data-independent normalization of a deep ReLU
  network at initialization: unit-norm weight rows, and each ReLU output standardized by the
  closed-form mean √(1/2π) and standard deviation √(1/2 − 1/2π) of a rectified standard Gaussian.
  Claims: :func:`normprop_keeps_moments_early`, :func:`normprop_drifts_with_depth`.

Each claim returns a :class:`~normlab.experiments._common.Claim` (holds, measured, threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from normlab.experiments._common import Claim

__all__ = ["ActivationMomentsRecord", "NormPropRecord", "RECTIFIED_MEAN", "RECTIFIED_STD", "activation_moments",
           "elu_mean_between_relu_and_selu", "normalization_propagation", "normprop_drifts_with_depth",
           "normprop_keeps_moments_early"]

#: Mean of ReLU(z) for z ~ N(0, 1): ∫₀^∞ z φ(z) dz = φ(0) = 1/√(2π).
RECTIFIED_MEAN = math.sqrt(1 / (2 * math.pi))
#: Standard deviation of ReLU(z) for z ~ N(0, 1): E[ReLU(z)²] = 1/2, minus the squared mean 1/(2π).
RECTIFIED_STD = math.sqrt(0.5 - 1 / (2 * math.pi))

#: activation → (function, Var[W]·fan_in): He's 2 for ReLU and ELU, LeCun's 1 for SELU.
ACTIVATIONS = {"relu": (torch.relu, 2.0), "elu": (F.elu, 2.0), "selu": (torch.selu, 1.0)}


def _inputs_and_weights(seed: int, depth: int, width: int, batch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=g, dtype=torch.float64)
    return x, [torch.randn(width, width, generator=g, dtype=torch.float64) for _ in range(depth)]


@dataclass
class ActivationMomentsRecord:
    """``mean[a][l]``, ``variance[a][l]``: mean and variance over the batch and the units of the
    activations φ(z_l) after layer l + 1, for activation ``a``; ``mean_over_rms[a][l]``: mean / √E[φ²]."""

    depth: int
    mean: dict[str, np.ndarray]
    variance: dict[str, np.ndarray]
    mean_over_rms: dict[str, np.ndarray]


def activation_moments(seed: int = 0, depth: int = 30, width: int = 256, batch: int = 1024) -> ActivationMomentsRecord:
    """Propagate x ~ N(0, I) through ``depth`` square layers z_l = W_l φ(z_{l−1}) with each activation
    of :data:`ACTIVATIONS` (the same Gaussian draws, scaled to its Var[W]), in float64.

    Used in chapter ``08_initialization``, section "ELU: the mean, not the variance".
    """
    x, weights = _inputs_and_weights(seed, depth, width, batch)
    mean, variance, ratio = {}, {}, {}
    for name, (phi, gain) in ACTIVATIONS.items():
        h, rows = x, []
        for w in weights:
            h = phi(h @ (w * math.sqrt(gain / width)).T)
            rows.append((float(h.mean()), float(h.var()), float(h.mean() / h.pow(2).mean().sqrt())))
        mean[name], variance[name], ratio[name] = (np.asarray(col) for col in zip(*rows))
    return ActivationMomentsRecord(depth=depth, mean=mean, variance=variance, mean_over_rms=ratio)


def elu_mean_between_relu_and_selu(record: ActivationMomentsRecord, first_factor: float = 0.6,
                                   selu_mean: float = 0.05, selu_factor: float = 1.5, growth: float = 2.0) -> Claim:
    """Claim: ELU's mean over root mean square is below ReLU's at every layer, and at most ``first_factor``
    of it at the first layer; SELU's mean stays within ``selu_mean`` of 0 and its variance within a factor
    ``selu_factor`` of 1 at every layer; ELU's variance (He's initialization) grows at least ``growth``-fold
    from the first layer to the last.

    Measured: (ELU/ReLU ratio at layer 1, the largest ELU/ReLU ratio over layers, SELU's largest |mean|,
    SELU's largest factor from 1, ELU's variance growth); threshold: (``first_factor``, 1, ``selu_mean``,
    ``selu_factor``, ``growth``). Used in chapter ``08_initialization``.
    """
    ratio = record.mean_over_rms["elu"] / record.mean_over_rms["relu"]
    selu_var = record.variance["selu"]
    measured = (float(ratio[0]), float(ratio.max()), float(np.abs(record.mean["selu"]).max()),
                float(np.exp(np.abs(np.log(selu_var)).max())),
                float(record.variance["elu"][-1] / record.variance["elu"][0]))
    threshold = (first_factor, 1.0, selu_mean, selu_factor, growth)
    holds = (measured[0] <= first_factor and measured[1] < 1 and measured[2] < selu_mean
             and measured[3] < selu_factor and measured[4] >= growth)
    return Claim(holds=holds, measured=measured, threshold=threshold)


@dataclass
class NormPropRecord:
    """Normalization propagation at initialization, per layer l (index l − 1), for orthogonal and for
    Gaussian weight matrices (rows scaled to unit norm either way).

    ``unit_mean[kind][l]``: the largest |mean over the batch| of a unit; ``unit_variance[kind][l]``: the
    mean over units of the batch variance; ``correlation[kind][l]``: the largest |correlation| between two of
    the first 64 units. ``relu_mean``, ``relu_std``: the measured mean and standard deviation of ReLU(u) at the
    first layer, to compare with :data:`RECTIFIED_MEAN` and :data:`RECTIFIED_STD`.
    """

    depth: int
    unit_mean: dict[str, np.ndarray]
    unit_variance: dict[str, np.ndarray]
    correlation: dict[str, np.ndarray]
    relu_mean: float
    relu_std: float


def normalization_propagation(seed: int = 0, depth: int = 30, width: int = 256, batch: int = 1024) -> NormPropRecord:
    """h_l = (ReLU(W_l h_{l−1}) − √(1/2π)) / √(1/2 − 1/2π) with unit-norm rows of W_l, from x ~ N(0, I).

    If h_{l−1} has zero mean and identity covariance, u = W h_{l−1} has unit variance per unit (unit-norm
    rows), so ReLU(u) has the rectified Gaussian's mean and variance and h_l is standardized again, with
    no batch statistics (Arpit et al. 2016). The identity covariance is the assumption: exact for the input
    and orthogonal W at the first layer, only approximate after. Used in chapter ``08_initialization``,
    section "Normalization propagation".
    """
    x, weights = _inputs_and_weights(seed, depth, width, batch)
    means, variances, corrs = {}, {}, {}
    relu_mean = relu_std = math.nan
    for kind in ("orthogonal", "gaussian"):
        h, rows = x, []
        for layer, w in enumerate(weights):
            w = torch.linalg.qr(w)[0] if kind == "orthogonal" else w
            relu = torch.relu(h @ (w / w.norm(dim=1, keepdim=True)).T)
            if layer == 0 and kind == "orthogonal":
                relu_mean, relu_std = float(relu.mean()), float(relu.std())
            h = (relu - RECTIFIED_MEAN) / RECTIFIED_STD
            corr = torch.corrcoef(h[:, :64].T) - torch.eye(64, dtype=h.dtype)
            rows.append((float(h.mean(0).abs().max()), float(h.var(0).mean()), float(corr.abs().max())))
        means[kind], variances[kind], corrs[kind] = (np.asarray(col) for col in zip(*rows))
    return NormPropRecord(depth=depth, unit_mean=means, unit_variance=variances, correlation=corrs,
                          relu_mean=relu_mean, relu_std=relu_std)


def normprop_keeps_moments_early(record: NormPropRecord, layers: int = 10, mean_tol: float = 0.25,
                                 var_tol: float = 0.1, constant_tol: float = 0.01) -> Claim:
    """Claim: with orthogonal weights, through the first ``layers`` layers every unit's batch mean is within
    ``mean_tol`` of 0 and the mean batch variance within ``var_tol`` of 1; and the first layer's measured
    ReLU mean and standard deviation match √(1/2π) and √(1/2 − 1/2π) to ``constant_tol`` (relative).

    Measured: (largest |unit mean|, largest |variance − 1|, largest relative error of the two constants);
    threshold: (``mean_tol``, ``var_tol``, ``constant_tol``). Used in chapter ``08_initialization``.
    """
    mean = float(record.unit_mean["orthogonal"][:layers].max())
    var = float(np.abs(record.unit_variance["orthogonal"][:layers] - 1).max())
    const = max(abs(record.relu_mean / RECTIFIED_MEAN - 1), abs(record.relu_std / RECTIFIED_STD - 1))
    return Claim(holds=mean < mean_tol and var < var_tol and const < constant_tol, measured=(mean, var, const),
                 threshold=(mean_tol, var_tol, constant_tol))


def normprop_drifts_with_depth(record: NormPropRecord, var_dev: float = 0.2) -> Claim:
    """Claim: by the last layer the assumption has worn off: the mean batch variance is off 1 by more than
    ``var_dev`` for orthogonal and for Gaussian weights.

    Measured: (|variance − 1| at the last layer, orthogonal; the same, Gaussian); threshold: ``var_dev``.
    Used in chapter ``08_initialization``.
    """
    dev = tuple(float(abs(record.unit_variance[kind][-1] - 1)) for kind in ("orthogonal", "gaussian"))
    return Claim(holds=min(dev) > var_dev, measured=dev, threshold=var_dev)
