"""Scaled weight standardization (Qiao et al. arXiv:1903.10520; Brock, De & Smith, ICLR 2021, arXiv:2101.08692).

Weight standardization (Qiao et al.) replaces each output unit's incoming weights by their
z-score; *scaled* weight standardization (Brock et al., "Characterizing signal propagation to
close the performance gap in unnormalized ResNets", section 4) also divides by √N, N the fan-in,
and multiplies by the nonlinearity's gain γ and a learnable gain g per output unit:

    μ_i = (1/N) Σ_j W_ij,   σ_i² = (1/N) Σ_j (W_ij − μ_i)²                              (1)
    Ŵ_ij = g_i · γ · (W_ij − μ_i) / √(max(N σ_i², ε))                                   (2)

With (2) each row of Ŵ has mean 0 and squared norm g_i² γ², so for inputs x of unit second
moment, Var[(Ŵx)_i] = g_i² γ² (exactly, in expectation over x with independent unit-variance
coordinates): the layer preserves the signal's scale whatever W has become during training, and
the zero mean stops the mean shift that ReLU adds from growing. For ReLU,
γ = 1/√(Var[relu(z)]) = √(2 / (1 − 1/π)) ≈ 1.7129 for z ~ N(0, 1)  (:func:`activation_gamma`; the
NFNets code uses 1.7139, estimated by sampling).
ε = 1e-4 and the max in (2) are those of the NFNets reference code (deepmind-research/nfnets).

- :func:`standardized_weight`: equation (2) for any weight of shape (out, in, *kernel).
- :class:`WSLinear`, :class:`WSConv2d`: ``nn.Linear`` / ``nn.Conv2d`` with Ŵ in place of W; same
  constructor arguments plus ``gamma`` and ``eps``; state dict ``weight``, ``bias``, ``gain``.

Chapter ``13_without_normalization``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WSConv2d", "WSLinear", "activation_gamma", "standardized_weight"]

#: Gains γ = 1/std(φ(z)), z ~ N(0, 1), of the nonlinearities the book uses.
_GAMMAS = {
    "linear": 1.0,
    "relu": math.sqrt(2.0 / (1.0 - 1.0 / math.pi)),  # Var[relu(z)] = 1/2 − 1/(2π)
}


def activation_gamma(nonlinearity: str) -> float:
    """γ = 1 / std(φ(z)) for z ~ N(0, 1): "relu" gives √(2/(1 − 1/π)) ≈ 1.7129, "linear" 1."""
    try:
        return _GAMMAS[nonlinearity]
    except KeyError:
        raise ValueError(f"Unknown nonlinearity {nonlinearity!r}; choose one of {sorted(_GAMMAS)}.") from None


def _check_positive(name: str, value: object) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return float(value)


def standardized_weight(weight: Tensor, gain: Tensor | None = None, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Equation (2): the scaled standardized weight Ŵ of a weight of shape (out, in, *kernel).

    Statistics are over every dimension but the first (a unit's fan-in N = in · prod(kernel)),
    without Bessel's correction; ``gain`` has shape (out,) (or is None for g = 1).
    """
    if weight.dim() < 2:
        raise ValueError(
            f"standardized_weight needs a weight of shape (out, in, *kernel); got shape {tuple(weight.shape)}."
        )
    if gain is not None and gain.shape != weight.shape[:1]:
        raise ValueError(f"gain must have shape ({weight.shape[0]},), one per output unit; got {tuple(gain.shape)}.")
    dims = tuple(range(1, weight.dim()))
    fan_in = math.prod(weight.shape[1:])
    mean = weight.mean(dim=dims, keepdim=True)                                   # (1)
    var = weight.var(dim=dims, keepdim=True, correction=0)                        # (1)
    scale = torch.rsqrt(torch.clamp(var * fan_in, min=eps)) * gamma               # (2)
    if gain is not None:
        scale = scale * gain.reshape(-1, *([1] * (weight.dim() - 1)))
    return (weight - mean) * scale                                                # (2)


class _WeightStandardized:
    """What WSLinear and WSConv2d share: γ and ε, the per-output gain, and Ŵ of equation (2)."""

    weight: Tensor
    gain: nn.Parameter

    def _set_ws(self, gamma: float, eps: float) -> None:
        self.gamma = _check_positive("gamma", gamma)
        self.eps = _check_positive("eps", eps)

    def _add_gain(self, out: int, device, dtype) -> None:
        self.gain = nn.Parameter(torch.ones(out, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        super().reset_parameters()  # type: ignore[misc]
        if hasattr(self, "gain"):  # nn.Linear/nn.Conv2d call this before the gain exists
            with torch.no_grad():
                self.gain.fill_(1.0)

    def standardized_weight(self) -> Tensor:
        """Ŵ of equation (2), the weight the layer applies."""
        return standardized_weight(self.weight, self.gain, self.gamma, self.eps)


class WSLinear(_WeightStandardized, nn.Linear):
    r"""``nn.Linear`` whose weight is standardized, scaled by γ/√N and multiplied by a gain g per unit (equation (2)).

    ``WSLinear(in_features, out_features, bias=True, gamma=1.0, eps=1e-4, device=None, dtype=None)``.
    ``weight`` and ``bias`` are initialized as in ``nn.Linear`` (only W's direction matters after (2)),
    ``gain`` (shape (out_features,)) to 1. Pass ``gamma=activation_gamma("relu")`` when a ReLU follows.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gamma: float = 1.0,
                 eps: float = 1e-4, device=None, dtype=None) -> None:
        self._set_ws(gamma, eps)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self._add_gain(out_features, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"WSLinear expects input of shape (*, {self.in_features}); got {tuple(x.shape)}.")
        return F.linear(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma:g}, eps={self.eps:g}"


class WSConv2d(_WeightStandardized, nn.Conv2d):
    r"""``nn.Conv2d`` with the scaled standardized weight of equation (2) (per output channel, N = in/groups · kH · kW).

    Takes ``nn.Conv2d``'s arguments plus ``gamma`` and ``eps``; ``gain`` has shape (out_channels,).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", gamma: float = 1.0,
                 eps: float = 1e-4, device=None, dtype=None) -> None:
        self._set_ws(gamma, eps)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self._add_gain(out_channels, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise ValueError(
                f"WSConv2d expects input of shape (N, {self.in_channels}, H, W) or ({self.in_channels}, H, W); "
                f"got {tuple(x.shape)}."
            )
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma:g}, eps={self.eps:g}"
