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
d_max = 0 it is BatchNorm. Equations (1)–(4) are the paper's Algorithm 1: r and d use the moving
averages *before* this batch's update (4), and the moving average is of σ, not of the variance,
with the biased batch variance inside σ_B (no Bessel correction).

The paper's schedule (its section 4, Inception v3 on ImageNet): r_max = 1 and d_max = 0 (plain
BatchNorm) for the first 5000 steps, then relaxed to reach r_max = 3 at 40k steps and d_max = 5 at
25k steps, with moving averages updated at α = 0.01. The paper says only that the limits are
"gradually relaxed"; it does not give the shape of the relaxation. :func:`renorm_limits` chooses
linear ramps (normlab's choice, not the paper's); :func:`scaled_renorm_schedule` keeps the paper's
proportions for shorter runs. The moving σ is stored as ``running_var`` = σ² − ε, so the state
dict and eval mode are BatchNorm's.

Chapter ``12_batchnorm_at_scale``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from normlab.layers.batchnorm import BatchNorm1d, BatchNormFunction

__all__ = ["BatchRenorm1d", "renorm_limits", "scaled_renorm_schedule"]

#: The paper's schedule, in steps: plain BN until ``warmup_steps``, d_max reached at ``d_max_steps``, r_max at
#: ``r_max_steps`` (Ioffe 2017, section 4).
PAPER_SCHEDULE = {"warmup_steps": 5000, "d_max_steps": 25000, "r_max_steps": 40000}


def renorm_limits(step: int, r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 5000,
                  r_max_steps: int = 40000, d_max_steps: int = 25000) -> tuple[float, float]:
    """The clipping limits (r_max, d_max) at training step ``step`` (counted from 0).

    Ioffe (2017), section 4: r_max = 1 and d_max = 0 (plain BatchNorm) for the first
    ``warmup_steps`` steps, then relaxed to reach ``r_max`` at ``r_max_steps`` and ``d_max`` at
    ``d_max_steps`` (defaults: the paper's 5k, 40k and 25k steps, r_max = 3, d_max = 5), constant
    after. In between, each limit moves linearly from its plain-BN value (1 or 0) to its final
    value: the paper says "gradually relaxed" and does not specify the shape, so the linear ramp is
    normlab's choice. Chapter ``12_batchnorm_at_scale``.
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


def scaled_renorm_schedule(total_steps: int) -> dict[str, int]:
    """The paper's schedule (``PAPER_SCHEDULE``: 5k, 25k, 40k steps) scaled so that its 40k steps are ``total_steps``.

    Returns the keyword arguments ``warmup_steps``, ``d_max_steps``, ``r_max_steps`` of
    :class:`BatchRenorm1d` and :func:`renorm_limits`: plain BN for the first eighth of the run,
    d_max reached at five eighths, r_max at the last step (rounded down to whole steps). A run of a
    few hundred steps cannot use the paper's step counts, which would leave it plain BN throughout;
    scaled, it keeps the paper's proportions, and its limits are fully relaxed only at its end.
    Chapter ``12_batchnorm_at_scale``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1; got {total_steps}.")
    end = PAPER_SCHEDULE["r_max_steps"]
    return {name: steps * total_steps // end for name, steps in PAPER_SCHEDULE.items()}


class BatchRenorm1d(BatchNorm1d):
    r"""Batch Renormalization of (N, C) or (N, C, L) input, equations (1)–(4) of the module docstring.

    The arguments of :class:`BatchNorm1d` (``momentum`` is the paper's α, default 0.01 as in the
    paper's experiments, not BatchNorm's 0.1) plus the clipping limits
    ``r_max`` ≥ 1 and ``d_max`` ≥ 0 and the schedule that relaxes them
    (:func:`renorm_limits`: ``warmup_steps``, ``r_max_steps``, ``d_max_steps``; set
    ``warmup_steps=0, r_max_steps=0, d_max_steps=0`` for fixed limits). The step is the buffer
    ``num_batches_tracked`` (training-mode calls so far). The same parameters and buffers as
    BatchNorm1d; eval mode is BatchNorm1d's. Needs running estimates
    (``track_running_stats=True``) and ``momentum`` a number (the paper's moving averages).

    The last r and d used are kept (not saved) in ``last_r`` and ``last_d`` for inspection.

    Ioffe (2017), "Batch Renormalization". Chapter ``12_batchnorm_at_scale``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.01, affine: bool = True,
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
