"""Tests for the NumPy reference LayerNorm and GroupNorm in normlab.functional, with PyTorch
in float64 as oracle."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import functional as fn

EPS = 1e-5
seeds = st.integers(0, 2**32 - 1)


def _assert_close(actual, expected, rtol=1e-9):
    """Relative agreement, with an absolute floor scaled to the size of the expected array."""
    atol = rtol * max(float(np.abs(expected).max()), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _assert_dx_close(actual, expected, cancelling, rtol=1e-8):
    """dx = (1/σ)(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) is a difference of terms as large as ĝ/σ. When
    they cancel (two values per statistic make dx ~ 1e-9 of them), any implementation's error,
    torch's included, is set by those terms, not by dx: measure it so."""
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12 * np.abs(cancelling).max())


def _assert_dgamma_close(actual, expected, dout, rtol=1e-9):
    """dgamma = Σ dout·x̂. With one value per statistic x̂ is 0 exactly here and a rounding
    residue (~1e-13) in torch, so the error is measured against Σ |dout| (|x̂| is O(1))."""
    # With D = 1, x̂ is exactly 0 here but a rounding residue of about |x|·2e-16/√ε in torch,
    # up to ~1e-12 of Σ|dout|; a wrong formula is off by order Σ|dout|.
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-10 * np.abs(dout).sum())


def _examples(shape: tuple[int, ...], stat_axes: tuple[int, ...], param_size: int, seed: int):
    """x whose statistics (over stat_axes) have offsets and scales spanning 10^-2..10^2, gamma of
    either sign and scale 10^-1..10^1, beta, and an upstream gradient dout."""
    rng = np.random.default_rng(seed)
    stat_shape = tuple(1 if axis in stat_axes else size for axis, size in enumerate(shape))
    scale = 10.0 ** rng.uniform(-2, 2, size=stat_shape)
    offset = rng.uniform(-10, 10, size=stat_shape)
    x = offset + scale * rng.standard_normal(shape)
    gamma = rng.choice([-1.0, 1.0], size=param_size) * 10.0 ** rng.uniform(-1, 1, size=param_size)
    beta = rng.standard_normal(param_size)
    dout = rng.standard_normal(shape) * 10.0 ** rng.uniform(-1, 1)
    return x, gamma, beta, dout


def _torch_grads(function, x, gamma, beta, dout):
    """function(x, gamma, beta) in float64 torch, and autograd's dx, dgamma, dbeta."""
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out = function(xt, gt, bt)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


# (..., D): zero to two leading axes, D from 1 (xhat = 0) to 8
layer_shapes = st.tuples(st.lists(st.integers(1, 4), max_size=2), st.integers(1, 8)).map(
    lambda t: (*t[0], t[1]))


def _layer_case(shape, seed):
    return _examples(shape, (len(shape) - 1,), shape[-1], seed)


def _torch_layer_norm(x, gamma, beta, dout, eps=EPS):
    return _torch_grads(lambda a, g, b: F.layer_norm(a, a.shape[-1:], g, b, eps), x, gamma, beta, dout)


# (N, C, *spatial) with C = G · channels per group
group_cases = st.tuples(
    st.integers(1, 4),                                    # N
    st.integers(1, 4),                                    # G
    st.integers(1, 3),                                    # channels per group
    st.lists(st.integers(1, 4), max_size=2),              # spatial
).filter(lambda t: t[2] * int(np.prod(t[3])) > 1)         # at least two values per group


def _group_case(case, seed):
    n, g, per_group, spatial = case
    shape = (n, g * per_group, *spatial)
    x, gamma, beta, dout = _examples(shape, tuple(range(2, len(shape))), shape[1], seed)
    return g, x, gamma, beta, dout


def _torch_group_norm(x, g, gamma, beta, dout, eps=EPS):
    return _torch_grads(lambda a, w, b: F.group_norm(a, g, w, b, eps), x, gamma, beta, dout)


# ----------------------------------------------------------------------------- LayerNorm


@settings(max_examples=40, deadline=None)
@given(shape=layer_shapes, seed=seeds)
def test_layer_norm_forward_matches_torch_layer_norm(shape, seed):
    x, gamma, beta, dout = _layer_case(shape, seed)
    out, cache = fn.layer_norm_forward(x, gamma, beta)
    expected, *_ = _torch_layer_norm(x, gamma, beta, dout)
    assert out.shape == x.shape
    _assert_close(out, expected)
    _assert_close(cache.mu, x.mean(axis=-1))         # one statistic per example
    _assert_close(cache.var, x.var(axis=-1))         # biased
    assert cache.d == shape[-1]


