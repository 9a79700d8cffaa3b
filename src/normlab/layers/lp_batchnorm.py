r"""Batch normalization with an ℓp scale in place of the standard deviation.

Per feature, over the m examples of the batch (and the length L of a 3D input):

    mu      = mean(x)                                   batch mean               (1)
    s_p     = (mean(|x − mu|^p))^(1/p)   for p = 1, 2   ℓp scale of the batch    (2)
    s_inf   = max |x − mu|                              ℓ∞ scale                 (2')
    xhat    = (x − mu) / √(s_p² + ε)                    normalized input         (3)
    y       = γ · xhat + β                              scale and shift          (4)

For p = 2, s_2 is the biased standard deviation, so (3) is exactly the transform of
``torch.nn.BatchNorm1d`` in training mode. For p = 1, s_1 is the mean absolute deviation;
for p = ∞, the largest absolute deviation. Santurkar et al. (2018, §3.3) train such
normalizations to show that the smoothing of BN does not need the variance; they do not
fix the second moment of xhat, so the distributions of the layer inputs still move.

Chapter ``05_smoothness``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normlab.layers._common import register_affine, reset_affine

__all__ = ["LpBatchNorm1d", "lp_scale"]

_ALLOWED_P = (1, 2, math.inf)


def _check_p(p: float) -> float:
    if p not in _ALLOWED_P:
        raise ValueError(f"p must be 1, 2 or math.inf (float('inf')); got p={p!r}.")
    return float(p)


def lp_scale(centred: Tensor, p: float, dims: tuple[int, ...] = (0,)) -> Tensor:
    """The ℓp scale (2) of a centred batch over ``dims``: (mean |x|^p)^(1/p), or max |x| for p = ∞.

    Uses the mean, not the sum, so that the scale of a batch does not grow with m; for
    p = 2 it is the biased standard deviation. Used in chapter ``05_smoothness``.
    """
    p = _check_p(p)
    if p == math.inf:
        return centred.abs().amax(dim=dims)
    if p == 2.0:
        return centred.pow(2).mean(dim=dims).sqrt()
    return centred.abs().mean(dim=dims)


class LpBatchNorm1d(nn.Module):
    r"""Batch normalization that divides the centred batch by its ℓp scale, p ∈ {1, 2, ∞}.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{s_p(x - \mathrm{E}[x])^2 + \epsilon}} \gamma + \beta,
        \qquad s_p(u) = \Big(\tfrac{1}{m}\textstyle\sum_i |u_i|^p\Big)^{1/p},\ s_\infty(u) = \max_i |u_i|.

    Arguments as ``torch.nn.BatchNorm1d`` plus ``p``. Training mode normalizes with the
    batch statistics (differentiated by autograd) and, if ``track_running_stats``, moves
    ``running_mean`` and ``running_scale`` towards the batch's μ and s_p by exponential
    averaging with ``momentum`` (cumulative average when ``momentum=None``). Eval mode uses
    them: ``y = (x − running_mean)/√(running_scale² + ε) · γ + β``. The running scale is
    the plain average of the batch scales (no m/(m − 1) correction), so for p = 2 eval mode
    differs from torch's BatchNorm1d, whose running variance is unbiased.
    Used in chapter ``05_smoothness``.
    """

    def __init__(self, num_features: int, p: float = 2, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be at least 1; got {num_features}.")
        if eps < 0:
            raise ValueError(f"eps must be >= 0; got {eps}.")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1] or None (cumulative average); got {momentum}.")
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.p = _check_p(p)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        register_affine(self, num_features, affine, True, factory_kwargs)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_scale", torch.ones(num_features, **factory_kwargs))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_scale", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running scale 1, no batches seen."""
        if self.running_mean is not None:
            self.running_mean.zero_()
            self.running_scale.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running estimates, and γ = 1, β = 0."""
        self.reset_running_stats()
        reset_affine(self)

    def extra_repr(self) -> str:
        p = "inf" if self.p == math.inf else f"{self.p:g}"
        return (f"{self.num_features}, p={p}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _check_input(self, input: Tensor) -> tuple[int, ...]:
        if input.dim() not in (2, 3):
            raise ValueError(f"LpBatchNorm1d expects 2D input (N, C) or 3D input (N, C, L); got {input.dim()}D "
                             f"input of shape {tuple(input.shape)}.")
        if input.shape[1] != self.num_features:
            raise ValueError(f"LpBatchNorm1d was built with num_features={self.num_features} but got input of "
                             f"shape {tuple(input.shape)}; build it with num_features={input.shape[1]}.")
        return (0,) if input.dim() == 2 else (0, 2)

    def forward(self, input: Tensor) -> Tensor:
        dims = self._check_input(input)
        view = (1, -1) if input.dim() == 2 else (1, -1, 1)
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats:
            values = input.numel() // max(self.num_features, 1)
            if values < 2:
                raise ValueError(f"LpBatchNorm1d needs more than one value per feature to compute batch "
                                 f"statistics; got input of shape {tuple(input.shape)}. Use eval() with "
                                 f"running statistics, or a batch larger than 1.")
            mean = input.mean(dim=dims)
            centred = input - mean.view(view)
            scale = lp_scale(centred, self.p, dims)
            if self.training and self.track_running_stats and self.running_mean is not None:
                self._update_running_stats(mean, scale)
        else:
            centred = input - self.running_mean.view(view)
            scale = self.running_scale
        out = centred / torch.sqrt(scale.pow(2) + self.eps).view(view)
        if self.weight is not None:
            out = out * self.weight.view(view)
        if self.bias is not None:
            out = out + self.bias.view(view)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, scale: Tensor) -> None:
        if not bool(torch.isfinite(scale).all() and torch.isfinite(mean).all()):
            raise ValueError("LpBatchNorm1d got a batch with NaN or Inf statistics in training mode; they would "
                             "poison the running estimates. Find where the NaN or Inf comes from (often a "
                             "learning rate that is too large).")
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.detach(), factor)
        self.running_scale.lerp_(scale.detach(), factor)
