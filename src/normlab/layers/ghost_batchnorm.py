"""Ghost Batch Normalization (Hoffer, Hubara & Soudry, 2017): BN over virtual batches.

A batch of N examples is cut into consecutive *ghost* (virtual) batches of
``virtual_batch_size`` examples (the last one may be smaller), and each is normalized with its
own statistics, as if it were a batch of its own:

    x = [x⁽¹⁾; x⁽²⁾; …; x⁽ᴳ⁾],   y⁽ᵍ⁾ = γ · (x⁽ᵍ⁾ − mu⁽ᵍ⁾)/√(var⁽ᵍ⁾ + ε) + β        (1)

The gradient of each ghost batch is chapter 2's closed form within it (:class:`BatchNormFunction`).
The running estimates are updated once per ghost batch, in order, exactly as BatchNorm would
update them had the ghost batches arrived one after another; eval mode is BatchNorm's.

Chapter ``12_batchnorm_at_scale``.
"""

from __future__ import annotations

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
        outputs = []
        for ghost in ghosts:
            self._check_batch_size(ghost)
            output, mean, var = BatchNormFunction.apply(ghost, self.weight, self.bias, self.eps)  # (1)
            if self.training and self.track_running_stats and self.running_mean is not None:
                self._update_running_stats(ghost, mean, var)
            outputs.append(output)
        return torch.cat(outputs, dim=0)
