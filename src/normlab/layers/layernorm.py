"""The normalizers that do not depend on the batch, as torch modules with analytic backward.

- :class:`LayerNormFunction`: normalization over the trailing dimensions of each example,
  centred (LayerNorm) or not (RMSNorm), as a ``torch.autograd.Function``.
- :class:`GroupNormFunction`: normalization per example per group of channels.
- :class:`LayerNorm`, :class:`RMSNorm`, :class:`GroupNorm`, :class:`InstanceNorm1d`,
  :class:`InstanceNorm2d`: drop-in replacements for their ``torch.nn`` namesakes: same
  constructor, same parameters and buffers (so ``state_dict`` loads both ways), same
  ``extra_repr``.

The equations, per example over the n values that share a statistic (the trailing
``normalized_shape`` for LayerNorm and RMSNorm; one group of channels and every spatial
position for GroupNorm; one channel and every spatial position for InstanceNorm):

    mu   = mean(x)                      (0 for RMSNorm)                      (1)
    var  = mean((x − mu)²)              biased; mean(x²) for RMSNorm         (2)
    xhat = (x − mu) / √(var + ε)        normalized input                     (3)
    y    = γ · xhat + β                 γ, β elementwise or per channel      (4)

    ĝ  = dy · γ
    dx = 1/σ · (ĝ − mean(ĝ) − xhat · mean(ĝ · xhat)),  σ = √(var + ε)      (5)
         (RMSNorm drops the − mean(ĝ): there is no mean to move)
    dγ = Σ dy · xhat,   dβ = Σ dy     over every axis γ does not have       (6)

For speed the forwards take (1)–(4) from torch's fused CPU kernels (see :class:`LayerNormFunction`,
:class:`GroupNormFunction`), which return mu and 1/σ too. The backward, (5)–(6), is always
normlab's closed form, never torch's normalization backward kernels: on CPU tensors in float32
and float64 as a loop that numba compiles (:mod:`normlab.layers._kernels`: two passes over
memory, as torch's own backward makes), elsewhere written here in general torch ops, from x̂
(LayerNorm, RMSNorm) or from x, mu and 1/σ (GroupNorm: :func:`_group_norm_backward_from_input`
gives the algebra).

Chapter ``07_layernorm``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from normlab.layers import _kernels
from normlab.layers._common import (
    _GEMV_MIN_NUMEL,
    _addcmul_per_channel,
    _batch_sum,
    _channel_view,
    _NormBase,
    refuse_second_derivatives,
    register_affine,
    reset_affine,
)

__all__ = [
    "GroupNorm",
    "GroupNormFunction",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "LayerNorm",
    "LayerNormFunction",
    "RMSNorm",
]


def _sum_leading(tensor: Tensor, count: int) -> Tensor:
    """Sum ``tensor`` over its first ``count`` dimensions, into a new tensor (for none, a copy:
    an empty ``dim`` would make ``Tensor.sum`` reduce over every dimension)."""
    if not count:
        return tensor.clone()
    if count == 1 and tensor.dim() == 2:  # (N, C): no views (two ops fewer per call)
        return _batch_sum(tensor, (0,))
    if tensor.is_contiguous():  # the leading dimensions as the rows of one matrix: see _batch_sum
        return _batch_sum(tensor.view(-1, tensor.shape[-1]), (0,)).view(tensor.shape[count:])
    return tensor.sum(tuple(range(count)))


def _normalize(grouped: Tensor, center: bool, eps: float) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Equations (1)–(3) over the last dimension of ``grouped``: (xhat, mean, var, 1/σ).

    ``mean`` is None when ``center`` is False (RMSNorm). The variance is ‖x − mu‖²/n, with
    the norm from ``torch.linalg.vector_norm``: one read of x − mu and no squared copy of
    it in memory, still two-pass (no cancellation).
    """
    if center:
        mean = grouped.mean(-1, keepdim=True)  # (1)
        centred = grouped - mean  # a fresh buffer: becomes xhat in place below
    else:
        mean, centred = None, grouped
    var = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square_().div_(grouped.shape[-1])  # (2)
    invstd = torch.rsqrt(var + eps)
    xhat = centred.mul_(invstd) if center else centred * invstd  # (3); never writes into the input
    return xhat, mean, var, invstd


