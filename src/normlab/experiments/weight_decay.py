"""Experiments of chapter ``09_weight_decay``.

Every experiment uses the same network: a ReLU MLP with two hidden layers of 64 units and
:class:`normlab.layers.BatchNorm1d` between each hidden Linear and its ReLU
(:func:`bn_mlp`), on scikit-learn's 8x8 digits (:func:`normlab.data.digits`), trained by
plain minibatch SGD (no momentum) in float64. The two hidden weight matrices are
scale-invariant (:func:`normlab.scale_invariance.scale_invariant_weights`); the output
layer and BN's γ, β are not.

- :func:`scale_invariance_on_network`: L(cW) and c·∇L(cW) against L(W) and ∇L(W), and
  cos(w_i, g_i), with ε = 0 and ε = 10⁻⁵. Claims: :func:`loss_is_scale_invariant`,
  :func:`gradient_scales_inversely`, :func:`gradient_is_orthogonal`,
  :func:`eps_breaks_invariance_at_small_scale`.
- :func:`rescaled_training`: training from (cW, c²η) against (W, η). Claims:
  :func:`rescaled_runs_match`, :func:`eps_separates_small_scale_runs`.
- :func:`taylor_terms_under_rescaling`: the two terms of the second-order Taylor expansion of
  the loss along the gradient, at cW for several c (so the batch standard deviation σ of the
  pre-activations scales with c). Claims: :func:`taylor_terms_scale_as_learning_rate`,
  :func:`descent_not_guaranteed`.
- :func:`weight_decay_sweep`: weight norms, effective learning rates and test accuracy
  for several weight decays. Claims: :func:`norm_identity_holds`,
  :func:`norm_grows_without_decay`, :func:`decay_reaches_equilibrium`,
  :func:`effective_lr_raised_by_decay`.
- :func:`weight_decay_sweep` with ``decay_bn_affine=False``: no decay on BN's γ and β.
  Claim: :func:`gamma_shrinks_under_decay`.

Each claim is a function of the returned record(s) that returns a
:class:`~normlab.experiments._common.Claim` (holds, measured, threshold), so the chapter's
check cells and the tests assert exactly the same thing, and the chapter glues the number each
check compared with its threshold, which is written once, as the claim's default.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normlab import data, models, train
from normlab.experiments._common import Claim, as_float64
from normlab.layers import BatchNorm1d
from normlab.scale_invariance import equilibrium_relative_update, radial_cosine, scale_invariant_weights

__all__ = [
    "InvarianceRecord",
    "RescaledTrainingRecord",
    "WeightDecayRecord",
    "bn_mlp",
    "decay_reaches_equilibrium",
    "effective_lr_raised_by_decay",
    "eps_breaks_invariance_at_small_scale",
    "eps_separates_small_scale_runs",
    "gamma_shrinks_under_decay",
    "gradient_is_orthogonal",
    "gradient_scales_inversely",
    "loss_is_scale_invariant",
    "norm_grows_without_decay",
    "norm_identity_holds",
    "relative_update_rms",
    "rescaled_training",
    "rescaled_runs_match",
    "scale_invariance_on_network",
    "TaylorRecord",
    "descent_not_guaranteed",
    "taylor_terms_scale_as_learning_rate",
    "taylor_terms_under_rescaling",
    "weight_decay_sweep",
]

HIDDEN = (64, 64)
DTYPE = torch.float64


def bn_mlp(num_features: int, num_classes: int, seed: int, eps: float = 1e-5) -> nn.Sequential:
    """The chapter's network: Linear → BatchNorm1d(ε) → ReLU, twice, then a Linear head; float64.

    Used in chapter ``09_weight_decay``.
    """
    norm = partial(BatchNorm1d, eps=eps)
    return models.mlp(num_features, HIDDEN, num_classes, activation="relu", norm=norm, seed=seed).to(DTYPE)


def _digits_float64(seed: int) -> data.Dataset:
    """The chapter's data: digits split by ``seed``, features in float64 like :func:`bn_mlp`."""
    return as_float64(data.digits(seed=seed))


