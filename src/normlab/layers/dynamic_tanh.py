"""Dynamic Tanh (Zhu, Chen, He, LeCun & Liu, CVPR 2025): a normalization layer without statistics.

A drop-in replacement for ``LayerNorm(normalized_shape)`` in a Transformer. Per element,

    u = tanh(α · x)          α one learnable scalar, initialized to α₀ (0.5 in the paper)   (1)
    y = γ · u + β            γ, β elementwise, of shape normalized_shape                     (2)

No mean, no variance, no reduction over any axis: each output depends on its own input only.
tanh squashes the extreme values, as LayerNorm does to the few tokens whose activations are
far larger than the rest; α plays the role of 1/σ, learned once instead of computed per token.

Chapter ``11_transformers``, section "Transformers without normalization".
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor, nn

from normlab.layers._common import register_affine, reset_affine

__all__ = ["DynamicTanh"]


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        shape = (int(normalized_shape),)
    else:
        try:
            shape = tuple(normalized_shape)
        except TypeError:
            raise TypeError(
                f"normalized_shape must be an int or a sequence of ints, as for LayerNorm; got {normalized_shape!r}."
            ) from None
    if not shape or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in shape):
        raise ValueError(
            f"normalized_shape must be one or more positive integers (the trailing dimensions of the input), "
            f"as for LayerNorm; got {normalized_shape!r}."
        )
    return tuple(int(n) for n in shape)


class DynamicTanh(nn.Module):
    r"""Dynamic Tanh, :math:`y = \gamma \odot \tanh(\alpha x) + \beta` (Zhu et al. 2025), elementwise.

    α is one learnable scalar (a parameter of shape (1,)), initialized to ``alpha_init``
    (the paper's α₀ = 0.5); γ (``weight``) and β (``bias``) are elementwise over the trailing
    ``normalized_shape``, initialized to 1 and 0. Constructed like ``torch.nn.LayerNorm``,
    ``(normalized_shape, alpha_init=0.5, elementwise_affine=True, bias=True, device=None,
    dtype=None)``, with ``alpha_init`` in the place of ``eps``, so it replaces a LayerNorm
    wherever one stands; the state dict holds ``alpha``, ``weight`` and ``bias``. The same
    computation in training and eval mode, and no statistic over any axis.

    >>> dyt = DynamicTanh(64)
    >>> dyt(torch.randn(8, 10, 64)).shape
    torch.Size([8, 10, 64])

    Chapter ``11_transformers``, section "Transformers without normalization".
    """

    normalized_shape: tuple[int, ...]
    alpha_init: float
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        alpha_init: float = 0.5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        if isinstance(alpha_init, bool) or not isinstance(alpha_init, numbers.Real) or not math.isfinite(alpha_init) \
                or alpha_init <= 0:
            raise ValueError(
                f"alpha_init must be a finite number > 0 (the paper uses 0.5); got {alpha_init!r}. α scales the "
                "input of tanh: α = 0 would make the layer a constant, α < 0 would flip its sign."
            )
        self.alpha_init = float(alpha_init)
        self.elementwise_affine = elementwise_affine
        self.alpha = nn.Parameter(torch.empty(1, **factory_kwargs))
        register_affine(self, self.normalized_shape, elementwise_affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """α = α₀, γ = 1, β = 0: at initialization the layer is tanh(α₀ x)."""
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init)
        reset_affine(self)

    def _check_input(self, input: Tensor) -> None:
        if not isinstance(input, Tensor):
            raise TypeError(f"DynamicTanh expects a torch.Tensor; got {type(input).__name__}.")
        if not input.is_floating_point():
            raise TypeError(
                f"DynamicTanh expects floating-point input; got {input.dtype}. Convert it with .float() "
                "(token ids go through an nn.Embedding first)."
            )
        shape = self.normalized_shape
        if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape):]) != shape:
            got = tuple(input.shape[max(input.dim() - len(shape), 0):])
            raise ValueError(
                f"DynamicTanh was built with normalized_shape={shape} but got input of shape {tuple(input.shape)}, "
                f"whose last {len(shape)} dimension(s) are {got}. As for LayerNorm, the normalized dimensions must "
                f"come last: build it with normalized_shape={got}, or move them to the end."
            )

    def forward(self, input: Tensor) -> Tensor:
        self._check_input(input)
        u = torch.tanh(self.alpha * input)  # (1)
        if self.weight is not None:
            u = u * self.weight  # (2)
        if self.bias is not None:
            u = u + self.bias
        return u

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, alpha_init={self.alpha_init}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )
