"""NumPy reference implementation of batch normalization, forward and backward.

CS231n style: a forward function returns ``(out, cache)`` and a backward function takes
``(dout, cache)``. Every intermediate carries the name it has in the derivation:

    mu   = mean(x)                       batch mean per channel            (1)
    var  = mean((x − mu)²)               biased batch variance (1/m)       (2)
    std  = √(var + ε)                                                      (3)
    xhat = (x − mu) / std                normalized input                  (4)
    out  = γ · xhat + β                  scale and shift                   (5)

For x of shape (N, D) the statistics are per feature over the batch; for x of shape
(N, C, *spatial) they are per channel over the batch and every spatial position, so each
channel pools m = N · prod(spatial) values. γ and β have shape (D,) or (C,).

LayerNorm and GroupNorm (at the end of the module) take the same equations per example
instead of per channel: chapter ``07_layernorm``.

No torch here: this module is the readable reference the torch layers are checked against.
Chapter ``02_batchnorm``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "BatchNormCache",
    "batch_norm_forward",
    "batch_norm_backward",
    "batch_norm_backward_naive",
    "batch_norm_backward_stepwise",
    "batch_norm_inference",
    "update_running_stats",
    "fold_batch_norm",
    "LayerNormCache",
    "layer_norm_forward",
    "layer_norm_backward",
    "GroupNormCache",
    "group_norm_forward",
    "group_norm_backward",
]


class BatchNormCache(NamedTuple):
    """What ``batch_norm_forward`` saves for the backward pass.

    ``mu``, ``var``, ``std`` and ``gamma`` have shape (C,), one entry per channel;
    ``x`` and ``xhat`` have the input's shape; ``m`` is the number of values pooled per
    channel. ``mu`` and ``var`` are also the batch statistics ``update_running_stats`` needs.
    """

    x: np.ndarray
    xhat: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    std: np.ndarray
    gamma: np.ndarray
    eps: float
    m: int

    @property
    def axes(self) -> tuple[int, ...]:
        """The axes the statistics reduce over: batch and all spatial axes."""
        return _reduction_axes(self.x.ndim)


# ----------------------------------------------------------------------------
# training mode


def batch_norm_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                       eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch normalization (Ioffe & Szegedy 2015, Algorithm 1).

    With statistics per channel over the batch (and spatial) axes, m values each:
    mu = (1/m) Σ x,  var = (1/m) Σ (x − mu)²,  std = √(var + ε),
    xhat = (x − mu) / std,  out = γ · xhat + β.

    x has shape (N, D) or (N, C, *spatial); gamma and beta have shape (D,) or (C,).
    Returns ``(out, cache)``; ``cache`` is a ``BatchNormCache``.
    Chapter ``02_batchnorm``.
    """
    x = _check_input(x)
    num_channels = x.shape[1]
    gamma = _check_channel_vector(gamma, "gamma", num_channels, x.shape)
    beta = _check_channel_vector(beta, "beta", num_channels, x.shape)
    eps = _check_eps(eps)
    m = x.size // num_channels
    if m == 1:
        raise ValueError(
            "BatchNorm needs more than one value per channel in training mode; got input of "
            f"shape {tuple(x.shape)}. Use batch_norm_inference or a batch larger than 1.")

    axes = _reduction_axes(x.ndim)
    mu = x.mean(axis=axes)                                        # (1)
    xmu = x - _per_channel(mu, x.ndim)
    var = (xmu ** 2).mean(axis=axes)                              # (2), biased: 1/m
    std = np.sqrt(var + eps)                                      # (3)
    xhat = xmu / _per_channel(std, x.ndim)                        # (4)
    out = _per_channel(gamma, x.ndim) * xhat + _per_channel(beta, x.ndim)   # (5)

    cache = BatchNormCache(x=x, xhat=xhat, mu=mu, var=var, std=std, gamma=gamma, eps=eps, m=m)
    return out, cache