def _loss_and_grads(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return loss.item(), [w.grad.detach().clone() for w in scale_invariant_weights(net).values()]


# ----------------------------------------------------------------------------
# 1. Scale invariance on a network


@dataclass
class InvarianceRecord:
    """Loss and gradients of one minibatch when every scale-invariant weight is multiplied by c.

    ``loss_deviation[e, k]`` is |L(c_k W) − L(W)| / L(W) with ``eps_values[e]``;
    ``gradient_deviation[e, k]`` is the largest, over the layers, of
    ‖c_k ∇L(c_k W) − ∇L(W)‖ / ‖∇L(W)‖; ``max_abs_cosine[e]`` is the largest |cos(w_i, g_i)|
    over all units of all scale-invariant layers at c = 1, and ``median_abs_cosine_random``
    the median |cos(w_i, r_i)| for a random r_i of the same shape (what "not orthogonal"
    looks like in this dimension).
    """

    scales: np.ndarray
    eps_values: np.ndarray
    loss: np.ndarray                 # (eps, scale)
    loss_deviation: np.ndarray       # (eps, scale)
    gradient_deviation: np.ndarray   # (eps, scale)
    max_abs_cosine: np.ndarray       # (eps,)
    median_abs_cosine_random: float


def scale_invariance_on_network(seed: int = 0, scales: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e3),
                                eps_values: Sequence[float] = (0.0, 1e-5), batch_size: int = 128
                                ) -> InvarianceRecord:
    """Multiply both hidden weight matrices of :func:`bn_mlp` by c and compare loss and gradients.

    One minibatch of ``batch_size`` training images, train mode (batch statistics), float64.
    With ε = 0 the loss should not depend on c and c·∇L(cW) should equal ∇L(W)
    (equation 1 of :mod:`normlab.scale_invariance`); with ε > 0 both hold only while the
    batch variance of the scaled pre-activations is large compared to ε.
    Used in chapter ``09_weight_decay``.
    """
    ds = _digits_float64(seed)
    idx = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    x, y = ds.x_train[idx], ds.y_train[idx]
    scales = np.asarray(scales, dtype=np.float64)
    losses = np.zeros((len(eps_values), len(scales)))
    loss_dev = np.zeros_like(losses)
    grad_dev = np.zeros_like(losses)
    max_cos = np.zeros(len(eps_values))
    for e, eps in enumerate(eps_values):
        net = bn_mlp(ds.num_features, ds.num_classes, seed, eps=eps)
        base_loss, base_grads = _loss_and_grads(net, x, y)
        weights = scale_invariant_weights(net)
        max_cos[e] = max(radial_cosine(w.detach(), g).abs().max().item() for w, g in zip(weights.values(), base_grads))
        for k, c in enumerate(scales):
            scaled = copy.deepcopy(net)
            with torch.no_grad():
                for w in scale_invariant_weights(scaled).values():
                    w.mul_(c)
            losses[e, k], grads = _loss_and_grads(scaled, x, y)
            grad_dev[e, k] = max(((c * g - g0).norm() / g0.norm()).item() for g, g0 in zip(grads, base_grads))
        loss_dev[e] = np.abs(losses[e] - base_loss) / base_loss
    rng = torch.Generator().manual_seed(seed + 1)
    w = next(iter(scale_invariant_weights(net).values())).detach()
    random_cos = radial_cosine(w, torch.randn(w.shape, generator=rng, dtype=w.dtype)).abs().median().item()
    return InvarianceRecord(scales=scales, eps_values=np.asarray(eps_values, dtype=np.float64), loss=losses,
                            loss_deviation=loss_dev, gradient_deviation=grad_dev, max_abs_cosine=max_cos,
                            median_abs_cosine_random=random_cos)


def loss_is_scale_invariant(record: InvarianceRecord, tol: float = 1e-12) -> Claim:
    """Claim: with ε = 0, |L(cW) − L(W)| / L(W) < ``tol`` for every c. Measured: the largest deviation."""
    deviation = record.loss_deviation[record.eps_values == 0]
    return Claim(holds=bool(np.all(deviation < tol)), measured=float(deviation.max()), threshold=tol)


def gradient_scales_inversely(record: InvarianceRecord, tol: float = 1e-10) -> Claim:
    """Claim: with ε = 0, ‖c∇L(cW) − ∇L(W)‖ / ‖∇L(W)‖ < ``tol`` for every c and layer.
    Measured: the largest deviation."""
    deviation = record.gradient_deviation[record.eps_values == 0]
    return Claim(holds=bool(np.all(deviation < tol)), measured=float(deviation.max()), threshold=tol)


def gradient_is_orthogonal(record: InvarianceRecord, tol: float = 1e-10, eps_tol: float = 1e-4) -> Claim:
    """Claim: |cos(w_i, g_i)| < ``tol`` for every unit with ε = 0, and < ``eps_tol`` with ε > 0.
    Measured: (the largest |cos| with ε = 0, the largest with ε > 0); threshold: (``tol``, ``eps_tol``)."""
    exact = record.eps_values == 0
    holds = np.all(record.max_abs_cosine[exact] < tol) and np.all(record.max_abs_cosine[~exact] < eps_tol)
    return Claim(holds=bool(holds),
                 measured=(float(record.max_abs_cosine[exact].max()), float(record.max_abs_cosine[~exact].max())),
                 threshold=(tol, eps_tol))


def eps_breaks_invariance_at_small_scale(record: InvarianceRecord, small: float = 1e-3, large: float = 10.0,
                                         broken: tuple[float, float] = (1e-3, 0.3),
                                         kept: tuple[float, float] = (1e-4, 1e-3)) -> Claim:
    """Claim: with ε > 0, at c = ``small`` the loss and the rescaled gradient deviate from their
    values at c = 1 by more than ``broken`` = (loss, gradient) (relative), while for every
    c ≥ ``large`` they stay within ``kept`` = (loss, gradient). Measured: (smallest loss and
    gradient deviations at ``small``, largest loss and gradient deviations at c ≥ ``large``);
    threshold: (*broken, *kept)."""
    eps = record.eps_values > 0
    small_k, large_k = record.scales == small, record.scales >= large
    ok, at_small, at_large = True, [], []
    for dev, lo, hi in [(record.loss_deviation[eps], broken[0], kept[0]),
                        (record.gradient_deviation[eps], broken[1], kept[1])]:
        ok &= bool(np.all(dev[:, small_k] > lo) and np.all(dev[:, large_k] < hi))
        at_small.append(float(dev[:, small_k].min()))
        at_large.append(float(dev[:, large_k].max()))
    return Claim(holds=ok, measured=(*at_small, *at_large), threshold=(*broken, *kept))


# ----------------------------------------------------------------------------
# Training: normlab.train.train with per-group learning rate and weight decay


@dataclass
class _Run:
    loss: np.ndarray              # (steps,) minibatch loss before each step
    norms: np.ndarray             # (layers, steps + 1) ‖W_l‖ before step 1, after each step
    grad_norms: np.ndarray        # (layers, steps) ‖∇L‖ of the loss alone, at each step
    eval_steps: np.ndarray
    test_accuracy: np.ndarray
    final_gamma_mean: np.ndarray  # (BN layer,) mean of BN's γ over the units at the end
    final_weights: list[np.ndarray]


def _param_groups(net: nn.Sequential, lr: float, weight_decay: float, invariant_lr: float | None,
                  decay_bn_affine: bool) -> list[dict]:
    """Three SGD groups: the scale-invariant weights (at ``invariant_lr`` if given), BN's γ and β
    (decayed only if ``decay_bn_affine``), and every other parameter."""
    invariant = list(scale_invariant_weights(net).values())
    affine = [p for name, p in net.named_parameters() if name.startswith("norm")]
    taken = {id(p) for p in invariant + affine}
    others = [p for p in net.parameters() if id(p) not in taken]
    return [{"params": invariant, "lr": invariant_lr if invariant_lr is not None else lr, "weight_decay": weight_decay},
            {"params": others, "lr": lr, "weight_decay": weight_decay},
            {"params": affine, "lr": lr, "weight_decay": weight_decay if decay_bn_affine else 0.0}]


def _sgd_with_norms(net: nn.Sequential, ds: data.Dataset, *, steps: int, lr: float, batch_size: int, seed: int,
                    weight_decay: float = 0.0, invariant_lr: float | None = None, decay_bn_affine: bool = True,
                    eval_every: int = 100) -> _Run:
    """Plain minibatch SGD by :func:`normlab.train.train`, recording ‖W‖ and ‖∇L‖ of the
    scale-invariant weights.

    The scale-invariant weights may get their own learning rate. Weight decay is torch's
    coupled L2 term (w ← w − η(g + λw)), on every parameter, or on all but BN's γ and β
    when ``decay_bn_affine`` is False. ‖∇L‖ is read between ``backward()`` and the step
    (the loss's gradient alone, before the decay term is added); ‖W‖ after each step.
    """
    layers = list(scale_invariant_weights(net).values())
    norms = np.zeros((len(layers), steps + 1))
    grad_norms = np.zeros((len(layers), steps))
    norms[:, 0] = [w.detach().norm().item() for w in layers]

    @torch.no_grad()
    def record_gradients(step: int, _net: nn.Module, _x: torch.Tensor, _y: torch.Tensor) -> None:
        grad_norms[:, step - 1] = torch.stack([w.grad.norm() for w in layers]).numpy()

    @torch.no_grad()
    def record_norms(step: int, _net: nn.Module, _loss: float) -> None:
        norms[:, step] = torch.stack([w.norm() for w in layers]).numpy()

    history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=eval_every,
                          param_groups=_param_groups(net, lr, weight_decay, invariant_lr, decay_bn_affine),
                          before_step=[record_gradients], hooks=[record_norms], progress=False, device="cpu",
                          divergence_threshold=math.inf)
    gammas = [m.weight.detach().mean().item() for name, m in net.named_children() if name.startswith("norm")]
    return _Run(loss=history.loss, norms=norms, grad_norms=grad_norms, eval_steps=history.eval_steps,
                test_accuracy=history.test_accuracy, final_gamma_mean=np.asarray(gammas),
                final_weights=[w.detach().numpy().copy() for w in layers])


# ----------------------------------------------------------------------------
# 2. (cW, c²η) trains like (W, η)


@dataclass
class RescaledTrainingRecord:
    """Training from scaled initial weights with a scaled learning rate, against the reference.

    The scale-invariant weights of run (e, k) start at ``scales[k]`` times the reference's
    and train with learning rate ``scales[k]² · lr``; every other parameter is the same and
    trains at ``lr``. ``loss[e, k]`` is its minibatch loss curve with ``eps_values[e]``,
    ``reference_loss[e]`` the run at c = 1. ``loss_deviation[e, k]`` is the largest
    |loss − reference loss| over the steps; ``direction_deviation[e, k]`` is the largest,
    over layers, of ‖W/c − W_ref‖ / ‖W_ref‖ at the end.
    """

    scales: np.ndarray
    eps_values: np.ndarray
    lr: float
    steps: int
    reference_loss: np.ndarray       # (eps, steps)
    loss: np.ndarray                 # (eps, scale, steps)
    loss_deviation: np.ndarray       # (eps, scale)
    direction_deviation: np.ndarray  # (eps, scale)


def rescaled_training(seed: int = 0, scales: Sequence[float] = (1e-3, 1e-1, 10.0),
                      eps_values: Sequence[float] = (0.0, 1e-5), steps: int = 150, lr: float = 0.1,
                      batch_size: int = 64) -> RescaledTrainingRecord:
    """Train :func:`bn_mlp` from (W, η) and from (cW, c²η) on the same minibatches; no weight decay.

    If g = ∇L(W), the scaled run sees gradient g/c, so its step is c²η·g/c = c·ηg and it
    stays at exactly c times the reference: the same function, the same losses. ε breaks
    this when c is small enough that the pre-activations' batch variance approaches ε.
    Used in chapter ``09_weight_decay``.
    """
    ds = _digits_float64(seed)
    scales = np.asarray(scales, dtype=np.float64)
    ref_loss = np.zeros((len(eps_values), steps))
    loss = np.zeros((len(eps_values), len(scales), steps))
    loss_dev = np.zeros((len(eps_values), len(scales)))
    dir_dev = np.zeros_like(loss_dev)
    for e, eps in enumerate(eps_values):
        net = bn_mlp(ds.num_features, ds.num_classes, seed, eps=eps)
        reference = _sgd_with_norms(copy.deepcopy(net), ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                         eval_every=steps)
        ref_loss[e] = reference.loss
        for k, c in enumerate(scales):
            scaled = copy.deepcopy(net)
            with torch.no_grad():
                for w in scale_invariant_weights(scaled).values():
                    w.mul_(c)
            run = _sgd_with_norms(scaled, ds, steps=steps, lr=lr, invariant_lr=c * c * lr, batch_size=batch_size,
                       seed=seed, eval_every=steps)
            loss[e, k] = run.loss
            loss_dev[e, k] = np.max(np.abs(run.loss - reference.loss))
            dir_dev[e, k] = max(np.linalg.norm(w / c - w0) / np.linalg.norm(w0)
                                for w, w0 in zip(run.final_weights, reference.final_weights))
    return RescaledTrainingRecord(scales=scales, eps_values=np.asarray(eps_values, dtype=np.float64), lr=lr,
                                  steps=steps, reference_loss=ref_loss, loss=loss, loss_deviation=loss_dev,
                                  direction_deviation=dir_dev)


