"""Experiments of chapter ``06_weightnorm``.

Networks are MLPs and residual MLPs whose Linear layers are all
:class:`normlab.layers.WeightNormLinear`, built from :func:`normlab.models.mlp` and
:func:`normlab.models.residual_mlp` with the same seeded weights and then
re-initialized. Data: scikit-learn's 8x8 digits (:func:`normlab.data.digits`).

- :func:`weight_norm_mlp`, :func:`weight_norm_residual_mlp`: the networks, with
  ``init`` "default" (torch's, g = ‖v‖), "plain" (orthogonal v, g = 1, unit-norm weight
  rows) or "scaled" (Arpit, Campos & Bengio 2019).
- :func:`norm_growth`: plain SGD on a WeightNorm MLP in float64, checking the gradient
  formulas, v ⊥ ∇v L and ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v L‖² at every step. Claims:
  :func:`gradient_formulas_hold`, :func:`v_orthogonal_to_gradient`,
  :func:`norm_growth_identity_holds`, :func:`effective_lr_decays_faster_at_larger_lr`.
- :func:`gradient_norm_split`: ‖∇v L‖ per row against (|g|/‖v‖)‖M_w ∇w L‖ and its bound
  (|g|/‖v‖)‖∇w L‖, at several rescalings of v. Claim: :func:`gradient_norm_formula_holds`.
- :func:`data_dependent_init_statistics`: pre-activation statistics after Salimans &
  Kingma's initialization, on the batch it used and on unseen data. Claim:
  :func:`data_dependent_init_standardizes`.
- :func:`one_layer_norm_ratio`: E‖ReLU(W u)‖² / ‖u‖² over random orthogonal v. Claim:
  :func:`one_layer_preserves_norm`.
- :func:`signal_propagation`: ‖h_l‖/‖x‖ forward and the gradient-norm ratio backward,
  layer by layer, for a deep MLP and a deep residual MLP at each init. Claims:
  :func:`scaled_init_preserves_signal`, :func:`plain_init_vanishes_or_explodes`.
- :func:`train_deep_networks`: those deep networks trained on digits at each init.
  Claims: :func:`scaled_init_trains_deep_networks`, :func:`plain_init_starts_exploded`.

Each claim is a function of the returned record(s) that returns a
:class:`~normlab.experiments._common.Claim` (holds, measured, threshold), so the chapter's
check cells and the tests assert exactly the same thing, and the chapter glues what each
check measured and its threshold, written once, as the claim's default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normlab import data, models, train
from normlab.experiments._common import Claim, as_float64
from normlab.layers import (
    MeanOnlyBatchNorm1d,
    WeightNormLinear,
    data_dependent_init_network_,
    scaled_weight_norm_init_,
    weight_norm_grads,
    weight_norm_layers,
)

__all__ = [
    "DataDependentInitRecord",
    "DeepTrainingRecord",
    "GradientNormRecord",
    "NormGrowthRecord",
    "OneLayerRecord",
    "SignalRecord",
    "INITS",
    "data_dependent_init_standardizes",
    "data_dependent_init_statistics",
    "effective_lr_decays_faster_at_larger_lr",
    "gradient_formulas_hold",
    "gradient_norm_formula_holds",
    "gradient_norm_split",
    "norm_growth",
    "norm_growth_identity_holds",
    "one_layer_norm_ratio",
    "one_layer_preserves_norm",
    "plain_init_matches_prediction",
    "plain_init_starts_exploded",
    "plain_init_vanishes_or_explodes",
    "scaled_init_preserves_signal",
    "scaled_init_trains_deep_networks",
    "signal_propagation",
    "train_deep_networks",
    "v_orthogonal_to_gradient",
    "weight_norm_mlp",
    "weight_norm_residual_mlp",
]

#: The initializations of a WeightNorm network compared in the chapter.
INITS = ("default", "plain", "scaled")


# ----------------------------------------------------------------------------
# Networks


def _swap_linears(module: nn.Module) -> None:
    """Replace every nn.Linear below ``module`` by a WeightNormLinear computing the same function."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, WeightNormLinear.from_linear(child))
        else:
            _swap_linears(child)


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}; got {init!r}.")


@torch.no_grad()
def _plain_init_(layer: WeightNormLinear, generator: torch.Generator) -> None:
    """Orthogonal v, g = 1 (unit-norm weight rows), zero bias: the paper's "orthogonal" baseline."""
    scaled_weight_norm_init_(layer, "linear", generator=generator)
    layer.g.fill_(1.0)