def batch_norm_backward(dout: ArrayLike,
                        cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of batch normalization with respect to x, gamma and beta.

    Implements the full chain rule through the batch mean and variance, collapsed into
    closed form (means and sums over the batch and spatial axes, per channel):
    dbeta = Σ dout,  dgamma = Σ dout · xhat,
    dx = γ / √(var + ε) · (dout − mean(dout) − xhat · mean(dout · xhat)).

    The two subtracted terms are the paths through mu and var: every x in the batch moves
    the mean and the variance, and so every output. Dropping them gives
    ``batch_norm_backward_naive``; spelling them out step by step gives
    ``batch_norm_backward_stepwise``. Both routes are checked against this one.
    Chapter ``02_batchnorm``.
    """
    dout = _check_dout(dout, cache)
    axes, ndim = cache.axes, cache.x.ndim
    xhat = cache.xhat

    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    mean_dout = _per_channel(dout.mean(axis=axes), ndim)
    mean_dout_xhat = _per_channel((dout * xhat).mean(axis=axes), ndim)
    dx = _per_channel(cache.gamma / cache.std, ndim) * (dout - mean_dout - xhat * mean_dout_xhat)
    return dx, dgamma, dbeta


def batch_norm_backward_naive(dout: ArrayLike,
                              cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WRONG on purpose: the incomplete BatchNorm gradient that circulates in course notes.

    dx_naive = γ / √(var + ε) · dout treats mu and var as constants, ignoring that they
    are computed from x itself. It is the gradient of the *inference*-mode transform, not
    of the training-mode one, so it misses the terms − mean(dout) − xhat · mean(dout · xhat)
    of ``batch_norm_backward``. dgamma and dbeta are the correct ones (they do not pass
    through mu and var), so the triple has the same form as the true gradient.

    Do not train with it. It exists so the chapter can show how wrong it is, and so the
    exercise checker can recognise a submission that made this mistake.
    Chapter ``02_batchnorm``.
    """
    dout = _check_dout(dout, cache)
    axes, ndim = cache.axes, cache.x.ndim
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * cache.xhat).sum(axis=axes)
    dx = _per_channel(cache.gamma / cache.std, ndim) * dout
    return dx, dgamma, dbeta


