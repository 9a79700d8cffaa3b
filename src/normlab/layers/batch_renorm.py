"""Batch Renormalization (Ioffe, 2017): BN whose training output matches its inference output.

Per channel, with the batch mean mu_B and σ_B = √(var_B + ε) (biased variance), and the moving
estimates mu and σ = √(running_var + ε):

    r = clip(σ_B / σ, 1/r_max, r_max),   d = clip((mu_B − mu) / σ, −d_max, d_max)   (1)
    xhat = (x − mu_B) / σ_B · r + d                                                  (2)
    y = γ · xhat + β                                                                 (3)
    mu ← mu + α (mu_B − mu),   σ ← σ + α (σ_B − σ)                                   (4)

r and d are treated as constants in the backward pass (the paper's stop_gradient), so the
gradient is BatchNorm's (chapter 2) with γ replaced by γ·r. When r and d are not clipped,
(2) equals (x − mu)/σ: the training output is the inference output. With r_max = 1 and
d_max = 0 it is BatchNorm. The paper starts with r_max = 1, d_max = 0 and relaxes them
during training; :func:`renorm_limits` is that schedule (linear ramps here: the paper says
"gradually relaxed"). The moving σ is stored as ``running_var`` = σ² − ε, so the state dict
and eval mode are BatchNorm's.

Chapter ``12_batchnorm_at_scale``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normlab.layers.batchnorm import BatchNorm1d, BatchNormFunction

__all__ = ["BatchRenorm1d", "renorm_limits"]


def renorm_limits(step: int, r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 5000,
                  r_max_steps: int = 40000, d_max_steps: int = 25000) -> tuple[float, float]:
    """The clipping limits (r_max, d_max) at training step ``step`` (counted from 0).

    Ioffe (2017), section 4: r_max = 1 and d_max = 0 (plain BatchNorm) for the first
    ``warmup_steps`` steps, then relaxed to reach ``r_max`` at ``r_max_steps`` and ``d_max`` at
    ``d_max_steps`` (defaults: the paper's 5k, 40k and 25k steps, r_max = 3, d_max = 5); linearly
    in between, constant after. Chapter ``12_batchnorm_at_scale``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}.")

    def ramp(end: int) -> float:
        if step < warmup_steps:
            return 0.0
        if end <= warmup_steps:
            return 1.0
        return min(1.0, (step - warmup_steps) / (end - warmup_steps))

    return 1.0 + (r_max - 1.0) * ramp(r_max_steps), d_max * ramp(d_max_steps)


class BatchRenorm1d(BatchNorm1d):
    r"""Batch Renormalization of (N, C) or (N, C, L) input, equations (1)–(4) of the module docstring.

    The arguments of :class:`BatchNorm1d` (``momentum`` is the paper's α) plus the clipping limits
    ``r_max`` ≥ 1 and ``d_max`` ≥ 0 and the schedule that relaxes them
    (:func:`renorm_limits`: ``warmup_steps``, ``r_max_steps``, ``d_max_steps``; set
    ``warmup_steps=0, r_max_steps=0, d_max_steps=0`` for fixed limits). The step is the buffer
    ``num_batches_tracked`` (training-mode calls so far). The same parameters and buffers as
    BatchNorm1d; eval mode is BatchNorm1d's. Needs running estimates
    (``track_running_stats=True``) and ``momentum`` a number (the paper's moving averages).

    The last r and d used are kept (not saved) in ``last_r`` and ``last_d`` for inspection.

    Ioffe (2017), "Batch Renormalization". Chapter ``12_batchnorm_at_scale``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, bias: bool = True, r_max: float = 3.0, d_max: float = 5.0,
                 warmup_steps: int = 5000, r_max_steps: int = 40000, d_max_steps: int = 25000) -> None:
        if not track_running_stats:
            raise ValueError("BatchRenorm1d corrects towards the running estimates, so it needs "
                             "track_running_stats=True; for batch statistics only use BatchNorm1d.")
        if momentum is None or not (0.0 < momentum <= 1.0):
            raise ValueError(f"momentum (the paper's α) must be a number in (0, 1]; got {momentum!r}.")
        if not (math.isfinite(r_max) and r_max >= 1.0):
            raise ValueError(f"r_max must be a finite number >= 1 (r is clipped to [1/r_max, r_max]); got {r_max}.")
        if not (math.isfinite(d_max) and d_max >= 0.0):
            raise ValueError(f"d_max must be a finite number >= 0 (d is clipped to [-d_max, d_max]); got {d_max}.")
        if min(warmup_steps, r_max_steps, d_max_steps) < 0:
            raise ValueError("warmup_steps, r_max_steps and d_max_steps must be >= 0; got "
                             f"{warmup_steps}, {r_max_steps}, {d_max_steps}.")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.r_max, self.d_max = float(r_max), float(d_max)
        self.warmup_steps, self.r_max_steps, self.d_max_steps = warmup_steps, r_max_steps, d_max_steps
        self.last_r: Tensor | None = None
        self.last_d: Tensor | None = None

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}, "
                f"r_max_steps={self.r_max_steps}, d_max_steps={self.d_max_steps}")

    def current_limits(self) -> tuple[float, float]:
        """(r_max, d_max) for the next training step, from the schedule and ``num_batches_tracked``."""
        return renorm_limits(int(self.num_batches_tracked), self.r_max, self.d_max, self.warmup_steps,
                             self.r_max_steps, self.d_max_steps)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_num_channels(input)
        if not self.training:
            return self._normalize_with_running_stats(input)
        self._check_batch_size(input)
        r_max, d_max = self.current_limits()
        xhat_b, mean, var = BatchNormFunction.apply(input, None, None, self.eps)  # (x − mu_B)/σ_B
        if not math.isfinite(var.sum().item()):
            self._raise_non_finite(input)
        with torch.no_grad():  # r and d: constants for the backward pass (stop_gradient)
            sigma_b = torch.sqrt(var + self.eps)
            sigma = torch.sqrt(self.running_var + self.eps)
            r = (sigma_b / sigma).clamp_(1.0 / r_max, r_max)  # (1)
            d = ((mean - self.running_mean) / sigma).clamp_(-d_max, d_max)  # (1)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        xhat = xhat_b * r.view(shape) + d.view(shape)  # (2)
        if self.weight is not None:
            xhat = xhat * self.weight.view(shape)
        if self.bias is not None:
            xhat = xhat + self.bias.view(shape)  # (3)
        with torch.no_grad():  # (4), σ stored as running_var = σ² − ε
            self.running_mean.lerp_(mean, self.momentum)
            sigma.lerp_(sigma_b, self.momentum)
            self.running_var.copy_((sigma * sigma - self.eps).clamp_(min=0.0))
            self.num_batches_tracked.add_(1)
        self.last_r, self.last_d = r, d
        return xhat