def rescaled_runs_match(record: RescaledTrainingRecord, tol: float = 1e-9) -> Claim:
    """Claim: with ε = 0, every rescaled run's losses and final weight directions match the
    reference's to ``tol`` (rounding only). Measured: the larger of the two largest deviations."""
    exact = record.eps_values == 0
    measured = float(max(record.loss_deviation[exact].max(), record.direction_deviation[exact].max()))
    holds = np.all(record.loss_deviation[exact] < tol) and np.all(record.direction_deviation[exact] < tol)
    return Claim(holds=bool(holds), measured=measured, threshold=tol)


def eps_separates_small_scale_runs(record: RescaledTrainingRecord, small: float = 1e-3, large: float = 0.1,
                                   apart: float = 0.1, close: float = 0.05) -> Claim:
    """Claim: with ε > 0, the run at c = ``small`` ends with weight directions more than ``apart``
    (relative) from the reference's, while every run with c ≥ ``large`` stays within ``close``.
    Measured: (the smallest deviation at ``small``, the largest at c ≥ ``large``); threshold:
    (``apart``, ``close``)."""
    eps = record.eps_values > 0
    dev = record.direction_deviation[eps]
    at_small, at_large = dev[:, record.scales == small], dev[:, record.scales >= large]
    return Claim(holds=bool(np.all(at_small > apart) and np.all(at_large < close)),
                 measured=(float(at_small.min()), float(at_large.max())), threshold=(apart, close))


# ----------------------------------------------------------------------------
# 2b. The Taylor expansion along the gradient under rescaling


@dataclass
class TaylorRecord:
    """The second-order Taylor expansion of the minibatch loss along the gradient, at c·W.

    W are the scale-invariant weights of :func:`bn_mlp` (ε = 0) after ``steps_trained`` SGD
    steps; the other parameters are fixed. At each ``scales[k]`` = c, with g = ∇L(cW) and
    d = −g: ``sigma[k]`` is the mean batch standard deviation of the first layer's
    pre-activations (∝ c), ``grad_sq[k]`` = ‖d‖² (the first-order coefficient),
    ``rayleigh[k]`` = dᵀHd / ‖d‖² (the curvature along d, H the Hessian in W) and
    ``critical_lr[k]`` = 2‖d‖² / dᵀHd, the step at which the quadratic model stops
    predicting descent. ``loss_change[k, j]`` is L(cW + α d) − L(cW) at
    α = ``multipliers[j]``·c²; ``fixed_lr_change[k]`` the same at α = ``lr`` for every c.
    """

    scales: np.ndarray
    multipliers: np.ndarray
    lr: float
    steps_trained: int
    loss: np.ndarray              # (scale,)
    sigma: np.ndarray             # (scale,)
    grad_sq: np.ndarray           # (scale,)
    rayleigh: np.ndarray          # (scale,)
    critical_lr: np.ndarray       # (scale,)
    loss_change: np.ndarray       # (scale, multiplier)
    fixed_lr_change: np.ndarray   # (scale,)

    def exponent(self, values: np.ndarray) -> float:
        """The slope of log |values| against log c (a least-squares fit over ``scales``)."""
        return float(np.polyfit(np.log(self.scales), np.log(np.abs(values)), 1)[0])


def _differentiable_forward(net: nn.Sequential, x: torch.Tensor, weights: Sequence[torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`bn_mlp`'s forward in train mode with ε = 0, written with plain tensor operations so
    that autograd can differentiate it twice (normlab's BatchNorm has a closed-form, first-order
    backward); the hidden weights are ``weights``. Returns the logits and the first layer's
    pre-activations."""
    h, first = x, None
    for i, w in enumerate(weights):
        z = h @ w.T
        first = z if first is None else first
        bn = getattr(net, f"norm{i}")
        z_hat = (z - z.mean(0)) / z.var(0, unbiased=False).sqrt()
        h = torch.relu(bn.weight * z_hat + bn.bias)
    return net.output(h), first


def taylor_terms_under_rescaling(seed: int = 0, scales: Sequence[float] = (1e-2, 1e-1, 1.0, 10.0),
                                 multipliers: Sequence[float] = tuple(np.logspace(-3, 3, 13)), lr: float = 0.1,
                                 steps_trained: int = 100, batch_size: int = 128) -> TaylorRecord:
    """Expand the loss to second order along the gradient at cW and step along it.

    :func:`bn_mlp` with ε = 0 is trained for ``steps_trained`` SGD steps (learning rate
    ``lr``, minibatches of 64), away from initialization, where every step along the
    gradient still lowers a loss near ln 10. Then, on one minibatch of ``batch_size``
    training images, its scale-invariant weights are multiplied by c. By scale invariance
    ‖∇L(cW)‖ ∝ 1/c and the Hessian ∝ 1/c², so L(cW − α g) − L(cW) ≈ −α‖g‖² + ½α² gᵀHg has
    terms in α/c² and α²/c⁴: a step α at cW is the step α/c² at W. Used in chapter
    ``09_weight_decay``.
    """
    ds = _digits_float64(seed)
    net = bn_mlp(ds.num_features, ds.num_classes, seed, eps=0.0)
    _sgd_with_norms(net, ds, steps=steps_trained, lr=lr, batch_size=64, seed=seed, eval_every=steps_trained)
    idx = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    x, y = ds.x_train[idx], ds.y_train[idx]
    base = [w.detach().clone() for w in scale_invariant_weights(net).values()]
    for p in net.parameters():
        p.requires_grad_(False)
    scales = np.asarray(scales, dtype=np.float64)
    multipliers = np.asarray(multipliers, dtype=np.float64)
    n = len(scales)
    loss, sigma, grad_sq, rayleigh = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    loss_change, fixed = np.zeros((n, len(multipliers))), np.zeros(n)

    def loss_at(weights: Sequence[torch.Tensor]) -> float:
        with torch.no_grad():
            return F.cross_entropy(_differentiable_forward(net, x, weights)[0], y).item()

    for k, c in enumerate(scales):
        weights = [(c * w).requires_grad_() for w in base]
        logits, first = _differentiable_forward(net, x, weights)
        value = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(value, weights, create_graph=True)
        half_sq = sum((g * g).sum() for g in grads) / 2
        hess_g = torch.autograd.grad(half_sq, weights)           # H g = ∇(½‖g‖²)
        grads = [g.detach() for g in grads]
        loss[k] = value.item()
        sigma[k] = first.detach().std(0, unbiased=False).mean().item()
        grad_sq[k] = sum((g * g).sum() for g in grads).item()
        rayleigh[k] = sum((h * g).sum() for h, g in zip(hess_g, grads)).item() / grad_sq[k]
        for j, m in enumerate(multipliers):
            loss_change[k, j] = loss_at([w - m * c * c * g for w, g in zip(weights, grads)]) - loss[k]
        fixed[k] = loss_at([w - lr * g for w, g in zip(weights, grads)]) - loss[k]
    return TaylorRecord(scales=scales, multipliers=multipliers, lr=lr, steps_trained=steps_trained, loss=loss,
                        sigma=sigma, grad_sq=grad_sq, rayleigh=rayleigh, critical_lr=2 / rayleigh,
                        loss_change=loss_change, fixed_lr_change=fixed)


def taylor_terms_scale_as_learning_rate(record: TaylorRecord, exponent_tol: float = 1e-6,
                                        step_tol: float = 1e-9) -> Claim:
    """Claim: the gradient norm scales as c⁻¹, the curvature along it as c⁻² and the critical
    step 2‖g‖²/gᵀHg as c², each exponent within ``exponent_tol``; and the loss change of the
    step α = m·c² at cW equals that of the step m at W, for every m, within ``step_tol``
    (absolute). Measured: (largest exponent error, largest loss-change difference)."""
    exponents = (record.exponent(np.sqrt(record.grad_sq)), record.exponent(record.rayleigh),
                 record.exponent(record.critical_lr))
    exponent_err = max(abs(e - t) for e, t in zip(exponents, (-1.0, -2.0, 2.0)))
    reference = record.loss_change[record.scales == 1.0][0]
    step_err = float(np.max(np.abs(record.loss_change - reference)))
    holds = exponent_err < exponent_tol and step_err < step_tol and bool(np.all(record.rayleigh > 0))
    return Claim(holds=bool(holds), measured=(float(exponent_err), step_err), threshold=(exponent_tol, step_tol))


def descent_not_guaranteed(record: TaylorRecord) -> Claim:
    """Claim: BN does not make every step a descent step. At every c the smallest step
    (α = ``multipliers[0]``·c²) lowers the loss and the largest raises it; and one fixed step
    α = ``lr`` lowers the loss at c = 1 but raises it at the smallest c (where the batch σ
    is smallest). Measured: (the fixed step's loss change at c = 1, at the smallest c); threshold: 0."""
    unit, smallest = record.scales == 1.0, np.argmin(record.scales)
    holds = (np.all(record.loss_change[:, 0] < 0) and np.all(record.loss_change[:, -1] > 0)
             and record.fixed_lr_change[unit][0] < 0 and record.fixed_lr_change[smallest] > 0)
    return Claim(holds=bool(holds),
                 measured=(float(record.fixed_lr_change[unit][0]), float(record.fixed_lr_change[smallest])),
                 threshold=0.0)


# ----------------------------------------------------------------------------
# 3. Weight norms and effective learning rates under weight decay


@dataclass
class WeightDecayRecord:
    """One training run per weight decay, same initial weights and minibatches.

    ``norms[i, l, t]`` is ‖W_l‖ (Frobenius) of scale-invariant layer l after t steps with
    ``weight_decays[i]``; ``grad_norms[i, l, t]`` the norm of the loss gradient (decay term
    excluded) at step t + 1. ``effective_lr = lr / norms²``. ``identity_error[i]`` is the
    largest relative error of ‖W_{t+1}‖² = (1 − ηλ)²‖W_t‖² + η²‖g_t‖² over all steps and
    layers. ``test_accuracy[i, j]`` is measured in eval mode after ``eval_steps[j]`` steps.
    """

    weight_decays: np.ndarray
    lr: float
    steps: int
    loss: np.ndarray            # (decay, steps)
    norms: np.ndarray           # (decay, layer, steps + 1)
    grad_norms: np.ndarray      # (decay, layer, steps)
    effective_lr: np.ndarray    # (decay, layer, steps + 1)
    identity_error: np.ndarray  # (decay,)
    eval_steps: np.ndarray
    test_accuracy: np.ndarray   # (decay, evals)
    gamma_mean: np.ndarray      # (decay, BN layer): mean of BN's γ over the units at the end
    decay_bn_affine: bool


def weight_decay_sweep(seed: int = 0, weight_decays: Sequence[float] = (0.0, 1e-3, 1e-2, 3e-2),
                       steps: int = 1500, lr: float = 0.5, batch_size: int = 64, eval_every: int = 100,
                       decay_bn_affine: bool = True) -> WeightDecayRecord:
    """Train :func:`bn_mlp` (ε = 10⁻⁵) with plain SGD at each weight decay.

    The decay applies to every parameter, or to all but BN's γ and β when
    ``decay_bn_affine`` is False. Records the norms of the scale-invariant weights at every
    step, the norms of their loss gradients, the test accuracy every ``eval_every`` steps
    and the final mean of γ.
    Used in chapter ``09_weight_decay``.
    """
    ds = _digits_float64(seed)
    net = bn_mlp(ds.num_features, ds.num_classes, seed)
    runs = [_sgd_with_norms(copy.deepcopy(net), ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                            weight_decay=wd, eval_every=eval_every, decay_bn_affine=decay_bn_affine)
            for wd in weight_decays]
    norms = np.stack([r.norms for r in runs])
    grads = np.stack([r.grad_norms for r in runs])
    errors = []
    for wd, r in zip(weight_decays, runs):
        predicted = (1 - lr * wd) ** 2 * r.norms[:, :-1] ** 2 + lr**2 * r.grad_norms**2
        errors.append(np.max(np.abs(r.norms[:, 1:] ** 2 - predicted) / r.norms[:, 1:] ** 2))
    return WeightDecayRecord(weight_decays=np.asarray(weight_decays, dtype=np.float64), lr=lr, steps=steps,
                             loss=np.stack([r.loss for r in runs]), norms=norms, grad_norms=grads,
                             effective_lr=lr / norms**2, identity_error=np.asarray(errors),
                             eval_steps=runs[0].eval_steps, test_accuracy=np.stack([r.test_accuracy for r in runs]),
                             gamma_mean=np.stack([r.final_gamma_mean for r in runs]), decay_bn_affine=decay_bn_affine)


def relative_update_rms(record: WeightDecayRecord, last: float = 0.25) -> np.ndarray:
    """√mean(η²‖g_t‖²/‖W_t‖²) over the last ``last`` fraction of steps, per (decay, layer)."""
    start = int(record.steps * (1 - last))
    ratio = record.lr * record.grad_norms[:, :, start:] / record.norms[:, :, start:-1]
    return np.sqrt(np.mean(ratio**2, axis=-1))


def norm_identity_holds(record: WeightDecayRecord, tol: float = 2e-2) -> Claim:
    """Claim: equation (2) holds at every step, every layer and every decay to ``tol`` (relative).
    Measured: the largest relative error."""
    return Claim(holds=bool(np.all(record.identity_error < tol)), measured=float(record.identity_error.max()),
                 threshold=tol)


def norm_grows_without_decay(record: WeightDecayRecord, factor: float = 1.0) -> Claim:
    """Claim: without weight decay, ‖W‖ never decreases in any layer, and ends at least
    ``factor`` times its initial value. Measured: (the smallest change of ‖W‖ in one step, the
    smallest final / initial ‖W‖); threshold: (0, ``factor``)."""
    norms = record.norms[record.weight_decays == 0]
    if not norms.size:
        return Claim(holds=False, measured=(np.nan, np.nan), threshold=(0.0, factor))
    return Claim(holds=bool(np.all(np.diff(norms, axis=-1) >= 0) and np.all(norms[..., -1] >= factor * norms[..., 0])),
                 measured=(float(np.diff(norms, axis=-1).min()), float((norms[..., -1] / norms[..., 0]).min())),
                 threshold=(0.0, factor))


def decay_reaches_equilibrium(record: WeightDecayRecord, min_decay: float = 1e-2, rtol: float = 0.1,
                              last: float = 0.25) -> Claim:
    """Claim: for every decay ≥ ``min_decay``, the RMS relative update η‖g‖/‖W‖ over the last
    ``last`` of training is within ``rtol`` of √(ηλ(2 − ηλ)) in every layer. Measured: the
    largest |RMS / prediction − 1|."""
    rms = relative_update_rms(record, last)
    ok, worst = True, 0.0
    for i, wd in enumerate(record.weight_decays):
        if wd >= min_decay:
            predicted = equilibrium_relative_update(record.lr, wd)
            ok &= bool(np.all(np.abs(rms[i] / predicted - 1) < rtol))
            worst = max(worst, float(np.max(np.abs(rms[i] / predicted - 1))))
    return Claim(holds=ok, measured=worst, threshold=rtol)


def effective_lr_raised_by_decay(record: WeightDecayRecord, factor: float = 2.0) -> Claim:
    """Claim: at the end of training the effective learning rate η/‖W‖² of every layer is at
    least ``factor`` times larger with the largest weight decay than without decay.
    Measured: the smallest ratio over the layers."""
    final = record.effective_lr[:, :, -1]
    none = final[record.weight_decays == 0]
    top = final[np.argmax(record.weight_decays)]
    if not none.size:
        return Claim(holds=False, measured=np.nan, threshold=factor)
    return Claim(holds=bool(np.all(top >= factor * none)), measured=float((top / none).min()), threshold=factor)


# ----------------------------------------------------------------------------
# 4. Decaying BN's γ and β, or not


def gamma_shrinks_under_decay(decayed: WeightDecayRecord, undecayed: WeightDecayRecord, weight_decay: float = 1e-2,
                              below: float = 0.5) -> Claim:
    """Claim: with decay ``weight_decay`` on γ, the mean γ of every BN layer ends below ``below``
    times its mean in the same run without decay on γ and β (``undecayed``, from
    ``decay_bn_affine=False``). Measured: the largest ratio (with decay / without) over the layers."""
    if decayed.decay_bn_affine is False or undecayed.decay_bn_affine is True:
        raise ValueError("gamma_shrinks_under_decay needs a sweep with decay_bn_affine=True first and one with "
                         "decay_bn_affine=False second.")
    with_decay = decayed.gamma_mean[decayed.weight_decays == weight_decay]
    without = undecayed.gamma_mean[undecayed.weight_decays == weight_decay]
    if len(with_decay) != 1 or len(without) != 1:
        raise ValueError(f"Both sweeps must include weight_decay={weight_decay}.")
    return Claim(holds=bool(np.all(with_decay[0] < below * without[0])),
                 measured=float((with_decay[0] / without[0]).max()), threshold=below)
