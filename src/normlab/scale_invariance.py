"""Measurements on scale-invariant weights: the weights of a layer followed by BatchNorm.

If the loss does not change when a weight w is multiplied by c > 0, L(c w) = L(w), then
(Euler's theorem for functions homogeneous of degree 0, and the chain rule)

    ∇L(c w) = ∇L(w) / c,        ⟨w, ∇L(w)⟩ = 0.                                  (1)

A gradient step w − η g therefore changes the *direction* of w by about
η ‖g‖ / ‖w‖ = η ‖ĝ‖ / ‖w‖², where ĝ is the gradient at w/‖w‖: the effective learning rate
of the direction is η / ‖w‖². With SGD and weight decay λ (w ← (1 − ηλ) w − η g),

    ‖w_{t+1}‖² = (1 − ηλ)² ‖w_t‖² + η² ‖g_t‖²,                                     (2)

which for λ = 0 only grows. At an equilibrium of (2) the relative size of the gradient
step, η‖g‖/‖w‖, is √(ηλ(2 − ηλ)) ≈ √(2ηλ) whatever the gradient.

- :func:`scale_invariant_weights`: the Linear weights that BatchNorm follows in an :func:`normlab.models.mlp`.
- :func:`radial_cosine`: cos(w_i, g_i) per unit (row), zero by (1).
- :func:`effective_learning_rate`: η / ‖w‖², per unit or for a whole layer.
- :func:`norm_after_step`: the right-hand side of (2).
- :func:`equilibrium_relative_update`: √(ηλ(2 − ηλ)).

Used in chapter ``09_weight_decay``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "effective_learning_rate",
    "equilibrium_relative_update",
    "norm_after_step",
    "radial_cosine",
    "scale_invariant_weights",
]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _is_batch_norm(module: nn.Module) -> bool:
    from normlab.layers import BatchNorm1d, BatchNorm2d

    return isinstance(module, _BATCH_NORMS + (BatchNorm1d, BatchNorm2d))


def scale_invariant_weights(model: nn.Sequential) -> dict[str, nn.Parameter]:
    """The weights of an :func:`normlab.models.mlp` whose scale the loss ignores (in train mode).

    These are ``linear{i}.weight`` for every hidden layer ``i`` followed by a batch norm
    ``norm{i}``: BN divides by the batch standard deviation, so scaling a row of the
    weight (one unit) by c > 0 leaves the output unchanged, up to ε. The biases of those
    layers are not included: BN subtracts the batch mean, so they have no effect at all.
    Returned in order, keyed by parameter name.
    Used in chapter ``09_weight_decay``.
    """
    children = dict(model.named_children()) if isinstance(model, nn.Sequential) else {}
    if "output" not in children:
        raise ValueError(
            "scale_invariant_weights expects a model built by normlab.models.mlp (children linear0, norm0, act0, "
            f"..., output); got a {type(model).__name__} with children {list(children)}."
        )
    weights: dict[str, nn.Parameter] = {}
    index = 0
    while f"linear{index}" in children:
        norm = children.get(f"norm{index}")
        if norm is not None and _is_batch_norm(norm):
            weights[f"linear{index}.weight"] = children[f"linear{index}"].weight
        index += 1
    if not weights:
        raise ValueError("The model has no Linear layer followed by BatchNorm; build it with "
                         "normlab.models.mlp(..., norm=normlab.layers.BatchNorm1d).")
    return weights


def radial_cosine(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """cos(w_i, g_i) for each row i of a weight matrix and its gradient (equation 1: zero).

    Rows are units: each is scale-invariant on its own when BN follows the layer.
    Used in chapter ``09_weight_decay``.
    """
    if weight.shape != grad.shape:
        raise ValueError(f"weight and grad must have the same shape; got {tuple(weight.shape)} and "
                         f"{tuple(grad.shape)}.")
    w, g = weight.reshape(weight.shape[0], -1), grad.reshape(grad.shape[0], -1)
    return (w * g).sum(1) / (w.norm(dim=1) * g.norm(dim=1))


def effective_learning_rate(weight: torch.Tensor, lr: float, per_unit: bool = True) -> torch.Tensor:
    """η / ‖w‖²: the learning rate of the direction of a scale-invariant weight.

    With ``per_unit`` one value per row (each unit's own weight vector); otherwise one
    value for the whole layer, with the Frobenius norm.
    Used in chapter ``09_weight_decay``.
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive; got {lr}.")
    w = weight.reshape(weight.shape[0], -1)
    squared = (w * w).sum(1) if per_unit else (w * w).sum()
    return lr / squared


def norm_after_step(norm: float, grad_norm: float, lr: float, weight_decay: float = 0.0) -> float:
    """‖w_{t+1}‖ after one SGD step with weight decay on a weight orthogonal to its gradient.

    Equation (2): ‖w_{t+1}‖² = (1 − ηλ)² ‖w_t‖² + η² ‖g_t‖², where g_t is the gradient of
    the loss alone (without the decay term λw, which torch's SGD adds).
    Used in chapter ``09_weight_decay``.
    """
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"lr must be positive and weight_decay non-negative; got lr={lr}, "
                         f"weight_decay={weight_decay}.")
    return math.sqrt((1 - lr * weight_decay) ** 2 * norm**2 + lr**2 * grad_norm**2)


def equilibrium_relative_update(lr: float, weight_decay: float) -> float:
    """√(ηλ(2 − ηλ)): the root-mean-square of η‖g‖/‖w‖ when ‖w‖ is at equilibrium.

    From equation (2) with ‖w_{t+1}‖ = ‖w_t‖: η²‖g‖² = (1 − (1 − ηλ)²) ‖w‖². For small ηλ
    it is √(2ηλ), the angular update of Wan et al. (2021) without momentum.
    Used in chapter ``09_weight_decay``.
    """
    if lr <= 0 or weight_decay < 0 or lr * weight_decay >= 1:
        raise ValueError(f"need lr > 0, weight_decay >= 0 and lr * weight_decay < 1; got lr={lr}, "
                         f"weight_decay={weight_decay}.")
    product = lr * weight_decay
    return math.sqrt(product * (2 - product))
