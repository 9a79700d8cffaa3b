"""SkipInit / ReZero: a residual branch behind a learnable scalar gate that starts at zero.

De & Smith (NeurIPS 2020, arXiv:2002.10444) show that the main effect of BatchNorm in a deep
residual network at initialization is to shrink each residual branch relative to the skip path,
by a factor of about 1/√b at block b, so that the network starts close to the identity. They
replace BatchNorm by one learnable scalar α per branch, initialized to zero ("SkipInit"):

    h_b = h_{b-1} + α_b · F_b(h_{b-1}),      α_b = 0 at initialization                (1)

Bachlechner et al. (arXiv:2003.04887, "ReZero is all you need") propose the same gate. At
initialization every block is the identity, so the stream keeps the input's variance at any
depth; from the first step, ∂L/∂α_b = ⟨∂L/∂h_b, F_b(h_{b-1})⟩ is non-zero and the gates open.

- :class:`SkipInit`: the gated block (1), wrapping any branch module.
- :class:`ScalarBias`, :class:`ScalarMultiplier`: one learnable scalar added or multiplied
  (Fixup's biases and multiplier, :func:`normlab.init.fixup_`).

Chapter ``13_without_normalization``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

__all__ = ["ScalarBias", "ScalarMultiplier", "SkipInit"]


def _finite_number(name: str, value: object) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number; got {value!r}.")
    return float(value)


class SkipInit(nn.Module):
    r"""A residual block :math:`h \mapsto h + \alpha\, F(h)` with one learnable scalar α, initialized to ``alpha_init``.

    ``branch`` is the residual branch F (any module whose output has its input's shape). α is a
    parameter of shape (1,) named ``alpha``; ``alpha_init=0`` (the default) is SkipInit/ReZero,
    so the block starts as the identity. The same computation in training and eval mode.

    >>> block = SkipInit(nn.Sequential(nn.ReLU(), nn.Linear(8, 8)))
    >>> x = torch.randn(4, 8)
    >>> torch.equal(block(x), x)
    True
    """

    def __init__(self, branch: nn.Module, alpha_init: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch must be an nn.Module (the residual branch F); got {type(branch).__name__}.")
        self.alpha_init = _finite_number("alpha_init", alpha_init)
        self.branch = branch
        self.alpha = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set α back to ``alpha_init`` (the branch keeps its own parameters)."""
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if out.shape != x.shape:
            raise ValueError(
                f"SkipInit adds the branch's output to its input, so they must have the same shape; the branch "
                f"maps {tuple(x.shape)} to {tuple(out.shape)}."
            )
        return x + self.alpha * out  # (1)

    def extra_repr(self) -> str:
        return f"alpha_init={self.alpha_init:g}"


class ScalarBias(nn.Module):
    """x ↦ x + b with one learnable scalar b (shape (1,)), initialized to ``init`` (Fixup's scalar biases)."""

    def __init__(self, init: float = 0.0, device=None, dtype=None) -> None:
        super().__init__()
        self.init = _finite_number("init", init)
        self.bias = nn.Parameter(torch.full((1,), self.init, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.bias.fill_(self.init)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias

    def extra_repr(self) -> str:
        return f"init={self.init:g}"


class ScalarMultiplier(nn.Module):
    """x ↦ m · x with one learnable scalar m (shape (1,)), initialized to ``init`` (Fixup's multiplier, 1)."""

    def __init__(self, init: float = 1.0, device=None, dtype=None) -> None:
        super().__init__()
        self.init = _finite_number("init", init)
        self.weight = nn.Parameter(torch.full((1,), self.init, device=device, dtype=dtype))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(self.init)

    def forward(self, x: Tensor) -> Tensor:
        return self.weight * x

    def extra_repr(self) -> str:
        return f"init={self.init:g}"
