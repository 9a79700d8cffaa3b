"""Adaptive gradient clipping (Brock, De, Smith & Simonyan, ICML 2021, arXiv:2102.06171, section 4.1).

Plain gradient clipping bounds ‖G‖ by a fixed number, whose right value depends on the model,
the optimizer and the batch size. AGC bounds instead the ratio of each unit's gradient norm to
its weight norm, which says by how much one step can change the unit's weights relatively:

    ‖W_i‖* = max(‖W_i‖_F, ε)                         ε = 1e-3 (the paper's value)     (1)
    G_i ← λ · ‖W_i‖* / ‖G_i‖_F · G_i    if ‖G_i‖_F / ‖W_i‖* > λ,  else G_i unchanged    (2)

A *unit* i is one row of a weight matrix (the weights into one output unit) or one output
channel of a convolution kernel (torch stores both with the output first), and the whole
tensor for a bias or any other parameter with at most one non-trivial dimension, as in the
reference code (deepmind-research/nfnets, ``unitwise_norm``). ε stops zero-initialized
parameters (Fixup's zero layers, biases) from being frozen at zero. The paper clips every
layer except the final linear classifier: :func:`agc_parameters` lists a model's parameters
without it. Brock et al. use λ = 0.01 at batch size 4096 and find larger λ best for smaller
batches.

- :func:`unitwise_norm`: ‖·‖_F of each unit, broadcastable against the tensor.
- :func:`adaptive_gradient_clipping_`: equation (2) on ``p.grad`` of each parameter, in place,
  between ``loss.backward()`` and ``optimizer.step()``.
- :func:`agc_parameters`: a model's parameters except those of its final layer.
- :func:`install_agc`: post-accumulate-grad hooks that apply (2) as each gradient is complete,
  so that :func:`normlab.train.train` (which owns its optimizer) trains with AGC.

Chapter ``13_without_normalization``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["adaptive_gradient_clipping_", "agc_parameters", "install_agc", "unitwise_norm"]

AGC_EPS = 1e-3
"""The paper's ε: a unit's weight norm counts as at least this (equation (1))."""


def unitwise_norm(x: Tensor) -> Tensor:
    """Frobenius norm of each unit of ``x``: over all dimensions but the first for a tensor of shape (out, ...)
    with at least two non-trivial dimensions; over the whole tensor otherwise (biases, gains, scalars).

    The result has ``x.dim()`` dimensions of size 1 except the first, so it broadcasts against ``x``.
    """
    if sum(size > 1 for size in x.shape) <= 1:
        return torch.linalg.vector_norm(x).reshape([1] * x.dim())
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


def _check_number(name: str, value: object, low: float) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (math.isfinite(value) and value > low):
        raise ValueError(f"{name} must be a finite number > {low:g}; got {value!r}.")
    return float(value)


@torch.no_grad()
def adaptive_gradient_clipping_(parameters: Iterable[Tensor] | Tensor, clipping: float = 0.01,
                                eps: float = AGC_EPS) -> float:
    """Clip each parameter's ``.grad`` unit-wise in place by equation (2), at λ = ``clipping``, with ε = ``eps``.

    Parameters without a gradient are skipped. Returns the fraction of units clipped (0 when there
    are none), which is what a chapter plots. Pass the parameters of every layer but the final
    classifier (:func:`agc_parameters`), as the paper does.
    """
    clipping = _check_number("clipping (λ)", clipping, 0.0)
    eps = _check_number("eps", eps, 0.0)
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    clipped = total = 0
    for p in parameters:
        if not isinstance(p, Tensor):
            raise TypeError(f"adaptive_gradient_clipping_ takes tensors (parameters); got {type(p).__name__}.")
        g = p.grad
        if g is None:
            continue
        if g.shape != p.shape:
            raise ValueError(f"a gradient of shape {tuple(g.shape)} for a parameter of shape {tuple(p.shape)}.")
        max_norm = unitwise_norm(p).clamp(min=eps) * clipping                        # (1): λ ‖W_i‖*
        grad_norm = unitwise_norm(g)
        trigger = grad_norm > max_norm                                               # (2): ‖G_i‖/‖W_i‖* > λ
        factor = torch.where(trigger, max_norm / grad_norm.clamp(min=1e-6), torch.ones_like(grad_norm))
        g.mul_(factor)                                                               # (2)
        clipped += int(trigger.sum())
        total += trigger.numel()
    return clipped / total if total else 0.0


def agc_parameters(model: nn.Module, final: str = "output") -> list[nn.Parameter]:
    """The parameters of ``model`` except those of its child module named ``final`` (the classifier).

    ``final`` is a name in ``model.named_modules()`` ("output" in :func:`normlab.models.mlp` and
    :func:`normlab.models.residual_mlp`).
    """
    modules = dict(model.named_modules())
    if final not in modules or final == "":
        raise ValueError(f"model has no submodule named {final!r} to exclude; its children are "
                         f"{[name for name, _ in model.named_children()]}.")
    excluded = {id(p) for p in modules[final].parameters()}
    return [p for p in model.parameters() if id(p) not in excluded]


def install_agc(model: nn.Module, clipping: float = 0.01, eps: float = AGC_EPS, final: str | None = "output",
                record: list[float] | None = None) -> list:
    """Apply :func:`adaptive_gradient_clipping_` to each parameter's gradient as soon as backward completes it.

    Registers a post-accumulate-grad hook on every parameter except those of ``final`` (None: clip all).
    Gradients are clipped before any optimizer step, so training with :func:`normlab.train.train` is
    training with AGC. Each clipped parameter's fraction of clipped units is appended to ``record`` when
    given. Returns the hook handles; call ``handle.remove()`` on each to stop clipping.
    """
    _check_number("clipping (λ)", clipping, 0.0)
    _check_number("eps", eps, 0.0)
    parameters = agc_parameters(model, final) if final is not None else list(model.parameters())

    def hook(p: Tensor) -> None:
        fraction = adaptive_gradient_clipping_([p], clipping, eps)
        if record is not None:
            record.append(fraction)

    return [p.register_post_accumulate_grad_hook(hook) for p in parameters if p.requires_grad]
