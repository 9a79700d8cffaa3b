"""Experiments of chapter ``04_internal_covariate_shift``: the hypothesis and Santurkar et al.'s critique.

- :func:`covariate_shift_regression`: covariate shift outside a network. A straight line
  fitted by least squares (maximum likelihood under Gaussian noise) to a cubic, with
  training and test inputs from different Gaussians; ordinary and importance-weighted
  fits. Claim: :func:`importance_weighting_helps`.

The two network experiments use scikit-learn's 8x8 digits (:func:`normlab.data.digits`)
with plain minibatch SGD, batch 60:

- :func:`noisy_batchnorm_experiment`: the sigmoid MLP of chapter ``03_batchnorm_experiments``
  (:func:`normlab.experiments._common.sigmoid_mlp`), trained four ways:
  without BN, with BN, with noisy BN (:class:`normlab.layers.NoisyBatchNorm1d`: a
  random shift and rescaling of every unit, redrawn at every step) and with the same
  noise but no BN (:class:`normlab.layers.ShiftNoise`). It records test accuracy and the
  percentiles of every hidden layer's sigmoid inputs *as the layer sees them in
  training*, noise included. Claims: :func:`noise_raises_distribution_shift`,
  :func:`noisy_bn_still_trains_fast`, :func:`noise_does_not_break_the_network_without_bn`.
- :func:`gradient_ics_over_training`: Santurkar et al.'s gradient-based ICS
  (:func:`normlab.probes.gradient_ics`) of every layer, over training, for a deep linear
  network and for the sigmoid MLP, with BN and without. Claims:
  :func:`bn_does_not_reduce_gradient_ics` and :func:`bn_rotates_gradients_more`.
- :func:`earth_mover_ics_over_training`: Huang & Yu's Earth Mover ICS
  (:func:`normlab.probes.earth_mover_ics`) of every hidden layer's sigmoid inputs across one
  SGD step, over training, with BN and without, and its two bounds. Claims:
  :func:`earth_mover_bounds_hold`, :func:`earth_mover_bound_tightness`,
  :func:`bn_pins_the_mean_not_the_distribution`.
- :func:`unitization_earth_mover`: the same measurement with Huang & Yu's unitization layer
  (:class:`normlab.layers.Unitization1d`) in place of BN, α learned from 0 or held at 1.
  Claims: :func:`learned_unitization_is_bn_like`, :func:`full_unitization_trades_training`.
- :func:`earth_mover_bounds_by_width`: the Earth Mover ICS of a whole layer (points in R^d,
  :func:`normlab.probes.wasserstein_nd`) across one SGD step, for last-layer widths d from 4
  to 256, with BN, BN followed by Gaussian noise, and unitization at α = 1, and the lower and
  upper bounds that chapter 04_internal_covariate_shift derives (our derivation, of the kind
  Huang & Yu's abstract describes). Claims: :func:`earth_mover_d_bounds_hold`,
  :func:`bn_bound_grows_with_width`, :func:`noise_sets_a_floor`,
  :func:`noise_drives_the_lower_bound`, :func:`unitization_bound_is_width_free`.

Two more experiments of the chapter have modules of their own:
:mod:`normlab.experiments.outside_gradient` (BN with its batch statistics detached from the
gradient, Ioffe & Szegedy's section 2) and :mod:`normlab.experiments.noise_scale` (the ratio
η/B of SGD's learning rate to its batch size).

Each claim is a function of the returned record(s) that returns a
:class:`~normlab.experiments._common.Claim` (holds, measured, threshold), so the chapter's
check cells and the tests assert exactly the same thing, and the chapter glues what was
measured and the threshold, written once, as the claim's default.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from normlab import data, models, probes, train
from normlab.experiments._common import (
    HIDDEN,
    Claim,
    median_drift,
    ratio,
    sigmoid_mlp,
    steps_to_accuracy,
    width_change,
)
from normlab.layers import BatchNorm1d, NoisyBatchNorm1d, ShiftNoise, Unitization1d
from normlab.probes import EarthMoverICS, GradientICS, earth_mover_ics, gradient_ics

__all__ = [
    "EarthMoverRecord",
    "earth_mover_bound_tightness",
    "bn_pins_the_mean_not_the_distribution",
    "earth_mover_bounds_hold",
    "earth_mover_ics_over_training",
    "UnitizationRecord",
    "BOUND_NETWORKS",
    "EarthMoverBoundsRecord",
    "bn_bound_grows_with_width",
    "earth_mover_bounds_by_width",
    "earth_mover_bounds_run",
    "earth_mover_d_bounds_hold",
    "noise_drives_the_lower_bound",
    "noise_sets_a_floor",
    "unitization_bound_is_width_free",
    "full_unitization_trades_training",
    "learned_unitization_is_bn_like",
    "unitization_earth_mover",
    "CovariateShiftRecord",
    "covariate_shift_regression",
    "importance_weighting_helps",
    "importance_weights",
    "weighted_line_fit",
    "GradientICSRecord",
    "NETWORKS",
    "NoisyBNRecord",
    "bn_does_not_reduce_gradient_ics",
    "bn_rotates_gradients_more",
    "distribution_shift",
    "gradient_ics_over_training",
    "noise_does_not_break_the_network_without_bn",
    "noise_raises_distribution_shift",
    "noisy_batchnorm_experiment",
    "noisy_bn_still_trains_fast",
    "noisy_sigmoid_mlp",
    "step_to_step_shift",
    "width_shift",
]

# ----------------------------------------------------------------------------
# 0. Covariate shift in a regression


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def importance_weights(x: np.ndarray, train: tuple[float, float], test: tuple[float, float]) -> np.ndarray:
    """w(x) = p_test(x) / p_train(x) for Gaussian input densities given as (mean, std)."""
    return _normal_pdf(x, *test) / _normal_pdf(x, *train)


def weighted_line_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """(intercept, slope) minimizing Σ_n w_n (y_n − a − b·x_n)²: the weighted normal equations
    (Aᵀ W A) θ = Aᵀ W y with A = [1, x]. ``w=None`` is ordinary least squares.
    Used in chapter ``04_internal_covariate_shift``."""
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    return np.linalg.solve(design.T @ (w[:, None] * design), design.T @ (w * y))


@dataclass
class CovariateShiftRecord:
    """A line fitted to y = −x + x³ + noise, with training and test inputs from different Gaussians.

    ``coef_*`` are (intercept, slope); ``*_mse_*`` the mean squared errors of each fit on
    the training and the test points.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train: tuple[float, float]
    test: tuple[float, float]
    coef_ordinary: np.ndarray
    coef_weighted: np.ndarray
    train_mse_ordinary: float
    train_mse_weighted: float
    test_mse_ordinary: float
    test_mse_weighted: float


