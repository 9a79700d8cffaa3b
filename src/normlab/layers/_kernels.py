r"""The closed-form backward of BatchNorm, LayerNorm and GroupNorm as loops that numba compiles.

Equations (5)–(6) of :mod:`normlab.layers.layernorm`, per row (LayerNorm: one example's
normalized values) or per group (GroupNorm: one example's group of channels), and of
:mod:`normlab.layers.batchnorm`, per channel (BatchNorm: over the batch and every spatial
position), written from x, mu and r = 1/σ so that the forward can be torch's fused kernel,
which returns all three:

    x̂  = (x − mu)·r,   ĝ = dy·γ
    dx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))                                        (5)
    dγ = Σ dy·x̂,   dβ = Σ dy                  over the rows, or batch and space   (6)

(for BatchNorm γ is one number per channel, so ĝ's means are γ times those of dy).

Why loops: written with general torch ops, (5)–(6) take six to nine passes over memory and
a dozen or two small ops, against two or three passes in one call for torch's own backward
kernel; at 512×1024 no arrangement of those ops comes within 1.5× of torch (see
``benchmarks/normalization_floor.py``). Each loop below makes the two passes the algebra
needs: one that sums (Σ ĝ, Σ ĝ·x̂ and the contributions to dγ, dβ), one that writes dx.
It is the same arithmetic as the torch-ops form, which stays in ``layernorm.py`` and
``batchnorm.py`` for CUDA tensors, other dtypes, ``create_graph=True`` and machines without
numba; the tests (``tests/test_layers_compiled_backward.py``) hold both to torch.nn and to
each other.

numba compiles each function for a dtype on its first call (about a second) and keeps the
machine code in ``__pycache__`` (``cache=True``), so later processes load it in a fraction of
that. ``fastmath`` allows only reassociation and contraction, which let the sums use
vector registers; NaN and infinity propagate as in plain arithmetic.

Chapters ``02_batchnorm`` and ``07_layernorm``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

#: the floating-point liberties the loops take: reordering sums (so they vectorize) and
#: fused multiply-add; not "no NaN" or "no infinity", which would change results on bad input
_FASTMATH = {"reassoc", "contract"}

#: the dtypes the loops are compiled for (one machine-code version each)
_DTYPES = (torch.float32, torch.float64)


@functools.cache
def _compiled() -> tuple | None:
    """The four compiled loops (LayerNorm, GroupNorm, BatchNorm without and with spatial axes), or None
    when numba cannot be imported (the torch-ops form runs then)."""
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - requirements.txt installs numba
        return None
    jit = njit(cache=True, fastmath=_FASTMATH, nogil=True)
    return (jit(_layer_norm_backward_rows), jit(_group_norm_backward_groups), jit(_batch_norm_backward_rows),
            jit(_batch_norm_backward_planes))


def available(input: Tensor) -> bool:
    """Whether the compiled backward serves ``input``: a non-empty float32 or float64 CPU tensor,
    and numba installed."""
    return input.is_cpu and input.dtype in _DTYPES and input.numel() > 0 and _compiled() is not None


def serves_backward(grad_output: Tensor) -> bool:
    """Whether the compiled loop computes this backward: :func:`available` for ``grad_output``,
    and autograd not recording the backward. With ``create_graph=True`` (second derivatives in γ
    and β, which the layers allow) the torch-ops form runs, since autograd can differentiate it."""
    return not torch.is_grad_enabled() and available(grad_output)


def _layer_norm_backward_rows(dy, x, mean, invstd, weight, dx, dweight, dbias):  # pragma: no cover - compiled
    """(5)–(6) for (rows, n) arrays: mean and invstd (rows, 1), weight (γ) per column. Writes dx,
    dweight (Σ dy·x̂) and dbias (Σ dy)."""
    rows, n = x.shape
    inv_n = 1.0 / n
    dweight[:] = 0.0
    dbias[:] = 0.0
    for i in range(rows):
        mu, r = mean[i, 0], invstd[i, 0]
        sum_g = 0.0  # Σ ĝ
        sum_gxhat = 0.0  # Σ ĝ·x̂
        for j in range(n):
            g, xhat = dy[i, j], (x[i, j] - mu) * r
            sum_g += g * weight[j]
            sum_gxhat += g * weight[j] * xhat
            dweight[j] += g * xhat
            dbias[j] += g
        mean_g, mean_gxhat = sum_g * inv_n, sum_gxhat * inv_n
        for j in range(n):
            xhat = (x[i, j] - mu) * r
            dx[i, j] = r * (dy[i, j] * weight[j] - mean_g - xhat * mean_gxhat)


def _group_norm_backward_groups(dy, x, mean, invstd, weight, dx, dweight, dbias):  # pragma: no cover - compiled
    """(5)–(6) for (N, C, S) arrays: mean and invstd (N, G), weight (γ) per channel; G groups of
    C/G consecutive channels. Writes dx, dweight (Σ dy·x̂) and dbias (Σ dy)."""
    batch, channels, spatial = x.shape
    groups = mean.shape[1]
    per_group = channels // groups
    inv_n = 1.0 / (per_group * spatial)
    dweight[:] = 0.0
    dbias[:] = 0.0
    for b in range(batch):
        for group in range(groups):
            mu, r = mean[b, group], invstd[b, group]
            first = group * per_group
            sum_g = 0.0  # Σ ĝ over the group
            sum_gxhat = 0.0  # Σ ĝ·x̂
            for c in range(first, first + per_group):
                sum_dy = 0.0
                sum_dy_centred = 0.0  # Σ dy·(x − mu): x̂ = (x − mu)·r
                for s in range(spatial):
                    sum_dy += dy[b, c, s]
                    sum_dy_centred += dy[b, c, s] * (x[b, c, s] - mu)
                dweight[c] += sum_dy_centred * r
                dbias[c] += sum_dy
                sum_g += weight[c] * sum_dy
                sum_gxhat += weight[c] * sum_dy_centred * r
            mean_g, mean_gxhat = sum_g * inv_n, sum_gxhat * inv_n
            for c in range(first, first + per_group):
                scale = r * weight[c]
                for s in range(spatial):
                    xhat = (x[b, c, s] - mu) * r
                    dx[b, c, s] = scale * dy[b, c, s] - r * (mean_g + xhat * mean_gxhat)


def _batch_norm_backward_rows(dy, x, mean, invstd, weight, dx, dweight, dbias):  # pragma: no cover - compiled
    """BatchNorm's (5)–(6) for (N, C) arrays: mean, invstd and weight per channel (column). Row by
    row, so that every pass reads memory in order and the per-channel sums vectorize."""
    rows, channels = x.shape
    inv_m = 1.0 / rows
    dbias[:] = 0.0
    sum_dy_centred = np.zeros(channels, dtype=x.dtype)  # Σ dy·(x − mu) per channel: x̂ = (x − mu)·r
    for i in range(rows):
        for c in range(channels):
            dbias[c] += dy[i, c]
            sum_dy_centred[c] += dy[i, c] * (x[i, c] - mean[c])
    scale = np.empty(channels, dtype=x.dtype)  # γ·r: dx = γ·r·dy + slope·(x − mu) + shift
    slope = np.empty(channels, dtype=x.dtype)
    shift = np.empty(channels, dtype=x.dtype)
    for c in range(channels):
        r = invstd[c]
        dweight[c] = sum_dy_centred[c] * r
        scale[c] = weight[c] * r
        slope[c] = -scale[c] * r * dweight[c] * inv_m  # −γ·r·mean(dy·x̂)·r
        shift[c] = -scale[c] * dbias[c] * inv_m  # −γ·r·mean(dy)
    for i in range(rows):
        for c in range(channels):
            dx[i, c] = scale[c] * dy[i, c] + slope[c] * (x[i, c] - mean[c]) + shift[c]


def _batch_norm_backward_planes(dy, x, mean, invstd, weight, dx, dweight, dbias):  # pragma: no cover - compiled
    """BatchNorm's (5)–(6) for (N, C, S) arrays: per channel over the batch and the S spatial
    positions, which are contiguous."""
    batch, channels, spatial = x.shape
    inv_m = 1.0 / (batch * spatial)
    for c in range(channels):
        mu, r = mean[c], invstd[c]
        sum_dy = 0.0
        sum_dy_centred = 0.0  # Σ dy·(x − mu)
        for b in range(batch):
            for s in range(spatial):
                sum_dy += dy[b, c, s]
                sum_dy_centred += dy[b, c, s] * (x[b, c, s] - mu)
        dbias[c] = sum_dy
        dweight[c] = sum_dy_centred * r
        scale = weight[c] * r
        slope = -scale * r * dweight[c] * inv_m
        shift = -scale * sum_dy * inv_m
        for b in range(batch):
            for s in range(spatial):
                dx[b, c, s] = scale * dy[b, c, s] + slope * (x[b, c, s] - mu) + shift


def _array(tensor: Tensor) -> np.ndarray:
    """``tensor`` as a contiguous NumPy array that shares its memory (a copy only when it is not
    contiguous): what the loops take. One compiled version per dtype then serves every input.
    (Each step here costs under a microsecond, which matters at 8×64.)"""
    if tensor.requires_grad:
        tensor = tensor.detach()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    return tensor.numpy()


def layer_norm_backward(grad_output: Tensor, input: Tensor, mean: Tensor, invstd: Tensor,
                        weight: Tensor | None, normalized_ndim: int) -> tuple[Tensor, Tensor, Tensor]:
    """dx, dγ, dβ of LayerNorm by the compiled loop: ``mean`` and ``invstd`` as
    ``torch.native_layer_norm`` returns them; dγ and dβ have the normalized shape."""
    x = _array(input)
    shape = x.shape[x.ndim - normalized_ndim:]
    dx, dgamma, dbeta = np.empty_like(x), np.empty(shape, x.dtype), np.empty(shape, x.dtype)
    gamma = np.ones(shape, dtype=x.dtype) if weight is None else _array(weight)
    dy, mu, r = _array(grad_output), _array(mean), _array(invstd)
    if x.ndim == 2 and normalized_ndim == 1:  # (rows, n) already: no views (at 8×64 they cost as much as the loop)
        _compiled()[0](dy, x, mu, r, gamma, dx, dgamma, dbeta)
    else:  # viewed as (rows, n); mu and 1/σ as (rows, 1); γ, dγ and dβ as (n,)
        n = math.prod(shape)
        rows, column, flat = (-1, n), (-1, 1), (n,)
        _compiled()[0](dy.reshape(rows), x.reshape(rows), mu.reshape(column), r.reshape(column), gamma.reshape(flat),
                       dx.reshape(rows), dgamma.reshape(flat), dbeta.reshape(flat))
    return torch.from_numpy(dx), torch.from_numpy(dgamma), torch.from_numpy(dbeta)


def group_norm_backward(grad_output: Tensor, input: Tensor, mean: Tensor, invstd: Tensor,
                        weight: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """dx, dγ, dβ of GroupNorm by the compiled loop: ``mean`` and ``invstd`` (N, G) as
    ``torch.native_group_norm`` returns them."""
    x = _array(input)
    batch, channels = x.shape[0], x.shape[1]
    grad_input, grad_weight, grad_bias = np.empty_like(x), np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    gamma = np.ones(channels, dtype=x.dtype) if weight is None else _array(weight)
    _compiled()[1](_array(grad_output).reshape(batch, channels, -1), x.reshape(batch, channels, -1), _array(mean),
                   _array(invstd), gamma, grad_input.reshape(batch, channels, -1), grad_weight, grad_bias)
    return torch.from_numpy(grad_input), torch.from_numpy(grad_weight), torch.from_numpy(grad_bias)


def batch_norm_backward(grad_output: Tensor, input: Tensor, mean: Tensor, invstd: Tensor,
                        weight: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """dx, dγ, dβ of BatchNorm (training mode) by the compiled loop: ``mean`` and ``invstd`` (C,)
    as ``torch.native_batch_norm`` returns them. Chapter ``02_batchnorm``."""
    x = _array(input)
    channels = x.shape[1]
    grad_input, grad_weight, grad_bias = np.empty_like(x), np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    gamma = np.ones(channels, dtype=x.dtype) if weight is None else _array(weight)
    if x.ndim == 2:
        _compiled()[2](_array(grad_output), x, _array(mean), _array(invstd), gamma, grad_input, grad_weight, grad_bias)
    else:
        planes = (x.shape[0], channels, -1)
        _compiled()[3](_array(grad_output).reshape(planes), x.reshape(planes), _array(mean), _array(invstd), gamma,
                       grad_input.reshape(planes), grad_weight, grad_bias)
    return torch.from_numpy(grad_input), torch.from_numpy(grad_weight), torch.from_numpy(grad_bias)