@settings(max_examples=40, deadline=None)
@given(shape=layer_shapes, seed=seeds)
def test_layer_norm_backward_matches_torch_autograd_for_x_gamma_and_beta(shape, seed):
    x, gamma, beta, dout = _layer_case(shape, seed)
    _, cache = fn.layer_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = fn.layer_norm_backward(dout, cache)
    _, dx_t, dgamma_t, dbeta_t = _torch_layer_norm(x, gamma, beta, dout)
    assert dx.shape == x.shape and dgamma.shape == dbeta.shape == gamma.shape
    _assert_dx_close(dx, dx_t, dout * gamma / cache.std[..., None])
    _assert_dgamma_close(dgamma, dgamma_t, dout)
    _assert_close(dbeta, dbeta_t)


def test_layer_norm_backward_matches_finite_differences_of_the_numpy_forward():
    x, gamma, beta, dout = _layer_case((4, 3, 6), seed=7)
    _, cache = fn.layer_norm_forward(x, gamma, beta)
    dx, _, _ = fn.layer_norm_backward(dout, cache)
    h, rng = 1e-6, np.random.default_rng(0)
    for _ in range(5):
        direction = rng.standard_normal(x.shape)
        plus, _ = fn.layer_norm_forward(x + h * direction, gamma, beta)
        minus, _ = fn.layer_norm_forward(x - h * direction, gamma, beta)
        numeric = np.sum(dout * (plus - minus)) / (2 * h)
        assert np.sum(dx * direction) == pytest.approx(numeric, rel=1e-5, abs=1e-7)


@settings(max_examples=30, deadline=None)
@given(shape=layer_shapes, seed=seeds)
def test_layer_norm_dx_sums_to_zero_over_the_features_of_each_example(shape, seed):
    """Shifting one example's features by a constant leaves its output unchanged, so Σ dx = 0."""
    x, gamma, beta, dout = _layer_case(shape, seed)
    _, cache = fn.layer_norm_forward(x, gamma, beta)
    dx, _, _ = fn.layer_norm_backward(dout, cache)
    cancelling = np.abs(dout * gamma / cache.std[..., None]).sum(axis=-1)
    np.testing.assert_array_less(np.abs(dx.sum(axis=-1)), 1e-10 * cancelling + 1e-300)


def test_layer_norm_of_one_example_does_not_depend_on_the_others():
    x, gamma, beta, _ = _layer_case((5, 7), seed=3)
    out, _ = fn.layer_norm_forward(x, gamma, beta)
    alone, _ = fn.layer_norm_forward(x[2:3], gamma, beta)
    np.testing.assert_array_equal(alone[0], out[2])


# ----------------------------------------------------------------------------- GroupNorm


@settings(max_examples=40, deadline=None)
@given(case=group_cases, seed=seeds)
def test_group_norm_forward_matches_torch_group_norm(case, seed):
    g, x, gamma, beta, dout = _group_case(case, seed)
    out, cache = fn.group_norm_forward(x, g, gamma, beta)
    expected, *_ = _torch_group_norm(x, g, gamma, beta, dout)
    _assert_close(out, expected)
    grouped = x.reshape(x.shape[0], g, -1)
    _assert_close(cache.mu, grouped.mean(axis=-1))
    _assert_close(cache.var, grouped.var(axis=-1))
    assert cache.m == grouped.shape[-1]