def covariate_shift_regression(seed: int = 0, n_train: int = 200, n_test: int = 2000,
                               train: tuple[float, float] = (0.5, 0.5), test: tuple[float, float] = (0.0, 0.3),
                               noise: float = 0.3) -> CovariateShiftRecord:
    """Covariate shift: P(y | x) is fixed, y = −x + x³ + N(0, noise²), while the inputs come
    from N(train) in training and N(test) at test time ((mean, std) pairs).

    The model, a straight line, cannot represent the cubic, so where it fits well depends
    on where the inputs are. Ordinary least squares (the maximum-likelihood fit under
    Gaussian noise) fits the region dense in *training* inputs; weighting each training
    point by w(x) = p_test(x)/p_train(x) (:func:`importance_weights`) fits the region of
    the test inputs instead. Used in chapter ``04_internal_covariate_shift``.
    """
    rng = np.random.default_rng(seed)

    def sample(n: int, mean_std: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(mean_std[0], mean_std[1], n)
        return x, -x + x ** 3 + rng.normal(0.0, noise, n)

    x_train, y_train = sample(n_train, train)
    x_test, y_test = sample(n_test, test)
    ordinary = weighted_line_fit(x_train, y_train)
    weighted = weighted_line_fit(x_train, y_train, importance_weights(x_train, train, test))

    def mse(coef: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((y - coef[0] - coef[1] * x) ** 2))

    return CovariateShiftRecord(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, train=train, test=test,
        coef_ordinary=ordinary, coef_weighted=weighted,
        train_mse_ordinary=mse(ordinary, x_train, y_train), train_mse_weighted=mse(weighted, x_train, y_train),
        test_mse_ordinary=mse(ordinary, x_test, y_test), test_mse_weighted=mse(weighted, x_test, y_test))


def importance_weighting_helps(record: CovariateShiftRecord, factor: float = 1.5) -> Claim:
    """Claim: the importance-weighted line has a test error at least ``factor`` times smaller
    than the ordinary fit, which in turn has the smaller *training* error (it fits where
    the training inputs are). Measured: ordinary test error / weighted test error."""
    return Claim(holds=bool(record.test_mse_ordinary >= factor * record.test_mse_weighted
                            and record.train_mse_ordinary <= record.train_mse_weighted),
                 measured=ratio(float(record.test_mse_ordinary), float(record.test_mse_weighted)), threshold=factor)


#: The four networks of the noisy-BN experiment.
NETWORKS = ("none", "batch", "noisy_batch", "noisy_none")


def noisy_sigmoid_mlp(network: str, num_features: int, num_classes: int, seed: int, n_mu: float = 1.0,
                      n_sigma: float = 4.0, noise_seed: int = 0) -> nn.Sequential:
    """The sigmoid MLP of :func:`normlab.experiments._common.sigmoid_mlp` (3 × 100 units),
    as ``network`` = ``"none"``, ``"batch"``, ``"noisy_batch"`` (NoisyBatchNorm1d between
    each hidden Linear and its sigmoid) or ``"noisy_none"`` (the same ShiftNoise, no BN).

    All four start from the same seeded Linear weights. The noisy layers share one CPU
    generator seeded by ``noise_seed``. Used in chapter ``04_internal_covariate_shift``.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {list(NETWORKS)}; got {network!r}.")
    if network in ("none", "batch"):
        return sigmoid_mlp(network, num_features, num_classes, seed)
    generator = torch.Generator().manual_seed(noise_seed)
    if network == "noisy_batch":
        def factory(width: int) -> nn.Module:
            return NoisyBatchNorm1d(width, n_mu=n_mu, n_sigma=n_sigma, generator=generator)
    else:
        def factory(width: int) -> nn.Module:
            return ShiftNoise(width, n_mu, n_sigma, generator)
    return models.mlp(num_features, HIDDEN, num_classes, activation="sigmoid", norm=factory, seed=seed)


class _TrainingInputPercentiles:
    """Percentiles of some units of a module's input on the minibatch of each training step.

    A forward pre-hook that counts the module's calls in training mode (one per SGD
    step in :func:`normlab.train.train`; evaluation runs in eval mode and is not
    counted) and, at steps 1, ``every``, 2·``every``, ..., stores the percentiles ``q``
    over the batch of each unit in ``units``. Unlike
    :class:`normlab.probes.ActivationPercentiles`, which runs a fixed probe batch in eval
    mode, this sees what the layer is actually fed while it learns, noise included.
    """

    def __init__(self, module: nn.Module, units: Sequence[int], q: Sequence[float], every: int) -> None:
        self.units, self.q, self.every = list(units), np.asarray(q, dtype=np.float64), int(every)
        self.step = 0
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []
        self.handle = module.register_forward_pre_hook(self._on_input)

    def _on_input(self, module: nn.Module, inputs: tuple) -> None:
        if not module.training:
            return
        self.step += 1
        if self.step == 1 or self.step % self.every == 0:
            values = inputs[0].detach().to("cpu", torch.float64)[:, self.units].numpy()
            self.values.append(np.percentile(values, self.q, axis=0).T)   # (unit, q)
            self.steps.append(self.step)


# ----------------------------------------------------------------------------
# 1. Noisy BatchNorm


@dataclass
class NoisyBNRecord:
    """The four networks of :func:`noisy_batchnorm_experiment`, trained side by side.

    ``accuracy[network][j]`` is the test accuracy (eval mode: BN with running estimates,
    no noise) after ``eval_steps[j]`` steps. ``percentiles[network][t, l, i, k]`` is the
    ``q[k]``-th percentile, over the training minibatch of step ``probe_steps[t]``, of the
    input of sigmoid unit ``units[i]`` of hidden layer ``l`` (noise included).
    """

    eval_steps: np.ndarray
    accuracy: dict[str, np.ndarray]
    probe_steps: np.ndarray
    percentiles: dict[str, np.ndarray]   # network -> (time, layer, unit, q)
    q: np.ndarray
    units: np.ndarray
    n_mu: float
    n_sigma: float
    lr: float


def noisy_batchnorm_experiment(seed: int = 0, steps: int = 1000, lr: float = 1.0, batch_size: int = 60,
                               n_mu: float = 1.0, n_sigma: float = 4.0, units: Sequence[int] = (0, 1, 2),
                               q: Sequence[float] = (15, 50, 85), probe_every: int = 1, eval_every: int = 20,
                               progress: bool = False) -> NoisyBNRecord:
    """Santurkar et al.'s noisy-BN experiment at CPU scale, on the sigmoid MLP of chapter
    ``03_batchnorm_experiments`` (same data, batch 60, SGD at ``lr=1``).

    Four networks (:data:`NETWORKS`) start from the same seeded weights and see the same
    minibatches: without BN, with BN, with BN followed by the noise of
    :class:`normlab.layers.ShiftNoise` (per unit and per step, y = √v·z + m with
    m ~ U(−n_mu, n_mu), v ~ U(1, n_sigma)), and with that noise but no BN. The noise
    generator is seeded by ``seed`` too. Every ``probe_every`` steps the percentiles of
    every hidden sigmoid's input over the training minibatch are recorded; every
    ``eval_every`` steps the test accuracy. Used in chapter ``04_internal_covariate_shift``.
    """
    ds = data.digits(seed=seed)
    accuracy, percentiles = {}, {}
    eval_steps = probe_steps = None
    for network in NETWORKS:
        net = noisy_sigmoid_mlp(network, ds.num_features, ds.num_classes, seed, n_mu, n_sigma, noise_seed=seed)
        recorders = [_TrainingInputPercentiles(getattr(net, f"act{layer}"), units, q, probe_every)
                     for layer in range(len(HIDDEN))]
        try:
            history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                  eval_every=eval_every, progress=progress, device="cpu",
                                  desc=f"noisy BN experiment, {network}")
        finally:
            for recorder in recorders:
                recorder.handle.remove()
        accuracy[network] = history.test_accuracy
        percentiles[network] = np.stack([np.stack(r.values) for r in recorders], axis=1)
        eval_steps, probe_steps = history.eval_steps, np.asarray(recorders[0].steps)
    return NoisyBNRecord(eval_steps=np.asarray(eval_steps), accuracy=accuracy, probe_steps=probe_steps,
                         percentiles=percentiles, q=np.asarray(q, dtype=np.float64), units=np.asarray(units),
                         n_mu=n_mu, n_sigma=n_sigma, lr=lr)


def distribution_shift(record: NoisyBNRecord, network: str, since: int = 100) -> float:
    """How far the median of the hidden sigmoid inputs wanders, in the training minibatches.

    :func:`normlab.experiments._common.median_drift` (range of each unit's median over
    the probes from step ``since`` on, averaged over units) for each hidden layer, then
    averaged over layers. In units of the sigmoid's input.
    """
    p = record.percentiles[network]
    return float(np.mean([median_drift(p[:, layer], record.probe_steps, record.q, since)
                          for layer in range(p.shape[1])]))


def step_to_step_shift(record: NoisyBNRecord, network: str) -> float:
    """How much the median of the hidden sigmoid inputs moves from one probe to the next.

    The mean, over consecutive probes, units and hidden layers, of |median_t − median_{t−1}|
    over the training minibatches (with ``probe_every=1``: from one SGD step to the next).
    It includes the change of minibatch, so it is not zero even for a network that does
    not learn; :func:`distribution_shift` measures the slow drift instead.
    """
    median = int(np.nonzero(record.q == 50)[0][0]) if 50 in record.q else None
    if median is None:
        raise ValueError(f"step_to_step_shift needs the 50th percentile among q; got q={list(record.q)}.")
    track = record.percentiles[network][:, :, :, median]            # (time, layer, unit)
    return float(np.mean(np.abs(np.diff(track, axis=0))))


def width_shift(record: NoisyBNRecord, network: str, since: int = 100) -> float:
    """How much the width (85th − 15th percentile) of the hidden sigmoid inputs changes:
    :func:`normlab.experiments._common.width_change` per hidden layer, averaged over layers."""
    p = record.percentiles[network]
    return float(np.mean([width_change(p[:, layer], record.probe_steps, record.q, since)
                          for layer in range(p.shape[1])]))


def noise_raises_distribution_shift(record: NoisyBNRecord, factor_bn: float = 3.0, factor_none: float = 2.0,
                                    drift_factor: float = 2.0) -> Claim:
    """Claim: with noisy BN the medians of the sigmoid inputs jump from step to step at
    least ``factor_bn`` times more than with BN and ``factor_none`` times more than without BN
    (:func:`step_to_step_shift`), and over training they wander at least ``drift_factor``
    times more than with BN (:func:`distribution_shift`). Measured: (jumps over BN's, jumps over
    no-BN's, drift over BN's); threshold: (``factor_bn``, ``factor_none``, ``drift_factor``)."""
    jumps = step_to_step_shift(record, "noisy_batch")
    jumps_bn, jumps_none = step_to_step_shift(record, "batch"), step_to_step_shift(record, "none")
    drift, drift_bn = distribution_shift(record, "noisy_batch"), distribution_shift(record, "batch")
    return Claim(holds=bool(jumps >= factor_bn * jumps_bn and jumps >= factor_none * jumps_none
                            and drift >= drift_factor * drift_bn),
                 measured=(ratio(jumps, jumps_bn), ratio(jumps, jumps_none), ratio(drift, drift_bn)),
                 threshold=(factor_bn, factor_none, drift_factor))


def noisy_bn_still_trains_fast(record: NoisyBNRecord, target: float = 0.9, within: int = 200,
                               faster_than_none: float = 4.0, final_gap: float = 0.03) -> Claim:
    """Claim: noise barely hurts the BN network. Noisy BN reaches ``target`` test accuracy
    within ``within`` steps, at least ``faster_than_none`` times sooner than the network
    without BN, and ends within ``final_gap`` of BN's final test accuracy. Measured: (noisy
    BN's steps to ``target``, the no-BN network's steps over those, the final gap); threshold:
    (``within``, ``faster_than_none``, ``final_gap``)."""
    steps = {n: steps_to_accuracy(record.eval_steps, record.accuracy[n], target) for n in NETWORKS}
    gap = abs(float(record.accuracy["batch"][-1] - record.accuracy["noisy_batch"][-1]))
    return Claim(holds=bool(steps["noisy_batch"] <= within and steps["none"] >= faster_than_none * steps["noisy_batch"]
                            and gap <= final_gap),
                 measured=(steps["noisy_batch"], ratio(steps["none"], steps["noisy_batch"]), gap),
                 threshold=(within, faster_than_none, final_gap))


def noise_does_not_break_the_network_without_bn(record: NoisyBNRecord, target: float = 0.9) -> Claim:
    """Claim (contrary to the paper's finding, at this scale and with this noise): the network
    without BN but with the noise reaches ``target`` test accuracy, and no later than the
    same network without the noise. Measured: (steps to ``target`` with the noise, without it);
    threshold: ``target``."""
    noisy = steps_to_accuracy(record.eval_steps, record.accuracy["noisy_none"], target)
    clean = steps_to_accuracy(record.eval_steps, record.accuracy["none"], target)
    return Claim(holds=bool(np.isfinite(noisy) and noisy <= clean), measured=(noisy, clean), threshold=target)


# ----------------------------------------------------------------------------
# 2. Gradient-based ICS (Santurkar et al., Definition 2.1)


@dataclass
class GradientICSRecord:
    """Gradient ICS of every layer but the first, measured during training.

    ``l2[t, i]``, ``cosine[t, i]`` and ``grad_norm[t, i]`` are ‖G − G′‖, cos(G, G′) and
    ‖G‖ (:class:`normlab.probes.GradientICS`) of ``layer_names[i]`` after ``steps[t]``
    SGD steps, on a fixed batch of training examples.
    """

    network: str
    norm: str
    steps: np.ndarray
    layer_names: list[str]
    l2: np.ndarray
    cosine: np.ndarray
    grad_norm: np.ndarray
    loss: np.ndarray
    final_test_accuracy: float
    lr: float

    @property
    def relative_l2(self) -> np.ndarray:
        """(time, layer) ‖G − G′‖ / ‖G‖: the change as a fraction of the gradient itself."""
        return self.l2 / self.grad_norm


DEPTH = {"linear": 10, "sigmoid": 3}
WIDTH = {"linear": 32, "sigmoid": 100}


def _network(network: str, norm: str, ds: data.Dataset, seed: int) -> nn.Sequential:
    if network not in DEPTH:
        raise ValueError(f"network must be one of {list(DEPTH)}; got {network!r}.")
    if norm not in ("none", "batch"):
        raise ValueError(f"norm must be 'none' or 'batch'; got {norm!r}.")
    hidden = (WIDTH[network],) * DEPTH[network]
    return models.mlp(ds.num_features, hidden, ds.num_classes, activation=network,
                      norm=BatchNorm1d if norm == "batch" else None, seed=seed)


def gradient_ics_over_training(network: str = "linear", norm: str = "batch", seed: int = 0, steps: int = 300,
                               lr: float = 0.1, batch_size: int = 60, measure_every: int = 50,
                               progress: bool = False) -> GradientICSRecord:
    """Train a network on digits and measure Santurkar et al.'s gradient ICS of each layer.

    ``network="linear"``: a deep linear network, 10 hidden Linear layers of 32 units with no
    nonlinearity (BN, if any, after each); ``network="sigmoid"``: the 3 × 100 sigmoid MLP.
    ``norm`` is ``"batch"`` or ``"none"``; the Linear layers get the same seeded weights
    either way. Plain SGD with cross-entropy. At step 0 and every ``measure_every`` steps,
    :func:`normlab.probes.gradient_ics` with the training ``lr`` on a fixed batch of
    ``batch_size`` training examples (drawn by ``seed``), for every Linear layer after the
    first (the first has nothing upstream, so its G′ = G). Used in chapter
    ``04_internal_covariate_shift`` (Santurkar et al., Figure 5, at CPU scale).
    """
    ds = data.digits(seed=seed)
    net = _network(network, norm, ds, seed)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)][1:]
    names = [name for name, m in net.named_modules() if isinstance(m, nn.Linear)][1:]
    pick = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = (ds.x_train[pick], ds.y_train[pick])
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    measured: list[tuple[int, GradientICS]] = [(0, gradient_ics(net, linears, batch, loss_fn, lr))]

    def hook(step: int, model: nn.Module, loss: float | None = None) -> None:
        if step % measure_every == 0:
            measured.append((step, gradient_ics(model, linears, batch, loss_fn, lr)))

    history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=steps,
                          hooks=[hook], progress=progress, device="cpu",
                          desc=f"gradient ICS, {network}, norm={norm}")
    return GradientICSRecord(
        network=network, norm=norm, steps=np.asarray([s for s, _ in measured]), layer_names=names,
        l2=np.stack([m.l2 for _, m in measured]), cosine=np.stack([m.cosine for _, m in measured]),
        grad_norm=np.stack([m.grad_norm for _, m in measured]), loss=history.loss,
        final_test_accuracy=history.final_test_accuracy, lr=lr)


def _pair(with_bn: GradientICSRecord, without_bn: GradientICSRecord) -> None:
    if with_bn.norm != "batch" or without_bn.norm != "none":
        raise ValueError(f"Pass the record with norm='batch' first and norm='none' second; got "
                         f"{with_bn.norm!r} and {without_bn.norm!r}.")
    if with_bn.network != without_bn.network or not np.array_equal(with_bn.steps, without_bn.steps):
        raise ValueError("The two records must measure the same network at the same steps.")


def bn_does_not_reduce_gradient_ics(with_bn: GradientICSRecord, without_bn: GradientICSRecord,
                                    at_least: float = 1.3) -> Claim:
    """Claim: averaged over layers and over the measurements after step 0, the gradient ICS
    with BN is at least ``at_least`` times that without BN, both as the paper measures it,
    ‖G − G′‖, and relative to the gradient, ‖G − G′‖/‖G‖ (``at_least=1``: BN does not
    reduce it; above 1: BN increases it). Measured: (the ratio of ‖G − G′‖, the ratio of
    ‖G − G′‖/‖G‖), with BN over without."""
    _pair(with_bn, without_bn)
    later = with_bn.steps > 0
    l2, relative = with_bn.l2[later].mean(), with_bn.relative_l2[later].mean()
    l2_none, relative_none = without_bn.l2[later].mean(), without_bn.relative_l2[later].mean()
    return Claim(holds=bool(l2 >= at_least * l2_none and relative >= at_least * relative_none),
                 measured=(ratio(float(l2), float(l2_none)), ratio(float(relative), float(relative_none))),
                 threshold=at_least)


def bn_rotates_gradients_more(with_bn: GradientICSRecord, without_bn: GradientICSRecord,
                              margin: float = 0.01) -> Claim:
    """Claim: averaged over layers and over the measurements after step 0, cos(G, G′) is
    lower with BN than without, by at least ``margin``: the step of the layers below turns
    a layer's gradient more with BN. Measured: the cosine without BN minus with BN."""
    _pair(with_bn, without_bn)
    later = with_bn.steps > 0
    cos_bn, cos_none = float(with_bn.cosine[later].mean()), float(without_bn.cosine[later].mean())
    return Claim(holds=bool(cos_bn <= cos_none - margin), measured=cos_none - cos_bn, threshold=margin)


# ----------------------------------------------------------------------------
# 4. Earth Mover ICS (Huang & Yu 2020)


@dataclass
class EarthMoverRecord:
    """Earth Mover ICS of the sigmoid MLP's hidden layers over training (one network)."""

    norm: str
    #: (measurements,) the training steps at which it was measured (0 = initialization).
    steps: np.ndarray
    #: (measurements, layers, units) W1 between a sigmoid input's values before and after one SGD step.
    distance: np.ndarray
    #: same shape: the mean shift |mu - mu'|, a lower bound on distance.
    lower: np.ndarray
    #: same shape: mean |x_i - x'_i| over the batch's examples, an upper bound on distance.
    upper: np.ndarray
    final_test_accuracy: float
    #: mean minibatch training loss (training mode) over the last ``TRAIN_LOSS_STEPS`` steps.
    train_loss: float = float("nan")


#: The training loss of an Earth Mover run is the mean minibatch loss over this many final steps.
TRAIN_LOSS_STEPS = 50


def earth_mover_ics_over_training(norm: str = "batch", seed: int = 0, steps: int = 300, lr: float = 1.0,
                                  batch_size: int = 60, measure_every: int = 50) -> EarthMoverRecord:
    """Train the 3 x 100 sigmoid MLP on digits and measure the Earth Mover ICS of its sigmoid inputs.

    At step 0 and every ``measure_every`` steps, :func:`normlab.probes.earth_mover_ics` with
    the training ``lr`` on a fixed batch of ``batch_size`` training examples (drawn by
    ``seed``): per unit, W1 between the values the sigmoid receives on that batch before and
    after one SGD step on it, with the mean-shift lower bound and the same-example upper
    bound. ``norm`` is ``"batch"`` or ``"none"``; same initial Linear weights either way.
    Used in chapter ``04_internal_covariate_shift`` (Huang & Yu 2020, at CPU scale).
    """
    ds = data.digits(seed=seed)
    net = _network("sigmoid", norm, ds, seed)
    return _earth_mover_run(net, norm, ds, seed, steps, lr, batch_size, measure_every)


def _earth_mover_run(net: nn.Module, norm: str, ds: data.Dataset, seed: int, steps: int, lr: float,
                     batch_size: int, measure_every: int) -> EarthMoverRecord:
    """Train ``net`` with SGD and measure the Earth Mover ICS of its sigmoid inputs (see the callers)."""
    acts = [m for m in net.modules() if isinstance(m, nn.Sigmoid)]
    pick = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))[:batch_size]
    batch = (ds.x_train[pick], ds.y_train[pick])
    loss_fn: Callable[[Tensor, Tensor], Tensor] = nn.functional.cross_entropy
    measured: list[tuple[int, EarthMoverICS]] = [(0, earth_mover_ics(net, acts, batch, loss_fn, lr))]

    def hook(step: int, model: nn.Module, loss: float | None = None) -> None:
        if step % measure_every == 0:
            measured.append((step, earth_mover_ics(model, acts, batch, loss_fn, lr)))

    history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=steps,
                          hooks=[hook], progress=False, device="cpu", desc=f"Earth Mover ICS, norm={norm}")
    return EarthMoverRecord(
        norm=norm, steps=np.asarray([s for s, _ in measured]),
        distance=np.stack([np.stack(m.distance) for _, m in measured]),
        lower=np.stack([np.stack(m.lower) for _, m in measured]),
        upper=np.stack([np.stack(m.upper) for _, m in measured]),
        final_test_accuracy=history.final_test_accuracy,
        train_loss=float(np.mean(history.loss[-TRAIN_LOSS_STEPS:])))


