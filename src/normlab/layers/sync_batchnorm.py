"""Batch normalization with statistics synchronized across processes (torch.distributed).

- :class:`SyncBatchNormFunction`: the training-mode forward and the analytic backward across ranks.
- :class:`SyncBatchNorm`: a drop-in replacement for ``torch.nn.SyncBatchNorm`` (same constructor, buffers
  and ``state_dict`` keys, :meth:`SyncBatchNorm.convert_sync_batchnorm`) that runs on every
  torch.distributed backend, gloo on the CPU included.

Rank i holds n_i values per channel (the shards may differ in size). Per channel, with
n = Σ n_i the global count:

    forward, one all-reduce of the per-rank partial moments (n_i, mean_i, M2_i),
    M2_i = Σ_rank-i (x − mean_i)² (two-pass on the rank):
      mu   = Σ n_i mean_i / n                                   global mean            (1)
      M2   = Σ M2_i + Σ n_i (mean_i − mu)²                      Chan et al.'s merge    (2)
      var  = M2 / n                                             biased global variance (3)
      xhat = (x − mu)/σ,  σ = √(var + ε),   y = γ xhat + β                             (4)

    backward, one all-reduce of the per-rank sums (Σ_i dy, Σ_i dy·xhat):
      dx = γ/σ · (dy − (Σ dy)/n − xhat · (Σ dy·xhat)/n)         chapter 2's (5), global means (5)
      dγ = Σ_i dy·xhat,  dβ = Σ_i dy   (this rank's share; data parallelism sums them)  (6)

Why partial moments, not sums of squares: var = Σx²/n − mu² subtracts two numbers of size
mu² + var, so in float32 (ε ≈ 6·10⁻⁸) it loses every digit once |mu|/σ ≳ 10³ and can even turn
negative; (2) only adds non-negative terms, and mean_i − mu is a difference of means, of size
σ/√n_i, not of squares. Each rank writes its row of a (world_size, 2C + 1) tensor and the
all-reduce (a sum) gathers the rows, so the merge is done in the same order on every rank and
every rank gets bit-identical statistics.

Chapter ``12_batchnorm_at_scale``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from normlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNormFunction, _BatchNorm, refuse_second_derivatives

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction", "merge_moments"]


def _channel_view(vector: Tensor, ndim: int) -> Tensor:
    return vector.view((1, -1) + (1,) * (ndim - 2))


def _dims(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def merge_moments(counts: Tensor, means: Tensor, m2s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Merge per-shard moments into those of the union: equations (1)–(2) of the module docstring.

    ``counts`` (k,), ``means`` and ``m2s`` (k, C): shard i has ``counts[i]`` values per channel,
    mean ``means[i]`` and sum of squared deviations ``m2s[i]``. Returns the total count, the
    global mean (C,) and the global sum of squared deviations M2 (C,); the biased variance is
    M2 / n. Shards with no values contribute nothing. (Chan, Golub & LeVeque's pairwise
    update, done for all shards at once.)
    Chapter ``12_batchnorm_at_scale``.
    """
    total = counts.sum()
    weights = (counts / total).unsqueeze(1)
    mean = (weights * means).sum(0)  # (1)
    between = (counts.unsqueeze(1) * (means - mean) ** 2).sum(0)
    return total, mean, m2s.sum(0) + between  # (2)


class SyncBatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch normalization with statistics over every rank of a process group.

    ``SyncBatchNormFunction.apply(input, weight, bias, eps, group, world_size)`` returns
    ``(output, mean, var, count)``: the output normalized with the global statistics, the (C,)
    global mean and biased variance and the global number of values per channel (a 0-D float
    tensor), the last three not differentiable. Forward: one all-reduce (equations 1–4 of the
    module docstring). Backward: one all-reduce of Σdy and Σdy·x̂, then chapter 2's closed form
    with global means,

    .. math::

        \frac{\partial L}{\partial x} = \frac{\gamma}{\sigma}\Big(dy - \frac{1}{n}\sum_{\text{all ranks}} dy
            - \hat{x}\,\frac{1}{n}\sum_{\text{all ranks}} dy\,\hat{x}\Big),

    and this rank's share of dγ = Σ dy·x̂ and dβ = Σ dy. Every rank must call it (collectives),
    with the same number of channels and dtype. First derivatives only.
    Derived in chapter ``12_batchnorm_at_scale``.
    """

    @staticmethod
    def forward(ctx: Any, input: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, group: Any,
                world_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ndim = input.dim()
        dims = _dims(ndim)
        channels = input.shape[1]
        local_count = input.numel() // channels if channels else 0
        rank = dist.get_rank(group)
        # Row `rank` of `table` holds this rank's (n_i, mean_i, M2_i); the others stay 0 and the
        # all-reduce (sum) fills them in: an all-gather that every backend implements.
        table = torch.zeros(world_size, 2 * channels + 1, dtype=input.dtype, device=input.device)
        row = table[rank]
        row[0] = local_count
        if local_count > 0:
            local_mean = input.mean(dims)
            centred = input - _channel_view(local_mean, ndim)
            row[1 : channels + 1] = local_mean
            row[channels + 1 :] = (centred * centred).sum(dims)  # M2_i, two-pass on the rank
        dist.all_reduce(table, group=group)
        counts = table[:, 0]
        total, mean, m2 = merge_moments(counts, table[:, 1 : channels + 1], table[:, channels + 1 :])
        if total.item() <= 1:
            raise ValueError(
                f"SyncBatchNorm needs more than one value per channel over all {world_size} ranks in training "
                f"mode; got {int(total.item())} (this rank's input has shape {tuple(input.shape)}). Use eval() "
                "or larger batches."
            )
        var = m2 / total  # (3)
        invstd = torch.rsqrt(var + eps)
        xhat = (input - _channel_view(mean, ndim)) * _channel_view(invstd, ndim)  # (4)
        if weight is not None:
            output = xhat * _channel_view(weight, ndim)
            if bias is not None:
                output = output + _channel_view(bias, ndim)
        elif bias is not None:
            output = xhat + _channel_view(bias, ndim)
        else:
            output = xhat.clone()
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.group, ctx.world_size, ctx.total = group, world_size, total
        ctx.mark_non_differentiable(mean, var, total)
        ctx.set_materialize_grads(False)
        return output, mean, var, total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None, *_unused: Any) -> tuple[Tensor | None, ...]:
        if grad_output is None:
            return None, None, None, None, None, None
        xhat, invstd, weight = ctx.saved_tensors
        ndim = xhat.dim()
        dims = _dims(ndim)
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        refuse_second_derivatives("normlab's SyncBatchNorm", "torch.nn.SyncBatchNorm", need_input)
        grad_bias = grad_output.sum(dims)  # this rank's Σ dy                      (6)
        grad_weight = (grad_output * xhat).sum(dims)  # this rank's Σ dy·xhat        (6)
        grad_input = None
        if need_input:
            sums = torch.cat([grad_bias, grad_weight])
            dist.all_reduce(sums, group=ctx.group)  # global Σ dy, Σ dy·xhat
            channels = grad_bias.shape[0]
            mean_dy = sums[:channels] / ctx.total
            mean_dy_xhat = sums[channels:] / ctx.total
            scale = invstd if weight is None else weight * invstd  # γ/σ
            grad_input = (grad_output - _channel_view(mean_dy, ndim)
                          - xhat * _channel_view(mean_dy_xhat, ndim)) * _channel_view(scale, ndim)  # (5)
        return (grad_input, grad_weight if need_weight else None, grad_bias if need_bias else None,
                None, None, None)


class SyncBatchNorm(_BatchNorm):
    r"""Batch normalization whose training-mode statistics span every rank of a process group.

    A drop-in replacement for ``torch.nn.SyncBatchNorm``: the same arguments
    ``(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    process_group=None, device=None, dtype=None, *, bias=True)``, the same parameters and buffers
    (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), so state
    dicts load both ways. Unlike torch's, it runs on every backend, gloo on the CPU included, and
    the ranks may hold batches of different sizes (even empty ones).

    - Training mode in an initialized process group of more than one rank: normalize with the
      mean and biased variance of the union of all ranks' batches (:class:`SyncBatchNormFunction`;
      one all-reduce forward, one backward), and move the running estimates towards the global
      mean and the global *unbiased* variance var · n/(n − 1). Every rank ends with the same
      running estimates.
    - Eval mode (with running estimates): the affine map of :class:`BatchNorm1d`; nothing is
      communicated, so ranks may evaluate alone.
    - No initialized process group, or a group of one rank: exactly :class:`BatchNorm1d` /
      :class:`BatchNorm2d` (whichever fits the input).

    Every rank of the group must call it in the same mode, the same number of times, with the
    same ``num_features`` and dtype, as for any collective. The first training-mode call checks
    ``num_features`` and the dtype across the ranks (one small all-reduce, once) and raises on
    every rank if they differ, instead of hanging.

    Derived in chapter ``12_batchnorm_at_scale``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group
        self._checked_groups: set[int] = set()

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"SyncBatchNorm expects input of shape (N, C) or (N, C, ...) with at least 2 dimensions; got "
                f"{input.dim()}D input of shape {tuple(input.shape)}."
            )

    def _group_and_size(self) -> tuple[Any, int]:
        """The process group to reduce over and its size; size 1 means: behave as BatchNorm."""
        if not (dist.is_available() and dist.is_initialized()):
            if self.process_group is not None:
                raise RuntimeError(
                    "SyncBatchNorm was given a process_group but torch.distributed is not initialized in this "
                    "process. Call torch.distributed.init_process_group first (or use "
                    "normlab.distributed), or pass process_group=None to behave as BatchNorm."
                )
            return None, 1
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        if dist.get_rank(group) < 0:
            raise RuntimeError(
                f"SyncBatchNorm's process_group does not contain this process (global rank {dist.get_rank()}). "
                "Every process that calls it must belong to its group; build one group per subset with "
                "torch.distributed.new_group on every rank and give each layer its own."
            )
        return group, dist.get_world_size(group)

    def _check_consistent(self, input: Tensor, group: Any) -> None:
        """Once per group: all ranks agree on the number of channels and the dtype (else a clear error)."""
        key = id(group)
        if key in self._checked_groups:
            return
        dtype_code = float(list(_DTYPE_CODES).index(input.dtype) if input.dtype in _DTYPE_CODES else -1)
        mine = torch.tensor([self.num_features, -self.num_features, dtype_code, -dtype_code],
                            dtype=torch.float64, device=input.device)
        agreed = mine.clone()
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX, group=group)
        if not torch.equal(agreed, mine):
            features = (int(-agreed[1].item()), int(agreed[0].item()))
            raise RuntimeError(
                f"SyncBatchNorm layers disagree across the ranks of the process group: num_features ranges over "
                f"{features[0]}..{features[1]} (this rank: {self.num_features}, input dtype {input.dtype}). Every "
                "rank must run the same model with inputs of the same dtype."
            )
        self._checked_groups.add(key)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_num_channels(input)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch_stats:
            return self._normalize_with_running_stats(input)
        group, world_size = self._group_and_size()
        if world_size == 1:
            self._check_batch_size(input)
            output, mean, var = BatchNormFunction.apply(input, self.weight, self.bias, self.eps)
            count = input.numel() // input.shape[1]
        else:
            self._check_consistent(input, group)
            output, mean, var, total = SyncBatchNormFunction.apply(input, self.weight, self.bias, self.eps, group,
                                                                   world_size)
            count = int(total.item())
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update_global_running_stats(input, mean, var, count)
        return output

    def _update_global_running_stats(self, input: Tensor, mean: Tensor, var: Tensor, count: int) -> None:
        """Running estimates from the global mean and the global unbiased variance var · n/(n − 1)."""
        if not math.isfinite(var.sum().item()):
            self._raise_non_finite(input)
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.detach(), factor)
        self.running_var.lerp_(var.detach() * (count / (count - 1)), factor)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any | None = None) -> nn.Module:
        """Replace every BatchNorm layer of ``module`` by a :class:`SyncBatchNorm` that keeps its state.

        Converts ``torch.nn.BatchNorm1d/2d/3d`` (and ``torch.nn.SyncBatchNorm``) and normlab's
        :class:`BatchNorm1d` and :class:`BatchNorm2d`: the new layer has the same ``eps``,
        ``momentum``, ``affine`` and ``track_running_stats``, shares the ``weight`` and ``bias``
        parameters and copies the running estimates and the training flag. Returns the converted
        module (a new object when ``module`` itself is a BatchNorm layer). Layers whose statistics
        are not plain batch statistics (ghost batches, Batch Renormalization) are left alone.
        Chapter ``12_batchnorm_at_scale``.
        """
        output = module
        if _is_plain_batchnorm(module):
            if module.running_mean is not None and isinstance(module.running_mean, nn.parameter.UninitializedBuffer):
                raise ValueError("convert_sync_batchnorm cannot convert a lazy BatchNorm before its first forward.")
            factory = {"device": _device_of(module), "dtype": _dtype_of(module)}
            output = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                         process_group, **factory, bias=getattr(module, "bias", None) is not None if module.affine else True)
            if module.affine:
                with torch.no_grad():
                    output.weight = module.weight
                    output.bias = module.bias
            output.running_mean = module.running_mean
            output.running_var = module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.training = module.training
            if hasattr(module, "qconfig"):
                output.qconfig = module.qconfig
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return output


_DTYPE_CODES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _is_plain_batchnorm(module: nn.Module) -> bool:
    if type(module) in (BatchNorm1d, BatchNorm2d, SyncBatchNorm):
        return type(module) is not SyncBatchNorm
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.modules.lazy.LazyModuleMixin)


def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return None


def _dtype_of(module: nn.Module) -> torch.dtype | None:
    for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
        return tensor.dtype
    return None