class LayerNormFunction(torch.autograd.Function):
    r"""Normalization over the trailing dimensions of each example, with the analytic backward.

    ``LayerNormFunction.apply(input, normalized_ndim, weight, bias, eps, center)`` normalizes
    ``input`` over its last ``normalized_ndim`` dimensions (equations 1–4 of the module
    docstring), with ``weight`` and ``bias`` (each ``None`` or of the normalized shape)
    applied elementwise. ``center=True`` is LayerNorm; ``center=False`` is RMSNorm, which
    divides by :math:`\sqrt{\mathrm{mean}(x^2) + \epsilon}` and subtracts nothing.

    The backward pass implements the closed form, means over the normalized dimensions and
    :math:`\hat{g} = dy\,\gamma`:

    .. math::

        \frac{\partial L}{\partial x} = \frac{1}{\sigma}\Big(\hat{g} - \mathrm{mean}(\hat{g})
            - \hat{x}\,\mathrm{mean}(\hat{g}\,\hat{x})\Big),

    without the :math:`\mathrm{mean}(\hat{g})` term when ``center=False``;
    :math:`\partial L/\partial\gamma = \sum dy\,\hat{x}` and
    :math:`\partial L/\partial\beta = \sum dy` over the leading dimensions. First
    derivatives only: a second derivative through the input raises a RuntimeError.
    For LayerNorm on CPU in float32 or float64 the forward is torch's fused layer-norm kernel
    (``torch.native_layer_norm``), equations (1)–(4) in one call, which returns mu and 1/σ as
    well; it saves x, mu, 1/σ and γ, and the backward is the closed form above as a loop
    compiled by numba (:func:`normlab.layers._kernels.layer_norm_backward`). Otherwise (CUDA,
    other dtypes, RMSNorm) the forward takes (1)–(3) from that kernel (with γ = 1, no β) or
    from :func:`_normalize`, saves x̂, 1/σ and γ, and the backward is the closed form in
    general torch ops; for large input it writes ĝ − mean(ĝ) in one pass. The torch-ops form
    also runs while autograd records the backward (``create_graph=True``). Derived in chapter
    ``07_layernorm``.
    """

    @staticmethod
    def forward(
        ctx: Any, input: Tensor, normalized_ndim: int, weight: Tensor | None, bias: Tensor | None,
        eps: float, center: bool,
    ) -> Tensor:
        if center and _kernels.available(input):
            # (1)–(4) in one call of torch's fused kernel, which returns mu and 1/σ too; the
            # backward is the compiled loop of normlab.layers._kernels, from x, mu and 1/σ
            shape = input.shape[input.dim() - normalized_ndim:]
            output, mean, invstd = torch.native_layer_norm(input, shape, weight, bias, eps)
            ctx.save_for_backward(input, mean, invstd, weight)
            ctx.center, ctx.normalized_ndim = center, normalized_ndim
            ctx.set_materialize_grads(False)
            return output
        if center:
            # (1)–(3) in one fused kernel: torch's layer norm without β returns xhat, and the
            # mean and 1/σ, each with a 1 in place of every normalized dimension. With γ = None
            # its CPU kernel is 2x slower at 512×1024 than with γ = 1 (the same xhat), so large
            # inputs pass γ = 1; small ones save the op that makes it.
            shape = input.shape[input.dim() - normalized_ndim:]
            ones = None if input.numel() < _GEMV_MIN_NUMEL else torch.ones(shape, dtype=input.dtype,
                                                                           device=input.device)
            xhat, _, invstd = torch.native_layer_norm(input, shape, ones, None, eps)
        else:
            # The normalized dimensions flattened into one (a view, and no op at all for one dimension).
            grouped = input if normalized_ndim == 1 else input.flatten(input.dim() - normalized_ndim)
            xhat, _, _, invstd = _normalize(grouped, center, eps)
            if normalized_ndim != 1:
                xhat = xhat.view(input.shape)
        if weight is not None:
            output = xhat * weight if bias is None else torch.addcmul(bias, xhat, weight)  # (4)
        else:
            output = xhat + bias if bias is not None else xhat.clone()  # never the saved xhat
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.center, ctx.normalized_ndim = center, normalized_ndim
        ctx.set_materialize_grads(False)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None) -> tuple[Tensor | None, ...]:
        if grad_output is None:
            return None, None, None, None, None, None
        saved = ctx.saved_tensors
        need_input, _, need_weight, need_bias, _, _ = ctx.needs_input_grad
        refuse_second_derivatives("normlab's LayerNorm/RMSNorm", "torch.nn.LayerNorm or torch.nn.RMSNorm",
                                  need_input)
        if len(saved) == 4 and _kernels.serves_backward(grad_output):  # x, mu, 1/σ and γ: the compiled loop
            grad_input, grad_weight, grad_bias = _kernels.layer_norm_backward(grad_output, *saved,
                                                                              ctx.normalized_ndim)
            return (grad_input if need_input else None, None, grad_weight if need_weight else None,
                    grad_bias if need_bias else None, None, None)
        if len(saved) == 4:  # x, mu and 1/σ, while autograd records the backward: xhat = (x − mu)·1/σ (3)
            input, mean, invstd, weight = saved
            xhat = (input - mean) * invstd
        else:
            xhat, invstd, weight = saved
        center, normalized_ndim = ctx.center, ctx.normalized_ndim
        lead = xhat.dim() - normalized_ndim  # the number of leading axes, those of the examples
        dy, xh = grad_output, xhat
        flattened = normalized_ndim != 1  # several normalized dimensions, flattened into one
        if flattened:
            rows = xhat.shape[:lead]
            dy, xh, invstd = dy.reshape(*rows, -1), xh.view(*rows, -1), invstd.view(*rows, 1)
        dy_xhat = dy * xh  # dy·xhat, in the buffer that will hold dx
        grad_input = grad_weight = grad_bias = None
        if need_weight:
            grad_weight = _sum_leading(dy_xhat, lead)  # Σ dy·xhat                   (6)
        if need_bias:
            grad_bias = _sum_leading(dy, lead)  # Σ dy                               (6)
        if need_input:
            inv_n = 1.0 / xh.shape[-1]  # 1/n, n values per example
            # Σ ĝ and Σ ĝ·xhat over the normalized dimensions, ĝ = dy·γ: with γ, one
            # matrix-vector product each (dy·γ never needs its own buffer for them).
            if weight is None:
                sum_g = dy.sum(-1, keepdim=True) if center else None
                sum_gx = dy_xhat.sum(-1, keepdim=True)
                grad_input = dy_xhat.copy_(dy)  # ĝ = dy
            else:
                gamma = weight.view(-1, 1)
                sum_g = torch.matmul(dy, gamma) if center else None
                sum_gx = torch.matmul(dy_xhat, gamma)
                if center and dy.numel() >= _GEMV_MIN_NUMEL:
                    # ĝ − mean(ĝ) in one pass: addcmul(−mean(ĝ), dy, γ), one broadcast vector per
                    # axis, which torch's CPU kernel vectorizes (the sub_ below is a pass more;
                    # for small inputs the op that makes −mean(ĝ) costs more than that pass)
                    grad_input = torch.addcmul(sum_g.mul_(-inv_n), dy, gamma.view(-1), out=dy_xhat)
                    sum_g = None  # subtracted already
                else:
                    grad_input = torch.mul(dy, gamma.view(-1) if flattened else weight, out=dy_xhat)  # ĝ
            # (5) in place: ĝ − xhat·mean(ĝ·xhat) − mean(ĝ), then · 1/σ
            grad_input.addcmul_(xh, sum_gx, value=-inv_n)
            if sum_g is not None:
                grad_input.sub_(sum_g, alpha=inv_n)
            grad_input.mul_(invstd)
        if flattened:
            grad_input = None if grad_input is None else grad_input.view(xhat.shape)
            grad_weight = None if grad_weight is None else grad_weight.view(weight.shape)
            grad_bias = None if grad_bias is None else grad_bias.view(xhat.shape[lead:])
        return grad_input, None, grad_weight, grad_bias, None, None