def weight_norm_mlp(in_features: int, hidden: Sequence[int], out_features: int, init: str = "default",
                    mean_only_bn: bool = False, seed: int = 0) -> nn.Sequential:
    """A ReLU MLP whose Linear layers are :class:`WeightNormLinear`, optionally with mean-only BN.

    Built by :func:`normlab.models.mlp` (children ``linear0``, [``norm0``], ``act0``, ...,
    ``output``; ``norm{i}`` is a :class:`MeanOnlyBatchNorm1d` when ``mean_only_bn``), each
    Linear then converted with :meth:`WeightNormLinear.from_linear`. ``init``:

    - ``"default"``: keep torch's default weights, g = ‖v‖ (what weight_norm does);
    - ``"plain"``: orthogonal v, g = 1 and zero bias, so every weight row has unit norm;
    - ``"scaled"``: :func:`scaled_weight_norm_init_`: hidden layers g = √(2 fan_in/fan_out),
      the output layer g = √(fan_in/fan_out), orthogonal v, zero bias.

    Random draws come from generators seeded by ``seed``. Used in chapter ``06_weightnorm``.
    """
    _check_init(init)
    norm = MeanOnlyBatchNorm1d if mean_only_bn else None
    net = models.mlp(in_features, hidden, out_features, activation="relu", norm=norm, seed=seed)
    _swap_linears(net)
    generator = torch.Generator().manual_seed(seed)
    layers = weight_norm_layers(net)
    for index, layer in enumerate(layers):
        last = index == len(layers) - 1
        if init == "plain":
            _plain_init_(layer, generator)
        elif init == "scaled":
            scaled_weight_norm_init_(layer, "linear" if last else "relu", generator=generator)
    return net


def weight_norm_residual_mlp(in_features: int, width: int, out_features: int, blocks: int, init: str = "default",
                             seed: int = 0) -> nn.Sequential:
    """A residual ReLU MLP (:func:`normlab.models.residual_mlp`) with every Linear a :class:`WeightNormLinear`.

    Each block is h + F(h), F = linear1 ∘ ReLU ∘ linear0 ∘ ReLU (pre-activation), with
    branch scale 1. ``init`` as in :func:`weight_norm_mlp`; with ``"scaled"`` each
    branch's ``linear0`` (followed by a ReLU) gets g = √(2 fan_in/fan_out), each
    branch's last layer ``linear1`` g = √(fan_in/(B · fan_out)) (the 1/B residual
    scaling of Arpit, Campos & Bengio, for B = ``blocks``), and the input and output
    layers g = √(fan_in/fan_out). Used in chapter ``06_weightnorm``.
    """
    _check_init(init)
    net = models.residual_mlp(in_features, width, out_features, blocks, activation="relu", seed=seed)
    _swap_linears(net)
    generator = torch.Generator().manual_seed(seed)
    for name, module in net.named_modules():
        if not isinstance(module, WeightNormLinear):
            continue
        if init == "plain":
            _plain_init_(module, generator)
        elif init == "scaled":
            if name.endswith("branch.linear0"):
                scaled_weight_norm_init_(module, "relu", generator=generator)
            elif name.endswith("branch.linear1"):
                scaled_weight_norm_init_(module, "linear", residual_blocks=blocks, generator=generator)
            else:
                scaled_weight_norm_init_(module, "linear", generator=generator)
    return net


# ----------------------------------------------------------------------------
# 1. Gradients, v ⊥ ∇v L, and the growth of ‖v‖ under plain SGD


