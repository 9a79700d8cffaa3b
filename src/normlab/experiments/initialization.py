"""Experiments of chapter ``08_initialization``.

Every deep network here is a plain MLP of square hidden layers (:func:`normlab.models.mlp`)
or a pre-activation residual MLP (:func:`normlab.models.residual_mlp`), re-initialized by
:func:`initialize` with one of the schemes of :mod:`normlab.init`, biases zero. Predictions
come from the mean-field recursion of :func:`mean_field_variances`.

- :func:`constant_init_training`: a network whose weights start equal keeps its hidden units
  identical through training (symmetry). Claim: :func:`constant_init_units_stay_identical`.
- :func:`variance_propagation`: per-layer variance of pre-activations and of the gradients
  reaching them, across 50 layers. Claims: :func:`variance_rates_match_prediction`,
  :func:`he_relu_variance_is_steady`.
- :func:`pytorch_default_init`: what ``nn.Linear``'s default initialization is, measured, and
  what it does to a deep ReLU network. Claims: :func:`default_weight_variance_is_one_third_lecun`,
  :func:`default_relu_signal_decays_by_one_sixth`.
- :func:`deep_relu_training`: He et al. (2015)'s 30-layer plain ReLU observation at CPU scale.
  Claim: :func:`he_trains_xavier_stalls`.
- :func:`jacobian_spectra`: input-output Jacobian singular values at depth, Gaussian against
  orthogonal weights (Saxe et al. 2014). Claims: :func:`orthogonal_linear_is_isometric`,
  :func:`orthogonal_narrows_tanh_spectrum`.
- :func:`lsuv_variances` and SELU through :func:`variance_propagation`: unit variance by design.
  Claim: :func:`variance_within`.
- :func:`residual_stream`: variance of the residual stream against block index for branch
  scales 1, 1/√B, 1/B and a zero-initialized last layer. Claim: :func:`residual_growth_matches_prediction`.
- :func:`weight_scale_sweep`: CS231n's weight-scale experiment, with BatchNorm and without.
  Claims: :func:`bn_output_ignores_weight_scale`, :func:`bn_widens_weight_scale_range`,
  :func:`plain_trains_only_at_he_scale`.
- :func:`branch_share`: the share of the final residual-stream variance that the branches add, for the
  output scalings 1/√B (branch variance divided by B) and 1/B (output divided by B). Claim:
  :func:`branch_scalings_differ_as_predicted`.
- :func:`zero_init_gradients`: which parameters of an all-zero network get a gradient, step by
  step, for tanh (φ(0) = 0) and sigmoid (φ(0) = 1/2). Claim: :func:`zero_init_learns_as_phi_of_zero_says`.
- :func:`bn_gradient_explosion`: weight-gradient norms per layer at initialization of deep ReLU
  MLPs with and without BN, no skip connections (Yang et al. 2019). Claim:
  :func:`bn_gradients_explode_with_depth`.
- :func:`activation_histograms`: per-layer histograms for the chapter's explorer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from normlab import data, init, models, probes, train
from normlab.experiments._common import Claim, ratio
from normlab.layers import BatchNorm1d

__all__ = [
    "SCHEMES",
    "BNGradientRecord",
    "bn_gradient_explosion",
    "branch_share",
    "branch_scalings_differ_as_predicted",
    "bn_gradients_explode_with_depth",
    "zero_init_gradients",
    "zero_init_learns_as_phi_of_zero_says",
    "ConstantInitRecord",
    "DeepTrainingRecord",
    "DefaultInitRecord",
    "HistogramRecord",
    "JacobianRecord",
    "ResidualStreamRecord",
    "VarianceRecord",
    "WeightScaleRecord",
    "activation_histograms",
    "bn_output_ignores_weight_scale",
    "bn_widens_weight_scale_range",
    "constant_init_training",
    "constant_init_units_stay_identical",
    "deep_mlp",
    "deep_relu_training",
    "default_relu_signal_decays_by_one_sixth",
    "default_weight_variance_is_one_third_lecun",
    "fitted_log_slope",
    "he_relu_variance_is_steady",
    "he_trains_xavier_stalls",
    "initialize",
    "jacobian_spectra",
    "lsuv_variances",
    "mean_field_variances",
    "orthogonal_linear_is_isometric",
    "orthogonal_narrows_tanh_spectrum",
    "plain_trains_only_at_he_scale",
    "predicted_residual_variance",
    "pytorch_default_init",
    "residual_growth_matches_prediction",
    "residual_stream",
    "variance_propagation",
    "variance_rates_match_prediction",
    "variance_within",
    "weight_scale_sweep",
]

#: Schemes :func:`initialize` knows: name -> Var[W] * fan_in for a square layer (None: not a variance rule).
SCHEMES = {
    "small": None,        # N(0, 0.01^2), CS231n's "small random numbers"
    "xavier": 1.0,        # 2 / (fan_in + fan_out) = 1 / n for a square layer
    "he": 2.0,            # 2 / fan_in
    "lecun": 1.0,         # 1 / fan_in (for SELU, Klambauer et al. 2017)
    "orthogonal": 1.0,    # Q with Q^T Q = I
    "default": 1.0 / 3,   # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
}
SMALL_STD = 0.01


def initialize(model: nn.Module, scheme: str, seed: int, gain: float = 1.0) -> nn.Module:
    """Re-initialize every ``nn.Linear`` of ``model`` in place with ``scheme``; biases become zero.

    ``"small"``: N(0, 0.01²). ``"xavier"``: :func:`normlab.init.xavier_normal_` (gain 1).
    ``"he"``: :func:`normlab.init.kaiming_normal_` (ReLU, fan_in). ``"lecun"``: N(0, 1/fan_in).
    ``"orthogonal"``: :func:`normlab.init.orthogonal_` times ``gain``. ``"default"``: leave
    PyTorch's default weights and biases as they are. Weights are drawn in module order from
    a generator seeded by ``seed``. Used in chapter ``08_initialization``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown scheme {scheme!r}; choose one of {list(SCHEMES)}.")
    if scheme == "default":
        return model
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight
        if scheme == "small":
            init.normal_(w, 0.0, SMALL_STD, generator=generator)
        elif scheme == "xavier":
            init.xavier_normal_(w, generator=generator)
        elif scheme == "he":
            init.kaiming_normal_(w, nonlinearity="relu", generator=generator)
        elif scheme == "lecun":
            init.kaiming_normal_(w, nonlinearity="linear", generator=generator)
        else:
            init.orthogonal_(w, gain=gain, generator=generator)
        if module.bias is not None:
            init.zeros_(module.bias)
    return model