def earth_mover_bounds_hold(record: EarthMoverRecord, slack: float = 1e-6) -> Claim:
    """lower <= W1 <= upper for every unit, layer and measurement (up to float ``slack``).

    Both are theorems (Kantorovich-Rubinstein with the 1-Lipschitz identity; any transport
    plan costs at least W1), so this checks the probe. measured: the smallest W1 - lower and
    upper - W1 seen.
    """
    below = float((record.distance - record.lower).min())
    above = float((record.upper - record.distance).min())
    return Claim(holds=below >= -slack and above >= -slack, measured=(below, above), threshold=-slack)


def earth_mover_bound_tightness(record: EarthMoverRecord, skip_init: bool = True) -> Claim:
    """How tight the two bounds are: medians over units, layers and measurements of lower/W1 and W1/upper.

    A claim only that both ratios are in (0, 1]; the chapter reports them. measured:
    (median lower/W1, median W1/upper).
    """
    keep = record.steps > 0 if skip_init else np.ones_like(record.steps, dtype=bool)
    d = record.distance[keep]
    ok = d > 0
    low = float(np.median((record.lower[keep][ok] / d[ok])))
    up = float(np.median((d[ok] / record.upper[keep][ok])))
    return Claim(holds=0 < low <= 1 and 0 < up <= 1, measured=(low, up), threshold=(0.0, 1.0))


