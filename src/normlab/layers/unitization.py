r"""Unitization (Huang & Yu, CVPR 2020): batch normalization that can pull each example onto the unit sphere.

After BatchNorm's standardization, every example's vector of normalized features is rescaled
towards unit norm by an amount that a trainable, per-feature α decides. For (N, C) input, per
feature c over the batch, and per example n over the C features:

    mu_c    = mean_n x_nc,   var_c = mean_n (x_nc − mu_c)²       batch mean, biased variance  (1)
    xhat_nc = (x_nc − mu_c) / √(var_c + ε)                       BatchNorm's standardization  (2)
    s_n     = Σ_c xhat_nc²                                       squared norm of example n    (3)
    u_nc    = xhat_nc · (α_c / √(s_n + ε) + 1 − α_c)             unitization                  (4)
    y_nc    = γ_c · u_nc + β_c                                   scale and shift              (5)

With α = 0, (4) is u = xhat and the layer is BatchNorm1d. With α = 1, u_n = xhat_n / √(s_n + ε)
has norm √(s_n / (s_n + ε)) < 1: every example's vector lies (up to ε) on the unit sphere, so
each of its features is at most 1 in size whatever the batch was. α starts at ``initial_alpha``
(0 by default: the layer starts as plain BN) and is learned with the other parameters.

Eval mode replaces mu and var in (1) by the running estimates and keeps (3)-(5), so the norm
(3) is computed with the running statistics. The running estimates move as BatchNorm1d's:
towards mu and the *unbiased* var · m/(m − 1), with ``momentum``.

Choices, against the public Keras implementation of the paper (the paper's text gives the
idea, not these details): that implementation normalizes in training with var · m/(m − 1 − ε)
and averages that same variance into the running estimate. normlab normalizes with the biased
variance (1), as BatchNorm does, so that α = 0 is BatchNorm1d exactly, and keeps BatchNorm1d's
m/(m − 1) for the running variance. Only (N, C) input: for images the implementation averages
xhat² over the pixels before the sum (3); that variant is not built here.

Gradients: BatchNorm's closed-form backward for (1)-(2) (:class:`BatchNormFunction`), autograd
for (3)-(5), including α's. Chapter ``04_internal_covariate_shift``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from normlab.layers.batchnorm import BatchNorm1d, BatchNormFunction

__all__ = ["Unitization1d"]


class Unitization1d(BatchNorm1d):
    r"""Batch normalization followed by Huang & Yu's unitization with a trainable α per feature.

    .. math::

        \hat{x}_{nc} = \frac{x_{nc} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}},\quad
        s_n = \sum_c \hat{x}_{nc}^2,\quad
        y_{nc} = \gamma_c\, \hat{x}_{nc} \Big(\frac{\alpha_c}{\sqrt{s_n + \epsilon}} + 1 - \alpha_c\Big) + \beta_c

    (equations 1-5 of the module docstring). Arguments as :class:`BatchNorm1d`, plus
    ``initial_alpha`` (the value α starts at; 0: plain BN) and, keyword-only, ``learn_alpha``
    (False: α is a buffer held at ``initial_alpha``). Parameters ``weight`` (γ),
    ``bias`` (β) when ``affine``, and ``alpha`` (α, trainable); buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked``, as BatchNorm1d, so a
    BatchNorm1d's state dict loads with ``strict=False`` (α is the only new key). Input
    (N, C) only. Eval mode uses the running estimates in (1) and in the norm (3).

    >>> layer = Unitization1d(64)
    >>> layer(torch.randn(32, 64)).shape
    torch.Size([32, 64])

    Huang & Yu (2020), "An Internal Covariate Shift Bounding Algorithm for Deep Neural Networks
    by Unitizing Layers' Outputs". Chapter ``04_internal_covariate_shift``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 initial_alpha: float = 0.0, track_running_stats: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 learn_alpha: bool = True) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer; got {num_features!r}.")
        if not isinstance(initial_alpha, (int, float)) or not torch.isfinite(torch.tensor(float(initial_alpha))):
            raise ValueError(f"initial_alpha must be a finite number; got {initial_alpha!r}.")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.initial_alpha = float(initial_alpha)
        self.learn_alpha = bool(learn_alpha)
        alpha = torch.empty(num_features, device=device, dtype=dtype)
        if self.learn_alpha:
            self.alpha = nn.Parameter(alpha)
        else:  # a buffer: no optimizer, and no probe that steps "every parameter", can move it
            self.register_buffer("alpha", alpha)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BatchNorm's reset (running estimates, γ = 1, β = 0) and α = ``initial_alpha``."""
        super().reset_parameters()
        if "alpha" in self._parameters or "alpha" in self._buffers:  # BatchNorm1d's constructor calls this
            with torch.no_grad():                                        # before α exists
                self.alpha.fill_(self.initial_alpha)

    def extra_repr(self) -> str:
        fixed = "" if self.learn_alpha else ", learn_alpha=False"
        return f"{super().extra_repr()}, initial_alpha={self.initial_alpha}{fixed}"

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2:
            raise ValueError(
                f"Unitization1d expects 2D input (N, C); got {input.dim()}D input of shape {tuple(input.shape)}. "
                "Flatten the features into dimension 1 first."
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_num_channels(input)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if use_batch_stats:
            self._check_batch_size(input)
            xhat, mean, var = BatchNormFunction.apply(input, None, None, self.eps)  # (1), (2)
            if self.training and self.track_running_stats and self.running_mean is not None:
                self._update_running_stats(input, mean, var)
        else:
            xhat = (input - self.running_mean) * torch.rsqrt(self.running_var + self.eps)  # (2), running estimates
        return self._unitize(xhat)

    def _unitize(self, xhat: Tensor) -> Tensor:
        """Equations (3)-(5) on the standardized input."""
        squared_norm = xhat.pow(2).sum(dim=1, keepdim=True)  # (3), one per example
        factor = self.alpha * torch.rsqrt(squared_norm + self.eps) + (1 - self.alpha)  # (4), (N, C)
        output = xhat * factor
        if self.weight is not None:
            output = output * self.weight  # (5)
        if self.bias is not None:
            output = output + self.bias
        return output