# ----------------------------------------------------------------------------- mean-field predictions

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(100)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)   # E[f(z)] = sum w_i f(x_i) for z ~ N(0, 1)

_PHI = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "selu": (lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * np.expm1(np.minimum(z, 0))),
             lambda z: 1.0507009873554805 * np.where(z > 0, 1.0, 1.6732632423543772 * np.exp(np.minimum(z, 0)))),
}


def mean_field_variances(activation: str, weight_var_fan: float, q0: float, depth: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted pre-activation variance q_l and backward factor chi_l for l = 0 .. depth-1.

    For square layers of width n with Var[W] = s / n (``weight_var_fan`` = s) and zero biases,
    the pre-activations z_l are close to N(0, q_l) with (Poole et al. 2016)

        q_{l+1} = s * E[phi(sqrt(q_l) Z)^2],        Z ~ N(0, 1),

    and the gradient reaching z_l is the one reaching z_{l+1} times, in variance,

        chi_l = s * E[phi'(sqrt(q_l) Z)^2].

    For ReLU: q_{l+1} = s q_l / 2 and chi = s / 2, so He (s = 2) keeps both at one.
    Expectations are computed by 100-point Gauss-Hermite quadrature. Used in chapter ``08_initialization``.
    """
    if activation not in _PHI:
        raise ValueError(f"Unknown activation {activation!r}; choose one of {list(_PHI)}.")
    phi, dphi = _PHI[activation]
    q = np.empty(depth)
    chi = np.empty(depth)
    q[0] = q0
    for layer in range(depth):
        z = math.sqrt(q[layer]) * _NODES
        chi[layer] = weight_var_fan * float(_WEIGHTS @ dphi(z) ** 2)
        if layer + 1 < depth:
            q[layer + 1] = weight_var_fan * float(_WEIGHTS @ phi(z) ** 2)
    return q, chi


def fitted_log_slope(values: np.ndarray, start: int = 0) -> float:
    """Least-squares slope of log(values) against layer index, from ``start`` on: log growth per layer.

    Used in chapter ``08_initialization`` to compare measured and predicted rates.
    """
    y = np.log(np.asarray(values, dtype=np.float64)[start:])
    return float(np.polyfit(np.arange(y.size), y, 1)[0])


# ----------------------------------------------------------------------------- 1. symmetry


@dataclass
class ConstantInitRecord:
    """Hidden-unit spread during training from a constant and from a random initialization.

    ``spread_*[t]`` is the largest difference between two hidden units' incoming weight rows
    (max over layers of max |W[i] - W[j]|) after ``steps[t]`` steps.
    """

    steps: np.ndarray
    spread_constant: np.ndarray
    spread_random: np.ndarray
    accuracy_constant: float
    accuracy_random: float
    value: float


def _unit_spread(net: nn.Sequential) -> float:
    rows = [layer.weight.detach() for layer in models.hidden_linear_layers(net)]
    return float(max((w - w[:1]).abs().max() for w in rows))


def constant_init_training(seed: int = 0, value: float = 0.1, hidden: Sequence[int] = (32, 32),
                           steps: int = 200, lr: float = 0.1, record_every: int = 20) -> ConstantInitRecord:
    """Train a tanh MLP on digits from weights all equal to ``value`` (biases 0), and from PyTorch's default random weights.

    Symmetry: every hidden unit of a layer computes the same function of the same input, so
    receives the same gradient, so stays equal to its neighbours. Used in chapter ``08_initialization``.
    """
    ds = data.digits(seed=seed)
    result = {}
    for kind in ("constant", "random"):
        net = models.mlp(ds.num_features, hidden, ds.num_classes, activation="tanh", seed=seed)
        if kind == "constant":
            with torch.no_grad():
                for layer in net.modules():
                    if isinstance(layer, nn.Linear):
                        layer.weight.fill_(value)
                        layer.bias.zero_()
        spreads, at = [_unit_spread(net)], [0]

        def hook(step: int, model: nn.Module, _loss: float, spreads=spreads, at=at) -> None:
            if step % record_every == 0:
                spreads.append(_unit_spread(model))
                at.append(step)

        history = train.train(net, ds, steps=steps, lr=lr, seed=seed, hooks=[hook], progress=False, device="cpu",
                              eval_every=steps)
        result[kind] = (np.asarray(at), np.asarray(spreads), history.final_test_accuracy)
    return ConstantInitRecord(steps=result["constant"][0], spread_constant=result["constant"][1],
                              spread_random=result["random"][1], accuracy_constant=result["constant"][2],
                              accuracy_random=result["random"][2], value=value)


def constant_init_units_stay_identical(record: ConstantInitRecord, random_at_least: float = 0.1) -> Claim:
    """Claim: from a constant start every unit stays exactly equal to its neighbours (spread 0 at every step),
    while from a random start units differ by at least ``random_at_least``. Measured: (the largest spread
    from the constant start, the smallest from the random one); threshold: (0, ``random_at_least``)."""
    holds = np.all(record.spread_constant == 0.0) and np.all(record.spread_random >= random_at_least)
    return Claim(holds=bool(holds),
                 measured=(float(np.max(record.spread_constant)), float(np.min(record.spread_random))),
                 threshold=(0.0, random_at_least))


# ----------------------------------------------------------------------------- 2. variance propagation


@dataclass
class VarianceRecord:
    """Per-layer variances of a deep MLP at initialization, measured and predicted.

    ``activation_variance[l]`` is Var[z_l] for the output z_l of hidden Linear l (the
    pre-activation); ``gradient_variance[l]`` is Var[dL/dz_l] with L = sum(r * y) for a fixed random r
    (so the backward signal does not depend on the forward pass, as the mean-field theory assumes).
    ``predicted_*`` come from :func:`mean_field_variances` (the backward prediction is
    anchored at the last hidden layer's measured value).
    """

    activation: str
    scheme: str
    width: int
    activation_variance: np.ndarray
    gradient_variance: np.ndarray
    predicted_activation_variance: np.ndarray
    predicted_gradient_variance: np.ndarray
    dead_fraction: np.ndarray


def deep_mlp(activation: str, scheme: str, depth: int, width: int, seed: int, bias: bool = True,
             norm: type[nn.Module] | None = None) -> nn.Sequential:
    """A ``depth``-hidden-layer MLP of width ``width`` (input and output width too), initialized by ``scheme``.

    Used in chapter ``08_initialization``.
    """
    net = models.mlp(width, [width] * depth, width, activation=activation, bias=bias, norm=norm, seed=seed)
    return initialize(net, scheme, seed)


def variance_propagation(activation: str = "relu", scheme: str = "he", depth: int = 50, width: int = 256,
                         batch: int = 256, seed: int = 0) -> VarianceRecord:
    """Forward and backward variance through ``depth`` layers at initialization, in float64.

    The input is x ~ N(0, I) (batch ``batch``); one forward and one backward pass of
    L = sum(r * y), with r ~ N(0, I) fixed, are measured by :func:`normlab.probes.layer_statistics` on the hidden
    Linear layers. Float64, so that 50 layers of decay (10^-115 for small weights and ReLU)
    stay representable. Used in chapter ``08_initialization``.
    """
    net = deep_mlp(activation, scheme, depth, width, seed).double()
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    # L = <r, y> with a fixed random r: the backward signal dL/dy = r is independent of the weights
    r = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 2), dtype=torch.float64)
    stats = probes.layer_statistics(net, x, models.hidden_linear_layers(net), loss_fn=lambda y: (y * r).sum())
    s = _weight_var_fan(scheme, width)
    q, chi = mean_field_variances(activation, s, s * float(x.var()), depth)
    # backward: g_{l} = chi_l g_{l+1}; anchor at the last hidden layer
    grad_pred = np.empty(depth)
    grad_pred[-1] = stats.gradient_variance[-1]
    for layer in range(depth - 2, -1, -1):
        grad_pred[layer] = grad_pred[layer + 1] * chi[layer]
    return VarianceRecord(activation=activation, scheme=scheme, width=width,
                          activation_variance=stats.activation_variance, gradient_variance=stats.gradient_variance,
                          predicted_activation_variance=q, predicted_gradient_variance=grad_pred,
                          dead_fraction=stats.dead_fraction)


def _weight_var_fan(scheme: str, width: int) -> float:
    if scheme == "small":
        return SMALL_STD**2 * width
    return float(SCHEMES[scheme])


def variance_rates_match_prediction(record: VarianceRecord, tol: float = 0.06, start: int = 10) -> Claim:
    """Claim: the fitted log-variance slope per layer, forward and backward, from layer ``start`` on,
    is within ``tol`` (natural-log units per layer) of the mean-field prediction's slope.
    Measured: the larger of the two slope errors."""
    forward = fitted_log_slope(record.activation_variance, start) - fitted_log_slope(
        record.predicted_activation_variance, start)
    backward = fitted_log_slope(record.gradient_variance[::-1], start) - fitted_log_slope(
        record.predicted_gradient_variance[::-1], start)
    return Claim(holds=bool(abs(forward) <= tol and abs(backward) <= tol),
                 measured=float(max(abs(forward), abs(backward))), threshold=tol)


def he_relu_variance_is_steady(record: VarianceRecord, factor: float = 20.0) -> Claim:
    """Claim: with He init and ReLU, every layer's forward and backward variance stays within
    ``factor`` of the first (last, for gradients) layer's, across all layers. Measured: the largest
    factor by which a layer's variance differs from that reference."""
    a = record.activation_variance / record.activation_variance[0]
    g = record.gradient_variance / record.gradient_variance[-1]
    both = np.concatenate([a, g])
    return Claim(holds=bool(np.all((a < factor) & (a > 1 / factor)) and np.all((g < factor) & (g > 1 / factor))),
                 measured=float(np.max(np.maximum(both, 1 / both))), threshold=factor)


# ----------------------------------------------------------------------------- 3. PyTorch's default


@dataclass
class DefaultInitRecord:
    """PyTorch's default ``nn.Linear`` initialization, measured.

    ``weight_var_fan[i]``: Var[W] * fan_in of a fresh ``nn.Linear(fans[i], fans[i])`` (the
    prediction is 1/3); ``weight_bound_fan``: max |W| * sqrt(fan_in) (the bound, 1);
    ``bias_bound_fan``: max |b| * sqrt(fan_in) (1). For a deep ReLU MLP with this init,
    ``variance`` is Var[z_l] over all values (with bias) and ``signal_variance`` the variance
    across examples averaged over units (the part that depends on the input); ``*_nobias``
    the same network without biases.
    """

    fans: np.ndarray
    weight_var_fan: np.ndarray
    weight_bound_fan: np.ndarray
    bias_bound_fan: np.ndarray
    variance: np.ndarray
    signal_variance: np.ndarray
    variance_nobias: np.ndarray
    width: int


def _hidden_outputs(net: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
               for layer in models.hidden_linear_layers(net)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def pytorch_default_init(fans: Sequence[int] = (16, 64, 256, 1024), depth: int = 20, width: int = 256,
                         batch: int = 256, seed: int = 0) -> DefaultInitRecord:
    """Measure ``nn.Linear``'s default initialization, and its effect on a deep ReLU MLP (float64).

    Used in chapter ``08_initialization``, section "PyTorch's default".
    """
    var_fan, bound_fan, bias_fan = [], [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for fan in fans:
            layer = nn.Linear(fan, fan)
            w, b = layer.weight.detach().double(), layer.bias.detach().double()
            var_fan.append(w.var().item() * fan)
            bound_fan.append(w.abs().max().item() * math.sqrt(fan))
            bias_fan.append(b.abs().max().item() * math.sqrt(fan))
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    results = []
    for bias in (True, False):
        net = models.mlp(width, [width] * depth, width, activation="relu", bias=bias, seed=seed).double()
        results.append(_hidden_outputs(net, x))
    return DefaultInitRecord(
        fans=np.asarray(fans), weight_var_fan=np.asarray(var_fan), weight_bound_fan=np.asarray(bound_fan),
        bias_bound_fan=np.asarray(bias_fan),
        variance=np.asarray([z.var(correction=0).item() for z in results[0]]),
        signal_variance=np.asarray([z.var(dim=0, correction=0).mean().item() for z in results[0]]),
        variance_nobias=np.asarray([z.var(correction=0).item() for z in results[1]]),
        width=width)


def default_weight_variance_is_one_third_lecun(record: DefaultInitRecord, standard_errors: float = 5.0) -> Claim:
    """Claim: Var[W] * fan_in = 1/3 and the weight and bias bounds are 1/sqrt(fan_in).

    The measured variance of a fan x fan layer must lie within ``standard_errors`` standard
    errors of 1/3; for U(-b, b) the relative standard error of the sample variance of N draws
    is sqrt(0.8 / N) (its kurtosis is 9/5), N = fan^2. The largest |W| * sqrt(fan_in) must lie in
    (0.95, 1] (a uniform's maximum of fan^2 >= 256 draws is that close to the bound). Measured:
    the largest |3 Var[W] fan_in − 1| in standard errors; threshold: ``standard_errors``.
    """
    rtol = standard_errors * np.sqrt(0.8) / record.fans.astype(float)
    in_errors = np.abs(record.weight_var_fan * 3 - 1) / (np.sqrt(0.8) / record.fans.astype(float))
    return Claim(holds=bool(np.all(np.abs(record.weight_var_fan * 3 - 1) <= rtol)
                            and np.all(record.weight_bound_fan <= 1) and np.all(record.weight_bound_fan > 0.95)
                            and np.all(record.bias_bound_fan <= 1)),
                 measured=float(in_errors.max()), threshold=standard_errors)


def default_relu_signal_decays_by_one_sixth(record: DefaultInitRecord, tol: float = 0.1, start: int = 2) -> Claim:
    """Claim: without bias the variance falls by 1/6 per layer (log slope within ``tol`` of log(1/6));
    with bias, the input-dependent variance falls at the same rate while the total variance settles
    near the bias-driven fixed point q* = 2 / (5 n) (within a factor 1.5). Measured: (the slope error
    without bias, the slope error of the input-dependent part, variance / q*); threshold: (``tol``,
    2 ``tol``, 1.5)."""
    target = math.log(1 / 6)
    fixed_point = 2 / (5 * record.width)
    nobias = abs(fitted_log_slope(record.variance_nobias, start) - target)
    signal = abs(fitted_log_slope(record.signal_variance[:12], start) - target)
    at_fixed_point = float(record.variance[-1] / fixed_point)
    return Claim(holds=bool(nobias <= tol and signal <= 2 * tol and 1 / 1.5 < at_fixed_point < 1.5),
                 measured=(float(nobias), float(signal), at_fixed_point), threshold=(tol, 2 * tol, 1.5))


# ----------------------------------------------------------------------------- 4. a deep plain ReLU net


@dataclass
class DeepTrainingRecord:
    """Test loss and accuracy against steps of a deep plain ReLU MLP for several schemes, one seed."""

    schemes: tuple[str, ...]
    eval_steps: np.ndarray
    test_loss: np.ndarray       # (scheme, eval)
    test_accuracy: np.ndarray   # (scheme, eval)
    train_loss: np.ndarray      # (scheme, step)
    depth: int


def deep_relu_training(seed: int = 0, schemes: Sequence[str] = ("he", "xavier"), depth: int = 30, width: int = 64,
                       steps: int = 400, lr: float = 0.003, batch_size: int = 64, eval_every: int = 20
                       ) -> DeepTrainingRecord:
    """A ``depth``-layer plain ReLU MLP on digits, SGD with momentum 0.9, per initialization scheme.

    He et al. (2015), Figure 3, at CPU scale. Used in chapter ``08_initialization``.
    """
    ds = data.digits(seed=seed)
    losses, accs, train_losses, steps_at = [], [], [], None
    for scheme in schemes:
        net = models.mlp(ds.num_features, [width] * depth, ds.num_classes, activation="relu", seed=seed)
        initialize(net, scheme, seed)
        history = train.train(net, ds, steps=steps, lr=lr, momentum=0.9, batch_size=batch_size, seed=seed,
                              eval_every=eval_every, progress=False, device="cpu")
        steps_at = history.eval_steps
        losses.append(history.test_loss)
        accs.append(history.test_accuracy)
        train_losses.append(history.loss)
    return DeepTrainingRecord(schemes=tuple(schemes), eval_steps=steps_at, test_loss=np.asarray(losses),
                              test_accuracy=np.asarray(accs), train_loss=np.asarray(train_losses), depth=depth)


def he_trains_xavier_stalls(record: DeepTrainingRecord, he_best_at_least: float = 0.7,
                            xavier_at_most: float = 0.25, loss_gap: float = 0.5) -> Claim:
    """Claim: the He network reaches test accuracy >= ``he_best_at_least`` at some evaluation and ends
    with a test loss at least ``loss_gap`` below the Xavier network's; the Xavier network's test
    accuracy never exceeds ``xavier_at_most`` (chance is 0.1) and its final test loss is within 0.05
    of ln 10, the loss of a uniform guess. Measured: (He's best accuracy, Xavier's final test loss
    minus He's, Xavier's best accuracy); threshold: (``he_best_at_least``, ``loss_gap``, ``xavier_at_most``)."""
    he, xavier = record.schemes.index("he"), record.schemes.index("xavier")
    measured = (float(record.test_accuracy[he].max()), float(record.test_loss[xavier, -1] - record.test_loss[he, -1]),
                float(record.test_accuracy[xavier].max()))
    holds = bool(record.test_accuracy[he].max() >= he_best_at_least
                and record.test_loss[he, -1] <= record.test_loss[xavier, -1] - loss_gap
                and record.test_accuracy[xavier].max() <= xavier_at_most
                and abs(record.test_loss[xavier, -1] - math.log(10)) <= 0.05)
    return Claim(holds=holds, measured=measured, threshold=(he_best_at_least, loss_gap, xavier_at_most))


# ----------------------------------------------------------------------------- 5. orthogonal init


@dataclass
class JacobianRecord:
    """Singular values of the input-output Jacobian of deep networks at initialization.

    ``singular_values[(activation, scheme)]`` holds the values, descending.
    """

    depth: int
    width: int
    singular_values: dict[tuple[str, str], np.ndarray]


def jacobian_spectra(depth: int = 32, width: int = 128, seed: int = 0,
                     configs: Sequence[tuple[str, str]] = (("linear", "xavier"), ("linear", "orthogonal"),
                                                            ("tanh", "xavier"), ("tanh", "orthogonal"))
                     ) -> JacobianRecord:
    """Input-output Jacobian singular values of a depth-``depth`` MLP at x ~ N(0, I / width).

    "xavier" here is a Gaussian with Var[W] = 1/n (Xavier for square layers). The input is
    small (q_0 = 1/n) so that tanh works near its linear regime, as in Saxe et al. (2014)
    and Pennington et al. (2017). Used in chapter ``08_initialization``, section "Orthogonal".
    """
    x = torch.randn(width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) / math.sqrt(width)
    values = {}
    for activation, scheme in configs:
        net = models.mlp(width, [width] * depth, width, activation=activation, seed=seed)
        initialize(net, scheme, seed)
        values[(activation, scheme)] = probes.jacobian_singular_values(net.double(), x)
    return JacobianRecord(depth=depth, width=width, singular_values=values)


def _log_spread(values: np.ndarray) -> float:
    return float(np.std(np.log(values)))


def orthogonal_linear_is_isometric(record: JacobianRecord, atol: float = 1e-5, gaussian_ratio_at_least: float = 1e3
                                   ) -> Claim:
    """Claim: a deep linear orthogonal network has every Jacobian singular value 1 (within ``atol``);
    the Gaussian one has max/min singular value ratio at least ``gaussian_ratio_at_least``.
    Measured: (the largest |σ − 1| of the orthogonal network, the Gaussian one's max/min)."""
    orth = record.singular_values[("linear", "orthogonal")]
    gauss = record.singular_values[("linear", "xavier")]
    return Claim(holds=bool(np.allclose(orth, 1.0, atol=atol) and gauss[0] / gauss[-1] >= gaussian_ratio_at_least),
                 measured=(float(np.abs(orth - 1.0).max()), ratio(float(gauss[0]), float(gauss[-1]))),
                 threshold=(atol, gaussian_ratio_at_least))


def orthogonal_narrows_tanh_spectrum(record: JacobianRecord, factor: float = 10.0) -> Claim:
    """Claim: with tanh, the spread (std of log singular values) is ``factor`` times smaller with orthogonal
    weights than with Gaussian ones. Measured: Gaussian spread / orthogonal spread."""
    gaussian = _log_spread(record.singular_values[("tanh", "xavier")])
    orthogonal = _log_spread(record.singular_values[("tanh", "orthogonal")])
    return Claim(holds=bool(gaussian >= factor * orthogonal), measured=ratio(gaussian, orthogonal), threshold=factor)


def lsuv_variances(activation: str = "tanh", depth: int = 50, width: int = 128, batch: int = 128, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer pre-activation variance of a deep MLP after :func:`normlab.init.lsuv_`, on the batch LSUV saw
    and on a fresh batch (both x ~ N(0, I)); biases are zero. Returns ``(on_lsuv_batch, on_fresh_batch)``.

    Used in chapter ``08_initialization``, section "Orthogonal".
    """
    net = deep_mlp(activation, "orthogonal", depth, width, seed)
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1))
    fresh = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        init.lsuv_(net, x)
    return tuple(np.asarray([z.var(correction=0).item() for z in _hidden_outputs(net, batch_x)])
                 for batch_x in (x, fresh))


def variance_within(values: np.ndarray, factor: float) -> Claim:
    """Holds if every value lies within a factor ``factor`` of 1 (for unit-variance schemes: SELU, LSUV).
    Measured: the largest factor by which a value differs from 1."""
    values = np.asarray(values)
    return Claim(holds=bool(np.all((values < factor) & (values > 1 / factor))),
                 measured=float(np.max(np.maximum(values, 1 / values))), threshold=factor)


# ----------------------------------------------------------------------------- 6. residual streams


@dataclass
class ResidualStreamRecord:
    """Variance of the residual stream h_b (output of block b) against b, per branch scaling.

    ``variance[k, b]`` is Var[h_b] for ``labels[k]``; ``predicted[k, b]`` its prediction
    (:func:`predicted_residual_variance`); ``input_variance`` is Var[h_0] before the first block.
    """

    labels: tuple[str, ...]
    blocks: int
    norm: str
    variance: np.ndarray
    predicted: np.ndarray
    input_variance: float


SCALINGS = ("1", "1/sqrt(B)", "1/B", "zero-init last")


def _branch_scale(label: str, blocks: int) -> tuple[float, bool]:
    return {"1": (1.0, False), "1/sqrt(B)": (1 / math.sqrt(blocks), False), "1/B": (1 / blocks, False),
            "zero-init last": (1.0, True)}[label]


def predicted_residual_variance(q0: float, blocks: int, scale: float, norm: str) -> np.ndarray:
    """Predicted Var[h_b], b = 1 .. blocks, for a stream h_{b} = h_{b-1} + s F(h_{b-1}) of He-initialized branches.

    Without normalization F preserves its input's variance and is uncorrelated with it, so
    Var[h_b] = (1 + s^2) Var[h_{b-1}] = q0 (1 + s^2)^b. With a normalization at the head of
    the branch F(h) has unit variance whatever h is, so Var[h_b] = q0 + b s^2.
    Used in chapter ``08_initialization``, section "Residual networks".
    """
    b = np.arange(1, blocks + 1)
    if norm == "none":
        return q0 * (1 + scale**2) ** b
    return q0 + b * scale**2


def residual_stream(blocks: int = 32, width: int = 256, batch: int = 256, norm: str = "none", seed: int = 0
                    ) -> ResidualStreamRecord:
    """Residual stream variance of :func:`normlab.models.residual_mlp` for each scaling of :data:`SCALINGS`.

    Branch Linears get He init (ReLU, fan_in), the input Linear LeCun (Var 1/fan_in), biases 0;
    ``norm="batch"`` puts :class:`normlab.layers.BatchNorm1d` before each ReLU of the branch.
    Measured on x ~ N(0, I) in float64, training-mode BN. Used in chapter ``08_initialization``.
    """
    if norm not in ("none", "batch"):
        raise ValueError(f"norm must be 'none' or 'batch'; got {norm!r}.")
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    variance, predicted, q0 = [], [], 1.0
    for label in SCALINGS:
        scale, zero_last = _branch_scale(label, blocks)
        net = models.residual_mlp(width, width, 10, blocks, activation="relu",
                                  norm=BatchNorm1d if norm == "batch" else None, branch_scale=scale,
                                  zero_init_last=zero_last, seed=seed)
        generator = torch.Generator().manual_seed(seed)
        init.kaiming_normal_(net.input.weight, nonlinearity="linear", generator=generator)
        init.zeros_(net.input.bias)
        for block in models.residual_blocks(net):
            for linear in (block.branch.linear0, block.branch.linear1):
                if not (zero_last and linear is block.branch.linear1):
                    init.kaiming_normal_(linear.weight, nonlinearity="relu", generator=generator)
                init.zeros_(linear.bias)
        net = net.double()
        outputs: list[torch.Tensor] = []
        layers = [net.input, *models.residual_blocks(net)]
        handles = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach())) for m in layers]
        with torch.no_grad():
            net.train()(x)
        for handle in handles:
            handle.remove()
        q0 = outputs[0].var(correction=0).item()
        variance.append([h.var(correction=0).item() for h in outputs[1:]])
        predicted.append(predicted_residual_variance(q0, blocks, 0.0 if zero_last else scale, norm))
    return ResidualStreamRecord(labels=SCALINGS, blocks=blocks, norm=norm, variance=np.asarray(variance),
                                predicted=np.asarray(predicted), input_variance=q0)


def residual_growth_matches_prediction(record: ResidualStreamRecord, factor: float = 10.0) -> Claim:
    """Claim: every block's measured stream variance is within ``factor`` of its prediction, and the
    zero-initialized stream stays exactly at its input variance. Measured: the largest factor between
    a measured variance and its prediction."""
    measured_over_predicted = record.variance / record.predicted
    zero = record.labels.index("zero-init last")
    return Claim(holds=bool(np.all((measured_over_predicted < factor) & (measured_over_predicted > 1 / factor))
                            and np.allclose(record.variance[zero], record.input_variance, rtol=1e-12)),
                 measured=float(np.max(np.maximum(measured_over_predicted, 1 / measured_over_predicted))),
                 threshold=factor)


# ----------------------------------------------------------------------------- 7. BatchNorm and weight scale


@dataclass
class WeightScaleRecord:
    """Final test accuracy against the weight standard deviation, with BN and without (CS231n's experiment)."""

    scales: np.ndarray
    accuracy_without_bn: np.ndarray
    accuracy_with_bn: np.ndarray
    he_std: float


def _scaled_mlp(scale: float, norm: str, depth: int, width: int, ds: data.Dataset, seed: int) -> nn.Sequential:
    net = models.mlp(ds.num_features, [width] * depth, ds.num_classes, activation="relu",
                     norm=BatchNorm1d if norm == "batch" else None, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            init.normal_(layer.weight, 0.0, scale, generator=generator)
            init.zeros_(layer.bias)
    return net


def weight_scale_sweep(multipliers: Sequence[float] = (1 / 256, 1 / 64, 1 / 16, 1 / 4, 1.0, 4.0), depth: int = 8,
                       width: int = 64, steps: int = 100, lr: float = 0.05, seed: int = 0) -> WeightScaleRecord:
    """Train a ``depth``-layer ReLU MLP on digits with W ~ N(0, scale^2), with and without BN, per scale.

    The scales are ``multipliers`` times He's standard deviation sqrt(2 / width) (CS231n's
    experiment used absolute scales on a log grid; relative ones make the He point visible).
    SGD with momentum 0.9, ``steps`` steps; a run whose loss diverges counts as accuracy 0.
    Used in chapter ``08_initialization``, section "How normalization relaxes initialization".
    """
    scales = np.asarray(multipliers, dtype=float) * math.sqrt(2 / width)
    ds = data.digits(seed=seed)
    acc = {"none": [], "batch": []}
    for norm in acc:
        for scale in scales:
            net = _scaled_mlp(float(scale), norm, depth, width, ds, seed)
            history = train.train(net, ds, steps=steps, lr=lr, momentum=0.9, seed=seed, eval_every=steps,
                                  progress=False, device="cpu")
            acc[norm].append(0.0 if history.diverged else history.final_test_accuracy)
    return WeightScaleRecord(scales=np.asarray(scales, dtype=float), accuracy_without_bn=np.asarray(acc["none"]),
                             accuracy_with_bn=np.asarray(acc["batch"]), he_std=math.sqrt(2 / width))


def bn_output_ignores_weight_scale(seed: int = 0, scales: Sequence[float] = (1e-2, 1.0, 100.0), depth: int = 8,
                                   width: int = 64) -> float:
    """The largest relative difference between the training-mode outputs of a BN network on digits whose
    weights are one draw multiplied by each of ``scales`` (BN's eps aside, the network is scale invariant)."""
    ds = data.digits(seed=seed)
    x = ds.x_train[:256].double()
    outputs = []
    for scale in scales:
        net = _scaled_mlp(1.0, "batch", depth, width, ds, seed).double()
        with torch.no_grad():
            for layer in models.hidden_linear_layers(net):
                layer.weight.mul_(scale)
            outputs.append(net.train()(x))
    ref = outputs[1]
    return float(max(((o - ref).abs().max() / ref.abs().max()).item() for o in outputs))


def bn_widens_weight_scale_range(record: WeightScaleRecord, accuracy: float = 0.6, extra: int = 4) -> Claim:
    """Claim: BN trains (test accuracy >= ``accuracy``) at every scale the plain network trains at, and at
    ``extra`` more scales at least. Measured: how many more scales train with BN."""
    without = record.accuracy_without_bn >= accuracy
    with_bn = record.accuracy_with_bn >= accuracy
    return Claim(holds=bool(np.all(with_bn[without]) and with_bn.sum() >= without.sum() + extra),
                 measured=int(with_bn.sum() - without.sum()), threshold=extra)


def plain_trains_only_at_he_scale(record: WeightScaleRecord, accuracy: float = 0.6, chance_at_most: float = 0.2
                                  ) -> Claim:
    """Claim: without BN the network reaches ``accuracy`` at He's scale only; below it, it stays at chance
    (test accuracy <= ``chance_at_most``), and above it, it diverges (recorded as accuracy 0).
    Measured: (the accuracy at He's scale, the best accuracy below it); threshold: (``accuracy``,
    ``chance_at_most``)."""
    multipliers = record.scales / record.he_std
    he = np.isclose(multipliers, 1.0)
    below, above = multipliers < 1.0 - 1e-9, multipliers > 1.0 + 1e-9
    acc = record.accuracy_without_bn
    measured = (float(acc[he][0]) if he.sum() == 1 else np.nan, float(acc[below].max()) if below.any() else 0.0)
    return Claim(holds=bool(he.sum() == 1 and acc[he][0] >= accuracy and np.all(acc[below] <= chance_at_most)
                            and np.all(acc[above] == 0.0)),
                 measured=measured, threshold=(accuracy, chance_at_most))


# ----------------------------------------------------------------------------- 8. histograms for the explorer


@dataclass
class HistogramRecord:
    """Histograms of the post-activation values of selected layers of a deep MLP at initialization."""

    layers: np.ndarray          # 1-based layer numbers
    edges: np.ndarray
    density: np.ndarray         # (layer, bin)
    std: np.ndarray             # (layer,) std of all values of each shown layer


def activation_histograms(activation: str = "relu", scheme: str = "he", depth: int = 50, width: int = 256,
                          batch: int = 256, show: Sequence[int] = (1, 5, 20, 50), bins: int = 60, seed: int = 0
                          ) -> HistogramRecord:
    """Histograms of each shown layer's post-activation values on x ~ N(0, I), via
    :func:`normlab.probes.layer_histograms`. The bin range is [-1, 1] for tanh, [0, 4] for ReLU
    (values beyond the range are left out). Used in chapter ``08_initialization`` (the explorer)."""
    show = [layer for layer in show if layer <= depth]
    net = deep_mlp(activation, scheme, depth, width, seed).double()
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    acts = [getattr(net, f"act{layer - 1}") for layer in show]
    lo, hi = (-1.0, 1.0) if activation == "tanh" else (-3.0, 3.0) if activation != "relu" else (0.0, 4.0)
    edges, density, std = probes.layer_histograms(net, x, acts, bins=np.linspace(lo, hi, bins + 1))
    return HistogramRecord(layers=np.asarray(show), edges=edges, density=density, std=std)


# ----------------------------------------------------------------------------
# All-zero weights: what learns depends on φ(0)


def zero_init_gradients(activation: str, steps: int = 3, lr: float = 0.1, seed: int = 0,
                        hidden: Sequence[int] = (32, 32)) -> list[list[str]]:
    """Names of the parameters with a non-zero gradient at each of ``steps`` SGD steps from all-zero parameters.

    The MLP (64 → ``hidden`` → 10) starts with every weight and bias at zero and takes full SGD
    steps on one fixed random batch. A hidden unit outputs φ(0): with tanh that is 0, so the
    output weights, which see φ(0), get no gradient, and only the output bias ever learns; with
    a sigmoid it is 1/2, so the output weights learn at the first step and the hidden layers,
    from the top down, one step after the weights above them have become non-zero.
    Used in chapter ``08_initialization``.
    """
    net = models.mlp(64, list(hidden), 10, activation=activation)
    for p in net.parameters():
        nn.init.zeros_(p)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 64, generator=generator)
    y = torch.arange(16) % 10
    learning = []
    for _ in range(steps):
        net.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        learning.append([name for name, p in net.named_parameters() if p.grad.abs().max() > 0])
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    return learning


def zero_init_learns_as_phi_of_zero_says(tanh: list[list[str]], sigmoid: list[list[str]]) -> Claim:
    """Claim: from all-zero parameters of the (32, 32) MLP, with tanh only ``output.bias`` has a
    gradient at every step; with a sigmoid the output layer's weight and bias have one at the first
    step and every parameter by the third. Measured: (number of parameters with a gradient at the
    last step, tanh, sigmoid)."""
    every = {"linear0.weight", "linear0.bias", "linear1.weight", "linear1.bias", "output.weight", "output.bias"}
    holds = (all(names == ["output.bias"] for names in tanh) and sigmoid[0] == ["output.weight", "output.bias"]
             and set(sigmoid[-1]) == every)
    return Claim(holds=bool(holds), measured=(len(tanh[-1]), len(sigmoid[-1])), threshold=None)


# ----------------------------------------------------------------------------
# BatchNorm does not prevent exploding gradients (Yang et al. 2019)


@dataclass
class BNGradientRecord:
    """‖∂L/∂W_l‖ for every hidden layer l of deep ReLU MLPs at He initialization, with and without BN.

    ``grad_norm[norm][d]`` is the array of per-layer norms (layer 1 first) of the network of
    depth ``depths[d]``; ``first_layer[norm]`` the first layer's norm against depth;
    ``rate[norm]`` the per-layer growth factor of the squared gradient norm from the output down,
    exp(−2·slope) of a least-squares fit of log ‖∂L/∂W_l‖ against l in the deepest network.
    """

    depths: np.ndarray
    width: int
    grad_norm: dict[str, list[np.ndarray]]
    first_layer: dict[str, np.ndarray]
    rate: dict[str, float]


def bn_gradient_explosion(seed: int = 0, depths: Sequence[int] = (5, 10, 20, 40), width: int = 256,
                          batch: int = 128) -> BNGradientRecord:
    """Weight-gradient norms at initialization of ReLU MLPs of several depths, BN before every ReLU or none.

    He initialization, biases zero, no skip connections; one Gaussian batch with random labels
    (cross-entropy over 10 classes), BN in training mode. Yang et al. (2019) prove that in such
    batch-normalized networks the gradients grow exponentially with depth at initialization,
    whatever the initial weight variance. Used in chapter ``08_initialization``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    grad_norm: dict[str, list[np.ndarray]] = {"batch": [], "none": []}
    for norm in grad_norm:
        for depth in depths:
            net = models.mlp(width, [width] * depth, 10, activation="relu",
                             norm=BatchNorm1d if norm == "batch" else None, seed=seed)
            initialize(net, "he", seed)
            nn.functional.cross_entropy(net(x), y).backward()
            grad_norm[norm].append(np.array([getattr(net, f"linear{i}").weight.grad.norm().item()
                                             for i in range(depth)]))
    first = {norm: np.array([g[0] for g in norms]) for norm, norms in grad_norm.items()}
    rate = {norm: float(np.exp(-2 * np.polyfit(np.arange(len(norms[-1])), np.log(norms[-1]), 1)[0]))
            for norm, norms in grad_norm.items()}
    return BNGradientRecord(depths=np.asarray(depths), width=width, grad_norm=grad_norm, first_layer=first, rate=rate)


def bn_gradients_explode_with_depth(record: BNGradientRecord, bn_rate_at_least: float = 1.3,
                                    plain_rate_at_most: float = 1.1, ratio_at_least: float = 100.0) -> Claim:
    """Claim: with BN the squared weight-gradient norm grows by more than ``bn_rate_at_least`` per
    layer from the output down, and the first layer's gradient in the deepest network is more
    than ``ratio_at_least`` times that in the shallowest; without BN (He) the rate stays below
    ``plain_rate_at_most``. Measured: (BN rate, plain rate, BN first-layer ratio deepest/shallowest)."""
    ratio = float(record.first_layer["batch"][-1] / record.first_layer["batch"][0])
    holds = (record.rate["batch"] > bn_rate_at_least and record.rate["none"] < plain_rate_at_most
             and ratio > ratio_at_least)
    return Claim(holds=bool(holds), measured=(record.rate["batch"], record.rate["none"], ratio),
                 threshold=(bn_rate_at_least, plain_rate_at_most, ratio_at_least))


# ----------------------------------------------------------------------------
# 1/B on the branch variance or 1/B on the branch output


def branch_share(record: ResidualStreamRecord, label: str) -> float:
    """The share of the final stream variance that the branches added: 1 − Var[h_0] / Var[h_B].

    With variance-preserving branches scaled by s, Var[h_B] = (1 + s²)^B Var[h_0]: for
    s = 1/√B (the branch *variance* divided by B) the share tends to 1 − 1/e ≈ 0.63; for
    s = 1/B (the branch *output* divided by B) it is about 1/B, and the network starts close to
    the identity. Used in chapter ``08_initialization``.
    """
    k = record.labels.index(label)
    return float(1 - record.input_variance / record.variance[k, -1])


def branch_scalings_differ_as_predicted(record: ResidualStreamRecord, rtol: float = 0.35) -> Claim:
    """Claim: without normalization, the branches' share of the final stream variance is within
    ``rtol`` (relative) of 1 − (1 + 1/B)^(−B) for s = 1/√B and of 1 − (1 + 1/B²)^(−B) for s = 1/B.
    Measured: (share at 1/√B, share at 1/B); threshold: (the two predictions, ``rtol``)."""
    b = record.blocks
    predicted = (1 - (1 + 1 / b) ** (-b), 1 - (1 + 1 / b**2) ** (-b))
    measured = (branch_share(record, "1/sqrt(B)"), branch_share(record, "1/B"))
    holds = all(abs(m / p - 1) < rtol for m, p in zip(measured, predicted))
    return Claim(holds=bool(holds), measured=measured, threshold=(*predicted, rtol))