def bn_pins_the_mean_not_the_distribution(with_bn: EarthMoverRecord, without_bn: EarthMoverRecord,
                                          bn_at_most: float = 0.05, none_at_least: float = 0.9) -> Claim:
    """With BN the mean shift explains almost none of W1; without BN almost all of it.

    BN computes its statistics on the measured batch, so a unit's batch mean after the step
    moves only with β: the median of lower/W1 is at most ``bn_at_most``, and W1 is made of
    changes of spread and shape that BN's two moments do not pin. Without BN (on the
    plateau these networks start on) the step mostly translates each unit's inputs: the
    median of lower/W1 is at least ``none_at_least``. measured: the two medians.
    """
    bn = earth_mover_bound_tightness(with_bn).measured[0]
    none = earth_mover_bound_tightness(without_bn).measured[0]
    return Claim(holds=bn <= bn_at_most and none >= none_at_least, measured=(bn, none),
                 threshold=(bn_at_most, none_at_least))


# ----------------------------------------------------------------------------
# 5. Huang & Yu's unitization layer against BN, on the Earth Mover measure


@dataclass
class UnitizationRecord:
    """The sigmoid MLP with :class:`normlab.layers.Unitization1d` in place of BN, measured as the BN network."""

    #: the Earth Mover record of the run (``norm="unitization"``), same schedule as the BN network's.
    em: EarthMoverRecord
    #: α where it started (and, if ``train_alpha`` is False, stayed).
    initial_alpha: float
    train_alpha: bool
    #: (layers, units) α at the end of training.
    alpha: np.ndarray
    #: (layers, units) γ at the end of training (it starts at 1).
    gamma: np.ndarray