@dataclass
class NormGrowthRecord:
    """Plain SGD (no momentum, no weight decay) on a WeightNorm MLP in float64, one run per learning rate.

    ``sq_norm[i, t, l]``: the mean over the rows of layer ``l`` of ‖v‖² after ``t``
    steps at ``lrs[i]``. ``identity_error[i, t]``: the largest, over layers and rows, of
    |‖v_{t+1}‖² − ‖v_t‖² − η²‖∇v L‖²| / ‖v_t‖²; ``relative_growth[i, t]``: the median over
    rows of η²‖∇v L‖² / ‖v_t‖² (the size of what the identity predicts).
    ``max_cosine[i, t]``: the largest |cos(v, ∇v L)| over layers and rows.
    ``formula_error[i, k]``: the largest relative error of :func:`weight_norm_grads`
    against autograd, at step ``formula_steps[k]``. ``train_loss[i, t]``: minibatch loss.
    """

    lrs: np.ndarray
    sq_norm: np.ndarray
    identity_error: np.ndarray
    relative_growth: np.ndarray
    max_cosine: np.ndarray
    formula_steps: np.ndarray
    formula_error: np.ndarray
    train_loss: np.ndarray
    layer_names: list[str]

    @property
    def effective_lr(self) -> np.ndarray:
        """η / ‖v‖², (lr, step, layer): the step size that the direction v/‖v‖ sees."""
        return self.lrs[:, None, None] / self.sq_norm


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _check_formulas(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> float:
    """Largest relative error of the closed-form ∇g, ∇v against autograd, over the layers.

    Leaves every ``.grad`` as it found it (:func:`torch.autograd.grad` throughout), so it can
    run between a training step's ``backward()`` and its update.
    """
    layers = weight_norm_layers(net)
    ws = [layer.weight.detach().clone().requires_grad_() for layer in layers]
    h = x
    index = 0
    for module in net:
        if isinstance(module, WeightNormLinear):
            h = F.linear(h, ws[index], module.bias)
            index += 1
        else:
            h = module(h)
    grad_ws = torch.autograd.grad(F.cross_entropy(h, y), ws)
    autograd_gv = torch.autograd.grad(F.cross_entropy(net(x), y), [t for layer in layers for t in (layer.g, layer.v)])
    errors = []
    for k, (layer, grad_w) in enumerate(zip(layers, grad_ws)):
        grad_g, grad_v = weight_norm_grads(layer.v.detach(), layer.g.detach(), grad_w)
        errors += [_relative_error(grad_g, autograd_gv[2 * k]), _relative_error(grad_v, autograd_gv[2 * k + 1])]
    return max(errors)


def norm_growth(seed: int = 0, lrs: Sequence[float] = (0.1, 1.0, 10.0), steps: int = 300, batch_size: int = 64,
                hidden: Sequence[int] = (100, 100), check_every: int = 50) -> NormGrowthRecord:
    """Train a WeightNorm ReLU MLP on digits by plain SGD at each learning rate, in float64.

    Every run starts from the same seeded weights (``init="default"``: torch's weights,
    g = ‖v‖) and sees the same minibatches. After every step it records ‖v‖² of every
    row of every layer, the error of the identity ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v L‖², and
    the cosine between v and ∇v L; every ``check_every`` steps it compares
    :func:`weight_norm_grads` with autograd. Float64 so that "holds to float precision"
    means about 1e-16, far below the size of the growth term. A run whose loss turns
    non-finite stops there (:func:`normlab.train.train`); its later entries are NaN.
    Used in chapter ``06_weightnorm``, section "Gradients".
    """
    ds = as_float64(data.digits(seed=seed))
    formula_steps = np.arange(0, steps, check_every)
    runs = [_norm_growth_run(ds, lr, seed, steps, batch_size, hidden, formula_steps) for lr in lrs]
    stacked = {key: np.asarray([_padded(run[key], length) for run in runs]) for key, length in
               (("sq", steps + 1), ("err", steps), ("growth", steps), ("cos", steps), ("formula", len(formula_steps)),
                ("loss", steps))}
    return NormGrowthRecord(
        lrs=np.asarray(lrs, dtype=np.float64), sq_norm=stacked["sq"], identity_error=stacked["err"],
        relative_growth=stacked["growth"], max_cosine=stacked["cos"], formula_steps=formula_steps,
        formula_error=stacked["formula"], train_loss=stacked["loss"], layer_names=runs[0]["names"])


def _padded(values: Sequence, length: int) -> np.ndarray:
    """``values`` as an array of ``length`` rows, NaN after the last step a diverged run took."""
    values = np.asarray(values, dtype=np.float64)
    padded = np.full((length, *values.shape[1:]), np.nan)
    padded[: len(values)] = values
    return padded


def _norm_growth_run(ds: data.Dataset, lr: float, seed: int, steps: int, batch_size: int, hidden: Sequence[int],
                     formula_steps: np.ndarray) -> dict:
    """One run of :func:`norm_growth` at ``lr`` by :func:`normlab.train.train` (SGD: p ← p − η∇p L),
    measuring v and ∇v L between ``backward()`` and the update."""
    net = weight_norm_mlp(ds.num_features, hidden, ds.num_classes, init="default", seed=seed).double()
    layers = weight_norm_layers(net)
    run: dict = {"sq": [[float(layer.v.detach().pow(2).sum(1).mean()) for layer in layers]], "err": [],
                 "growth": [], "cos": [], "formula": [], "names": [name for name, m in net.named_children()
                                                                 if isinstance(m, WeightNormLinear)]}
    before: list[torch.Tensor] = []
    grad_sq: list[torch.Tensor] = []

    def before_update(step: int, _net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        if step - 1 in formula_steps:
            run["formula"].append(_check_formulas(net, x, y))
        before[:] = [layer.v.detach().pow(2).sum(1) for layer in layers]
        grad_sq[:] = [layer.v.grad.pow(2).sum(1) for layer in layers]
        cos = [((layer.v.grad * layer.v.detach()).sum(1).abs()
                / (layer.v.grad.norm(dim=1) * layer.v.detach().norm(dim=1)).clamp_min(1e-300)).max()
               for layer in layers]
        run["cos"].append(float(max(cos)))

    def after_update(_step: int, _net: nn.Module, _loss: float) -> None:
        after = [layer.v.detach().pow(2).sum(1) for layer in layers]
        run["err"].append(max(float(((a - b - lr**2 * gs).abs() / b).max())
                              for a, b, gs in zip(after, before, grad_sq)))
        run["growth"].append(float(torch.cat([lr**2 * gs / b for b, gs in zip(before, grad_sq)]).median()))
        run["sq"].append([float(a.mean()) for a in after])

    history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=steps,
                          before_step=[before_update], hooks=[after_update], progress=False, device="cpu",
                          divergence_threshold=math.inf)
    run["loss"] = history.loss
    return run


def gradient_formulas_hold(record: NormGrowthRecord, tol: float = 1e-10) -> Claim:
    """Claim: the closed-form ∇g L and ∇v L equal autograd's to ``tol`` (relative), at every check.
    Measured: the largest relative error."""
    return Claim(holds=bool(np.all(record.formula_error < tol)), measured=float(record.formula_error.max()),
                 threshold=tol)


def v_orthogonal_to_gradient(record: NormGrowthRecord, tol: float = 1e-10) -> Claim:
    """Claim: |cos(v, ∇v L)| < ``tol`` for every row of every layer at every step. Measured: the largest |cos|."""
    return Claim(holds=bool(np.all(record.max_cosine < tol)), measured=float(record.max_cosine.max()), threshold=tol)


def norm_growth_identity_holds(record: NormGrowthRecord, tol: float = 1e-12, margin: float = 1e4) -> Claim:
    """Claim: ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v L‖² at every step, to ``tol`` relative to ‖v_t‖², and
    that is at least ``margin`` times smaller than the median growth term it checks (so
    the test could fail: dropping η²‖∇v L‖² would be an error ``margin`` times too large).
    Measured: (the largest error, the smallest median growth term over the largest error);
    threshold: (``tol``, ``margin``)."""
    ok_error = bool(np.all(record.identity_error < tol))
    largest = float(record.identity_error.max())
    ok_margin = bool(np.all(np.median(record.relative_growth, axis=1) > margin * largest))
    smallest_growth = float(np.median(record.relative_growth, axis=1).min())
    return Claim(holds=ok_error and ok_margin, measured=(largest, smallest_growth / largest if largest > 0 else np.inf),
                 threshold=(tol, margin))


def effective_lr_decays_faster_at_larger_lr(record: NormGrowthRecord, factor: float = 2.0) -> Claim:
    """Claim: the effective learning rate η/‖v‖² falls by a larger fraction at a larger η.

    For each layer, the decay ‖v_0‖²/‖v_T‖² (the effective rate at the end over the one at
    the start) strictly decreases along the increasing ``lrs``, and at the largest rate it
    is at most 1/``factor``. Measured: the largest fraction of the effective rate left at the
    largest rate, over the layers; threshold: 1/``factor``.
    """
    decay = record.sq_norm[:, 0, :] / record.sq_norm[:, -1, :]  # (lr, layer)
    order = np.argsort(record.lrs)
    decay = decay[order]
    return Claim(holds=bool(np.all(np.diff(decay, axis=0) < 0) and np.all(decay[-1] <= 1 / factor)),
                 measured=float(decay[-1].max()), threshold=1 / factor)


# ----------------------------------------------------------------------------
# 2. Data-dependent initialization


@dataclass
class DataDependentInitRecord:
    """Pre-activation statistics of a WeightNorm MLP after data-dependent initialization.

    ``init_mean[l]``, ``init_std[l]``: over units of layer ``l``, the largest |mean| and
    the (min, median, max) of the biased standard deviation of its pre-activations on
    the batch used for the initialization; ``test_*`` the same on the test images, which
    the initialization did not see. Before the initialization (torch's default weights):
    ``before_std`` (min, median, max) per layer, on the test images.
    """

    layer_names: list[str]
    init_mean: np.ndarray
    init_std: np.ndarray   # (layer, 3): min, median, max
    test_mean: np.ndarray
    test_std: np.ndarray
    before_std: np.ndarray
    batch_size: int


def _preactivation_stats(net: nn.Sequential, x: torch.Tensor) -> tuple[list[float], list[tuple[float, float]]]:
    means, stds = [], []
    h = x
    with torch.no_grad():
        for module in net:
            h = module(h)
            if isinstance(module, WeightNormLinear):
                means.append(float(h.mean(0).abs().max()))
                std = h.std(0, unbiased=False)
                stds.append((float(std.min()), float(std.median()), float(std.max())))
    return means, stds


def data_dependent_init_statistics(seed: int = 0, hidden: Sequence[int] = (100, 100, 100),
                                   batch_size: int = 256) -> DataDependentInitRecord:
    """Initialize a WeightNorm ReLU MLP on one batch of digits (Salimans & Kingma) and measure.

    Takes ``batch_size`` training images (seeded), runs
    :func:`normlab.layers.data_dependent_init_network_` and records the mean and spread
    of each layer's pre-activations on that batch and on the test set.
    Used in chapter ``06_weightnorm``, section "Data-dependent initialization".
    """
    ds = data.digits(seed=seed)
    net = weight_norm_mlp(ds.num_features, hidden, ds.num_classes, init="default", seed=seed)
    names = [name for name, m in net.named_children() if isinstance(m, WeightNormLinear)]
    _, before = _preactivation_stats(net, ds.x_test)
    idx = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = ds.x_train[idx]
    data_dependent_init_network_(net, batch)
    init_mean, init_std = _preactivation_stats(net, batch)
    test_mean, test_std = _preactivation_stats(net, ds.x_test)
    return DataDependentInitRecord(layer_names=names, init_mean=np.asarray(init_mean), init_std=np.asarray(init_std),
                                   test_mean=np.asarray(test_mean), test_std=np.asarray(test_std),
                                   before_std=np.asarray(before), batch_size=batch_size)


def data_dependent_init_standardizes(record: DataDependentInitRecord, tol: float = 1e-4, test_mean: float = 0.5,
                                     test_median_std: tuple[float, float] = (0.7, 2.0),
                                     before_last_std: float = 0.2) -> Claim:
    """Claim: the initialization standardizes the pre-activations, and the default init did not.

    On its own batch every unit of every layer has mean 0 and std 1 (to ``tol``); on
    the unseen test images every unit's |mean| < ``test_mean`` and each layer's median
    std lies in ``test_median_std``; before it (torch's default init, g = ‖v‖) every unit
    of the last layer had std below ``before_last_std`` on the test images.
    Measured: (the largest |mean| or |std − 1| on the batch, the largest |mean| on the test images,
    the smallest and largest median std there, the largest std of the last layer before);
    threshold: (``tol``, ``test_mean``, *``test_median_std``, ``before_last_std``).
    """
    exact = bool(np.all(record.init_mean < tol) and np.all(np.abs(record.init_std - 1) < tol))
    median = record.test_std[:, 1]
    close = bool(np.all(record.test_mean < test_mean) and np.all(median > test_median_std[0])
                 and np.all(median < test_median_std[1]))
    shrank = bool(record.before_std[-1, 2] < before_last_std)
    measured = (float(max(record.init_mean.max(), np.abs(record.init_std - 1).max())), float(record.test_mean.max()),
                float(median.min()), float(median.max()), float(record.before_std[-1, 2]))
    return Claim(holds=exact and close and shrank, measured=measured,
                 threshold=(tol, test_mean, *test_median_std, before_last_std))


# ----------------------------------------------------------------------------
# 3. One layer: E‖ReLU(W u)‖² = ‖u‖²


@dataclass
class OneLayerRecord:
    """‖φ(W u)‖²/‖u‖² over ``draws`` random orthogonal v, for each (fan_in, fan_out) and init.

    ``ratios[init][k]`` holds the draws for ``shapes[k]``; φ = ReLU.
    """

    shapes: list[tuple[int, int]]
    ratios: dict[str, np.ndarray]  # init -> (shape, draw)

    def mean(self, init: str) -> np.ndarray:
        return self.ratios[init].mean(axis=1)

    def standard_error(self, init: str) -> np.ndarray:
        r = self.ratios[init]
        return r.std(axis=1, ddof=1) / np.sqrt(r.shape[1])


def one_layer_norm_ratio(seed: int = 0, shapes: Sequence[tuple[int, int]] = ((128, 128), (128, 32), (32, 128)),
                         draws: int = 500) -> OneLayerRecord:
    """E‖ReLU(W u)‖²/‖u‖² by Monte Carlo: one fixed input u, ``draws`` orthogonal v, g "plain" (1) or "scaled".

    Used in chapter ``06_weightnorm``, section "Scaled WeightNorm".
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, list[list[float]]] = {"plain": [], "scaled": []}
    for fan_in, fan_out in shapes:
        u = torch.randn(fan_in, dtype=torch.float64, generator=gen)
        layer = WeightNormLinear(fan_in, fan_out, dtype=torch.float64)
        rows = {"plain": [], "scaled": []}
        for _ in range(draws):
            scaled_weight_norm_init_(layer, "relu", generator=gen)
            with torch.no_grad():
                scaled = float(torch.relu(layer(u)).pow(2).sum() / u.pow(2).sum())
                g = float(layer.g[0])
            rows["scaled"].append(scaled)
            rows["plain"].append(scaled / g**2)  # same direction, g = 1
        for init in out:
            out[init].append(rows[init])
    return OneLayerRecord(shapes=[tuple(s) for s in shapes], ratios={k: np.asarray(v) for k, v in out.items()})


def one_layer_preserves_norm(record: OneLayerRecord, sigmas: float = 4.0) -> Claim:
    """Claim: with the scaled g the mean ratio is 1 within ``sigmas`` standard errors for every
    shape; with g = 1 it is fan_out/(2 fan_in), also within ``sigmas`` standard errors.
    Measured: the largest distance from the prediction, in standard errors, over shapes and both inits."""
    scaled = np.abs(record.mean("scaled") - 1) / record.standard_error("scaled")
    expected = np.asarray([fo / (2 * fi) for fi, fo in record.shapes])
    plain = np.abs(record.mean("plain") - expected) / record.standard_error("plain")
    return Claim(holds=bool((scaled < sigmas).all() and (plain < sigmas).all()),
                 measured=float(max(scaled.max(), plain.max())), threshold=sigmas)


# ----------------------------------------------------------------------------
# 4. Signal propagation at initialization


@dataclass
class SignalRecord:
    """Forward and backward norms through a deep network at initialization, per init.

    ``forward[init][l]``: the mean over test images of ‖h_l‖/‖x‖, where h_l is the
    output of hidden layer l + 1 (MLP: after its ReLU; residual: the stream after block
    l, h_0 the input layer's output) and x the image. ``backward[init][l]``: the mean
    over images of ‖∂L/∂h_l‖ / ‖∂L/∂h_top‖, h_top the last hidden representation, for
    L = Σ r · logits with a fixed Gaussian r per image (so the ratio depends only on the
    network's Jacobians, not on how saturated a loss is).
    """

    arch: str
    depth: int
    width: int
    in_features: int
    forward: dict[str, np.ndarray]
    backward: dict[str, np.ndarray]

    def plain_prediction(self) -> tuple[float, float]:
        """The (forward, backward) growth that the plain init (g = 1) predicts in expectation.

        MLP: the first layer multiplies E‖h‖² by width/(2·in_features), each of the other
        depth − 1 layers by 1/2; forward ``forward[-1]``, backward ``backward[0]`` (through
        depth − 1 layers). Residual: each block multiplies E‖h‖² by 1 + 1/4, so both the
        stream from block 0 to the top (``forward[-1] / forward[0]``) and the gradient from
        the top back to block 0 (``backward[0]``) grow by 1.25^(depth/2) in norm.
        """
        if self.arch == "mlp":
            first = self.width / (2 * self.in_features)
            return float(np.sqrt(first * 0.5 ** (self.depth - 1))), float(np.sqrt(0.5 ** (self.depth - 1)))
        grow = float(1.25 ** (self.depth / 2))
        return grow, grow

    def plain_measured(self) -> tuple[float, float]:
        """The measured counterparts of :meth:`plain_prediction`."""
        f, b = self.forward["plain"], self.backward["plain"]
        return (float(f[-1]) if self.arch == "mlp" else float(f[-1] / f[0])), float(b[0])


def _hidden_outputs(net: nn.Sequential, arch: str) -> list[nn.Module]:
    if arch == "mlp":
        return [m for name, m in net.named_children() if name.startswith("act")]
    return [net.input] + models.residual_blocks(net)


def signal_propagation(arch: str = "mlp", seed: int = 0, depth: int = 20, width: int = 128,
                       inits: Sequence[str] = ("plain", "scaled"), examples: int = 128) -> SignalRecord:
    """Measure ‖h_l‖/‖x‖ forward and ‖∂L/∂h_l‖/‖∂L/∂h_top‖ backward at initialization.

    ``arch="mlp"``: :func:`weight_norm_mlp` with ``depth`` hidden layers of ``width``;
    ``arch="residual"``: :func:`weight_norm_residual_mlp` with ``depth`` blocks. Inputs
    are ``examples`` test images of digits (seeded split); the backward pass starts from
    a seeded Gaussian gradient at the logits.
    Used in chapter ``06_weightnorm``, section "Scaled WeightNorm".
    """
    if arch not in ("mlp", "residual"):
        raise ValueError(f"arch must be 'mlp' or 'residual'; got {arch!r}.")
    ds = data.digits(seed=seed)
    x = ds.x_test[:examples]
    fwd, bwd = {}, {}
    for init in inits:
        if arch == "mlp":
            net = weight_norm_mlp(ds.num_features, [width] * depth, ds.num_classes, init=init, seed=seed)
        else:
            net = weight_norm_residual_mlp(ds.num_features, width, ds.num_classes, depth, init=init, seed=seed)
        outputs: list[torch.Tensor] = []

        def keep(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
            out.retain_grad()
            outputs.append(out)

        handles = [m.register_forward_hook(keep) for m in _hidden_outputs(net, arch)]
        logits = net(x)
        for h in handles:
            h.remove()
        # A fixed random gradient at the output: the backward ratios then measure the network's
        # Jacobians alone (cross-entropy saturates when the logits explode, and its gradient vanishes).
        logits.backward(torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed)))
        x_norm = x.norm(dim=1)
        fwd[init] = np.asarray([float((h.detach().norm(dim=1) / x_norm).mean()) for h in outputs])
        top = outputs[-1].grad.norm(dim=1)
        bwd[init] = np.asarray([float((h.grad.norm(dim=1) / top).mean()) for h in outputs])
    return SignalRecord(arch=arch, depth=depth, width=width, in_features=ds.num_features, forward=fwd, backward=bwd)


def scaled_init_preserves_signal(record: SignalRecord, low: float = 0.5, high: float = 2.0) -> Claim:
    """Claim: with the scaled init, ‖h_l‖/‖x‖ and the backward ratio stay within [``low``, ``high``] at
    every layer. Measured: (the smallest, the largest) of both ratios over the layers."""
    f, b = record.forward["scaled"], record.backward["scaled"]
    both = np.concatenate([f, b])
    return Claim(holds=bool(np.all((f > low) & (f < high)) and np.all((b > low) & (b < high))),
                 measured=(float(both.min()), float(both.max())), threshold=(low, high))


def plain_init_vanishes_or_explodes(record: SignalRecord, factor: float = 10.0) -> Claim:
    """Claim: with the plain init (g = 1) the signal leaves [1/``factor``, ``factor``] by the top layer.

    MLP: the forward ratio at the top and the backward ratio at the bottom are below
    1/``factor`` (both vanish, by about 1/√2 a layer). Residual: both are above
    ``factor`` (the stream grows by about √(1 + 1/4) a block). Measured: (the forward ratio at
    the top, the backward ratio at the bottom); threshold: 1/``factor`` (MLP) or ``factor``.
    """
    f_top, b_bottom = float(record.forward["plain"][-1]), float(record.backward["plain"][0])
    if record.arch == "mlp":
        return Claim(holds=f_top < 1 / factor and b_bottom < 1 / factor, measured=(f_top, b_bottom),
                     threshold=1 / factor)
    return Claim(holds=f_top > factor and b_bottom > factor, measured=(f_top, b_bottom), threshold=factor)


def plain_init_matches_prediction(record: SignalRecord, factor: float = 2.5) -> Claim:
    """Claim: the plain init's measured forward and backward growth lie within ``factor`` of
    :meth:`SignalRecord.plain_prediction` (the expected-squared-norm estimate).
    Measured: the largest factor between a measured growth and its prediction."""
    predicted, measured = record.plain_prediction(), record.plain_measured()
    apart = max(max(m / p, p / m) for p, m in zip(predicted, measured))
    return Claim(holds=all(p / factor < m < p * factor for p, m in zip(predicted, measured)), measured=float(apart),
                 threshold=factor)


# ----------------------------------------------------------------------------
# 5. Training deep networks


@dataclass
class DeepTrainingRecord:
    """Test accuracy over training of a deep WeightNorm network at each init (same seed, data, batches).

    ``test_accuracy[init][j]`` is measured after ``eval_steps[init][j]`` steps; a run that
    diverged (non-finite loss or above 10⁶) stops there, so its arrays are shorter.
    """

    arch: str
    depth: int
    lr: float
    eval_steps: dict[str, np.ndarray]
    test_accuracy: dict[str, np.ndarray]
    train_loss: dict[str, np.ndarray]
    diverged: dict[str, bool]

    def final_accuracy(self, init: str) -> float:
        return float(self.test_accuracy[init][-1])


def train_deep_networks(arch: str = "mlp", seed: int = 0, depth: int = 20, width: int = 64,
                        inits: Sequence[str] = ("plain", "scaled"), steps: int = 300, lr: float = 0.01,
                        batch_size: int = 64, eval_every: int = 25, progress: bool = False) -> DeepTrainingRecord:
    """Train the deep WeightNorm MLP or residual MLP on digits at each init, by plain SGD.

    Same seeded weights before re-initialization, same minibatches, same ``lr``, on the CPU.
    Used in chapter ``06_weightnorm``, section "Training deep networks".
    """
    ds = data.digits(seed=seed)
    acc, loss, diverged, eval_steps = {}, {}, {}, {}
    for init in inits:
        if arch == "mlp":
            net = weight_norm_mlp(ds.num_features, [width] * depth, ds.num_classes, init=init, seed=seed)
        else:
            net = weight_norm_residual_mlp(ds.num_features, width, ds.num_classes, depth, init=init, seed=seed)
        history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=eval_every,
                              progress=progress, device="cpu", desc=f"{arch}, init={init}")
        acc[init], loss[init], diverged[init] = history.test_accuracy, history.loss, history.diverged
        eval_steps[init] = history.eval_steps
    return DeepTrainingRecord(arch=arch, depth=depth, lr=lr, eval_steps=eval_steps, test_accuracy=acc,
                              train_loss=loss, diverged=diverged)


def scaled_init_trains_deep_networks(record: DeepTrainingRecord, at_least: float = 0.75,
                                     gap: float | None = 0.4) -> Claim:
    """Claim: with the scaled init the deep network reaches final test accuracy ≥ ``at_least``
    without diverging, and (unless ``gap`` is None) ends at least ``gap`` above the plain
    init, a diverged plain run counting as accuracy 0. Measured: (the scaled init's final
    accuracy, 0 if it diverged; its lead over the plain init); threshold: (``at_least``, ``gap``,
    NaN if None)."""
    scaled = 0.0 if record.diverged["scaled"] else record.final_accuracy("scaled")
    plain = 0.0 if record.diverged["plain"] else record.final_accuracy("plain")
    measured, threshold = (scaled, scaled - plain), (at_least, np.nan if gap is None else gap)
    if record.diverged["scaled"] or scaled < at_least:
        return Claim(holds=False, measured=measured, threshold=threshold)
    return Claim(holds=gap is None or bool(scaled - plain >= gap), measured=measured, threshold=threshold)


def plain_init_starts_exploded(record: DeepTrainingRecord, factor: float = 4.0) -> Claim:
    """Claim: the plain init's first minibatch loss is at least ``factor`` times the scaled init's
    (the residual stream, and with it the logits, start far too large). Measured: that ratio."""
    plain, scaled = float(record.train_loss["plain"][0]), float(record.train_loss["scaled"][0])
    return Claim(holds=plain >= factor * scaled, measured=plain / scaled, threshold=factor)


# ----------------------------------------------------------------------------
# 1b. The norm of ∇v L: the backward formula for the gradient's size


@dataclass
class GradientNormRecord:
    """Per-row gradient norms of a WeightNorm MLP in float64, at several rescalings of every v.

    For each factor ``c`` in ``scales`` every row v is replaced by c·v (the network's function,
    and so ∇w L, is unchanged) and autograd gives ∇g L and ∇v L. Over all rows of all layers,
    concatenated, for scale index ``k``:

    - ``grad_v_norm[k]``: ‖∇v L‖ from autograd;
    - ``predicted_norm[k]``: (|g|/‖v‖)·√(‖∇w L‖² − (∇g L)²), the norm of
      (g/‖v‖) M_w ∇w L written with ∇g L (:func:`gradient_norm_formula_holds`);
    - ``bound[k]``: (|g|/‖v‖)·‖∇w L‖, the upper bound.

    ``grad_w_norm`` and ``grad_g`` (the same at every scale) are ‖∇w L‖ and ∇g L per row.
    """

    scales: np.ndarray
    grad_v_norm: np.ndarray
    predicted_norm: np.ndarray
    bound: np.ndarray
    grad_w_norm: np.ndarray
    grad_g: np.ndarray

    @property
    def kept_fraction(self) -> np.ndarray:
        """‖M_w ∇w L‖ / ‖∇w L‖ per row: the share of ∇w L that survives the projection (the sine of
        the angle between w and ∇w L)."""
        return self.grad_v_norm[0] / self.bound[0]


def gradient_norm_split(seed: int = 0, scales: Sequence[float] = (1.0, 3.0, 10.0), batch_size: int = 128,
                        hidden: Sequence[int] = (100, 100)) -> GradientNormRecord:
    """‖∇v L‖ of every row of a WeightNorm ReLU MLP (``init="scaled"``, so g ≠ ‖v‖) on one digits batch.

    Autograd gives ∇w L of the equivalent plain network (the weights w = g v/‖v‖ as leaves) and
    ∇g L, ∇v L of the WeightNorm one; the closed forms are compared in
    :func:`gradient_norm_formula_holds`. Used in chapter ``06_weightnorm``, section
    "The size of the gradient".
    """
    ds = as_float64(data.digits(seed=seed))
    x, y = ds.x_train[:batch_size], ds.y_train[:batch_size]
    rows: dict[str, list] = {"gv": [], "pred": [], "bound": []}
    grad_w_norm = grad_g = None
    for c in scales:
        net = weight_norm_mlp(ds.num_features, hidden, ds.num_classes, init="scaled", seed=seed).double()
        layers = weight_norm_layers(net)
        with torch.no_grad():
            for layer in layers:
                layer.v.mul_(c)
        ws = [layer.weight.detach().clone().requires_grad_() for layer in layers]
        h, index = x, 0
        for module in net:
            if isinstance(module, WeightNormLinear):
                h, index = F.linear(h, ws[index], module.bias), index + 1
            else:
                h = module(h)
        grad_ws = torch.autograd.grad(F.cross_entropy(h, y), ws)
        autograd = torch.autograd.grad(F.cross_entropy(net(x), y), [t for layer in layers for t in (layer.g, layer.v)])
        gw = torch.cat([g.norm(dim=1) for g in grad_ws])
        gg = torch.cat(autograd[0::2])
        factor = torch.cat([layer.g.detach().abs() / layer.v.detach().norm(dim=1) for layer in layers])
        rows["gv"].append(torch.cat([g.norm(dim=1) for g in autograd[1::2]]).numpy())
        rows["pred"].append((factor * (gw**2 - gg**2).clamp_min(0).sqrt()).numpy())
        rows["bound"].append((factor * gw).numpy())
        grad_w_norm, grad_g = gw.numpy(), gg.numpy()
    return GradientNormRecord(scales=np.asarray(scales, dtype=np.float64), grad_v_norm=np.asarray(rows["gv"]),
                              predicted_norm=np.asarray(rows["pred"]), bound=np.asarray(rows["bound"]),
                              grad_w_norm=grad_w_norm, grad_g=grad_g)


def gradient_norm_formula_holds(record: GradientNormRecord, tol: float = 1e-9) -> Claim:
    """Claim: ‖∇v L‖ = (|g|/‖v‖)·√(‖∇w L‖² − (∇g L)²) ≤ (|g|/‖v‖)·‖∇w L‖ for every row, and
    c·‖∇v L‖ at c·v equals ‖∇v L‖ at v (the 1/‖v‖ scaling), each to ``tol`` (relative).

    The first equality is Pythagoras: M_w ∇w L = ∇w L − (∇g L) v/‖v‖, whose two terms are
    orthogonal (chapter ``06_weightnorm``, equation ``eq-wn-grad-norm``). Measured: (the largest
    relative error of the formula, the largest ‖∇v L‖ / bound, the largest relative error of
    the 1/c scaling); threshold: (``tol``, 1, ``tol``).
    """
    formula = float(np.max(np.abs(record.grad_v_norm - record.predicted_norm) / record.grad_v_norm.max()))
    ratio_max = float(np.max(record.grad_v_norm / record.bound))
    scaled = record.grad_v_norm * record.scales[:, None]
    scaling = float(np.max(np.abs(scaled - scaled[0]) / scaled[0].max()))
    return Claim(holds=formula < tol and ratio_max <= 1 + tol and scaling < tol,
                 measured=(formula, ratio_max, scaling), threshold=(tol, 1.0, tol))
