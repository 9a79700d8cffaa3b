"""The learned scale γ (``weight``) and shift β (``bias``) that every normalization layer shares.

Registered under torch's names, so state dicts are interchangeable with ``torch.nn``'s.
"""

from __future__ import annotations

import torch
from torch import nn


def register_affine(module: nn.Module, shape, enabled: bool, bias: bool, factory_kwargs: dict) -> None:
    """Give ``module`` a ``weight`` (γ) and, if ``bias``, a ``bias`` (β) of ``shape``; both None
    when ``enabled`` is False. Call :func:`reset_affine` afterwards to set γ = 1, β = 0."""
    if enabled:
        module.weight = nn.Parameter(torch.empty(shape, **factory_kwargs))
        if bias:
            module.bias = nn.Parameter(torch.empty(shape, **factory_kwargs))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)


def reset_affine(module: nn.Module) -> None:
    """γ = 1, β = 0: the identity map on the normalized input."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
