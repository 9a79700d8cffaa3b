"""The checkers of chapter "Initialization": a zoo of wrong attempts, each failing with the right
diagnosis, and independently written correct solutions, each passing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from normlab import init
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import initialization as check
from normlab.experiments import initialization as ini

from zoo import first_message

message_of = first_message

pytestmark = pytest.mark.usefixtures("student_mode")

CHECKERS = [check.he_std, check.predicted_variance, check.mean_field_step, check.residual_stream_variance]


# --------------------------------------------------------------------------- the exercises themselves


def test_predicted_variance_uses_a_relative_tolerance():
    assert check.predicted_variance.exercise.atol == 0


def test_strict_mode_raises_on_a_wrong_solution(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "1")
    with pytest.raises(AssertionError, match="he_std"):
        check.he_std(lambda shape, mode: 1.0)


def test_stub_is_reported_as_not_implemented():
    def he_std(shape, mode):
        raise NotImplementedError("he_std: not written yet")

    assert "not implemented yet" in message_of(check.he_std(he_std))


def test_hints_are_revealed_one_tier_per_failed_attempt():
    first = " ".join(check.he_std(lambda shape, mode: 1.0).messages)
    assert "Hint 1 of 2" in first and "Hint 2 of 2" not in first
    assert "Hint 2 of 2" in " ".join(check.he_std(lambda shape, mode: 1.0).messages)


# --------------------------------------------------------------------------- he_std


def he_std_numpy(shape, mode):
    fan_in = shape[1] * int(np.prod(shape[2:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    return float(np.sqrt(2 / {"fan_in": fan_in, "fan_out": fan_out}[mode]))


def he_std_loop(shape, mode):
    fan = shape[1] if mode == "fan_in" else shape[0]
    for k in shape[2:]:
        fan *= k
    gain = math.sqrt(2.0)
    return gain / math.sqrt(fan)


def he_std_torch(shape, mode):
    w = torch.empty(shape)
    per_unit = w[0, 0].numel()
    fan = w.shape[1 if mode == "fan_in" else 0] * per_unit
    return torch.sqrt(torch.tensor(2.0, dtype=torch.float64) / fan)


@pytest.mark.parametrize("solution", [he_std_numpy, he_std_loop, he_std_torch], ids=["numpy", "loop", "torch"])
def test_correct_he_std_passes(solution):
    assert check.he_std(solution).passed


def test_he_std_agrees_with_normlab_kaiming_normal():
    gen = torch.Generator().manual_seed(0)
    for shape, mode in [((256, 128, 3, 3), "fan_in"), ((512, 64, 5), "fan_out")]:
        w = init.kaiming_normal_(torch.empty(shape), mode=mode, nonlinearity="relu", generator=gen)
        assert w.std().item() == pytest.approx(he_std_loop(shape, mode), rel=0.02)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda shape, mode: math.sqrt(2.0 / (shape[1] if mode == "fan_in" else shape[0])), "left out the kernel"),
    (lambda shape, mode: he_std_loop(shape, "fan_out" if mode == "fan_in" else "fan_in"), "swapped the fans"),
    (lambda shape, mode: he_std_loop(shape, mode) / math.sqrt(2), "LeCun"),
    (lambda shape, mode: he_std_loop(shape, mode) ** 2, "returned the variance"),
    (lambda shape, mode: math.sqrt(2 / (math.prod(shape) / shape[0] + math.prod(shape) / shape[1])), "Xavier"),
    (lambda shape, mode: math.sqrt(3) * he_std_loop(shape, mode), "uniform scheme"),
    (lambda shape, mode: init.calculate_gain("relu") / math.sqrt(
        init.calculate_fan_in_and_fan_out(torch.empty(shape))[0 if mode == "fan_in" else 1]),
     "you called `normlab.init.calculate_gain`"),
    (lambda shape, mode: math.sqrt(2.0 / init.calculate_fan_in_and_fan_out(torch.empty(shape))[0]),
     "you called `normlab.init.calculate_fan_in_and_fan_out`"),
    (lambda shape, mode: math.sqrt(2.0 / torch.nn.init._calculate_correct_fan(torch.empty(shape), mode)),
     "you called `torch.nn.init._calculate_correct_fan`"),
    (lambda shape, mode: torch.nn.init.kaiming_normal_(torch.empty(shape), mode=mode).std().item(),
     "you called `torch.nn.init.kaiming_normal_`"),
], ids=["no-kernel", "swapped-fans", "lecun", "variance", "xavier", "uniform-bound", "shortcut-gain",
        "shortcut-fan", "shortcut-torch-fan", "shortcut-torch-kaiming"])
def test_wrong_he_std_is_named(wrong, phrase):
    assert phrase in message_of(check.he_std(wrong))


# --------------------------------------------------------------------------- predicted_variance


def predicted_variance_power(q0, depth, weight_var_fan, activation):
    relu_factor = {"relu": 0.5, "linear": 1.0}[activation]
    return q0 * (weight_var_fan * relu_factor) ** depth


def predicted_variance_loop(q0, depth, weight_var_fan, activation):
    q = q0
    for _ in range(depth):
        q = weight_var_fan * q
        if activation == "relu":
            q = q / 2
    return q


def predicted_variance_logs(q0, depth, weight_var_fan, activation):
    log_factor = np.log(weight_var_fan) - (np.log(2) if activation == "relu" else 0.0)
    return torch.exp(torch.tensor(np.log(q0) + depth * log_factor, dtype=torch.float64))


@pytest.mark.parametrize("solution", [predicted_variance_power, predicted_variance_loop, predicted_variance_logs],
                         ids=["power", "loop", "torch-logs"])
def test_correct_predicted_variance_passes(solution):
    assert check.predicted_variance(solution).passed


def test_returning_zero_for_relu_fails_every_relu_case():
    def zero_for_relu(q0, depth, weight_var_fan, activation):
        return 0.0 if activation == "relu" else predicted_variance_power(q0, depth, weight_var_fan, activation)

    result = check.predicted_variance(zero_for_relu)
    relu_cases = sum(c.args[3] == "relu" for c in check.predicted_variance.exercise.cases(np.random.default_rng(0)))
    assert result.cases_passed == result.cases_total - relu_cases


def test_returning_zero_on_the_pytorch_default_case_fails_it():
    def zero_when_tiny(q0, depth, weight_var_fan, activation):
        value = predicted_variance_power(q0, depth, weight_var_fan, activation)
        return 0.0 if value < 1e-8 else value  # below the old absolute tolerance

    assert not check.predicted_variance(zero_when_tiny).passed

    def zero_only_on_the_pytorch_default(q0, depth, weight_var_fan, activation):
        if depth == 19 and abs(weight_var_fan - 1 / 3) < 1e-12:
            return 0.0
        return predicted_variance_power(q0, depth, weight_var_fan, activation)

    result = check.predicted_variance(zero_only_on_the_pytorch_default)
    assert result.cases_passed == result.cases_total - 1
    assert check.PYTORCH_DEFAULT_CASE in message_of(result)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda q0, depth, s, act: q0 * s**depth, "left out ReLU's effect"),
    (lambda q0, depth, s, act: q0 * s**depth / (2 if act == "relu" else 1), "applied ReLU's factor once"),
    (lambda q0, depth, s, act: predicted_variance_loop(q0, depth - 1, s, act), "one short"),
    (lambda q0, depth, s, act: predicted_variance_loop(q0, depth + 1, s, act), "one too large"),
    (lambda q0, depth, s, act: q0 * (2 * s if act == "relu" else s) ** depth, "multiplied by 2 for ReLU"),
    (lambda q0, depth, s, act: q0 * (1 + depth * ((s / 2 if act == "relu" else s) - 1)), "linearly in depth"),
    (lambda q0, depth, s, act: q0 * (s / 2 if act == "relu" else s) * depth, "wrong value"),
], ids=["no-half", "half-once", "depth-minus-one", "depth-plus-one", "relu-doubles", "linear-growth",
        "times-depth"])
def test_wrong_predicted_variance_is_named(wrong, phrase):
    assert phrase in message_of(check.predicted_variance(wrong))


# --------------------------------------------------------------------------- mean_field_step


def gauss_hermite(nodes):
    def mean_field_step(q, weight_var_fan, phi):
        x, w = np.polynomial.hermite_e.hermegauss(nodes)
        return weight_var_fan * np.sum(w * phi(np.sqrt(q) * x) ** 2) / np.sqrt(2 * np.pi)

    return mean_field_step


def mean_field_physicists_rescaled(q, weight_var_fan, phi):
    x, w = np.polynomial.hermite.hermgauss(40)  # weight exp(-x²): Z = √2·x, normalizer √π
    return weight_var_fan * float(np.dot(w, phi(np.sqrt(2 * q) * x) ** 2)) / math.sqrt(math.pi)


def mean_field_scipy_quad(q, weight_var_fan, phi):
    density = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    value, _ = integrate.quad(lambda z: float(phi(np.array(math.sqrt(q) * z))) ** 2 * density(z), -np.inf, np.inf)
    return weight_var_fan * value


def mean_field_trapezoid(q, weight_var_fan, phi):
    z = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    integrand = torch.as_tensor(phi(np.sqrt(q) * z.numpy())) ** 2 * torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    return weight_var_fan * torch.trapezoid(integrand, z).item()


@pytest.mark.parametrize("solution", [gauss_hermite(20), gauss_hermite(50), gauss_hermite(100), gauss_hermite(200),
                                      mean_field_physicists_rescaled, mean_field_scipy_quad, mean_field_trapezoid],
                         ids=["GH-20", "GH-50", "GH-100", "GH-200", "physicists-GH-40", "scipy-quad",
                              "torch-trapezoid"])
def test_correct_mean_field_step_passes_with_any_reasonable_quadrature(solution):
    assert check.mean_field_step(solution).passed


def test_monte_carlo_mean_field_is_not_accurate_enough():
    def monte_carlo(q, weight_var_fan, phi):
        z = np.random.default_rng(0).standard_normal(100_000)
        return weight_var_fan * np.mean(phi(np.sqrt(q) * z) ** 2)

    assert not check.mean_field_step(monte_carlo).passed


def test_a_few_nodes_are_not_enough():
    assert not check.mean_field_step(gauss_hermite(10)).passed


def mean_field_variance_of_phi(q, weight_var_fan, phi):
    x, w = np.polynomial.hermite_e.hermegauss(50)
    w = w / w.sum()
    values = phi(np.sqrt(q) * x)
    mean = np.sum(w * values)
    return weight_var_fan * np.sum(w * (values - mean) ** 2)


@pytest.mark.parametrize("wrong, phrase", [
    (lambda q, s, phi: gauss_hermite(50)(q * q, s, phi), "scaled Z by q"),
    (lambda q, s, phi: math.sqrt(2 * math.pi) * gauss_hermite(50)(q, s, phi), "√(2π) times too large"),
    (lambda q, s, phi: s * np.sum(np.polynomial.hermite.hermgauss(50)[1]
                                  * phi(np.sqrt(q) * np.polynomial.hermite.hermgauss(50)[0]) ** 2) / np.sqrt(np.pi),
     "hermgauss"),
    (lambda q, s, phi: gauss_hermite(50)(q, 1.0, phi), "left out the weights"),
    (lambda q, s, phi: s * (np.polynomial.hermite_e.hermegauss(50)[1]
                            @ phi(np.sqrt(q) * np.polynomial.hermite_e.hermegauss(50)[0]) / np.sqrt(2 * np.pi)) ** 2,
     "squared the expectation"),
    (mean_field_variance_of_phi,
     "variance of φ(z) about its mean"),
    (lambda q, s, phi: ini.mean_field_variances("tanh", s, q, 2)[0][1],
     "you called `normlab.experiments.initialization.mean_field_variances`"),
], ids=["q-not-sqrt", "unnormalized-weights", "physicists-hermite", "no-weight-variance", "square-of-mean",
        "variance-of-phi", "shortcut"])
def test_wrong_mean_field_step_is_named(wrong, phrase):
    assert phrase in message_of(check.mean_field_step(wrong))


# --------------------------------------------------------------------------- residual_stream_variance


def residual_numpy(q0, blocks, scale):
    return q0 * np.cumprod(np.full(blocks, 1 + scale * scale))


def residual_loop_list(q0, blocks, scale):
    variances, v = [], q0
    for _ in range(blocks):
        v = v + scale**2 * v
        variances.append(v)
    return variances  # a list: accepted


def residual_torch(q0, blocks, scale):
    b = torch.arange(1, blocks + 1, dtype=torch.float64)
    return q0 * torch.pow(1 + scale**2, b)


@pytest.mark.parametrize("solution", [residual_numpy, residual_loop_list, residual_torch],
                         ids=["numpy-cumprod", "loop-list", "torch"])
def test_correct_residual_stream_variance_passes(solution):
    assert check.residual_stream_variance(solution).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda q0, blocks, s: [q0 + q0 * s * s * b for b in range(1, blocks + 1)], "compounds"),
    (lambda q0, blocks, s: q0 + s**2 * np.arange(1, blocks + 1), "start with a normalization layer"),
    (lambda q0, blocks, s: q0 * (1 + s) ** np.arange(1, blocks + 1), "s², not s"),
    (lambda q0, blocks, s: q0 * (1 + s * s) ** np.arange(blocks), "starts at b = 0"),
    (lambda q0, blocks, s: q0 * (1 + s * s) ** np.arange(blocks + 1), "one value too many"),
    (lambda q0, blocks, s: q0 * (1 + s * s) ** blocks, "a single value"),
    (lambda q0, blocks, s: ini.predicted_residual_variance(q0, blocks, s, "none"),
     "you called `normlab.experiments.initialization.predicted_residual_variance`"),
], ids=["linear", "normalized-branch", "scale-not-squared", "from-zero", "includes-input", "last-only",
        "shortcut"])
def test_wrong_residual_stream_variance_is_named(wrong, phrase):
    assert phrase in message_of(check.residual_stream_variance(wrong))
