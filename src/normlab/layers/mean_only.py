"""Mean-only batch normalization (Salimans & Kingma 2016, §2.2).

:class:`MeanOnlyBatchNorm1d` subtracts the batch mean per feature and adds a learned
shift; it does not divide by a standard deviation. Paired with weight normalization,
which fixes the scale of each unit through g, it centres the pre-activations
without the noise that dividing by a batch standard deviation adds:

    mu = mean(x)          batch mean per feature (training mode)            (1)
    y  = x − mu + β       centred output                                    (2)

In eval mode the running mean replaces mu. Its constructor, parameter and buffer
names follow ``torch.nn.BatchNorm1d`` (less ``eps``, ``weight`` and ``running_var``,
which a layer that does not divide has no use for).

Chapter ``06_weightnorm``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["MeanOnlyBatchNorm1d"]


class MeanOnlyBatchNorm1d(nn.Module):
    r"""Mean-only batch normalization over a 2D input (N, C) or a 3D input (N, C, L).

    .. math::

        y = x - \mathrm{E}[x] + \beta

    Training mode (or no running mean): E[x] is the batch mean per feature C (over the
    batch, and the length L for 3D input), and the running mean moves towards it,
    ``running_mean ← (1 − momentum)·running_mean + momentum·mean`` (the cumulative
    average with ``momentum=None``). Eval mode with a running mean: E[x] is the running
    mean, so the layer is the fixed shift y = x − running_mean + β.

    Arguments ``(num_features, momentum=0.1, affine=True, track_running_stats=True,
    device=None, dtype=None)`` as in ``torch.nn.BatchNorm1d``; ``affine`` gives the
    learned shift ``bias`` (β, initialized to 0) and there is no scale. Buffers
    ``running_mean`` and ``num_batches_tracked``.

    >>> layer = MeanOnlyBatchNorm1d(4)
    >>> layer(torch.randn(8, 4)).mean(0).abs().max() < 1e-6
    tensor(True)

    Used in chapter ``06_weightnorm``, section "Mean-only batch normalization".
    """

    num_features: int
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(self, num_features: int, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"MeanOnlyBatchNorm1d needs num_features to be a positive integer; got {num_features!r}.")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1] (or be None for a cumulative average); got {momentum}.")
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = num_features
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, no batches seen."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running mean, and β = 0."""
        self.reset_running_stats()
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _check_input(self, input: Tensor) -> None:
        if input.dim() not in (2, 3):
            raise ValueError(f"MeanOnlyBatchNorm1d expects 2D input (N, C) or 3D input (N, C, L); got "
                             f"{input.dim()}D input of shape {tuple(input.shape)}.")
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"MeanOnlyBatchNorm1d was built with num_features={self.num_features} but got input of shape "
                f"{tuple(input.shape)} with {input.shape[1]} channels in dimension 1. Build it with "
                f"num_features={input.shape[1]}, or put the channels in dimension 1 (N, C, ...).")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        use_batch_stats = self.training or self.running_mean is None
        dims = (0,) + tuple(range(2, input.dim()))
        shape = (1, -1) + (1,) * (input.dim() - 2)
        if use_batch_stats:
            values_per_channel = input.shape[0] * math.prod(input.shape[2:])
            if values_per_channel <= 1:
                mode = "in training mode" if self.training else "without a running mean (track_running_stats=False)"
                raise ValueError(
                    f"MeanOnlyBatchNorm1d needs more than one value per channel {mode}; got input of shape "
                    f"{tuple(input.shape)}: its batch mean is the value itself and the output would be β "
                    f"whatever the input. Use eval() or a batch larger than 1.")
            mean = input.mean(dims)  # (1)
            if not math.isfinite(mean.sum().item()):
                raise ValueError(
                    f"MeanOnlyBatchNorm1d got input of shape {tuple(input.shape)} whose batch mean is NaN or Inf "
                    f"(the input contains NaN or Inf, or overflows); it would poison running_mean, which eval() "
                    f"uses. Find where the NaN or Inf comes from (often a learning rate that is too large).")
            if self.training and self.running_mean is not None:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                    self.running_mean.lerp_(mean.detach(), factor)
        else:
            mean = self.running_mean
        output = input - mean.view(shape)  # (2)
        if self.bias is not None:
            output = output + self.bias.view(shape)
        return output
