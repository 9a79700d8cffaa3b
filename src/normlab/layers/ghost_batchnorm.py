"""Ghost Batch Normalization (Hoffer, Hubara & Soudry, 2017): BN over virtual batches.

A batch of N examples is cut into consecutive *ghost* (virtual) batches of
``virtual_batch_size`` examples (the last one may be smaller), and each is normalized with its
own statistics, as if it were a batch of its own:

    x = [x⁽¹⁾; x⁽²⁾; …; x⁽ᴳ⁾],   y⁽ᵍ⁾ = γ · (x⁽ᵍ⁾ − mu⁽ᵍ⁾)/√(var⁽ᵍ⁾ + ε) + β        (1)

The gradient of each ghost batch is chapter 2's closed form within it (:class:`BatchNormFunction`).
The running estimates are updated once per ghost batch, in order, exactly as BatchNorm would
update them had the ghost batches arrived one after another; eval mode is BatchNorm's. After G
such updates with momentum m, starting from r₀, with the ghost batches' statistics s₁, …, s_G (means,
and unbiased variances for ``running_var``),

    r_G = (1 − m)ᴳ · r₀ + Σ_g m (1 − m)ᴳ⁻ᵍ · s_g                                    (2)

When every ghost batch is full (N a multiple of the virtual batch size) the G ghost batches are
laid side by side as G·C channels of one batch of ``virtual_batch_size`` rows, normalized by one
call of :class:`BatchNormFunction`, and the running estimates take the closed form (2): the same
numbers as the loop over ghost batches, without G small calls per layer (a batch of 512 in ghost
batches of 4 is 128 of them).

Chapter ``12_batchnorm_at_scale``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normlab.layers.batchnorm import BatchNorm1d, BatchNormFunction

__all__ = ["GhostBatchNorm1d"]


class GhostBatchNorm1d(BatchNorm1d):
    r"""Batch normalization over ghost batches of ``virtual_batch_size`` examples (equation 1).

    The arguments of :class:`BatchNorm1d` plus ``virtual_batch_size``; the same parameters and
    buffers (state dicts load from and into ``torch.nn.BatchNorm1d``). Input (N, C) or (N, C, L).
    In training mode the batch is split along dimension 0 into ⌈N / virtual_batch_size⌉ ghost
    batches; each needs more than one value per channel. With ``virtual_batch_size >= N`` it is
    :class:`BatchNorm1d`. Eval mode uses the running estimates, updated once per ghost batch.

    >>> gbn = GhostBatchNorm1d(16, virtual_batch_size=4)
    >>> gbn(torch.randn(32, 16)).shape
    torch.Size([32, 16])

    Hoffer, Hubara & Soudry (2017), "Train longer, generalize better". Chapter ``12_batchnorm_at_scale``.
    """

    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 bias: bool = True) -> None:
        if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) or virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be a positive integer; got {virtual_batch_size!r}.")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, virtual_batch_size={self.virtual_batch_size}"

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_num_channels(input)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch_stats:
            return self._normalize_with_running_stats(input)
        ghosts = torch.split(input, self.virtual_batch_size, dim=0)
        per_example = 1 if input.dim() == 2 else input.shape[2]
        if input.shape[0] > 0 and ghosts[-1].shape[0] * per_example == 1:
            raise ValueError(
                f"GhostBatchNorm1d with virtual_batch_size={self.virtual_batch_size} got a batch of "
                f"{input.shape[0]} examples (input of shape {tuple(input.shape)}), whose last ghost batch has a "
                "single value per channel. Use a batch size that is a multiple of virtual_batch_size (or leaves "
                "a remainder of at least 2)."
            )
        if len(ghosts) == 1 or input.shape[0] == 0:
            return super().forward(input)
        if input.shape[0] % self.virtual_batch_size == 0:
            return self._forward_full_ghosts(input, len(ghosts))
        outputs = []
        for ghost in ghosts:
            self._check_batch_size(ghost)
            output, mean, var = BatchNormFunction.apply(ghost, self.weight, self.bias, self.eps)  # (1)
            if self.training and self.track_running_stats and self.running_mean is not None:
                self._update_running_stats(ghost, mean, var)
            outputs.append(output)
        return torch.cat(outputs, dim=0)

    def _forward_full_ghosts(self, input: Tensor, count: int) -> Tensor:
        """Training mode with ``count`` full ghost batches: one BatchNormFunction call over G·C channels."""
        size, channels, rest = self.virtual_batch_size, input.shape[1], input.shape[2:]
        # row j of ghost g, channel c  ->  row j, channel g·C + c
        side_by_side = input.reshape(count, size, channels, *rest).transpose(0, 1)
        side_by_side = side_by_side.reshape(size, count * channels, *rest)
        weight = None if self.weight is None else self.weight.repeat(count)
        bias = None if self.bias is None else self.bias.repeat(count)
        output, mean, var = BatchNormFunction.apply(side_by_side, weight, bias, self.eps)  # (1), every ghost
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update_running_stats_per_ghost(input, mean.view(count, channels), var.view(count, channels))
        return output.reshape(size, count, channels, *rest).transpose(0, 1).reshape(input.shape)

    def _update_running_stats_per_ghost(self, input: Tensor, means: Tensor, variances: Tensor) -> None:
        """The running estimates after one update per ghost batch, in order: equation (2), or the loop when
        ``momentum`` is None (the cumulative average's weight changes with every update)."""
        count = len(means)
        ghosts = torch.split(input, self.virtual_batch_size, dim=0)
        if self.momentum is None or self.num_batches_tracked is None:
            for ghost, mean, var in zip(ghosts, means, variances):
                self._update_running_stats(ghost, mean, var)
            return
        if not math.isfinite(variances.sum().item()):
            self._raise_non_finite(input)
        self.num_batches_tracked.add_(count)
        m = self.momentum
        values = ghosts[0].numel() // input.shape[1]  # values per channel in one ghost batch
        # weight of ghost g (from 0) in (2): m (1 − m)^(G − 1 − g); of the old estimate: (1 − m)^G
        weights = m * (1 - m) ** torch.arange(count - 1, -1, -1, dtype=means.dtype, device=means.device)
        keep = (1 - m) ** count
        self.running_mean.mul_(keep).add_(weights @ means)
        self.running_var.mul_(keep).add_(weights @ variances, alpha=values / (values - 1))  # unbiased, as BN