def unitization_earth_mover(seed: int = 0, initial_alpha: float = 0.0, train_alpha: bool = True, steps: int = 300,
                            lr: float = 1.0, batch_size: int = 60, measure_every: int = 50) -> UnitizationRecord:
    """:func:`earth_mover_ics_over_training` with Huang & Yu's unitization layer in place of BN.

    The 3 x 100 sigmoid MLP with :class:`normlab.layers.Unitization1d` between each hidden Linear
    and its sigmoid, α starting at ``initial_alpha`` (0: the paper's default, plain BN at the
    start; 1: every example's normalized vector on the unit sphere) and learned by SGD with the
    other parameters, or held fixed if ``train_alpha`` is False (a buffer, so the probe's step
    does not move it either). The same seeded Linear weights,
    minibatches, measured batch and schedule as the BN network of
    :func:`earth_mover_ics_over_training` with the same ``seed``, so the two records compare
    unit by unit. Used in chapter ``04_internal_covariate_shift`` (Huang & Yu 2020, at CPU scale).
    """
    ds = data.digits(seed=seed)
    hidden = (WIDTH["sigmoid"],) * DEPTH["sigmoid"]
    net = models.mlp(ds.num_features, hidden, ds.num_classes, activation="sigmoid",
                     norm=lambda width: Unitization1d(width, initial_alpha=initial_alpha, learn_alpha=train_alpha),
                     seed=seed)
    layers = [m for m in net.modules() if isinstance(m, Unitization1d)]
    record = _earth_mover_run(net, "unitization", ds, seed, steps, lr, batch_size, measure_every)
    alpha, gamma = (np.stack([getattr(layer, name).detach().cpu().numpy().astype(np.float64) for layer in layers])
                    for name in ("alpha", "weight"))
    return UnitizationRecord(em=record, initial_alpha=float(initial_alpha), train_alpha=train_alpha, alpha=alpha,
                             gamma=gamma)