class GroupNormFunction(torch.autograd.Function):
    r"""Group normalization with the analytic backward pass.

    ``GroupNormFunction.apply(input, num_groups, weight, bias, eps)`` normalizes ``input`` of
    shape (N, C, \*) per example over each of ``num_groups`` groups of C/G consecutive
    channels and every spatial position, then applies the per-channel ``weight`` and
    ``bias`` (either may be ``None``). Returns ``(output, mean, var)``; ``mean`` and ``var``
    are the (N, G) statistics, biased variance, returned without gradient (InstanceNorm uses
    them to update running estimates); it saves x̂, 1/σ and γ for the backward.

    With a sixth argument ``statistics=False`` it returns ``output`` alone (every extra output
    of an autograd Function costs a few µs per call), and for float32 and float64 input the
    forward is torch's fused group-norm kernel (``torch.native_group_norm``), equations
    (1)–(4) in one call: it then saves x, mu, 1/σ and γ, and the backward evaluates (5)–(6)
    from them without forming x̂: on CPU as a loop compiled by numba
    (:func:`normlab.layers._kernels.group_norm_backward`), elsewhere in torch ops
    (:func:`_group_norm_backward_from_input`).

    The backward pass is equation (5) per group, with :math:`\hat{g} = dy\,\gamma` per channel;
    :math:`\partial L/\partial\gamma = \sum dy\,\hat{x}`, :math:`\partial L/\partial\beta =
    \sum dy` over the batch and spatial axes. First derivatives only
    (a second derivative through the input raises a RuntimeError).
    Derived in chapter ``07_layernorm``.
    """

    @staticmethod
    def forward(
        ctx: Any, input: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float,
        statistics: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        if not statistics and input.numel() and input.dtype in (torch.float32, torch.float64):
            # y from torch's fused group-norm kernel: (1)–(4) in one call, which returns the
            # (N, G) mean and 1/σ too. The backward works from x, mu and 1/σ.
            batch, channels = input.shape[0], input.shape[1]
            if not input.is_contiguous():  # the kernel refuses strided input (a transposed image)
                input = input.contiguous()
            output, mean, invstd = torch.native_group_norm(input, weight, bias, batch, channels,
                                                           input.numel() // (batch * channels), num_groups, eps)
            ctx.save_for_backward(input, mean, invstd, weight)
            return output
        grouped = input.reshape(input.shape[0], num_groups, math.prod(input.shape[1:]) // num_groups)
        xhat, mean, var, invstd = _normalize(grouped, True, eps)
        xhat = xhat.view(input.shape)
        if weight is not None and bias is not None:
            output = _addcmul_per_channel(bias, xhat, weight)  # (4)
        elif weight is not None:
            output = xhat * _channel_view(weight, xhat.dim())
        elif bias is not None:
            output = xhat + _channel_view(bias, xhat.dim())
        else:
            output = xhat.clone()
        ctx.save_for_backward(xhat, invstd, weight)
        if not statistics:
            return output
        ctx.mark_non_differentiable(mean, var)
        return output, mean.squeeze(-1), var.squeeze(-1)

    @staticmethod
    def backward(
        ctx: Any, grad_output: Tensor | None, *_grad_mean_var: Tensor | None
    ) -> tuple[Tensor | None, None, Tensor | None, Tensor | None, None, None]:
        if grad_output is None:
            return None, None, None, None, None, None
        saved = ctx.saved_tensors
        need_input, _, need_weight, need_bias = ctx.needs_input_grad[:4]
        refuse_second_derivatives("normlab's GroupNorm", "torch.nn.GroupNorm", need_input)
        if len(saved) == 4 and _kernels.serves_backward(grad_output):  # x, mu, 1/σ and γ: the compiled loop
            grad_input, grad_weight, grad_bias = _kernels.group_norm_backward(grad_output, *saved)
            return (grad_input if need_input else None, None, grad_weight if need_weight else None,
                    grad_bias if need_bias else None, None, None)
        if len(saved) == 4:  # x, mu and 1/σ from the fused forward
            return _group_norm_backward_from_input(grad_output, *saved, need_input, need_weight, need_bias)
        xhat, invstd, weight = saved  # invstd: (N, G, 1)
        batch, groups, channels = xhat.shape[0], invstd.shape[1], xhat.shape[1]
        # (N, G, C/G, S): example, group, channel in the group, spatial position. The sums
        # over S are over contiguous memory; everything per channel or per group is small.
        per_channel = (batch, groups, channels // groups, math.prod(xhat.shape[2:]))
        dy, xh = grad_output.reshape(per_channel), xhat.view(per_channel)
        dy_xhat = dy * xh  # dy·xhat, in the buffer that will hold dx
        sum_dy, sum_dyx = dy.sum(-1), dy_xhat.sum(-1)  # (N, G, C/G): Σ over the spatial positions
        grad_input = grad_weight = grad_bias = None
        if need_weight:
            grad_weight = sum_dyx.sum(0).view(channels)  # Σ dy·xhat                 (6)
        if need_bias:
            grad_bias = sum_dy.sum(0).view(channels)  # Σ dy                          (6)
        if need_input:
            inv_n = 1.0 / max(xhat.numel() // max(batch * groups, 1), 1)  # 1/n, n values per group
            if weight is None:
                scale = invstd  # γ/σ with γ = 1
            else:
                gamma = weight.view(groups, -1)
                sum_dy, sum_dyx = sum_dy * gamma, sum_dyx * gamma  # per channel: Σ ĝ, Σ ĝ·xhat
                scale = invstd * gamma  # γ/σ, (N, G, C/G)
            mean_g = sum_dy.sum(-1, keepdim=True).mul_(invstd)  # mean(ĝ)·n/σ, per group
            mean_gx = sum_dyx.sum(-1, keepdim=True).mul_(invstd)  # mean(ĝ·xhat)·n/σ
            # (5) as  γ/σ·dy − xhat·[mean(ĝ·xhat)/σ] − [mean(ĝ)/σ], in place over the dx buffer
            grad_input = torch.mul(dy, scale.unsqueeze(-1), out=dy_xhat)
            grad_input.addcmul_(xh, mean_gx.unsqueeze(-1), value=-inv_n)
            grad_input = grad_input.sub_(mean_g.unsqueeze(-1), alpha=inv_n).view(xhat.shape)
        return grad_input, None, grad_weight, grad_bias, None, None


#: Up to this ratio |mu|/σ in every group the backward sums dy·x rather than dy·(x − mu);
#: above it, or below _CENTRED_MAX_NUMEL elements, it centres x first (see
#: :func:`_group_norm_backward_from_input`).
_UNCENTRED_MAX_RATIO = 4.0
_CENTRED_MAX_NUMEL = 1 << 17


def _group_norm_backward_from_input(
    grad_output: Tensor, input: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None,
    need_input: bool, need_weight: bool, need_bias: bool,
) -> tuple[Tensor | None, None, Tensor | None, Tensor | None, None, None]:
    """Equations (5)–(6) per group from x, mu and r = 1/σ (each (N, G)), without forming x̂.

    With x̂ = (x − mu)·r every sum the closed form needs comes from two per-channel sums
    over the spatial positions, Σ dy and Σ dy·(x − mu) = Σ dy·x − mu·Σ dy:

        Σ dy·x̂ = r·Σ dy·(x − mu)                                  (per example and channel)

    and (5), with ĝ = dy·γ and n values per group, is an affine map of dy and x − mu:

        dx = r·γ·dy + a·(x − mu) + b,  a = −r²·Σ ĝ·x̂ / n,  b = −r·Σ ĝ / n

    three passes over the dx buffer (torch's CPU ``addcmul`` with two broadcast vectors is
    not vectorized, so no pass does two of them at once). For large inputs whose groups all
    have |mu|/σ ≤ ``_UNCENTRED_MAX_RATIO`` it never forms x − mu: it sums dy·x and writes
    dx = r·γ·dy + a·x + (b − a·mu), which saves a pass; both subtract a multiple of mu from
    a sum of the size of mu·Σ|dy|, and so lose about |mu|/σ float32 roundings (torch's own
    kernel sums the same way), which is why larger ratios take the centred form.
    Chapter ``07_layernorm``.
    """
    batch, groups = mean.shape
    channels = input.shape[1]
    per_channel = (batch, groups, channels // groups, -1)  # (N, G, C/G, S)
    x, dy = input.reshape(per_channel), grad_output.reshape(per_channel)
    r, mu = invstd.view(batch, groups, 1, 1), mean.view(batch, groups, 1, 1)
    centred = input.numel() < _CENTRED_MAX_NUMEL or float((mean * invstd).abs_().amax()) > _UNCENTRED_MAX_RATIO
    if centred:
        x = torch.sub(x, mu)  # x − mu: from here on the formulas read x for x − mu
    buffer = torch.mul(dy, x)  # the buffer that will hold dx
    sum_dy = dy.sum(-1, keepdim=True)  # (N, G, C/G, 1): Σ over the spatial positions
    if centred:
        sum_dyxhat = buffer.sum(-1, keepdim=True).mul_(r)  # Σ dy·x̂ = r·Σ dy·(x − mu)
    else:
        sum_dyxhat = torch.addcmul(buffer.sum(-1, keepdim=True), sum_dy, mu, value=-1).mul_(r)
    grad_input = grad_weight = grad_bias = None
    if need_weight:
        grad_weight = sum_dyxhat.sum(0).view(channels)  # Σ dy·xhat                   (6)
    if need_bias:
        grad_bias = sum_dy.sum(0).view(channels)  # Σ dy                              (6)
    if need_input:
        if weight is None:
            scale = r  # r·γ with γ = 1
            sum_g, sum_gxhat = sum_dy.sum(2, keepdim=True), sum_dyxhat.sum(2, keepdim=True)
        else:
            gamma = weight.view(groups, -1, 1)
            scale = r * gamma  # (N, G, C/G, 1)
            sum_g = (sum_dy * gamma).sum(2, keepdim=True)  # Σ ĝ, (N, G, 1, 1)
            sum_gxhat = (sum_dyxhat * gamma).sum(2, keepdim=True)  # Σ ĝ·x̂
        # −a·n and −b·n; the 1/n goes into the last two passes as their scalar (a scalar
        # factor on these small tensors would be an op of its own)
        a_n = sum_gxhat.mul_(r).mul_(r)  # r²·Σ ĝ·x̂
        b_n = sum_g.mul_(r)  # r·Σ ĝ
        if not centred:
            b_n = b_n.addcmul_(a_n, mu, value=-1)  # = −n·(b − a·mu): the constant of the map in x
        inv_n = 1.0 / (input.numel() // (batch * groups))
        grad_input = torch.mul(dy, scale, out=buffer).addcmul_(x, a_n, value=-inv_n)
        grad_input = grad_input.sub_(b_n, alpha=inv_n).view(input.shape)  # (5)
    return grad_input, None, grad_weight, grad_bias, None, None


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(normalized_shape)


def _check_trailing_shape(layer: nn.Module, input: Tensor) -> None:
    shape = layer.normalized_shape
    if tuple(input.shape[input.dim() - len(shape):]) != shape or input.dim() < len(shape):
        got = tuple(input.shape[max(input.dim() - len(shape), 0):])
        raise ValueError(
            f"{type(layer).__name__} was built with normalized_shape={shape} but got input of shape "
            f"{tuple(input.shape)}, whose last {len(shape)} dimension(s) are {got}. The normalized "
            f"dimensions must come last: build it with normalized_shape={got}, or move them to the end."
        )


class LayerNorm(nn.Module):
    r"""Layer normalization (Ba, Kiros & Hinton 2016) over the trailing ``normalized_shape``.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics per example over the last ``len(normalized_shape)`` dimensions, biased
    variance; γ and β elementwise, of shape ``normalized_shape``. The same computation in
    training and eval mode. A drop-in replacement for ``torch.nn.LayerNorm``: same arguments
    ``(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
    dtype=None)``, same parameters ``weight`` and ``bias``; the backward is
    :class:`LayerNormFunction`'s closed form.

    >>> ln = LayerNorm(64)
    >>> ln(torch.randn(8, 10, 64)).shape
    torch.Size([8, 10, 64])

    Derived in chapter ``07_layernorm``.
    """

    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        register_affine(self, self.normalized_shape, elementwise_affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0: the identity map on xhat."""
        reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        _check_trailing_shape(self, input)
        return LayerNormFunction.apply(input, len(self.normalized_shape), self.weight, self.bias, self.eps, True)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class RMSNorm(nn.Module):
    r"""Root-mean-square normalization (Zhang & Sennrich 2019) over the trailing ``normalized_shape``.

    .. math::

        y = \frac{x}{\sqrt{\mathrm{mean}(x^2) + \epsilon}} \gamma

    LayerNorm without the centring and without β. ``eps=None`` means, as in torch, the
    machine epsilon of the computation type: ``torch.finfo(torch.float64).eps`` for float64
    input and ``torch.finfo(torch.float32).eps`` for float32, float16 and bfloat16 input.
    A drop-in replacement for ``torch.nn.RMSNorm``: same arguments ``(normalized_shape,
    eps=None, elementwise_affine=True, device=None, dtype=None)``, same parameter
    ``weight``; the backward is :class:`LayerNormFunction`'s closed form with ``center=False``.

    >>> rms = RMSNorm(64)
    >>> rms(torch.randn(8, 64)).shape
    torch.Size([8, 64])

    Derived in chapter ``07_layernorm``.
    """

    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory_kwargs))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1."""
        if self.elementwise_affine:
            nn.init.ones_(self.weight)

    def forward(self, input: Tensor) -> Tensor:
        _check_trailing_shape(self, input)
        eps = self.eps
        if eps is None:  # torch's: the epsilon of the type the computation runs in
            eps = torch.finfo(torch.float64 if input.dtype == torch.float64 else torch.float32).eps
        return LayerNormFunction.apply(input, len(self.normalized_shape), self.weight, None, eps, False)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


class GroupNorm(nn.Module):
    r"""Group normalization (Wu & He 2018) of input (N, C, \*).

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    The C channels are split into ``num_groups`` groups of C/G consecutive channels;
    statistics are per example per group, over its channels and every spatial position.
    γ and β are per channel. G = 1 is LayerNorm over (C, \*); G = C is InstanceNorm.
    A drop-in replacement for ``torch.nn.GroupNorm``: same arguments ``(num_groups,
    num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True)``, same
    parameters; the backward is :class:`GroupNormFunction`'s closed form.

    >>> gn = GroupNorm(4, 16)
    >>> gn(torch.randn(2, 16, 8, 8)).shape
    torch.Size([2, 16, 8, 8])

    Derived in chapter ``07_layernorm``.
    """

    num_groups: int
    num_channels: int
    eps: float
    affine: bool

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(
                f"GroupNorm splits the channels into equal groups, but num_channels={num_channels} is not "
                f"divisible by num_groups={num_groups}. Use one of the divisors of {num_channels}: "
                f"{_divisors(num_channels)}."
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        register_affine(self, num_channels, affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0."""
        reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() < 2:
            raise ValueError(
                f"GroupNorm expects input of shape (N, C, *) with at least 2 dimensions; got {input.dim()}D "
                f"input of shape {tuple(input.shape)}. Add a batch dimension, e.g. x[None]."
            )
        if input.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm was built with num_channels={self.num_channels} but got input of shape "
                f"{tuple(input.shape)} with {input.shape[1]} channels in dimension 1. Build it with "
                f"num_channels={input.shape[1]}, or put the channels in dimension 1 (N, C, ...)."
            )
        return GroupNormFunction.apply(input, self.num_groups, self.weight, self.bias, self.eps, False)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


class _InstanceNorm(_NormBase):
    r"""Shared logic of :class:`InstanceNorm1d` and :class:`InstanceNorm2d`.

    Statistics per example per channel, over the spatial positions only: GroupNorm with one
    group per channel, through :class:`GroupNormFunction`. Constructor, parameters, buffers,
    ``reset_parameters``, ``extra_repr`` and eval mode with running estimates come from
    :class:`~normlab.layers._common._NormBase`, which BatchNorm shares (as in torch); nothing of
    BatchNorm's batch statistics is inherited. torch's InstanceNorm defaults: ``affine=False,
    track_running_stats=False``.

    With ``track_running_stats=True``, as torch: in training mode the running estimates
    move towards the batch average of the per-instance mean and *unbiased* variance
    (``momentum=None`` leaves them where they are; ``num_batches_tracked`` is never
    incremented), and eval mode normalizes with them like BatchNorm in eval mode.
    Derived in chapter ``07_layernorm``.
    """

    _no_batch_dim: int

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        feature_dim = input.dim() - self._no_batch_dim
        if input.shape[feature_dim] != self.num_features:
            message = (
                f"{type(self).__name__} was built with num_features={self.num_features} but got input of "
                f"shape {tuple(input.shape)} with {input.shape[feature_dim]} channels in dimension "
                f"{feature_dim}. Build it with num_features={input.shape[feature_dim]}."
            )
            if self.affine or self.track_running_stats:
                raise ValueError(message)
            # as torch: without γ, β or running statistics num_features is never used
            warnings.warn(message + " (num_features is unused with affine=False.)", stacklevel=2)
        if input.dim() == self._no_batch_dim:
            return self._instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._instance_norm(input)

    def _instance_norm(self, input: Tensor) -> Tensor:
        if not self.training and self.track_running_stats:
            return self._normalize_with_running_stats(input)
        if math.prod(input.shape[2:]) == 1:
            raise ValueError(
                f"{type(self).__name__} needs more than one spatial value per channel to compute "
                f"statistics; got input of shape {tuple(input.shape)}. Use a longer input, or "
                "track_running_stats=True and eval()."
            )
        if not (self.training and self.track_running_stats and self.momentum is not None):
            return GroupNormFunction.apply(input, input.shape[1], self.weight, self.bias, self.eps, False)
        output, mean, var = GroupNormFunction.apply(input, input.shape[1], self.weight, self.bias, self.eps)
        m = math.prod(input.shape[2:])
        with torch.no_grad():
            self.running_mean.lerp_(mean.mean(0), self.momentum)
            self.running_var.lerp_((var * (m / (m - 1))).mean(0), self.momentum)
        return output


class InstanceNorm1d(_InstanceNorm):
    r"""Instance normalization (Ulyanov et al. 2016) of input (N, C, L), or unbatched (C, L).

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics per example per channel over the length L. A drop-in replacement for
    ``torch.nn.InstanceNorm1d``: same arguments ``(num_features, eps=1e-5, momentum=0.1,
    affine=False, track_running_stats=False, device=None, dtype=None)``, same parameters
    and buffers (see :class:`_InstanceNorm`).

    >>> InstanceNorm1d(4)(torch.randn(2, 4, 10)).shape
    torch.Size([2, 4, 10])

    Derived in chapter ``07_layernorm``.
    """

    _no_batch_dim = 2

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            hint = " For images (N, C, H, W) use InstanceNorm2d." if input.dim() == 4 else ""
            raise ValueError(
                f"InstanceNorm1d expects 3D input (N, C, L) or unbatched 2D input (C, L); got {input.dim()}D "
                f"input of shape {tuple(input.shape)}.{hint}"
            )


class InstanceNorm2d(_InstanceNorm):
    r"""Instance normalization (Ulyanov et al. 2016) of input (N, C, H, W), or unbatched (C, H, W).

    Statistics per example per channel over the H·W pixels. A drop-in replacement for
    ``torch.nn.InstanceNorm2d``, with the same arguments, parameters and buffers as
    :class:`InstanceNorm1d`.

    >>> InstanceNorm2d(3)(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])

    Derived in chapter ``07_layernorm``.
    """

    _no_batch_dim = 3

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (3, 4):
            hint = " For (N, C, L) input use InstanceNorm1d." if input.dim() == 2 else ""
            raise ValueError(
                f"InstanceNorm2d expects 4D input (N, C, H, W) or unbatched 3D input (C, H, W); got "
                f"{input.dim()}D input of shape {tuple(input.shape)}.{hint}"
            )
