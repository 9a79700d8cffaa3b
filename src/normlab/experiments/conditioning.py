"""Experiments of chapter ``01_why_normalize``.

- :func:`rotated_standardization`: per-coordinate standardization (what BN does to each unit)
  against whitening, on Gaussian inputs whose principal axes are rotated away from the
  coordinate axes. Claim: :func:`standardization_fails_off_axis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, jvp

from normlab import data, models, preprocessing, quadratic, train
from normlab.experiments._common import Claim
from normlab.probes import in_mode


@dataclass
class StepsRecord:
    """Gradient-descent steps to shrink the error by ``tol``, per condition number."""

    condition_numbers: np.ndarray
    measured_steps: np.ndarray
    predicted_steps: np.ndarray   # from the slowest contraction factor
    loglog_slope: float           # slope of log(steps) against log(κ)


def steps_vs_condition_number(condition_numbers: Sequence[float] = (2, 5, 10, 20, 50, 100, 200),
                              dim: int = 10, tol: float = 1e-4, seed: int = 0,
                              max_steps: int = 100_000) -> StepsRecord:
    """Run GD at the optimal fixed step 2/(λmin + λmax) on random quadratics of growing κ.

    Eigenvalues are log-spaced in [1/κ, 1]; θ₀ is random. Counts the steps until
    ‖θ_t − θ*‖ ≤ tol ‖θ₀ − θ*‖ and compares with ⌈ln tol / ln((κ−1)/(κ+1))⌉.
    """
    rng = np.random.default_rng(seed)
    measured, predicted = [], []
    for i, kappa in enumerate(condition_numbers):
        lam = np.geomspace(1.0 / kappa, 1.0, dim)
        problem = quadratic.random_quadratic(lam, seed=seed * 1000 + i)
        lr = quadratic.optimal_lr(problem.hessian)
        theta = problem.minimizer + rng.standard_normal(dim)
        start = np.linalg.norm(theta - problem.minimizer)
        steps = 0
        while np.linalg.norm(theta - problem.minimizer) > tol * start and steps < max_steps:
            theta = theta - lr * problem.gradient(theta)
            steps += 1
        measured.append(steps)
        predicted.append(quadratic.steps_to_tolerance(lam, lr, tol))
    kappas = np.asarray(condition_numbers, dtype=float)
    measured_arr = np.asarray(measured, dtype=float)
    slope = float(np.polyfit(np.log(kappas), np.log(measured_arr), 1)[0])
    return StepsRecord(kappas, measured_arr, np.asarray(predicted), slope)


@dataclass
class RegressionRecord:
    """Least squares on the diabetes data under three input preprocessings."""

    names: list[str]                  # "raw", "standardized", "whitened"
    condition_numbers: np.ndarray     # κ(H) for each
    eigenvalues: list[np.ndarray]     # spectrum of H for each
    relative_excess_loss: np.ndarray  # (len(names), steps + 1): (L_t − L*) / (L_0 − L*)
    steps_to_tolerance: np.ndarray    # first step with relative excess loss ≤ tol (inf if never)
    tol: float


def regression_conditioning(steps: int = 1000, tol: float = 1e-3, seed: int = 0) -> RegressionRecord:
    """Full-batch GD on (1/2n)‖Xw − y‖² for the diabetes training split (seeded).

    Every run starts at w = 0 with η = 1/λmax of its own Hessian, the largest step that
    never overshoots along any eigen-direction, so the three runs are equally tuned.
    The intercept is an extra column of ones.
    """
    ds = data.diabetes(seed=seed)
    x = ds.x_train.double().numpy()
    y = ds.y_train.double().numpy()
    designs = {
        "raw": preprocessing.add_intercept(x),
        "standardized": preprocessing.add_intercept(preprocessing.standardize(x)),
        "whitened": preprocessing.add_intercept(preprocessing.whiten(x)),
    }
    kappas, spectra, curves, reached = [], [], [], []
    for design in designs.values():
        h = preprocessing.least_squares_hessian(design)
        lam = np.linalg.eigvalsh(h)
        w_star = np.linalg.lstsq(design, y, rcond=None)[0]
        problem = quadratic.Quadratic(h, w_star, minimum=_half_mse(design, w_star, y))
        path = quadratic.gradient_descent(problem, np.zeros(design.shape[1]), 1.0 / lam[-1], steps)
        excess = np.array([_half_mse(design, w, y) for w in path]) - problem.minimum
        curve = excess / excess[0]
        below = np.nonzero(curve <= tol)[0]
        kappas.append(lam[-1] / lam[0])
        spectra.append(lam)
        curves.append(curve)
        reached.append(float(below[0]) if below.size else float("inf"))
    return RegressionRecord(list(designs), np.array(kappas), spectra, np.stack(curves),
                            np.array(reached), tol)


def _half_mse(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> float:
    r = x @ w - y
    return float(r @ r / (2 * len(y)))


@dataclass
class DescentThresholdRecord:
    """Loss along the negative gradient, L(θ − αg), against its quadratic model."""

    alphas: np.ndarray
    loss: np.ndarray            # actual L(θ − αg)
    quadratic_model: np.ndarray # L(θ) − α‖g‖² + (α²/2) gᵀHg
    predicted_threshold: float  # 2‖g‖² / gᵀHg
    actual_threshold: float     # first α > 0 on the grid with L(θ − αg) ≥ L(θ) (inf if none)


def descent_threshold_on_network(seed: int = 0, hidden: int = 32, grid: int = 1500) -> DescentThresholdRecord:
    """The second-order prediction of where a gradient step stops descending, checked on a
    small tanh network (10 → hidden → hidden → 1, float64) fitting the standardized
    diabetes data with squared loss, at its seeded initialization. gᵀHg comes from a
    Hessian-vector product (forward-over-reverse with torch.func)."""
    ds = data.diabetes(seed=seed)
    x = torch.as_tensor(preprocessing.standardize(ds.x_train.double().numpy()))
    y = ds.y_train.double()
    y = (y - y.mean()) / y.std()
    net = models.mlp(x.shape[1], [hidden, hidden], 1, activation="tanh", seed=seed).double()
    loss_of, theta = _flat_loss(net, lambda out: 0.5 * ((out.squeeze(-1) - y) ** 2).mean(), x)
    g = grad(loss_of)(theta)
    _, hg = jvp(grad(loss_of), (theta,), (g,))
    gg, ghg = float(g @ g), float(g @ hg)
    predicted = 2.0 * gg / ghg   # quadratic.descent_threshold, with gᵀHg from the HVP
    alphas = np.linspace(0.0, 3.0 * predicted, grid + 1)[1:]
    l0 = float(loss_of(theta))
    with torch.no_grad():
        losses = np.array([float(loss_of(theta - a * g)) for a in alphas])
    above = np.nonzero(losses >= l0)[0]
    return DescentThresholdRecord(
        alphas=alphas, loss=losses, quadratic_model=l0 - alphas * gg + 0.5 * alphas**2 * ghg,
        predicted_threshold=predicted,
        actual_threshold=float(alphas[above[0]]) if above.size else float("inf"))


def _flat_loss(net: torch.nn.Module, criterion, x: torch.Tensor):
    """The loss as a function of one flat parameter vector, and that vector now."""
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return criterion(functional_call(net, params, (x,)))

    return loss_of, theta


@dataclass
class DriftRecord:
    """Per-unit statistics of pre-activations on a fixed probe batch during training."""

    steps: np.ndarray          # when the statistics were recorded
    means: np.ndarray          # (layers, len(steps), units): per-unit mean over the probe batch
    stds: np.ndarray           # same shape: per-unit standard deviation
    input_mean: np.ndarray     # (features,) per-feature mean of the (standardized) probe inputs
    input_std: np.ndarray
    mean_shift: np.ndarray     # (layers, len(steps)): median over units of |μ_t − μ_0| / σ_0
    log_scale_change: np.ndarray  # (layers, len(steps)): median over units of |ln(σ_t / σ_0)|
    history: train.History


def hidden_layer_drift(seed: int = 0, steps: int = 600, lr: float = 0.1, hidden: int = 64,
                       depth: int = 3, record_every: int = 10, progress: bool = False) -> DriftRecord:
    """Train a ReLU MLP on standardized digits and watch its hidden pre-activations move.

    The inputs are normalized once and for all; the inputs of deeper layers are outputs of
    layers that learn, so their distribution moves as training goes on.
    """
    ds = data.digits(seed=seed, standardize=True)
    net = models.mlp(ds.num_features, [hidden] * depth, ds.num_classes, activation="relu", seed=seed)
    layers = models.hidden_linear_layers(net)
    probe = ds.x_train[:256]
    recorded_steps, means, stds = [], [], []

    def record(step: int, model: torch.nn.Module, loss: float) -> None:
        if step % record_every:
            return
        outputs = []
        handles = [layer.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
                   for layer in layers]
        with in_mode(model, training=False), torch.no_grad():
            model(probe.to(next(model.parameters()).device))
        for h in handles:
            h.remove()
        recorded_steps.append(step)
        means.append(torch.stack([o.mean(0) for o in outputs]).cpu().numpy())
        stds.append(torch.stack([o.std(0, unbiased=False) for o in outputs]).cpu().numpy())

    record(0, net, float("nan"))
    history = train.train(net, ds, steps=steps, lr=lr, batch_size=64, seed=seed,
                          hooks=[lambda s, m, l: record(s + 1, m, l)], progress=progress,
                          desc="MLP on digits")
    mu = np.stack(means, axis=1)     # (layers, times, units)
    sd = np.stack(stds, axis=1)
    sd0 = np.maximum(sd[:, :1], 1e-8)
    shift = np.median(np.abs(mu - mu[:, :1]) / sd0, axis=2)
    scale = np.median(np.abs(np.log(np.maximum(sd, 1e-8) / sd0)), axis=2)
    return DriftRecord(np.array(recorded_steps), mu, sd, probe.mean(0).numpy(),
                       probe.std(0, unbiased=False).numpy(), shift, scale, history)


@dataclass
class RotatedRecord:
    """Condition number of the least-squares Hessian XᵀX/n of 2-D Gaussian inputs with covariance
    R(θ) diag(κ, 1) R(θ)ᵀ, for each angle θ in ``angles`` (radians), raw, standardized per
    coordinate and whitened (the columns of ``kappa``); ``predicted_standardized`` is the
    population value (1 + |ρ|)/(1 − |ρ|) with ρ the correlation of the two coordinates."""

    angles: np.ndarray
    condition_number: float
    kappa: np.ndarray                   # (angle, [raw, standardized, whitened])
    predicted_standardized: np.ndarray  # (angle,)


def rotated_standardization(condition_number: float = 100.0,
                            angles: Sequence[float] = (0.0, np.pi / 24, np.pi / 12, np.pi / 6, np.pi / 4),
                            samples: int = 4000, seed: int = 0) -> RotatedRecord:
    """Standardize or whiten samples of a 2-D Gaussian whose principal axes are rotated by θ.

    Standardization divides each coordinate by its own standard deviation, as BN does per unit;
    it removes the elongation only when the principal axes are the coordinate axes (θ = 0). At
    θ = π/4 both coordinates have the same variance, so it changes nothing, and the correlation
    ρ = (κ − 1)/(κ + 1) keeps κ. Whitening removes it at every θ. Used in chapter ``01_why_normalize``.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((samples, 2)) * np.sqrt([condition_number, 1.0])
    kappas, predicted = [], []
    for angle in angles:
        c, s_ = np.cos(angle), np.sin(angle)
        rotation = np.array([[c, -s_], [s_, c]])
        x = z @ rotation.T
        row = []
        for features in (x, preprocessing.standardize(x), preprocessing.whiten(x)):
            eig = np.linalg.eigvalsh(preprocessing.least_squares_hessian(features - features.mean(0)))
            row.append(eig[-1] / eig[0])
        kappas.append(row)
        cov = rotation @ np.diag([condition_number, 1.0]) @ rotation.T
        rho = abs(cov[0, 1]) / np.sqrt(cov[0, 0] * cov[1, 1])
        predicted.append((1 + rho) / (1 - rho))
    return RotatedRecord(angles=np.asarray(angles, dtype=float), condition_number=condition_number,
                         kappa=np.asarray(kappas), predicted_standardized=np.asarray(predicted))


def standardization_fails_off_axis(record: RotatedRecord, aligned_at_most: float = 1.2,
                                   diagonal_at_least: float = 0.8, whitened_tol: float = 1e-6,
                                   rtol: float = 0.25) -> Claim:
    """Claim: standardized, κ is below ``aligned_at_most`` at θ = 0 and above ``diagonal_at_least``
    times the raw κ at θ = π/4 (the last angle), within ``rtol`` of the population prediction at
    every angle; whitened, κ is 1 within ``whitened_tol`` at every angle.
    Measured: (standardized κ at θ = 0, standardized/raw κ at the last angle, largest |κ_white − 1|)."""
    standardized, raw, white = record.kappa[:, 1], record.kappa[:, 0], record.kappa[:, 2]
    aligned, diagonal = float(standardized[0]), float(standardized[-1] / raw[-1])
    white_dev = float(np.abs(white - 1).max())
    holds = (aligned < aligned_at_most and diagonal > diagonal_at_least and white_dev < whitened_tol
             and bool(np.all(np.abs(standardized / record.predicted_standardized - 1) < rtol)))
    return Claim(holds=bool(holds), measured=(aligned, diagonal, white_dev),
                 threshold=(aligned_at_most, diagonal_at_least, whitened_tol, rtol))