def _mean_w1(record: EarthMoverRecord) -> float:
    """W1 averaged over units, layers and the measurements after step 0."""
    return float(record.distance[record.steps > 0].mean())


def _paired(unit: UnitizationRecord, bn: EarthMoverRecord) -> None:
    if bn.norm != "batch" or not np.array_equal(unit.em.steps, bn.steps):
        raise ValueError("Compare a unitization record with the BN record of the same seed and schedule "
                         "(earth_mover_ics_over_training('batch', seed=...)).")


def learned_unitization_is_bn_like(unit: UnitizationRecord, bn: EarthMoverRecord, w1_at_least: float = 1.0,
                                   loss_at_most: float = 1.0, points: float = 2.0,
                                   alpha_below: float = 0.0) -> Claim:
    """Claim, for α learned from 0: (a) the mean W1 is not below BN's (ratio unitization/BN at least
    ``w1_at_least``); (b) the training loss (mean minibatch loss of the last steps) is not above BN's
    (ratio at most ``loss_at_most``); (c) the final test accuracy is within ``points`` percentage
    points of BN's; (d) α moves *away* from unitization: its mean in every hidden layer ends below
    ``alpha_below`` (a factor α/√(s+ε) + 1 − α above 1, since s is near the width). measured:
    (W1 ratio, training-loss ratio, accuracy difference in points, the largest per-layer mean α)."""
    _paired(unit, bn)
    w1 = _mean_w1(unit.em) / _mean_w1(bn)
    loss = unit.em.train_loss / bn.train_loss
    gap = 100 * (unit.em.final_test_accuracy - bn.final_test_accuracy)
    alpha = float(unit.alpha.mean(axis=1).max())
    holds = w1 >= w1_at_least and loss <= loss_at_most and abs(gap) <= points and alpha < alpha_below
    return Claim(holds=bool(holds), measured=(w1, loss, gap, alpha),
                 threshold=(w1_at_least, loss_at_most, points, alpha_below))


def full_unitization_trades_training(unit: UnitizationRecord, bn: EarthMoverRecord, w1_at_most: float = 0.5,
                                     loss_factor: float = 3.0) -> Claim:
    """Claim, for α held at 1: the mean W1 is at most ``w1_at_most`` times BN's, and the training
    loss (mean minibatch loss of the last steps) at least ``loss_factor`` times BN's: the bound on
    the layer's outputs costs training in this run. measured: (W1 ratio, training-loss ratio)."""
    _paired(unit, bn)
    w1 = _mean_w1(unit.em) / _mean_w1(bn)
    loss = unit.em.train_loss / bn.train_loss
    return Claim(holds=bool(w1 <= w1_at_most and loss >= loss_factor), measured=(w1, loss),
                 threshold=(w1_at_most, loss_factor))


# ----------------------------------------------------------------------------
# 6. Bounds on the Earth Mover ICS of a whole layer, in d dimensions


#: The three networks of :func:`earth_mover_bounds_by_width`: BN, BN followed by Gaussian noise, unitization at α = 1.
BOUND_NETWORKS = ("batch", "noisy_batch", "unitization")


class _GaussianNoise(nn.Module):
    """Adds independent N(0, std²) noise to every value in training mode (a fresh draw per call); identity in eval."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        super().__init__()
        self.std, self.generator = float(std), generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.std == 0:
            return x
        return x + self.std * torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)


@dataclass
class EarthMoverBoundsRecord:
    """The Earth Mover ICS of one layer's whole output (a point in R^d per example), with its bounds.

    Each array has one entry per measurement (step 0 and every ``measure_every`` steps): the
    measured layer's output on a fixed batch of ``measured_batch`` examples before (X) and after
    (X′) one SGD step, the layer's (γ, β) before and (γ′, β′) after. Chapter
    ``04_internal_covariate_shift`` derives the bounds (eq-ics-emd-d-lower to eq-ics-emd-d-unit).
    """

    network: str
    width: int
    #: s, the standard deviation of the noise after BN (0 for the networks without noise).
    noise_std: float
    measured_batch: int
    steps: np.ndarray
    #: W₁(P, P′) in R^d, exactly (:func:`normlab.probes.wasserstein_nd`).
    distance: np.ndarray
    #: lower bound (ics-emd-d-lower), f(x) = ⟨u, x⟩: ‖mean X − mean X′‖.
    mean_shift: np.ndarray
    #: lower bound (ics-emd-d-lower), f(x) = ‖x − c‖ with c = mean X: |E‖X − c‖ − E‖X′ − c‖|.
    norm_shift: np.ndarray
    #: lower bound (ics-emd-d-lower), f(x) = x_j: the largest per-unit W₁ (the measure of eq-ics-emd).
    unit_max: np.ndarray
    #: upper bound: the cost of the same-example plan, mean_i ‖x_i − x′_i‖.
    same_example: np.ndarray
    #: upper bound (ics-emd-d-upper), the independent plan: √(tr Σ + tr Σ′ + ‖μ − μ′‖²), batch moments.
    independent: np.ndarray
    #: the bound from the parameters alone: BN √(‖γ‖² + ‖γ′‖² + ‖β − β′‖² + 2 d s²) (ics-emd-d-bn);
    #: unitization max|γ| + max|γ′| + ‖β − β′‖ (ics-emd-d-unit).
    parameter_bound: np.ndarray
    #: W₁ between two noise draws on the same batch with no step (0 without noise): the noise floor.
    noise_floor: np.ndarray

    @property
    def lower(self) -> np.ndarray:
        """The best of the three lower bounds, per measurement."""
        return np.maximum(np.maximum(self.mean_shift, self.norm_shift), self.unit_max)


def _bounds_network(network: str, width: int, noise_std: float, ds: data.Dataset, seed: int) -> nn.Sequential:
    """The chapter's sigmoid MLP, 100 → 100 → ``width``: BN, BN + noise on the last layer, or unitization at α = 1."""
    if network not in BOUND_NETWORKS:
        raise ValueError(f"network must be one of {list(BOUND_NETWORKS)}; got {network!r}.")
    if network == "unitization":
        def factory(w: int) -> nn.Module:
            return Unitization1d(w, initial_alpha=1.0, learn_alpha=False)
    else:
        factory = BatchNorm1d
    net = models.mlp(ds.num_features, (WIDTH["sigmoid"], WIDTH["sigmoid"], width), ds.num_classes,
                     activation="sigmoid", norm=factory, seed=seed)
    if network == "noisy_batch":     # noise after the measured layer's BN only, so tr Σ grows by exactly d s² there
        noise = _GaussianNoise(noise_std, torch.Generator().manual_seed(10_000 + seed))
        net.norm2 = nn.Sequential(net.norm2, noise)
    return net


