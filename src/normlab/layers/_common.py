r"""Helpers shared by the normalization layers' autograd Functions (``batchnorm``, ``layernorm``).

- :func:`_channel_view`, :func:`_reduction_dims`: a per-channel vector broadcast against (N, C, \*)
  input, and the axes that batch statistics pool over.
- :func:`_batch_sum`, :func:`_batch_mean`: per-channel sums and means over those axes, the fast
  way for the input's shape.
- :func:`_fused_batch_mean_var`: per-channel mean and biased variance of (N, C) input, fused.
- :func:`_addcmul_per_channel`: shift + input · scale with per-channel vectors, in one or two passes.
- :func:`refuse_second_derivatives`: the clear error for create_graph through a closed-form backward.
- :func:`register_affine`, :func:`reset_affine`: the learned scale γ (``weight``) and shift β
  (``bias``) that every normalization layer shares, under torch's names (state dicts load both ways).
- :class:`_NormBase`: what BatchNorm and InstanceNorm share, as torch's ``_NormBase``: the
  constructor, γ and β, the running estimates and eval mode with them. Batch statistics and
  their updates are :class:`normlab.layers.batchnorm._BatchNorm`'s alone.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn


def _channel_view(vector: Tensor, ndim: int) -> Tensor:
    """A (C,) vector viewed as (C, 1, ...) so it broadcasts along dimension 1 of an ndim-D input.

    For (N, C) input the vector broadcasts as it is, and no view (one op fewer) is made.
    """
    return vector if ndim == 2 else vector.view((-1,) + (1,) * (ndim - 2))


@functools.cache
def _reduction_dims(ndim: int) -> tuple[int, ...]:
    """The axes batch statistics pool over: the batch axis and every spatial axis."""
    return (0,) + tuple(range(2, ndim))


#: From this many elements on, per-channel sums and means of an (N, C) matrix run as a
#: matrix-vector product (below that, the call overhead of the product costs more).
_GEMV_MIN_NUMEL = 1 << 15


def _use_gemv(tensor: Tensor) -> bool:
    # the size first: small inputs, whose cost is the number of calls, leave after one test
    return (tensor.numel() >= _GEMV_MIN_NUMEL and tensor.dim() == 2 and tensor.device.type == "cpu"
            and tensor.dtype in (torch.float32, torch.float64))


def _batch_sum(tensor: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Σ of ``tensor`` over ``dims`` (the batch axis and any spatial axes): one value per channel.

    A large (N, C) matrix is summed over its rows as ``tensorᵀ · 1``: BLAS's matrix-vector
    product reads it at full speed, torch's CPU reduction over dimension 0 about 1.5x slower
    (512×1024, one thread).
    """
    if _use_gemv(tensor):
        return torch.mv(tensor.t(), torch.ones(tensor.shape[0], dtype=tensor.dtype))
    return tensor.sum(dims)


def _batch_mean(tensor: Tensor, dims: tuple[int, ...]) -> Tensor:
    """The mean of ``tensor`` over ``dims``, one value per channel; see :func:`_batch_sum`."""
    if _use_gemv(tensor):
        return torch.mv(tensor.t(), torch.full((tensor.shape[0],), 1.0 / tensor.shape[0], dtype=tensor.dtype))
    return tensor.mean(dims)


def _fused_batch_mean_var(input: Tensor) -> tuple[Tensor, Tensor] | None:
    """Per-channel mean and biased variance of (N, C) input from torch's fused kernel, or None.

    For (N, C) input in float32 or float64, ``torch.batch_norm_update_stats`` (without running
    estimates: it only computes) returns both from one read of the input, accumulating in
    float64: 2.5 µs at 8×64 against 8 µs for mean, x − mean, its square and their mean;
    55 µs against 150 µs at 512×1024. None otherwise (and for an empty batch, which that kernel
    refuses): for (N, C, H, W) input the two-pass textbook formula is as fast at 8×16×8×8 and
    faster at 32×64×32×32 (torch's kernel: 2.4 ms).
    """
    if input.dim() == 2 and input.dtype in (torch.float32, torch.float64) and input.numel():
        return torch.batch_norm_update_stats(input, None, None, 0.0)
    return None


