"""Experiments of chapter ``02_batchnorm``.

Small, fast measurements that back the chapter's statements about inference-mode
statistics and scale invariance; the classic training experiments of Ioffe & Szegedy
live in :mod:`normlab.experiments.batchnorm`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from normlab import data, models, train
from normlab.layers import BatchNorm1d


def biased_variance_ratio(batch_size: int, num_batches: int = 20_000, seed: int = 0) -> float:
    """E[σ²_B] / Var[x] for the biased (1/m) variance of batches of size m from N(0, 1).

    Theory: (m − 1)/m, which is why Algorithm 2 of Ioffe & Szegedy multiplies the averaged
    batch variance by m/(m − 1) to estimate the population variance.
    """
    if batch_size < 2:
        raise ValueError(f"a batch variance needs at least 2 values; got batch_size={batch_size}")
    rng = np.random.default_rng(seed)
    batches = rng.standard_normal((num_batches, batch_size))
    return float(batches.var(axis=1).mean())


@dataclass
class InferencePitfalls:
    """Test accuracy of one BN network evaluated correctly and in the classic wrong ways."""

    eval_mode: float             # model.eval(): running statistics (correct)
    train_mode_full_batch: float # train mode on the whole test set at once
    train_mode_batch_of_2: float # train mode on test batches of 2 (forgot eval())
    never_updated_stats: float   # eval mode with running statistics left at their init (0, 1)
    batch_dependence: float      # train mode: max change of one example's logits with its batch-mates
    eval_batch_dependence: float # the same in eval mode (0: predictions are per example)


def inference_pitfalls(seed: int = 0, steps: int = 400, lr: float = 0.1) -> InferencePitfalls:
    """Train a BN MLP (64 → 64 → 64 → 10, ReLU) on digits, then evaluate it several ways.

    Each wrong evaluation runs on a copy, so the trained model and its running statistics
    are never disturbed by the demonstration itself.
    """
    ds = data.digits(seed=seed)
    net = models.mlp(ds.num_features, [64, 64], ds.num_classes, norm=BatchNorm1d, seed=seed)
    train.train(net, ds, steps=steps, lr=lr, batch_size=32, seed=seed, progress=False, device="cpu")
    x, y = ds.x_test, ds.y_test

    def accuracy(model: nn.Module, batch: int) -> float:
        with torch.no_grad():
            preds = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
        return float((preds == y).float().mean())

    net.eval()
    correct = accuracy(net, len(x))
    in_train_mode = copy.deepcopy(net).train()
    full = accuracy(copy.deepcopy(in_train_mode), len(x))
    tiny = accuracy(copy.deepcopy(in_train_mode), 2)
    fresh = copy.deepcopy(net)
    for module in fresh.modules():
        if isinstance(module, BatchNorm1d):
            module.reset_running_stats()
    never = accuracy(fresh.eval(), len(x))

    def dependence(model: nn.Module) -> float:
        """How much example 0's logits change when its 31 batch-mates are swapped for others."""
        with torch.no_grad():
            a = model(x[:32])[0]
            b = model(torch.cat([x[:1], x[32:63]]))[0]
        return float((a - b).abs().max())

    return InferencePitfalls(correct, full, tiny, never,
                             dependence(copy.deepcopy(in_train_mode)), dependence(net))


@dataclass
class ScaleInvariance:
    """Loss and weight gradient of Linear → BN → loss when the weights are scaled by c."""

    scales: np.ndarray
    loss: np.ndarray            # loss at weights c·W
    grad_norm: np.ndarray       # ‖∂loss/∂(cW)‖
    input_grad_norm: np.ndarray # ‖∂loss/∂x‖: unaffected by the scale


def scale_invariance(scales=(0.01, 0.1, 1.0, 10.0, 100.0), seed: int = 0, eps: float = 1e-5) -> ScaleInvariance:
    """BN(cWx) = BN(Wx) and ∂/∂(cW) = (1/c)·∂/∂W, checked in float64 on a random batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 20, generator=g, dtype=torch.float64)
    w = torch.randn(30, 20, generator=g, dtype=torch.float64) / 20**0.5
    target = torch.randn(64, 30, generator=g, dtype=torch.float64)
    bn = BatchNorm1d(30, eps=eps, dtype=torch.float64)
    losses, grads, input_grads = [], [], []
    for c in scales:
        weight = (c * w).requires_grad_()
        xin = x.clone().requires_grad_()
        loss = ((bn(xin @ weight.T) - target) ** 2).mean()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(float(weight.grad.norm()))
        input_grads.append(float(xin.grad.norm()))
    return ScaleInvariance(np.array(scales, dtype=float), np.array(losses), np.array(grads),
                           np.array(input_grads))