def _measured_outputs(net: nn.Sequential, batch: tuple[Tensor, Tensor], lr: float,
                      noisy: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[Tensor, ...]]:
    """The last hidden layer's sigmoid input on ``batch`` before and after one SGD step on it (training mode).

    Returns (X, X′, X with a second noise draw and no step or None, (γ, β, γ′, β′)). The
    network, its gradients and buffers are restored afterwards.
    """
    x, y = batch
    layer = net.norm2[0] if isinstance(net.norm2, nn.Sequential) else net.norm2
    saved = copy.deepcopy(net.state_dict())
    captured: list[Tensor] = []
    handle = net.act2.register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach().clone()))
    try:
        with probes.in_mode(net, True):
            net.zero_grad(set_to_none=True)
            gamma, beta = layer.weight.detach().clone(), layer.bias.detach().clone()
            nn.functional.cross_entropy(net(x), y).backward()
            with torch.no_grad():
                if noisy:
                    net(x)                                   # same parameters, a second noise draw
                for p in net.parameters():
                    if p.grad is not None:
                        p -= lr * p.grad
                net(x)
            stepped = (gamma, beta, layer.weight.detach().clone(), layer.bias.detach().clone())
    finally:
        handle.remove()
        net.zero_grad(set_to_none=True)
        net.load_state_dict(saved)
    before, after = captured[0].double().numpy(), captured[-1].double().numpy()
    floor = captured[1].double().numpy() if noisy else None
    return before, after, floor, stepped


def _bounds_at(network: str, net: nn.Sequential, batch: tuple[Tensor, Tensor], lr: float,
               noise_std: float) -> tuple[float, ...]:
    """One measurement of :class:`EarthMoverBoundsRecord` (fields in its order, from distance to noise_floor)."""
    a, b, floor, (gamma, beta, gamma2, beta2) = _measured_outputs(net, batch, lr, network == "noisy_batch")
    g, g2, db = (t.double().numpy() for t in (gamma, gamma2, beta2 - beta))
    width = a.shape[1]
    mean_a, mean_b = a.mean(0), b.mean(0)
    norm_shift = abs(np.linalg.norm(a - mean_a, axis=1).mean() - np.linalg.norm(b - mean_a, axis=1).mean())
    unit_max = max(probes.wasserstein_1d(a[:, j], b[:, j]) for j in range(width))
    independent = np.sqrt(a.var(0).sum() + b.var(0).sum() + np.sum((mean_a - mean_b) ** 2))
    if network == "unitization":
        parameter = np.abs(g).max() + np.abs(g2).max() + np.linalg.norm(db)                      # (ics-emd-d-unit)
    else:
        parameter = np.sqrt(np.sum(g ** 2) + np.sum(g2 ** 2) + np.sum(db ** 2) + 2 * width * noise_std ** 2)
    return (probes.wasserstein_nd(a, b), float(np.linalg.norm(mean_a - mean_b)), float(norm_shift), float(unit_max),
            float(np.linalg.norm(a - b, axis=1).mean()), float(independent), float(parameter),
            probes.wasserstein_nd(a, floor) if floor is not None else 0.0)