def batch_norm_backward_stepwise(dout: ArrayLike,
                                 cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of batch normalization, one chain-rule step at a time (Ioffe & Szegedy 2015).

    The paper's backpropagation equations, sums over the m values of each channel:
    dxhat = dout · γ
    dvar  = Σ dxhat · (x − mu) · (−1/2) (var + ε)^(−3/2)
    dmu   = Σ dxhat · (−1/√(var + ε)) + dvar · Σ −2 (x − mu) / m
    dx    = dxhat / √(var + ε) + dvar · 2 (x − mu) / m + dmu / m
    dgamma = Σ dout · xhat,  dbeta = Σ dout.

    (The second term of dmu is zero, since Σ (x − mu) = 0; it is kept to match the paper.)
    Simplifying these gives the closed form of ``batch_norm_backward``; the two agree to
    rounding error.
    Chapter ``02_batchnorm``.
    """
    dout = _check_dout(dout, cache)
    axes, ndim, m = cache.axes, cache.x.ndim, cache.m
    xmu = cache.x - _per_channel(cache.mu, ndim)
    var_eps = _per_channel(cache.var + cache.eps, ndim)

    dxhat = dout * _per_channel(cache.gamma, ndim)
    dvar = (dxhat * xmu * -0.5 * var_eps ** -1.5).sum(axis=axes)
    dmu = (dxhat * -1.0 / np.sqrt(var_eps)).sum(axis=axes) + dvar * (-2.0 * xmu).sum(axis=axes) / m
    dx = (dxhat / np.sqrt(var_eps)
          + _per_channel(dvar, ndim) * 2.0 * xmu / m
          + _per_channel(dmu, ndim) / m)
    dgamma = (dout * cache.xhat).sum(axis=axes)
    dbeta = dout.sum(axis=axes)
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------
# inference mode


def batch_norm_inference(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                         running_mean: ArrayLike, running_var: ArrayLike,
                         eps: float = 1e-5) -> np.ndarray:
    """Inference-mode batch normalization (Ioffe & Szegedy 2015, Algorithm 2).

    y = γ · (x − E[x]) / √(Var[x] + ε) + β, with population statistics E[x] =
    ``running_mean`` and Var[x] = ``running_var`` in place of the batch's. Each sample is
    transformed independently of the others, so a batch of one is fine.
    Chapter ``02_batchnorm``.
    """
    x = _check_input(x)
    num_channels = x.shape[1]
    gamma = _check_channel_vector(gamma, "gamma", num_channels, x.shape)
    beta = _check_channel_vector(beta, "beta", num_channels, x.shape)
    running_mean = _check_channel_vector(running_mean, "running_mean", num_channels, x.shape)
    running_var = _check_variance(
        _check_channel_vector(running_var, "running_var", num_channels, x.shape), "running_var")
    eps = _check_eps(eps)

    std = np.sqrt(running_var + eps)
    xhat = (x - _per_channel(running_mean, x.ndim)) / _per_channel(std, x.ndim)
    return _per_channel(gamma, x.ndim) * xhat + _per_channel(beta, x.ndim)


def update_running_stats(running_mean: ArrayLike, running_var: ArrayLike,
                         batch_mean: ArrayLike, batch_var_biased: ArrayLike, m: int,
                         momentum: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """One exponential-moving-average step of the population statistics, PyTorch's convention.

    new_mean = (1 − momentum) · running_mean + momentum · batch_mean
    new_var  = (1 − momentum) · running_var  + momentum · batch_var_biased · m / (m − 1)

    The batch variance enters unbiased (Bessel's correction m / (m − 1), m values per
    channel), although the forward pass normalizes with the biased one. Note PyTorch's
    ``momentum`` is the weight of the *new* batch, the opposite of an optimizer's momentum.
    ``momentum=None`` (PyTorch's cumulative average) is not handled here: the layer does
    it by calling this with momentum = 1 / num_batches_tracked.
    Chapter ``02_batchnorm``.
    """
    running_mean = _as_float_vector(running_mean, "running_mean")
    num_channels = running_mean.shape[0]
    running_var = _check_stat(running_var, "running_var", num_channels)
    batch_mean = _check_stat(batch_mean, "batch_mean", num_channels)
    batch_var_biased = _check_stat(batch_var_biased, "batch_var_biased", num_channels)
    if momentum is None:
        raise ValueError(
            "momentum=None (cumulative moving average) needs the number of batches seen, which "
            "this function does not track; pass momentum=1 / num_batches_tracked instead.")
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1] (the weight of the new batch); got {momentum}")
    if int(m) != m or m < 2:
        raise ValueError(
            f"the unbiased variance needs m >= 2 values per channel; got m={m}. "
            "BatchNorm cannot update its statistics from a single value per channel.")

    batch_var_unbiased = batch_var_biased * m / (m - 1)
    new_mean = (1.0 - momentum) * running_mean + momentum * batch_mean
    new_var = (1.0 - momentum) * running_var + momentum * batch_var_unbiased
    return new_mean, new_var


def fold_batch_norm(weight: ArrayLike, bias: ArrayLike | None, gamma: ArrayLike, beta: ArrayLike,
                    running_mean: ArrayLike, running_var: ArrayLike,
                    eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Fold inference-mode BatchNorm into the linear layer before it.

    For y = W x + b followed by BN(y) = γ (y − mean) / √(var + ε) + β, one layer
    y' = W' x + b' does both, with
    W' = diag(γ / √(var + ε)) W,   b' = γ (b − mean) / √(var + ε) + β.

    ``weight`` has shape (D_out, D_in); any weight whose first axis is the output channel
    (a convolution's (C_out, C_in, *kernel)) folds the same way. ``bias=None`` means a
    layer without bias (b = 0). Valid only in inference mode, where mean and var are fixed.
    Chapter ``02_batchnorm``.
    """
    weight = np.asarray(weight, dtype=float)
    if weight.ndim < 2:
        raise ValueError(
            "weight must have shape (D_out, D_in) (or (C_out, C_in, *kernel)); "
            f"got shape {weight.shape}")
    d_out = weight.shape[0]
    what = "output features of weight"
    bias = np.zeros(d_out) if bias is None else _check_stat(bias, "bias", d_out, what)
    gamma = _check_stat(gamma, "gamma", d_out, what)
    beta = _check_stat(beta, "beta", d_out, what)
    running_mean = _check_stat(running_mean, "running_mean", d_out, what)
    running_var = _check_variance(_check_stat(running_var, "running_var", d_out, what), "running_var")
    eps = _check_eps(eps)

    scale = gamma / np.sqrt(running_var + eps)
    folded_weight = scale.reshape((d_out,) + (1,) * (weight.ndim - 1)) * weight
    folded_bias = scale * (bias - running_mean) + beta
    return folded_weight, folded_bias


# ----------------------------------------------------------------------------
# helpers


def _reduction_axes(ndim: int) -> tuple[int, ...]:
    """Batch axis 0 and every spatial axis 2, 3, ...; axis 1 is the channel."""
    return (0,) + tuple(range(2, ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a (C,) vector to (1, C, 1, ..., 1) so it broadcasts against an ndim-D input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _check_input(x: ArrayLike) -> np.ndarray:
    return _check_float_input(x, "BatchNorm", min_ndim=2, layout="(N, D) or (N, C, *spatial)",
                              unit="channel", hint="Add a batch axis, e.g. x[None, :] for a single sample.")


def _check_channel_vector(v: ArrayLike, name: str, num_channels: int, x_shape: tuple) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.shape != (num_channels,):
        raise ValueError(
            f"{name} has shape {v.shape} but the input of shape {tuple(x_shape)} has {num_channels} "
            f"features/channels on axis 1; pass {name} of shape ({num_channels},).")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def _as_float_vector(v: ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector with one entry per channel; got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def _check_stat(v: ArrayLike, name: str, num_channels: int,
                what: str = "channels of running_mean") -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.shape != (num_channels,):
        raise ValueError(f"{name} has shape {v.shape} but there are {num_channels} {what}; "
                         f"pass {name} of shape ({num_channels},).")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def _check_variance(v: np.ndarray, name: str) -> np.ndarray:
    if np.any(v < 0):
        raise ValueError(f"{name} has negative entries; a variance is >= 0")
    return v


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0 (it keeps √(var + eps) away from zero); got {eps}")
    return eps


def _check_dout(dout: ArrayLike, cache: BatchNormCache) -> np.ndarray:
    dout = np.asarray(dout, dtype=float)
    if dout.shape != cache.x.shape:
        raise ValueError(f"dout has shape {dout.shape} but the forward input had shape "
                         f"{cache.x.shape}; pass the upstream gradient of the forward's output.")
    return dout


# ----------------------------------------------------------------------------
# normalizers that do not depend on the batch: LayerNorm and GroupNorm
#
# The same five equations as above, with the statistics taken per example instead of per
# channel: LayerNorm over the features of one example (the last axis), GroupNorm over one
# group of channels and every spatial position of one example. No value of another example
# enters, so training and inference are the same computation and a batch of one is fine.


class LayerNormCache(NamedTuple):
    """What ``layer_norm_forward`` saves for the backward pass.

    ``x`` and ``xhat`` have the input's shape (..., D); ``mu``, ``var`` and ``std`` have shape
    x.shape[:-1], one entry per example; ``gamma`` has shape (D,); ``d`` = D is the number of
    values each statistic pools.
    """

    x: np.ndarray
    xhat: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    std: np.ndarray
    gamma: np.ndarray
    eps: float
    d: int


def layer_norm_forward(x: ArrayLike, gamma: ArrayLike, beta: ArrayLike,
                       eps: float = 1e-5) -> tuple[np.ndarray, LayerNormCache]:
    """Layer normalization (Ba, Kiros & Hinton 2016) over the last axis.

    With statistics per example over its D features (normalized_shape = x.shape[-1:]):
    mu = (1/D) Σ x,  var = (1/D) Σ (x − mu)²,  std = √(var + ε),
    xhat = (x − mu) / std,  out = γ · xhat + β,  γ and β elementwise of shape (D,).

    x has shape (..., D), at least 1-D: every leading axis is a batch axis. The same
    computation in training and inference. Returns ``(out, cache)``; ``cache`` is a
    ``LayerNormCache``.
    Chapter ``07_layernorm``.
    """
    x = _check_float_input(x, "LayerNorm", min_ndim=1, layout="(..., D)")
    d = x.shape[-1]
    gamma = _check_parameter_vector(gamma, "gamma", d, x.shape, "features on the last axis")
    beta = _check_parameter_vector(beta, "beta", d, x.shape, "features on the last axis")
    eps = _check_eps(eps)

    mu = x.mean(axis=-1)                                          # (1) per example
    xmu = x - mu[..., None]
    var = (xmu ** 2).mean(axis=-1)                                # (2), biased: 1/D
    std = np.sqrt(var + eps)                                      # (3)
    xhat = xmu / std[..., None]                                   # (4)
    out = gamma * xhat + beta                                     # (5), elementwise γ, β

    cache = LayerNormCache(x=x, xhat=xhat, mu=mu, var=var, std=std, gamma=gamma, eps=eps, d=d)
    return out, cache


def layer_norm_backward(dout: ArrayLike,
                        cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of layer normalization with respect to x, gamma and beta.

    γ is elementwise over the normalized axis, so it does not factor out of the means as it
    does in BatchNorm; it goes into the upstream gradient first. With ghat = dout · γ and
    means over the D features of each example:

    dx = (1/σ) · (ghat − mean(ghat) − xhat · mean(ghat · xhat)),   σ = √(var + ε),
    dgamma = Σ dout · xhat,  dbeta = Σ dout   (sums over every leading axis).

    Derivation: out_j = γ_j xhat_j + β_j, so ∂L/∂xhat_j = ghat_j. Each xhat_j depends on x_i
    directly and through mu and var: ∂xhat_j/∂x_i = (δ_ij − 1/D − xhat_i xhat_j / D) / σ.
    Summing ghat_j times that over j gives the line above: the BatchNorm formula with the
    roles of batch and feature axes swapped and γ moved inside.
    Chapter ``07_layernorm``.
    """
    dout = _check_dout(dout, cache)
    xhat = cache.xhat
    lead = tuple(range(dout.ndim - 1))

    dbeta = dout.sum(axis=lead)
    dgamma = (dout * xhat).sum(axis=lead)
    ghat = dout * cache.gamma
    mean_ghat = ghat.mean(axis=-1, keepdims=True)
    mean_ghat_xhat = (ghat * xhat).mean(axis=-1, keepdims=True)
    dx = (ghat - mean_ghat - xhat * mean_ghat_xhat) / cache.std[..., None]
    return dx, dgamma, dbeta


class GroupNormCache(NamedTuple):
    """What ``group_norm_forward`` saves for the backward pass.

    ``x`` and ``xhat`` have the input's shape (N, C, *spatial); ``mu``, ``var`` and ``std``
    have shape (N, G), one entry per example and group; ``gamma`` has shape (C,); ``m`` =
    (C / G) · prod(spatial) is the number of values each statistic pools.
    """

    x: np.ndarray
    xhat: np.ndarray
    mu: np.ndarray
    var: np.ndarray
    std: np.ndarray
    gamma: np.ndarray
    num_groups: int
    eps: float
    m: int


def group_norm_forward(x: ArrayLike, num_groups: int, gamma: ArrayLike, beta: ArrayLike,
                       eps: float = 1e-5) -> tuple[np.ndarray, GroupNormCache]:
    """Group normalization (Wu & He 2018).

    The C channels are split into G = ``num_groups`` groups of C/G consecutive channels;
    the statistics are per example per group, over its channels and every spatial position
    (m = (C/G) · prod(spatial) values each):
    mu = (1/m) Σ x,  var = (1/m) Σ (x − mu)²,  std = √(var + ε),
    xhat = (x − mu) / std,  out = γ · xhat + β,  γ and β per channel, shape (C,).

    G = 1 is LayerNorm over (C, *spatial) with per-channel γ, β; G = C is InstanceNorm.
    x has shape (N, C, *spatial). Returns ``(out, cache)``; ``cache`` is a ``GroupNormCache``.
    Chapter ``07_layernorm``.
    """
    x = _check_float_input(x, "GroupNorm", min_ndim=2, layout="(N, C, *spatial)")
    n, c = x.shape[:2]
    num_groups = _check_num_groups(num_groups, c)
    gamma = _check_parameter_vector(gamma, "gamma", c, x.shape, "channels on axis 1")
    beta = _check_parameter_vector(beta, "beta", c, x.shape, "channels on axis 1")
    eps = _check_eps(eps)

    grouped = x.reshape(n, num_groups, -1)                        # (N, G, m)
    mu = grouped.mean(axis=-1)                                    # (1) per example and group
    xmu = grouped - mu[..., None]
    var = (xmu ** 2).mean(axis=-1)                                # (2), biased: 1/m
    std = np.sqrt(var + eps)                                      # (3)
    xhat = (xmu / std[..., None]).reshape(x.shape)                # (4)
    out = _per_channel(gamma, x.ndim) * xhat + _per_channel(beta, x.ndim)   # (5)

    cache = GroupNormCache(x=x, xhat=xhat, mu=mu, var=var, std=std, gamma=gamma,
                           num_groups=num_groups, eps=eps, m=grouped.shape[-1])
    return out, cache


def group_norm_backward(dout: ArrayLike,
                        cache: GroupNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of group normalization with respect to x, gamma and beta.

    The LayerNorm gradient applied group by group. With ghat = dout · γ (γ per channel) and
    means over the m values of each example's group:

    dx = (1/σ) · (ghat − mean(ghat) − xhat · mean(ghat · xhat)),   σ = √(var + ε),
    dgamma = Σ dout · xhat,  dbeta = Σ dout   (per channel, over the batch and spatial axes).

    Chapter ``07_layernorm``.
    """
    dout = _check_dout(dout, cache)
    n, ndim = dout.shape[0], dout.ndim
    axes = _reduction_axes(ndim)

    dbeta = dout.sum(axis=axes)
    dgamma = (dout * cache.xhat).sum(axis=axes)
    ghat = (dout * _per_channel(cache.gamma, ndim)).reshape(n, cache.num_groups, -1)
    xhat = cache.xhat.reshape(ghat.shape)
    mean_ghat = ghat.mean(axis=-1, keepdims=True)
    mean_ghat_xhat = (ghat * xhat).mean(axis=-1, keepdims=True)
    dx = (ghat - mean_ghat - xhat * mean_ghat_xhat) / cache.std[..., None]
    return dx.reshape(dout.shape), dgamma, dbeta


def _check_float_input(x: ArrayLike, name: str, min_ndim: int, layout: str, unit: str = "example",
                       hint: str = "") -> np.ndarray:
    """The input as a float array, or a ValueError naming what is wrong: too few dimensions,
    no values, or NaN/Inf (which would make every statistic of its ``unit`` NaN)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} expects input of shape {layout}, at least {min_ndim}-D; got shape "
                         f"{tuple(x.shape)}." + (f" {hint}" if hint else ""))
    if x.size == 0:
        raise ValueError(f"{name} got an empty input of shape {tuple(x.shape)}; "
                         "pass at least one value per statistic.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"the input x contains NaN or infinite values, so every statistic of its "
                         f"{unit} would be NaN; check the data or the layer before.")
    return x


def _check_parameter_vector(v: ArrayLike, name: str, size: int, x_shape: tuple, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.shape != (size,):
        raise ValueError(f"{name} has shape {v.shape} but the input of shape {tuple(x_shape)} has "
                         f"{size} {what}; pass {name} of shape ({size},).")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _check_num_groups(num_groups: int, num_channels: int) -> int:
    if int(num_groups) != num_groups or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer; got {num_groups}")
    num_groups = int(num_groups)
    if num_channels % num_groups:
        raise ValueError(
            f"GroupNorm splits the channels into equal groups, but num_channels={num_channels} is not "
            f"divisible by num_groups={num_groups}. Use one of the divisors of {num_channels}: "
            f"{_divisors(num_channels)}.")
    return num_groups