@settings(max_examples=40, deadline=None)
@given(case=group_cases, seed=seeds)
def test_group_norm_backward_matches_torch_autograd_for_x_gamma_and_beta(case, seed):
    g, x, gamma, beta, dout = _group_case(case, seed)
    _, cache = fn.group_norm_forward(x, g, gamma, beta)
    dx, dgamma, dbeta = fn.group_norm_backward(dout, cache)
    _, dx_t, dgamma_t, dbeta_t = _torch_group_norm(x, g, gamma, beta, dout)
    std = np.repeat(cache.std, x.shape[1] // g, axis=1).reshape((*x.shape[:2],) + (1,) * (x.ndim - 2))
    _assert_dx_close(dx, dx_t, dout * gamma.reshape((1, -1) + (1,) * (x.ndim - 2)) / std)
    _assert_dgamma_close(dgamma, dgamma_t, dout)
    _assert_close(dbeta, dbeta_t)


def test_group_norm_with_one_group_per_channel_is_instance_norm():
    _, x, gamma, beta, _ = _group_case((3, 4, 1, [5, 2]), seed=1)
    out, _ = fn.group_norm_forward(x, 4, gamma, beta)
    expected = F.instance_norm(torch.tensor(x), weight=torch.tensor(gamma), bias=torch.tensor(beta), eps=EPS)
    _assert_close(out, expected.numpy())


def test_group_norm_with_one_group_is_layer_norm_over_channels_and_positions():
    _, x, _, _, dout = _group_case((3, 1, 4, [5]), seed=2)
    ones, zeros = np.ones(4), np.zeros(4)
    out, cache = fn.group_norm_forward(x, 1, ones, zeros)
    flat_out, flat_cache = fn.layer_norm_forward(x.reshape(3, -1), np.ones(20), np.zeros(20))
    _assert_close(out, flat_out.reshape(x.shape))
    dx, _, _ = fn.group_norm_backward(dout, cache)
    flat_dx, _, _ = fn.layer_norm_backward(dout.reshape(3, -1), flat_cache)
    _assert_close(dx, flat_dx.reshape(x.shape), rtol=1e-8)


# ------------------------------------------------------------------ validation at the boundary


def test_layer_norm_of_a_scalar_is_rejected():
    with pytest.raises(ValueError, match=re.escape("LayerNorm expects input of shape (..., D), at least 1-D; "
                                                   "got shape ().")):
        fn.layer_norm_forward(np.float64(1.0), np.ones(1), np.zeros(1))


@pytest.mark.parametrize("name", ["gamma", "beta"])
def test_layer_norm_parameter_not_matching_the_last_axis_names_both_sizes(name):
    params = {"gamma": np.ones(4), "beta": np.zeros(4)}
    params[name] = np.ones(5)
    message = rf"{name} has shape \(5,\) but the input of shape \(3, 4\) has 4 features on the last axis"
    with pytest.raises(ValueError, match=message):
        fn.layer_norm_forward(np.ones((3, 4)), params["gamma"], params["beta"])


def test_group_norm_with_channels_not_divisible_by_groups_names_both_and_suggests_divisors():
    message = re.escape("num_channels=6 is not divisible by num_groups=4. Use one of the divisors of 6: "
                        "[1, 2, 3, 6].")
    with pytest.raises(ValueError, match=message):
        fn.group_norm_forward(np.ones((2, 6, 3)), 4, np.ones(6), np.zeros(6))


@pytest.mark.parametrize("num_groups", [0, -2, 1.5])
def test_group_norm_with_a_non_positive_or_fractional_group_count_is_rejected(num_groups):
    with pytest.raises(ValueError, match=rf"num_groups must be a positive integer; got {num_groups}"):
        fn.group_norm_forward(np.ones((2, 6, 3)), num_groups, np.ones(6), np.zeros(6))


def test_group_norm_input_without_channel_axis_is_rejected():
    with pytest.raises(ValueError, match=re.escape("GroupNorm expects input of shape (N, C, *spatial), at least "
                                                   "2-D; got shape (6,).")):
        fn.group_norm_forward(np.ones(6), 2, np.ones(6), np.zeros(6))


def test_group_norm_gamma_not_matching_the_channels_names_both_sizes():
    with pytest.raises(ValueError, match=r"gamma has shape \(3,\) but the input of shape \(2, 6, 3\) has 6 "
                                         r"channels on axis 1; pass gamma of shape \(6,\)"):
        fn.group_norm_forward(np.ones((2, 6, 3)), 2, np.ones(3), np.zeros(6))


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_non_finite_input_is_rejected(norm):
    x = np.ones((2, 4, 3))
    x[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"contains NaN or infinite values"):
        if norm == "layer":
            fn.layer_norm_forward(x, np.ones(3), np.zeros(3))
        else:
            fn.group_norm_forward(x, 2, np.ones(4), np.zeros(4))


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_dout_of_the_wrong_shape_is_rejected(norm):
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    if norm == "layer":
        _, cache = fn.layer_norm_forward(x, np.ones(3), np.zeros(3))
        backward = fn.layer_norm_backward
    else:
        _, cache = fn.group_norm_forward(x, 2, np.ones(4), np.zeros(4))
        backward = fn.group_norm_backward
    with pytest.raises(ValueError, match=r"dout has shape \(2, 4\) but the forward input had shape \(2, 4, 3\)"):
        backward(np.ones((2, 4)), cache)