def _addcmul_per_channel(shift: Tensor, input: Tensor, scale: Tensor, out: Tensor | None = None) -> Tensor:
    """shift + input · scale, with shift and scale (C,) vectors, optionally written into out.

    For (N, C) input this is one fused pass of ``torch.addcmul``. With spatial axes both
    vectors broadcast along the innermost axis, where torch's CPU addcmul kernel is not
    vectorized (about 4x slower at (32, 64, 32, 32)), so a multiply and an in-place add
    do it instead.
    """
    ndim = input.dim()
    if ndim == 2:
        return torch.addcmul(shift, input, scale, out=out)
    return torch.mul(input, _channel_view(scale, ndim), out=out).add_(_channel_view(shift, ndim))


def refuse_second_derivatives(function: str, oracle: str, input_needs_grad: bool) -> None:
    """Raise if autograd is recording this closed-form backward (``create_graph=True``)
    while the input needs a gradient.

    The closed form treats the saved x̂ and 1/σ as constants, so a graph built from it
    would give silently wrong second derivatives through the input (a Hessian-vector
    product, a gradient penalty). With the input constant, second derivatives in γ and
    β alone are right and allowed.
    """
    if input_needs_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"{function} has a first-order, closed-form backward: it cannot be differentiated twice "
            f"(create_graph=True) with respect to its input. For second derivatives (Hessian-vector "
            f"products, gradient penalties) use {oracle}, whose backward is differentiable."
        )


def register_affine(module: nn.Module, shape, enabled: bool, bias: bool, factory_kwargs: dict) -> None:
    """Give ``module`` a ``weight`` (γ) and, if ``bias``, a ``bias`` (β) of ``shape``; both None
    when ``enabled`` is False. Call :func:`reset_affine` afterwards to set γ = 1, β = 0."""
    if enabled:
        module.weight = nn.Parameter(torch.empty(shape, **factory_kwargs))
        if bias:
            module.bias = nn.Parameter(torch.empty(shape, **factory_kwargs))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def reset_affine(module: nn.Module) -> None:
    """γ = 1, β = 0: the identity map on the normalized input."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class _NormBase(nn.Module):
    r"""What :class:`~normlab.layers.BatchNorm1d`, :class:`~normlab.layers.BatchNorm2d` and the
    InstanceNorm layers share, as ``torch.nn.modules.batchnorm._NormBase``: the arguments
    ``(num_features, eps, momentum, affine, track_running_stats, device, dtype, *, bias)``,
    γ (``weight``) and β (``bias``) per channel, the buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` (None without ``track_running_stats``), ``reset_parameters`` and
    ``extra_repr``; and eval mode with the running estimates, the fixed affine map
    ``y = x · γ/√(running_var + ε) + (β − running_mean · γ/√(running_var + ε))``.

    Nothing here computes statistics of a batch: that is ``_BatchNorm``'s (chapter
    ``02_batchnorm``), and InstanceNorm computes its own per example (chapter ``07_layernorm``).
    Subclasses say which input dimensions they accept (``_check_input_dim``) and define ``forward``.
    """

    _version = 2  # torch's: state_dict metadata of the two modules are the same
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        register_affine(self, num_features, affine, bias, factory_kwargs)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batches seen."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running estimates, and γ = 1, β = 0 (the identity map on xhat)."""
        self.reset_running_stats()
        reset_affine(self)

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )

    def _normalize_with_running_stats(self, input: Tensor) -> Tensor:
        """Eval mode: the affine map x · scale + shift with the running estimates."""
        scale = torch.rsqrt(self.running_var + self.eps)
        if self.weight is not None:
            scale = self.weight * scale
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return _addcmul_per_channel(shift, input, scale)
