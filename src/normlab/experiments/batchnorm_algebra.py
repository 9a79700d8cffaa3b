"""Experiments of chapter ``02_batchnorm``.

Small, fast measurements that back the chapter's statements about inference-mode
statistics and scale invariance; the classic training experiments of Ioffe & Szegedy
live in :mod:`normlab.experiments.batchnorm`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.stats
import torch
from torch import nn

from normlab import data, models, train
from normlab.experiments._common import Claim
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
class AffineAfterTraining:
    """What BN's γ and β control, measured on a trained network, and what fixing them at (1, 0) costs.

    The network of :func:`inference_pitfalls` is trained twice from the same initial weights
    on the same minibatches: with learned γ, β and with ``affine=False`` (γ = 1, β = 0 fixed,
    every unit standardized). For the first, on the test set in train mode:
    ``mean_deviation`` = max over units of |batch mean of BN's output − β|,
    ``std_deviation`` = max |batch std / γ − 1|, ``skewness`` the skewness of each unit's
    BN output (first BN layer), ``gamma``/``beta`` all learned values (both layers).
    ``train_loss`` = (learned, fixed): cross-entropy on the whole training set in eval mode;
    ``test_accuracy`` likewise.
    """

    mean_deviation: float
    std_deviation: float
    skewness: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    train_loss: tuple[float, float]
    test_accuracy: tuple[float, float]


def affine_after_training(seed: int = 0, steps: int = 400, lr: float = 0.1) -> AffineAfterTraining:
    """Train the BN MLP of :func:`inference_pitfalls` with learned and with fixed (γ, β) = (1, 0).

    γ and β set the mean and standard deviation of each unit's output over the batch, and
    nothing else: the shape of the distribution (skewness here) is whatever the
    pre-activations have. Used in chapter ``02_batchnorm``.
    """
    ds = data.digits(seed=seed)
    losses, accuracies, learned = [], [], None
    for affine in (True, False):
        net = models.mlp(ds.num_features, [64, 64], ds.num_classes, norm=partial(BatchNorm1d, affine=affine),
                         seed=seed)
        train.train(net, ds, steps=steps, lr=lr, batch_size=32, seed=seed, progress=False, device="cpu")
        losses.append(train.evaluate(net, ds, split="train")[0])
        accuracies.append(train.evaluate(net, ds)[1])
        net.eval()  # left in eval mode, as before
        if affine:
            learned = net
    outputs: list[torch.Tensor] = []
    hook = learned.norm0.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
    with torch.no_grad():
        copy.deepcopy(learned).train()(ds.x_test)   # the hook travels with the copy; the model keeps its stats
    hook.remove()
    out = outputs[0].double().numpy()
    gamma0, beta0 = learned.norm0.weight.detach().double().numpy(), learned.norm0.bias.detach().double().numpy()
    norms = [learned.norm0, learned.norm1]
    return AffineAfterTraining(
        mean_deviation=float(np.abs(out.mean(0) - beta0).max()),
        std_deviation=float(np.abs(out.std(0) / gamma0 - 1).max()),
        skewness=scipy.stats.skew(out, axis=0),
        gamma=np.concatenate([m.weight.detach().numpy() for m in norms]),
        beta=np.concatenate([m.bias.detach().numpy() for m in norms]),
        train_loss=(losses[0], losses[1]), test_accuracy=(accuracies[0], accuracies[1]))


def affine_sets_two_moments_only(record: AffineAfterTraining, moment_tol: float = 1e-3,
                                 skew_spread: float = 1.0) -> Claim:
    """Claim: BN's output has batch mean β and batch std γ (within ``moment_tol``; ε and float32
    make it inexact), while the skewness of the units' outputs spans more than ``skew_spread``:
    γ and β fix two moments, not the distribution. Measured: (largest moment deviation,
    skewness spread)."""
    moments = max(record.mean_deviation, record.std_deviation)
    spread = float(record.skewness.max() - record.skewness.min())
    return Claim(holds=bool(moments < moment_tol and spread > skew_spread), measured=(moments, spread),
                 threshold=(moment_tol, skew_spread))


def learned_affine_beats_standardized(record: AffineAfterTraining, factor: float = 1.1) -> Claim:
    """Claim: the network whose units are held at zero mean and unit variance (γ = 1, β = 0
    fixed) ends with a training loss more than ``factor`` times that of the network that learns
    γ and β. Measured: the ratio (fixed / learned)."""
    ratio = record.train_loss[1] / record.train_loss[0]
    return Claim(holds=bool(ratio > factor), measured=float(ratio), threshold=factor)


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