def earth_mover_bounds_run(network: str = "batch", width: int = 64, seed: int = 0, noise_std: float = 0.5,
                           steps: int = 100, lr: float = 1.0, batch_size: int = 60, measured_batch: int = 128,
                           measure_every: int = 25) -> EarthMoverBoundsRecord:
    """Train a sigmoid MLP with a last hidden layer ``width`` units wide; measure that layer's Earth Mover ICS in R^d.

    The network is 64 → 100 → 100 → ``width`` → 10 on the digits (:func:`normlab.data.digits`),
    with ``network`` = ``"batch"`` (BN before every sigmoid), ``"noisy_batch"`` (the same, plus
    N(0, ``noise_std``²) noise added to every value of the last BN's output in training mode) or
    ``"unitization"`` (:class:`normlab.layers.Unitization1d` with α held at 1). SGD at ``lr``,
    minibatches of ``batch_size``. At step 0 and every ``measure_every`` steps, on a fixed batch
    of ``measured_batch`` training examples: the last hidden layer's sigmoid input before and after
    one SGD step on that batch (training mode, the network restored afterwards), its W₁ in R^d
    and the bounds of :class:`EarthMoverBoundsRecord`. Chapter ``04_internal_covariate_shift``,
    section on the bounds in d dimensions (eq-ics-emd-d-lower, eq-ics-emd-d-upper, eq-ics-emd-d-bn,
    eq-ics-emd-d-unit).
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer; got {width!r}.")
    noise_std = float(noise_std) if network == "noisy_batch" else 0.0      # s = 0 in the bound of the other two
    ds = data.digits(seed=seed)
    net = _bounds_network(network, width, noise_std, ds, seed)
    pick = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))[:measured_batch]
    batch = (ds.x_train[pick], ds.y_train[pick])
    rows = [(0, _bounds_at(network, net, batch, lr, noise_std))]

    def hook(step: int, model: nn.Module, loss: float | None = None) -> None:
        if step % measure_every == 0:
            rows.append((step, _bounds_at(network, model, batch, lr, noise_std)))

    train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=steps, hooks=[hook],
                progress=False, device="cpu", desc=f"Earth Mover bounds, {network}, d={width}")
    columns = np.array([r for _, r in rows], dtype=np.float64).T
    return EarthMoverBoundsRecord(network, width, noise_std, measured_batch, np.array([s for s, _ in rows]), *columns)


def earth_mover_bounds_by_width(seed: int = 0, widths: Sequence[int] = (4, 16, 64, 256),
                                **kwargs: object) -> dict[tuple[str, int], EarthMoverBoundsRecord]:
    """:func:`earth_mover_bounds_run` for every network of :data:`BOUND_NETWORKS` and width, keyed (network, width).

    Chapter ``04_internal_covariate_shift`` (section on the bounds in d dimensions).
    """
    return {(network, width): earth_mover_bounds_run(network, width, seed=seed, **kwargs)  # type: ignore[arg-type]
            for network in BOUND_NETWORKS for width in widths}


def _widths(records: dict[tuple[str, int], EarthMoverBoundsRecord], network: str) -> list[EarthMoverBoundsRecord]:
    """The records of one network, narrowest first (at least two widths, every network present)."""
    if not all(any(key[0] == n for key in records) for n in BOUND_NETWORKS):
        raise ValueError(f"records must hold every network of {list(BOUND_NETWORKS)} "
                         f"(earth_mover_bounds_by_width); got keys {sorted(records)}.")
    chosen = sorted((r for (n, _), r in records.items() if n == network), key=lambda r: r.width)
    if len(chosen) < 2:
        raise ValueError("the claims about width need records at two widths at least.")
    return chosen


def _slope(chosen: list[EarthMoverBoundsRecord], field: str) -> float:
    """Least-squares slope of log(mean over measurements of ``field``) against log(width): k in field ∝ d^k."""
    widths = np.log([r.width for r in chosen])
    return float(np.polyfit(widths, np.log([getattr(r, field).mean() for r in chosen]), 1)[0])


def earth_mover_d_bounds_hold(records: dict[tuple[str, int], EarthMoverBoundsRecord], slack: float = 1e-9) -> Claim:
    """Every bound of the section holds on every measurement, and how close each comes to W₁.

    Theorems, so this checks the code: lower ≤ W₁ ≤ same-example cost and W₁ ≤ the independent
    plan's bound (eq-ics-emd-d-lower, eq-ics-emd-d-upper) for every network; for BN the parameter
    bound (eq-ics-emd-d-bn) is at least the independent plan's bound (the batch mean is β, the trace
    at most ‖γ‖²), for unitization W₁ ≤ its parameter bound (eq-ics-emd-d-unit). With noise,
    eq-ics-emd-d-bn bounds W₁ in expectation over the noise; it is checked on each draw as well.
    measured: the largest lower/W₁, W₁/independent, and W₁/parameter bound for BN, BN + noise and
    unitization (each at most 1 when the bounds hold).
    """
    every = list(records.values())
    lower = max(float(np.max(r.lower / r.distance)) for r in every)
    ok = all(np.all(r.distance <= r.same_example + slack) and np.all(r.lower <= r.distance + slack) for r in every)
    independent = max(float(np.max(r.distance / r.independent)) for r in every)
    ok = ok and all(np.all(r.independent <= r.parameter_bound + slack) for r in _widths(records, "batch"))
    parameter = tuple(max(float(np.max(r.distance / r.parameter_bound)) for r in _widths(records, n))
                      for n in BOUND_NETWORKS)
    measured = (lower, independent, *parameter)
    return Claim(holds=bool(ok and max(measured) <= 1 + slack), measured=measured, threshold=1.0)


def bn_bound_grows_with_width(records: dict[tuple[str, int], EarthMoverBoundsRecord],
                              bound_slope_at_least: float = 0.25, w1_slope_at_least: float = 0.1,
                              step0_match: float = 0.02) -> Claim:
    """BN's parameter bound (eq-ics-emd-d-bn) grows with the width d, and the measured W₁ grows too, more slowly.

    At step 0 (γ = 1, β = 0 before the measured step) the bound is within a fraction
    ``step0_match`` of √(2d) at every width. Slopes k of a least-squares fit of log(mean over
    measurements) against log(d): the bound's at least ``bound_slope_at_least`` (√(2d) is
    k = 1/2; γ grows more in narrow layers during training), W₁'s at least ``w1_slope_at_least``.
    measured: (bound's k, W₁'s k, median W₁/bound at the narrowest width, at the widest, the
    largest |bound at step 0/√(2d) − 1|).
    """
    chosen = _widths(records, "batch")
    bound, w1 = _slope(chosen, "parameter_bound"), _slope(chosen, "distance")
    tight = [float(np.median(r.distance / r.parameter_bound)) for r in (chosen[0], chosen[-1])]
    step0 = max(abs(float(r.parameter_bound[r.steps == 0][0]) / np.sqrt(2 * r.width) - 1) for r in chosen)
    holds = bound >= bound_slope_at_least and w1 >= w1_slope_at_least and step0 <= step0_match
    return Claim(holds=bool(holds), measured=(bound, w1, *tight, step0),
                 threshold=(bound_slope_at_least, w1_slope_at_least, step0_match))


def noise_sets_a_floor(records: dict[tuple[str, int], EarthMoverBoundsRecord], floor_share_at_least: float = 0.5,
                       match: float = 0.02, above_bn_at_least: float = 1.05) -> Claim:
    """Noise after BN adds a floor to the measured W₁ that grows like s√(2d), which no parameter sets.

    At every width: the floor (W₁ between two noise draws, no step) is at least
    ``floor_share_at_least`` of the noisy network's W₁, and that W₁ is at least
    ``above_bn_at_least`` times BN's; at the widest, the floor is within a fraction ``match`` of
    s√(2d), the mean length of the difference of two independent N(0, s² I_d) draws for large d
    (pairing each example with itself, which is optimal there). measured: (smallest floor share,
    floor/(s√(2d)) at the widest, smallest W₁ ratio to BN, W₁ ratio to BN at the widest).
    """
    noisy, bn = _widths(records, "noisy_batch"), _widths(records, "batch")
    share = min(r.noise_floor.mean() / r.distance.mean() for r in noisy)
    widest = noisy[-1]
    floor = widest.noise_floor.mean() / (widest.noise_std * np.sqrt(2 * widest.width))
    ratios = [n.distance.mean() / b.distance.mean() for n, b in zip(noisy, bn)]
    holds = share >= floor_share_at_least and abs(floor - 1) <= match and min(ratios) >= above_bn_at_least
    return Claim(holds=bool(holds), measured=(float(share), float(floor), float(min(ratios)), float(ratios[-1])),
                 threshold=(floor_share_at_least, match, above_bn_at_least))


def noise_drives_the_lower_bound(records: dict[tuple[str, int], EarthMoverBoundsRecord],
                                 bn_share_at_most: float = 0.25, match: float = 0.1) -> Claim:
    """Without noise BN's lower bounds catch little of W₁; with noise the mean-shift bound is the noise's.

    BN pins each unit's batch mean at β and its spread at γ, so of the lower bounds
    (eq-ics-emd-d-lower) only what they see beyond two moments per unit is left: the median of the
    best of them over W₁ is at most ``bn_share_at_most`` at every width. With noise, the batch
    mean of the noise moves between draws: E‖mean X − mean X′‖² grows by 2ds²/n, so at the
    widest the mean-shift bound is within a fraction ``match`` of s√(2d/n). measured: (largest
    median lower/W₁ for BN over widths, mean shift/(s√(2d/n)) at the widest width with noise).
    """
    share = max(float(np.median(r.lower / r.distance)) for r in _widths(records, "batch"))
    widest = _widths(records, "noisy_batch")[-1]
    scale = widest.noise_std * np.sqrt(2 * widest.width / widest.measured_batch)
    shift = float(widest.mean_shift.mean() / scale)
    return Claim(holds=share <= bn_share_at_most and abs(shift - 1) <= match, measured=(share, shift),
                 threshold=(bn_share_at_most, match))


def unitization_bound_is_width_free(records: dict[tuple[str, int], EarthMoverBoundsRecord],
                                    w1_ratio_at_most: float = 0.1) -> Claim:
    """Unitization at α = 1: its parameter bound (eq-ics-emd-d-unit) does not grow with d; W₁ stays far below BN's.

    The mean bound at the widest width is at most the one at the narrowest, and at the widest the
    mean W₁ is at most ``w1_ratio_at_most`` times BN's. measured: (bound at the widest/bound at
    the narrowest, largest mean bound over widths, W₁ ratio to BN at the widest).
    """
    unit, bn = _widths(records, "unitization"), _widths(records, "batch")
    bounds = [r.parameter_bound.mean() for r in unit]
    ratio_w1 = unit[-1].distance.mean() / bn[-1].distance.mean()
    growth = bounds[-1] / bounds[0]
    return Claim(holds=bool(growth <= 1 and ratio_w1 <= w1_ratio_at_most),
                 measured=(float(growth), float(max(bounds)), float(ratio_w1)), threshold=(1.0, w1_ratio_at_most))
