"""Batch normalization followed by a random, time-varying shift of each unit's distribution.

Santurkar et al. (2018, §2.1) test whether BatchNorm helps *because* it keeps each
layer's input distribution fixed: they add noise after every BN layer, with a non-zero
mean and a non-unit variance that change at every training step, so the distribution
each layer sees moves far more than without BN, and ask whether training suffers.

We implement one explicit noise model (the paper's exact parameters are in its
appendix; ours is stated here in full). At every training-mode forward pass (one per
SGD step), independently for each unit j and from a ``torch.Generator``:

    m_j  ~ U(−n_mu, n_mu)          random mean shift                            (1)
    v_j  ~ U(1, n_sigma)           random variance factor                       (2)
    y_ij = √v_j · z_ij + m_j       for every example i of the batch             (3)

where z is the BN output. A unit whose BN output has batch mean β_j and standard
deviation |γ_j| leaves the layer with mean √v_j·β_j + m_j and standard deviation
√v_j·|γ_j|, redrawn at every step. In eval mode the layer is plain BN (no noise).

- :class:`ShiftNoise`: the noise (1)–(3) alone, for a network without BN.
- :class:`NoisyBatchNorm1d`: :class:`normlab.layers.BatchNorm1d` followed by
  :class:`ShiftNoise`, with the same constructor arguments, parameters, buffers and
  ``state_dict`` keys as ``torch.nn.BatchNorm1d`` plus ``n_mu``, ``n_sigma`` and
  ``generator``.

Chapter ``04_internal_covariate_shift``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from normlab.layers.batchnorm import BatchNorm1d

__all__ = ["NoisyBatchNorm1d", "ShiftNoise"]


def _check_noise_arguments(num_features: int, n_mu: float, n_sigma: float, generator: object) -> None:
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive integer; got {num_features!r}.")
    if not (isinstance(n_mu, (int, float)) and math.isfinite(n_mu) and n_mu >= 0):
        raise ValueError(f"n_mu (half-width of the uniform mean shift) must be a finite number >= 0; got {n_mu!r}.")
    if not (isinstance(n_sigma, (int, float)) and math.isfinite(n_sigma) and n_sigma >= 1):
        raise ValueError(f"n_sigma (upper end of the uniform variance factor U(1, n_sigma)) must be a finite "
                         f"number >= 1; got {n_sigma!r}. n_sigma = 1 means no change of variance.")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError("generator must be a CPU torch.Generator that seeds the noise, e.g. "
                        f"torch.Generator().manual_seed(0); got {type(generator).__name__}.")


class ShiftNoise(nn.Module):
    r"""A random affine shift of each unit, redrawn at every training-mode call.

    .. math::

        y_{ij} = \sqrt{v_j}\, x_{ij} + m_j, \qquad
        m_j \sim U(-n_\mu, n_\mu), \quad v_j \sim U(1, n_\sigma),

    with m and v drawn afresh, independently per unit j (dimension 1), at every call in
    training mode, from the CPU ``generator``; the same (m_j, v_j) apply to every example i
    (and every position of a 3D input). In eval mode it is the identity. Gradients flow
    through the multiplication by √v_j. The draws of the most recent call are kept in
    ``last_mean`` and ``last_variance`` (None before the first), for inspection.

    >>> noise = ShiftNoise(3, n_mu=1.0, n_sigma=4.0, generator=torch.Generator().manual_seed(0))
    >>> y = noise(torch.zeros(5, 3))
    >>> bool(torch.allclose(y, noise.last_mean.expand(5, 3)))
    True

    Used in chapter ``04_internal_covariate_shift`` (the noise of the noisy-BN experiment,
    and the same noise in a network without BN).
    """

    def __init__(self, num_features: int, n_mu: float, n_sigma: float, generator: torch.Generator) -> None:
        _check_noise_arguments(num_features, n_mu, n_sigma, generator)
        super().__init__()
        self.num_features = num_features
        self.n_mu = float(n_mu)
        self.n_sigma = float(n_sigma)
        self.generator = generator
        self.last_mean: Tensor | None = None
        self.last_variance: Tensor | None = None

    def extra_repr(self) -> str:
        return f"{self.num_features}, n_mu={self.n_mu}, n_sigma={self.n_sigma}"

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() not in (2, 3) or input.shape[1] != self.num_features:
            raise ValueError(f"ShiftNoise({self.num_features}) expects input of shape (N, {self.num_features}) or "
                             f"(N, {self.num_features}, L); got {tuple(input.shape)}.")
        if not self.training:
            return input
        u = torch.rand(2, self.num_features, generator=self.generator, dtype=torch.float64)
        mean = (2 * u[0] - 1) * self.n_mu                     # (1)
        variance = 1 + u[1] * (self.n_sigma - 1)               # (2)
        self.last_mean, self.last_variance = mean.to(input.dtype), variance.to(input.dtype)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        scale = variance.sqrt().to(input.device, input.dtype).view(shape)
        shift = mean.to(input.device, input.dtype).view(shape)
        return scale * input + shift                           # (3)


class NoisyBatchNorm1d(BatchNorm1d):
    r"""Batch normalization followed, in training mode, by :class:`ShiftNoise`.

    .. math::

        y_{ij} = \sqrt{v_j}\,\Big(\gamma_j \frac{x_{ij} - \mu_j}{\sqrt{\sigma_j^2 + \epsilon}} + \beta_j\Big) + m_j,
        \qquad m_j \sim U(-n_\mu, n_\mu),\ v_j \sim U(1, n_\sigma)\ \text{redrawn every step.}

    Arguments as :class:`normlab.layers.BatchNorm1d` (``num_features, eps, momentum,
    affine, track_running_stats, device, dtype``), plus the keyword-only ``n_mu``,
    ``n_sigma`` and ``generator`` (a CPU ``torch.Generator``: the noise is reproducible
    and does not touch the global RNG). Parameters, buffers and ``state_dict`` keys are
    BatchNorm's; the running statistics are those of the BN input, as without noise.
    Eval mode is plain BN: no noise. The noise of the last training call is
    ``self.noise.last_mean`` and ``self.noise.last_variance``.

    Used in chapter ``04_internal_covariate_shift`` (Santurkar et al.'s noisy-BN experiment).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, n_mu: float, n_sigma: float,
                 generator: torch.Generator) -> None:
        _check_noise_arguments(num_features, n_mu, n_sigma, generator)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.noise = ShiftNoise(num_features, n_mu, n_sigma, generator)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_mu={self.noise.n_mu}, n_sigma={self.noise.n_sigma}"

    def forward(self, input: Tensor) -> Tensor:
        return self.noise(super().forward(input))
