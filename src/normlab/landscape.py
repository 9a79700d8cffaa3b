r"""Measures of the loss landscape of a network, as a function of its flat parameter vector θ.

- :func:`flat_loss`: turn a model and a batch into ``f(θ) -> loss`` for ``torch.func``
  (normalization layers use the statistics of the batch and update nothing).
- :func:`gradient_direction_measures`: walk along the gradient, θ − η∇f(θ) for a grid of
  η, and record the loss, the gradient change ‖∇f(θ) − ∇f(θ − η∇f)‖ ("gradient
  predictiveness") and its ratio to the distance moved ("effective β-smoothness"),
  as Santurkar et al. (2018, Fig. 4) do.
- :func:`hessian_vector_product` and :func:`top_hessian_eigenvalue` (power iteration on
  Hessian-vector products, never forming the Hessian).
- :func:`filter_normalized_direction`, :func:`loss_slice_1d`, :func:`loss_slice_2d`:
  slices of the loss through θ along random directions rescaled filter by filter to the
  norms of the weights (Li et al. 2018), so networks of different scale compare.

Chapter ``05_smoothness``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp

__all__ = [
    "GradientDirectionMeasures",
    "filter_normalized_direction",
    "flat_loss",
    "flat_parameters",
    "gradient_direction_measures",
    "hessian_vector_product",
    "loss_slice_1d",
    "loss_slice_2d",
    "top_hessian_eigenvalue",
]

FlatLoss = Callable[[Tensor], Tensor]


def flat_parameters(model: nn.Module) -> Tensor:
    """All trainable parameters of ``model`` concatenated into one detached vector θ."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def flat_loss(model: nn.Module, x: Tensor, y: Tensor,
              criterion: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy) -> FlatLoss:
    """``f(θ) = criterion(model_θ(x), y)`` for a flat parameter vector θ (see :func:`flat_parameters`).

    The model is copied in training mode with ``track_running_stats = False`` on every layer
    that has it, so normalization layers use the statistics of the batch ``x`` (the
    training objective) and no running estimate moves, whatever θ is evaluated. ``f`` works
    under ``torch.func`` transforms. Used in chapter ``05_smoothness``.
    """
    frozen = copy.deepcopy(model).train()
    for module in frozen.modules():
        if hasattr(module, "track_running_stats"):
            module.track_running_stats = False
    names = [n for n, p in frozen.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in frozen.named_parameters() if p.requires_grad]
    sizes = [int(np.prod(s)) for s in shapes]
    buffers = {n: b for n, b in frozen.named_buffers()}

    def f(theta: Tensor) -> Tensor:
        if theta.dim() != 1 or theta.numel() != sum(sizes):
            raise ValueError(f"theta must be a flat vector of {sum(sizes)} parameters; got shape "
                             f"{tuple(theta.shape)}.")
        params = {n: t.reshape(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return criterion(functional_call(frozen, (params, buffers), (x,)), y)

    return f


@dataclass
class GradientDirectionMeasures:
    """The loss and gradient along θ − η g, g = ∇f(θ), for each step ``etas[k]``.

    ``loss[k] = f(θ − η_k g)``; ``gradient_change[k] = ‖∇f(θ − η_k g) − g‖``;
    ``beta[k] = gradient_change[k] / (η_k ‖g‖)``. Summaries as in Santurkar et al.:
    :attr:`loss_variation` (max − min of ``loss``), :attr:`gradient_predictiveness`
    (max of ``gradient_change``), :attr:`effective_beta` (max of ``beta``).
    """

    etas: np.ndarray
    loss: np.ndarray
    gradient_change: np.ndarray
    beta: np.ndarray
    loss_at_theta: float
    gradient_norm: float

    @property
    def loss_variation(self) -> float:
        return float(self.loss.max() - self.loss.min())

    @property
    def gradient_predictiveness(self) -> float:
        return float(self.gradient_change.max())

    @property
    def effective_beta(self) -> float:
        return float(self.beta.max())


def gradient_direction_measures(f: FlatLoss, theta: Tensor,
                                etas: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
                                ) -> GradientDirectionMeasures:
    """Loss, gradient change and effective β-smoothness along the gradient (Santurkar et al., §3.1).

    Moves to θ − η g for every η in ``etas`` (g = ∇f(θ), the SGD step of learning rate η) and
    compares the gradient there with g: a smooth loss (β small) has
    ‖∇f(θ − ηg) − g‖ ≤ β η ‖g‖. Used in chapter ``05_smoothness``.
    """
    etas = np.asarray(etas, dtype=float)
    if etas.ndim != 1 or etas.size == 0 or np.any(etas <= 0):
        raise ValueError(f"etas must be a non-empty 1D sequence of positive steps; got {etas!r}.")
    value_and_grad = torch.func.grad_and_value(f)
    g, value = value_and_grad(theta)
    g = g.detach()
    gnorm = float(g.norm())
    losses, changes = [], []
    for eta in etas:
        g_eta, value_eta = value_and_grad(theta - float(eta) * g)
        losses.append(float(value_eta))
        changes.append(float((g_eta - g).norm()))
    changes_arr = np.array(changes)
    beta = changes_arr / (etas * gnorm) if gnorm > 0 else np.zeros_like(changes_arr)
    return GradientDirectionMeasures(etas, np.array(losses), changes_arr, beta, float(value), gnorm)


def hessian_vector_product(f: FlatLoss, theta: Tensor, v: Tensor) -> Tensor:
    """H(θ) v, the directional derivative of ∇f along v (forward-over-reverse with ``torch.func``).

    Costs about two gradient evaluations and never forms H. Used in chapter ``05_smoothness``.
    """
    if v.shape != theta.shape:
        raise ValueError(f"v must have the shape of theta {tuple(theta.shape)}; got {tuple(v.shape)}.")
    return jvp(grad(f), (theta,), (v,))[1]


def top_hessian_eigenvalue(f: FlatLoss, theta: Tensor, iterations: int = 30, seed: int = 0,
                           rtol: float = 1e-4) -> float:
    """The eigenvalue of largest magnitude of ∇²f(θ), by power iteration on Hessian-vector products.

    Starts from a seeded Gaussian vector, iterates v ← Hv/‖Hv‖ and returns the Rayleigh
    quotient vᵀHv; stops early when it changes by less than ``rtol`` (relative). At a
    minimum the Hessian is positive semi-definite and this is λ_max, the local β of the
    descent lemma. Used in chapter ``05_smoothness``.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1; got {iterations}.")
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
    v = v / v.norm()
    estimate = 0.0
    for _ in range(iterations):
        hv = hessian_vector_product(f, theta, v).detach()
        new = float(v @ hv)
        norm = hv.norm()
        if norm == 0:
            return 0.0
        v = hv / norm
        if abs(new - estimate) <= rtol * abs(new):
            return new
        estimate = new
    return estimate


def filter_normalized_direction(model: nn.Module, seed: int = 0) -> Tensor:
    """A random direction in parameter space, rescaled filter by filter (Li et al. 2018).

    For every weight of 2 or more dimensions, a Gaussian direction of the same shape whose
    rows (one per output unit, a "filter") are rescaled to the norm of the same row of the
    weight: ‖d_i‖ = ‖θ_i‖. One-dimensional parameters (biases, the γ and β of normalization
    layers) get 0, as in Li et al. Returned flat, in the order of :func:`flat_parameters`.
    Used in chapter ``05_smoothness``.
    """
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        w = p.detach()
        if w.dim() < 2:
            parts.append(torch.zeros_like(w).reshape(-1))
            continue
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype).to(w.device)
        rows_w, rows_d = w.reshape(w.shape[0], -1), d.reshape(d.shape[0], -1)
        d = rows_d * (rows_w.norm(dim=1, keepdim=True) / rows_d.norm(dim=1, keepdim=True).clamp_min(1e-12))
        parts.append(d.reshape(-1))
    return torch.cat(parts)


@torch.no_grad()
def loss_slice_1d(f: FlatLoss, theta: Tensor, direction: Tensor, alphas: Sequence[float]) -> np.ndarray:
    """f(θ + α d) for each α: a 1-D slice of the loss through θ. Used in chapter
    ``05_smoothness``."""
    return np.array([float(f(theta + float(a) * direction)) for a in alphas])


@torch.no_grad()
def loss_slice_2d(f: FlatLoss, theta: Tensor, d1: Tensor, d2: Tensor, alphas: Sequence[float],
                  betas: Sequence[float]) -> np.ndarray:
    """``out[i, j] = f(θ + α_i d1 + β_j d2)``: a 2-D slice of the loss through θ. Used in chapter
    ``05_smoothness``."""
    return np.array([[float(f(theta + float(a) * d1 + float(b) * d2)) for b in betas] for a in alphas])
