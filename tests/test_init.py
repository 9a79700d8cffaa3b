"""Tests for normlab.init: gains and fans as torch computes them, moments as the formulas state.

The statistical checks compare sample moments with their targets within Z standard
errors, where the standard error comes from the sample size: for n independent draws
of variance s^2 and kurtosis k, the sample mean has standard error s / sqrt(n) and the
sample variance s^2 * sqrt((k - 1) / n). With Z = 5 a correct scheme fails a check
with probability below 1e-6, and ``test_moment_check_rejects_*`` shows that the same
checks catch a variance that is 10 % off or a fan_in/fan_out mix-up.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab import init
from normlab.models import mlp

Z = 5.0
SEEDS = (0, 1, 2)
KURTOSIS = {"normal": 3.0, "uniform": 9.0 / 5.0}

# Weight shapes of nn.Linear(256, 512) and nn.Conv2d(32, 64, kernel_size=5): (out, in, *kernel).
LINEAR = (512, 256)
CONV2D = (64, 32, 5, 5)
SHAPES = pytest.mark.parametrize("shape", [LINEAR, CONV2D], ids=["linear", "conv2d"])


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_moments(w: torch.Tensor, std: float, distribution: str, mean: float = 0.0) -> None:
    """The sample mean and variance of ``w`` are within Z standard errors of mean and std^2."""
    x = w.detach().double().flatten()
    n = x.numel()
    sample_mean, sample_var = x.mean().item(), x.var(correction=0).item()
    assert abs(sample_mean - mean) < Z * std / math.sqrt(n), (sample_mean, mean)
    tolerance = Z * std**2 * math.sqrt((KURTOSIS[distribution] - 1) / n)
    assert abs(sample_var - std**2) < tolerance, (sample_var, std**2, tolerance)
    if distribution == "uniform":
        # Every draw lies in [-b, b], and the largest |w| of n draws falls short of b by a
        # fraction above 20 / n only with probability (1 - 20 / n)^n < e^-20.
        bound = math.sqrt(3.0) * std
        largest = x.abs().max().item()
        assert largest <= bound * (1 + 1e-6)
        assert largest >= bound * (1 - 20 / n)


def _xavier_std(shape, gain=1.0):
    fan_in, fan_out = _fans(shape)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def _kaiming_std(shape, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    fan = _fans(shape)[0 if mode == "fan_in" else 1]
    gains = {"relu": math.sqrt(2.0), "tanh": 5 / 3, "leaky_relu": math.sqrt(2.0 / (1 + a**2))}
    gain = gains[nonlinearity]
    return gain / math.sqrt(fan)


# ---------------------------------------------------------------------- gain and fans


@pytest.mark.parametrize(
    "nonlinearity",
    ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
     "sigmoid", "tanh", "relu", "leaky_relu", "selu"],
)
def test_calculate_gain_equals_torchs_for_every_nonlinearity(nonlinearity) -> None:
    assert init.calculate_gain(nonlinearity) == pytest.approx(nn.init.calculate_gain(nonlinearity), abs=1e-15)


@pytest.mark.parametrize("slope", [0, 0.01, 0.2, 1, 3, 0.5])
def test_calculate_gain_equals_torchs_for_leaky_relu_slopes(slope) -> None:
    assert init.calculate_gain("leaky_relu", slope) == pytest.approx(nn.init.calculate_gain("leaky_relu", slope))
    assert init.calculate_gain("leaky_relu", slope) == pytest.approx(math.sqrt(2 / (1 + slope**2)))


def test_relu_gain_is_root_two_because_relu_halves_the_second_moment() -> None:
    z = torch.randn(1_000_000, generator=_generator(0), dtype=torch.float64)
    second_moment = torch.relu(init.calculate_gain("relu") * z).pow(2).mean().item()
    # E[relu(g z)^2] = g^2 / 2 = 1; the sample mean of relu(g z)^2 has std sqrt(E[g^4 z^4]/2 - 1)/sqrt(n) = sqrt(5/n).
    assert second_moment == pytest.approx(1.0, abs=Z * math.sqrt(5 / z.numel()))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=2, max_size=5))
def test_fans_equal_torchs_for_every_weight_shape(shape) -> None:
    w = torch.empty(shape)
    assert init.calculate_fan_in_and_fan_out(w) == nn.init._calculate_fan_in_and_fan_out(w)


def test_fans_of_linear_and_conv_weights() -> None:
    assert init.calculate_fan_in_and_fan_out(nn.Linear(3, 7).weight) == (3, 7)
    assert init.calculate_fan_in_and_fan_out(nn.Conv2d(4, 6, kernel_size=(3, 5)).weight) == (4 * 15, 6 * 15)
    assert init.calculate_fan_in_and_fan_out(nn.Conv1d(4, 6, kernel_size=3, groups=2).weight) == (2 * 3, 6 * 3)


# ---------------------------------------------------------------------- moments of each scheme


@SHAPES
@pytest.mark.parametrize("gain", [1.0, 5 / 3])
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_xavier_variance_is_two_over_fan_in_plus_fan_out(shape, gain, distribution) -> None:
    scheme = init.xavier_uniform_ if distribution == "uniform" else init.xavier_normal_
    for seed in SEEDS:
        w = scheme(torch.empty(shape), gain=gain, generator=_generator(seed))
        assert_moments(w, _xavier_std(shape, gain), distribution)


@SHAPES
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"nonlinearity": "relu"}, {"a": 0.2}, {"nonlinearity": "tanh"}],
    ids=["default", "relu", "leaky", "tanh"],
)
@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_kaiming_variance_is_gain_squared_over_fan(shape, mode, kwargs, distribution) -> None:
    scheme = init.kaiming_uniform_ if distribution == "uniform" else init.kaiming_normal_
    for seed in SEEDS:
        w = scheme(torch.empty(shape), mode=mode, generator=_generator(seed), **kwargs)
        assert_moments(w, _kaiming_std(shape, mode=mode, **kwargs), distribution)


def test_kaiming_relu_variance_is_two_over_fan_in() -> None:
    w = init.kaiming_normal_(torch.empty(LINEAR), nonlinearity="relu", generator=_generator(0))
    assert_moments(w, math.sqrt(2.0 / LINEAR[1]), "normal")


def test_normal_has_the_mean_and_std_asked_for() -> None:
    for seed in SEEDS:
        w = init.normal_(torch.empty(LINEAR), mean=0.3, std=0.02, generator=_generator(seed))
        assert_moments(w, 0.02, "normal", mean=0.3)


def test_zeros_fills_with_zeros_in_place() -> None:
    layer = nn.Linear(4, 3)
    assert init.zeros_(layer.bias) is layer.bias
    assert torch.equal(layer.bias, torch.zeros(3))


def test_moment_check_rejects_a_variance_ten_percent_off() -> None:
    std = _kaiming_std(LINEAR)
    for distribution, scheme in (("normal", init.kaiming_normal_), ("uniform", init.kaiming_uniform_)):
        for seed in SEEDS:
            w = scheme(torch.empty(LINEAR), generator=_generator(seed))
            with pytest.raises(AssertionError):
                assert_moments(w * math.sqrt(1.1), std, distribution)


@SHAPES
def test_moment_check_tells_fan_in_from_fan_out(shape) -> None:
    for seed in SEEDS:
        w = init.kaiming_normal_(torch.empty(shape), mode="fan_out", generator=_generator(seed))
        with pytest.raises(AssertionError):
            assert_moments(w, _kaiming_std(shape, mode="fan_in"), "normal")


# ---------------------------------------------------------------------- agreement with torch.nn.init

_PAIRS = {
    "xavier_uniform_": ("uniform", {}),
    "xavier_normal_": ("normal", {}),
    "kaiming_uniform_/fan_in": ("uniform", {"mode": "fan_in", "nonlinearity": "relu"}),
    "kaiming_uniform_/fan_out": ("uniform", {"mode": "fan_out", "nonlinearity": "relu"}),
    "kaiming_normal_/fan_in": ("normal", {"mode": "fan_in", "a": 0.1}),
    "kaiming_normal_/fan_out": ("normal", {"mode": "fan_out", "a": 0.1}),
}


@pytest.mark.parametrize("module", [nn.Linear(256, 512), nn.Conv2d(32, 64, kernel_size=5)], ids=["linear", "conv2d"])
@pytest.mark.parametrize("name", list(_PAIRS))
def test_moments_agree_with_torch_nn_init(module, name) -> None:
    distribution, kwargs = _PAIRS[name]
    ours, theirs = getattr(init, name.split("/")[0]), getattr(nn.init, name.split("/")[0])
    shape = module.weight.shape
    n = module.weight.numel()
    for seed in SEEDS:
        a = ours(torch.empty(shape), generator=_generator(seed), **kwargs).double()
        b = theirs(torch.empty(shape), generator=_generator(seed + 100), **kwargs).double()
        var_a, var_b = a.var(correction=0).item(), b.var(correction=0).item()
        # The difference of two independent sample variances has standard error sqrt(2) times either's.
        tolerance = Z * math.sqrt(2) * var_b * math.sqrt((KURTOSIS[distribution] - 1) / n)
        assert abs(var_a - var_b) < tolerance
        assert abs(a.mean().item() - b.mean().item()) < Z * math.sqrt(2 * var_b / n)
        if distribution == "uniform":
            assert a.abs().max().item() == pytest.approx(b.abs().max().item(), rel=40 / n)


@pytest.mark.parametrize("name", list(_PAIRS))
def test_same_generator_draws_the_same_values_as_torch_nn_init(name) -> None:
    # Both scale one uniform_ or normal_ call, so equal formulas give equal tensors.
    _, kwargs = _PAIRS[name]
    ours, theirs = getattr(init, name.split("/")[0]), getattr(nn.init, name.split("/")[0])
    for shape in (LINEAR, CONV2D, (3, 5)):
        torch.testing.assert_close(
            ours(torch.empty(shape), generator=_generator(3), **kwargs),
            theirs(torch.empty(shape), generator=_generator(3), **kwargs),
            rtol=1e-6,
            atol=0,
        )


# ---------------------------------------------------------------------- orthogonal


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (48, 48), (16, 8, 3, 3), (4, 16, 3, 3)])
@pytest.mark.parametrize("gain", [1.0, math.sqrt(2.0), 2.0])
def test_orthogonal_gives_gain_squared_identity(shape, gain) -> None:
    for seed in SEEDS:
        w = init.orthogonal_(torch.empty(shape), gain=gain, generator=_generator(seed))
        matrix = w.reshape(shape[0], -1).double()
        rows, cols = matrix.shape
        gram = matrix.T @ matrix if rows >= cols else matrix @ matrix.T
        torch.testing.assert_close(gram, gain**2 * torch.eye(min(rows, cols), dtype=torch.float64), atol=1e-5, rtol=0)


def test_orthogonal_matrices_differ_between_seeds_and_are_not_the_identity() -> None:
    a = init.orthogonal_(torch.empty(32, 32), generator=_generator(0))
    b = init.orthogonal_(torch.empty(32, 32), generator=_generator(1))
    assert not torch.allclose(a, b, atol=1e-2)
    assert not torch.allclose(a.abs(), torch.eye(32), atol=1e-2)
    # The squares of an orthogonal matrix's entries sum to trace(Q^T Q) = n: mean square 1 / n.
    assert a.double().pow(2).mean().item() == pytest.approx(1 / 32, rel=1e-6)


# ---------------------------------------------------------------------- generator, in place, errors

_SCHEMES = {
    "normal_": init.normal_,
    "xavier_uniform_": init.xavier_uniform_,
    "xavier_normal_": init.xavier_normal_,
    "kaiming_uniform_": init.kaiming_uniform_,
    "kaiming_normal_": init.kaiming_normal_,
    "orthogonal_": init.orthogonal_,
}


@pytest.mark.parametrize("name", list(_SCHEMES))
def test_generator_makes_results_reproducible_and_leaves_global_rng_alone(name) -> None:
    scheme = _SCHEMES[name]
    state = torch.get_rng_state()
    first = scheme(torch.empty(20, 30), generator=_generator(5))
    again = scheme(torch.empty(20, 30), generator=_generator(5))
    other = scheme(torch.empty(20, 30), generator=_generator(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(_SCHEMES))
def test_schemes_fill_a_parameter_in_place_and_return_it(name) -> None:
    layer = nn.Linear(6, 5)
    before = layer.weight.detach().clone()
    result = _SCHEMES[name](layer.weight, generator=_generator(0))
    assert result is layer.weight
    assert layer.weight.requires_grad and layer.weight.grad_fn is None
    assert not torch.equal(layer.weight.detach(), before)


@pytest.mark.parametrize(
    "call",
    [
        lambda: init.xavier_uniform_(torch.empty(5)),
        lambda: init.xavier_normal_(torch.empty(5)),
        lambda: init.kaiming_uniform_(torch.empty(5)),
        lambda: init.kaiming_normal_(torch.empty(5)),
        lambda: init.orthogonal_(torch.empty(5)),
        lambda: init.calculate_fan_in_and_fan_out(torch.empty(())),
    ],
)
def test_fan_based_schemes_reject_tensors_with_fewer_than_two_dimensions(call) -> None:
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        call()


def test_unknown_nonlinearity_mode_and_slope_are_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown nonlinearity 'gelu'"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        init.kaiming_normal_(torch.empty(3, 4), nonlinearity="softplus")
    with pytest.raises(ValueError, match="Unknown mode 'fan_avg'"):
        init.kaiming_uniform_(torch.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError, match="negative slope"):
        init.calculate_gain("leaky_relu", "0.1")


# ---------------------------------------------------------------------- LSUV


def _output_variances(model: nn.Module, data: torch.Tensor, names: list[str]) -> list[float]:
    seen: dict[str, float] = {}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.double().var(correction=0).item())
        )
        for name in names
    ]
    with torch.no_grad():
        model.eval()(data)
    for handle in handles:
        handle.remove()
    return [seen[name] for name in names]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("tol", [0.1, 0.01])
def test_lsuv_brings_every_layer_output_variance_within_tol(activation, tol) -> None:
    names = ["linear0", "linear1", "linear2", "output"]
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = mlp(20, [64, 64, 64], 10, activation=activation, seed=seed)
        data = 4.0 * torch.randn(256, 20, generator=_generator(seed)) + 1.0
        assert any(abs(v - 1) >= tol for v in _output_variances(model, data, names))
        variances = init.lsuv_(model, data, tol=tol)
        assert list(variances) == names
        measured = _output_variances(model, data, names)
        assert measured == pytest.approx(list(variances.values()), rel=1e-9)
        assert all(abs(v - 1) < tol for v in measured), measured


def test_lsuv_starts_from_orthogonal_weights() -> None:
    torch.manual_seed(0)
    model = mlp(20, [64, 32], 10, seed=0)
    init.lsuv_(model, torch.randn(128, 20, generator=_generator(0)))
    for layer in (model.linear0, model.linear1, model.output):
        w = layer.weight.detach().double()
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        scale = gram.diagonal().mean()
        torch.testing.assert_close(gram / scale, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)


def test_lsuv_rescales_conv_layers_and_restores_modes_and_running_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 5),
    )
    model.train()
    model[1].eval()
    buffers = [b.clone() for b in model.buffers()]
    data = 3.0 * torch.randn(64, 3, 8, 8, generator=_generator(0))
    variances = init.lsuv_(model, data, tol=0.05)
    assert list(variances) == ["0", "3", "6"]
    assert all(abs(v - 1) < 0.05 for v in _output_variances(model, data, ["0", "3", "6"]))
    model.train()
    model[1].eval()
    init.lsuv_(model, data)
    assert [m.training for m in model] == [True, False, True, True, True, True, True]
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))


class _RegisteredBackwards(nn.Module):
    """Registers its layers in the opposite order to the one its forward pass uses them."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Linear(32, 8)
        self.first = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def test_lsuv_rescales_layers_in_the_order_the_forward_pass_reaches_them() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = _RegisteredBackwards()
        data = 5.0 * torch.randn(200, 16, generator=_generator(seed))
        variances = init.lsuv_(model, data, tol=0.02)
        assert list(variances) == ["first", "second"]
        assert all(abs(v - 1) < 0.02 for v in _output_variances(model, data, ["first", "second"]))


def test_lsuv_rejects_bad_arguments_and_models_it_cannot_rescale() -> None:
    model = mlp(4, [8], 2)
    data = torch.randn(16, 4, generator=_generator(0))
    with pytest.raises(ValueError, match="tol must be positive"):
        init.lsuv_(model, data, tol=0.0)
    with pytest.raises(ValueError, match="max_iters must be a non-negative"):
        init.lsuv_(model, data, max_iters=-1)
    with pytest.raises(ValueError, match="has none"):
        init.lsuv_(nn.Sequential(nn.ReLU(), nn.Tanh()), data)
    with pytest.raises(ValueError, match="cannot rescale layer 'linear0'"):
        init.lsuv_(mlp(4, [8], 2, bias=False), torch.zeros(16, 4))
