"""Batch normalization as torch modules, with the backward pass written out by hand.

- :class:`BatchNormFunction`: the training-mode forward and the analytic backward,
  as a ``torch.autograd.Function``.
- :class:`BatchNorm1d`, :class:`BatchNorm2d`: drop-in replacements for
  ``torch.nn.BatchNorm1d`` and ``torch.nn.BatchNorm2d``: same constructor, same
  parameters and buffers (so ``state_dict`` loads both ways), same train/eval semantics.

The equations, per channel over the m values that share it (the batch and every
spatial position), with the names used in ``normlab.functional``:

    mu   = mean(x)                      batch mean                          (1)
    var  = mean((x − mu)²)              biased batch variance                (2)
    xhat = (x − mu) / √(var + ε)        normalized input                     (3)
    y    = γ · xhat + β                 scale and shift                      (4)

    dx = γ/σ · (dy − mean(dy) − xhat · mean(dy · xhat)),   σ = √(var + ε)   (5)
    dγ = Σ dy · xhat,   dβ = Σ dy                                            (6)

For speed the forward takes (1)–(2), or for training batches without spatial axes or small
ones (1)–(4) and the running estimates, from torch's fused CPU kernels (see
:class:`BatchNormFunction`); the backward, (5)–(6), is always normlab's closed form: on CPU
tensors in float32 and float64 as a loop that numba compiles
(:func:`normlab.layers._kernels.batch_norm_backward`), elsewhere written here in torch ops.

Chapter ``02_batchnorm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from normlab.layers import _kernels
from normlab.layers._common import (  # refuse_second_derivatives is also imported from here by other layers
    _GEMV_MIN_NUMEL,
    _addcmul_per_channel,
    _batch_mean,
    _batch_sum,
    _channel_view,
    _fused_batch_mean_var,
    _reduction_dims,
    _NormBase,
    _use_gemv,
    refuse_second_derivatives,
)

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormFunction"]


class BatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch normalization with the analytic backward pass.

    ``BatchNormFunction.apply(input, weight, bias, eps)`` normalizes ``input`` of shape
    (N, C, \*) per channel with the statistics of this batch (equations 1–4 of the
    module docstring) and returns ``(output, mean, var)``: ``mean`` and ``var`` are the
    (C,) batch mean and *biased* batch variance, returned (not differentiable) so the
    caller can update running estimates without computing them twice. ``weight`` and
    ``bias`` may be ``None`` (γ = 1, β = 0). With a fifth argument ``on_statistics``, a
    callable, the forward calls ``on_statistics(input, mean, var)`` instead and returns
    ``output`` alone (the modules update their running estimates this way: every extra
    output of an autograd Function costs a few µs per call, as much as two small ops).
    For (N, C) input the mean and variance come from torch's fused statistics kernel
    (:func:`~normlab.layers._common._fused_batch_mean_var`), x̂ and y from equations (3)–(4).

    With a sixth argument ``running = (running_mean, running_var, momentum)`` the forward is
    one fused kernel instead (``torch.native_batch_norm``): equations (1)–(4), and the running
    estimates moved in place towards the batch mean and unbiased variance, accumulated in
    float64; it returns ``output`` alone. The modules take this path for (N, C) batches and
    small batches with spatial axes (:meth:`_BatchNorm._fusable`), and guard the running
    estimates against a non-finite batch themselves (:meth:`_BatchNorm._fused_training_step`).

    The backward pass does not differentiate through the graph of the forward; it
    implements the closed form, summing over the batch and spatial axes:

    .. math::

        \frac{\partial L}{\partial x} = \frac{\gamma}{\sigma}\Big(dy - \mathrm{mean}(dy)
            - \hat{x}\,\mathrm{mean}(dy\,\hat{x})\Big), \qquad
        \frac{\partial L}{\partial \gamma} = \sum dy\,\hat{x}, \qquad
        \frac{\partial L}{\partial \beta} = \sum dy.

    On CPU tensors in float32 and float64 the forward saves x, mu, 1/σ and γ, and the
    backward is this closed form as a loop compiled by numba
    (:func:`normlab.layers._kernels.batch_norm_backward`). Otherwise it is written here in
    torch ops, from the saved x̂ and 1/σ (and γ), or from x, mu and 1/σ after the fused forward
    (x̂ = (x − mu)·1/σ first); the torch-ops form also runs while autograd records the
    backward (``create_graph=True``). First derivatives only: differentiating the backward
    again with respect to the input raises a RuntimeError (:func:`refuse_second_derivatives`)
    instead of a wrong answer.
    Derived in chapter ``02_batchnorm``.
    """

    @staticmethod
    def forward(
        ctx: Any, input: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
        on_statistics: Callable[[Tensor, Tensor, Tensor], None] | None = None,
        running: tuple[Tensor, Tensor, float] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        if running is not None:  # (1)–(4) and the running estimates in one kernel
            output, mean, invstd = torch.native_batch_norm(input, weight, bias, running[0], running[1], True,
                                                           running[2], eps)
            ctx.save_for_backward(input, mean, invstd, weight)
            return output
        ndim = input.dim()
        statistics = _fused_batch_mean_var(input)  # (1), (2) in one kernel for (N, C) input
        mean = _batch_mean(input, _reduction_dims(ndim)) if statistics is None else statistics[0]  # (1)
        xhat = input - _channel_view(mean, ndim)  # x − mu; becomes xhat below
        output = None  # the buffer that will hold y
        if statistics is None:
            output = torch.mul(xhat, xhat)  # (x − mu)²
            var = _batch_mean(output, _reduction_dims(ndim))  # (2), two-pass: no cancellation
        else:
            var = statistics[1]
        invstd = torch.rsqrt(var + eps)  # 1/σ
        xhat.mul_(_channel_view(invstd, ndim))  # (3)
        if weight is not None and bias is not None:
            output = _addcmul_per_channel(bias, xhat, weight, out=output)  # (4)
        elif weight is not None:
            output = torch.mul(xhat, _channel_view(weight, ndim), out=output)
        elif bias is not None:
            output = torch.add(xhat, _channel_view(bias, ndim), out=output)
        else:
            output = xhat.clone()  # a copy, so an in-place op on y cannot change the saved xhat
        if _kernels.available(input):  # the compiled backward works from x, mu and 1/σ
            ctx.save_for_backward(input, mean, invstd, weight)
        else:
            ctx.save_for_backward(xhat, invstd, weight)
        if on_statistics is not None:  # one output: each extra output of a Function costs a few µs
            on_statistics(input, mean, var)
            return output
        ctx.mark_non_differentiable(mean, var)
        return output, mean, var

    @staticmethod
    def backward(
        ctx: Any, grad_output: Tensor | None, *_grad_mean_var: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        if grad_output is None:
            return (None,) * len(ctx.needs_input_grad)
        saved = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        refuse_second_derivatives("normlab's BatchNorm", "torch.nn.BatchNorm1d/2d", need_input)
        if len(saved) == 4 and _kernels.serves_backward(grad_output):  # x, mu, 1/σ, γ: the compiled loop
            grad_input, grad_weight, grad_bias = _kernels.batch_norm_backward(grad_output, *saved)
            return (grad_input if need_input else None, grad_weight if need_weight else None,
                    grad_bias if need_bias else None) + (None,) * (len(ctx.needs_input_grad) - 3)
        if len(saved) == 4:  # x, mu and 1/σ from the fused forward: xhat = (x − mu)·1/σ     (3)
            input, mean, invstd, weight = saved
            ndim = input.dim()
            xhat = torch.sub(input, _channel_view(mean, ndim)).mul_(_channel_view(invstd, ndim))
        else:
            xhat, invstd, weight = saved
        ndim = xhat.dim()
        dims = _reduction_dims(ndim)
        grad_bias = _batch_sum(grad_output, dims)  # Σ dy                                  (6)
        dy_xhat = torch.mul(grad_output, xhat)  # dy·xhat, in the buffer that will hold dx
        grad_weight = _batch_sum(dy_xhat, dims)  # Σ dy·xhat                               (6)
        grad_input = None
        if need_input:
            inv_m = 1.0 / max(xhat.numel() // max(xhat.shape[1], 1), 1)  # 1/m, m values per channel (dx is
            # empty when m = 0)
            scale = invstd if weight is None else weight * invstd  # γ/σ
            if _use_gemv(xhat):
                # large (N, C): (5) in two fused passes over the dx buffer, for three more
                # per-channel ops (which cost more than the pass they save on small input):
                #   γ/σ·dy − γ/σ·mean(dy),  − xhat·γ/σ·mean(dy·xhat)
                coefficient = scale * -inv_m  # −γ/(σm)
                grad_input = torch.addcmul(grad_bias * coefficient, grad_output, scale, out=dy_xhat)
                grad_input.addcmul_(xhat, grad_weight * coefficient)
            else:
                # (5) in three passes over the dx buffer (with spatial axes, the shift and scale
                # of dy above would take two passes themselves, see _addcmul_per_channel):
                #   dy − xhat·mean(dy·xhat),  − mean(dy),  · γ/σ
                grad_input = torch.addcmul(grad_output, xhat, _channel_view(grad_weight, ndim), value=-inv_m,
                                           out=dy_xhat)
                grad_input.sub_(_channel_view(grad_bias, ndim), alpha=inv_m)
                grad_input.mul_(_channel_view(scale, ndim))
        return (
            grad_input,
            grad_weight if need_weight else None,
            grad_bias if need_bias else None,
        ) + (None,) * (len(ctx.needs_input_grad) - 3)


class _BatchNorm(_NormBase):
    r"""Shared logic of :class:`BatchNorm1d` and :class:`BatchNorm2d`.

    Training mode (or no running estimates): normalize with the statistics of the
    batch, ``y = (x − mean) / √(var + ε) · γ + β`` with the biased variance, through
    :class:`BatchNormFunction`; if running estimates are tracked, move them towards the
    batch's, with the *unbiased* variance var · m/(m − 1):

    .. math::

        \hat{\mu} \leftarrow (1 - \text{momentum})\,\hat{\mu} + \text{momentum}\,\mu_t,

    or, with ``momentum=None``, the cumulative average (momentum = 1/num_batches_tracked).
    Eval mode with running estimates: the fixed affine map
    ``y = x · γ/√(running_var + ε) + (β − running_mean · γ/√(running_var + ε))``.
    The constructor, γ, β, the running estimates and eval mode are :class:`~normlab.layers._common._NormBase`'s;
    this class adds batch statistics and their updates. Subclasses only say which input
    dimensions they accept.
    Derived in chapter ``02_batchnorm``.
    """

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_num_channels(input)
        # As torch: batch statistics in training mode, and in eval mode when there are no
        # running estimates; running estimates are updated only in training mode, and only
        # when track_running_stats is (still) True.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch_stats:
            return self._normalize_with_running_stats(input)
        self._check_batch_size(input)
        if self.training and self.track_running_stats and self.running_mean is not None:
            if self._fusable(input):
                return self._fused_training_step(input)
            # the running estimates move inside the forward: the Function then has one output
            return BatchNormFunction.apply(input, self.weight, self.bias, self.eps, self._update_running_stats)
        output, _, _ = BatchNormFunction.apply(input, self.weight, self.bias, self.eps)
        return output

    def _fusable(self, input: Tensor) -> bool:
        """Whether a training step may run through the fused forward of :class:`BatchNormFunction`:
        a non-empty input of the running estimates' floating type, (N, C) or small. Large inputs
        with spatial axes take the unfused forward, which is faster there (forward+backward,
        both with the compiled backward, against torch's at 32×64×32×32: 0.84-0.86 unfused,
        0.90-0.99 fused; at 512×1024 fused 0.84-0.90, unfused 1.67-2.0, one run each)."""
        return (0 < input.numel() and (input.dim() == 2 or input.numel() < _GEMV_MIN_NUMEL)
                and input.dtype == self.running_mean.dtype and input.dtype in (torch.float32, torch.float64))

    def _fused_training_step(self, input: Tensor) -> Tensor:
        """Training mode through the fused forward of :class:`BatchNormFunction`, whose kernel
        moves the running estimates itself. A NaN or Inf in the batch (or a variance that
        overflows) would poison them; so they are copied first (two copies of C values), tested
        after (one dot product and one read of one number), and if not finite restored, and the
        step rerun unfused, which raises the clear error when the batch is at fault."""
        buffers = self._buffers  # a dict lookup each, not nn.Module.__getattr__
        running_mean, running_var = buffers["running_mean"], buffers["running_var"]
        num_batches_tracked = buffers["num_batches_tracked"]
        momentum = self.momentum
        if momentum is None:  # cumulative moving average, counting this batch
            momentum = 1.0 / (float(num_batches_tracked) + 1.0)
        mean_before, var_before = running_mean.clone(), running_var.clone()
        output = BatchNormFunction.apply(input, self.weight, self.bias, self.eps, None,
                                         (running_mean, running_var, momentum))
        if not math.isfinite(torch.dot(running_mean, running_var).item()):
            running_mean.copy_(mean_before)
            running_var.copy_(var_before)
            return BatchNormFunction.apply(input, self.weight, self.bias, self.eps, self._update_running_stats)
        num_batches_tracked.add_(1)
        return output

    def _update_running_stats(self, input: Tensor, mean: Tensor, var: Tensor) -> None:
        """Move the running estimates towards the batch mean and unbiased batch variance.

        No ``torch.no_grad()`` needed: the buffers do not require gradients, and ``mean`` and
        ``var`` are non-differentiable outputs of :class:`BatchNormFunction` (or, as ``forward``
        passes this method to it as ``on_statistics``, tensors inside its forward).
        """
        numel = input.numel()  # an empty batch counts, but carries no statistics (as torch)
        # var = mean((x − mean)²) is NaN or Inf whenever the input or the mean is; one sum and
        # one sync (a read of one number, not a pass over the input) test it, and the
        # per-channel test runs only if that sum is not finite.
        if numel and not math.isfinite(var.sum().item()) and not bool(torch.isfinite(var).all()):
            self._raise_non_finite(input)
        buffers = self._buffers  # a dict lookup each, not nn.Module.__getattr__ (0.5 µs each)
        num_batches_tracked = buffers["num_batches_tracked"]
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
        if not numel:
            return
        momentum = self.momentum
        if momentum is None:  # cumulative moving average
            momentum = 1.0 / float(num_batches_tracked)
        m = numel // input.shape[1]
        buffers["running_mean"].lerp_(mean, momentum)
        # running_var ← (1 − momentum)·running_var + momentum·var·m/(m − 1), as a lerp towards the
        # biased var plus the rest of the unbiased one: two in-place ops and no temporary
        buffers["running_var"].lerp_(var, momentum).add_(var, alpha=momentum / (m - 1))

    def _raise_non_finite(self, input: Tensor) -> None:
        if torch.isfinite(input).all():
            problem = f"the batch variance of input of shape {tuple(input.shape)} overflowed to inf"
            fix = "Rescale the input (or train in float64)"
        else:
            problem = f"got input of shape {tuple(input.shape)} containing NaN or Inf"
            fix = "Find where the NaN or Inf comes from (often a learning rate that is too large)"
        raise ValueError(
            f"{type(self).__name__} {problem} in training mode; its batch statistics would "
            f"poison running_mean and running_var, which eval() uses. {fix}, or construct "
            f"the layer with track_running_stats=False."
        )

    def _check_num_channels(self, input: Tensor) -> None:
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__} was built with num_features={self.num_features} but got input of "
                f"shape {tuple(input.shape)} with {input.shape[1]} channels in dimension 1. Build it with "
                f"num_features={input.shape[1]}, or put the channels in dimension 1 (N, C, ...)."
            )

    def _check_batch_size(self, input: Tensor) -> None:
        values_per_channel = input.shape[0] * math.prod(input.shape[2:])
        if values_per_channel == 1:
            if self.training:
                raise ValueError(
                    "BatchNorm needs more than one value per channel in training mode; got input of shape "
                    f"{tuple(input.shape)}. Use eval() or a batch larger than 1."
                )
            raise ValueError(
                "BatchNorm needs more than one value per channel when it has no running statistics "
                f"(track_running_stats=False); got input of shape {tuple(input.shape)}. Use a batch larger "
                "than 1, or track_running_stats=True and eval()."
            )


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization over a 2D input (N, C) or a 3D input (N, C, L).

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics are per feature C, over the batch (and the length L for 3D input). A
    drop-in replacement for ``torch.nn.BatchNorm1d``: same arguments
    ``(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None, *, bias=True)``, same parameters ``weight``, ``bias`` and
    buffers ``running_mean``, ``running_var``, ``num_batches_tracked``, same train/eval
    behaviour (see :class:`_BatchNorm`), so state dicts load both ways.

    >>> bn = BatchNorm1d(64)
    >>> bn(torch.randn(32, 64)).shape
    torch.Size([32, 64])

    Derived in chapter ``02_batchnorm``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            hint = " For images (N, C, H, W) use BatchNorm2d." if input.dim() == 4 else ""
            raise ValueError(
                f"BatchNorm1d expects 2D input (N, C) or 3D input (N, C, L); got {input.dim()}D input "
                f"of shape {tuple(input.shape)}.{hint}"
            )


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization over a 4D input (N, C, H, W), per channel C.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    Statistics are per channel over the batch and every pixel, m = N·H·W values each.
    A drop-in replacement for ``torch.nn.BatchNorm2d``, with the same arguments,
    parameters, buffers and train/eval behaviour as :class:`BatchNorm1d`.

    >>> bn = BatchNorm2d(16)
    >>> bn(torch.randn(8, 16, 5, 5)).shape
    torch.Size([8, 16, 5, 5])

    Derived in chapter ``02_batchnorm``.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            hint = " For (N, C) or (N, C, L) input use BatchNorm1d." if input.dim() in (2, 3) else ""
            raise ValueError(
                f"BatchNorm2d expects 4D input (N, C, H, W); got {input.dim()}D input of shape "
                f"{tuple(input.shape)}.{hint}"
            )
