"""Tests for normlab.functional: the NumPy reference BatchNorm, with PyTorch in float64 as oracle."""

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


def _assert_dx_close(actual, expected, dout, cache, rtol=1e-8):
    """dx = γ/σ·(dout − mean(dout) − x̂·mean(dout·x̂)) is a difference of terms as large as the
    naive gradient γ/σ·dout. When they cancel (m = 2 makes dx ~ 1e-9 of them), the error of
    any implementation, torch's included, is set by those terms, not by dx: measure it so."""
    cancelling = np.abs(fn.batch_norm_backward_naive(dout, cache)[0]).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-12 * cancelling)


def _batch(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x with per-channel offsets and scales spanning 10^-2..10^2, gamma of either sign and
    scale 10^-1..10^1, beta, and an upstream gradient dout."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    channel = (1, c) + (1,) * (len(shape) - 2)
    scale = 10.0 ** rng.uniform(-2, 2, size=c)
    offset = rng.uniform(-10, 10, size=c)
    x = offset.reshape(channel) + scale.reshape(channel) * rng.standard_normal(shape)
    gamma = rng.choice([-1.0, 1.0], size=c) * 10.0 ** rng.uniform(-1, 1, size=c)
    beta = rng.standard_normal(c)
    dout = rng.standard_normal(shape) * 10.0 ** rng.uniform(-1, 1)
    return x, gamma, beta, dout


shapes = st.tuples(
    st.integers(2, 8),                                   # N
    st.integers(1, 6),                                   # D or C
    st.lists(st.integers(1, 4), min_size=0, max_size=2),  # spatial
).map(lambda t: (t[0], t[1], *t[2]))
seeds = st.integers(0, 2**32 - 1)


def _torch_forward_and_grads(x, gamma, beta, dout, eps=EPS):
    """F.batch_norm in training mode and autograd's dx, dgamma, dbeta, all float64."""
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    out = F.batch_norm(xt, None, None, weight=gt, bias=bt, training=True, eps=eps)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def _assert_close(actual, expected, rtol=1e-9):
    """Relative agreement, with an absolute floor scaled to the size of the expected array."""
    atol = rtol * max(float(np.abs(expected).max()), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _per_channel_sum(a: np.ndarray) -> np.ndarray:
    return a.sum(axis=(0,) + tuple(range(2, a.ndim)))


# ----------------------------------------------------------------------------
# forward and backward against torch


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=seeds)
def test_forward_matches_torch_batch_norm_in_training_mode(shape, seed):
    x, gamma, beta, dout = _batch(shape, seed)
    out, cache = fn.batch_norm_forward(x, gamma, beta)
    expected, *_ = _torch_forward_and_grads(x, gamma, beta, dout)
    assert out.shape == x.shape
    _assert_close(out, expected)
    # the cached statistics are the biased per-channel batch statistics
    axes = (0,) + tuple(range(2, x.ndim))
    _assert_close(cache.mu, x.mean(axis=axes))
    _assert_close(cache.var, x.var(axis=axes))
    assert cache.m == x.size // shape[1]


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=seeds)
def test_backward_matches_torch_autograd_for_x_gamma_and_beta(shape, seed):
    x, gamma, beta, dout = _batch(shape, seed)
    _, cache = fn.batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = fn.batch_norm_backward(dout, cache)
    _, dx_t, dgamma_t, dbeta_t = _torch_forward_and_grads(x, gamma, beta, dout)
    assert dx.shape == x.shape and dgamma.shape == dbeta.shape == gamma.shape
    _assert_dx_close(dx, dx_t, dout, cache)
    _assert_close(dgamma, dgamma_t)
    _assert_close(dbeta, dbeta_t)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=seeds)
def test_stepwise_chain_rule_equals_compact_backward(shape, seed):
    x, gamma, beta, dout = _batch(shape, seed)
    _, cache = fn.batch_norm_forward(x, gamma, beta)
    dx, dgamma, dbeta = fn.batch_norm_backward(dout, cache)
    dx_s, dgamma_s, dbeta_s = fn.batch_norm_backward_stepwise(dout, cache)
    _assert_dx_close(dx_s, dx, dout, cache)
    _assert_close(dgamma_s, dgamma)
    _assert_close(dbeta_s, dbeta)


def test_backward_matches_finite_differences_of_the_numpy_forward():
    """Finite differences of our own forward agree with our backward (no torch forward involved)."""
    x, gamma, beta, dout = _batch((5, 3, 2), seed=7)
    _, cache = fn.batch_norm_forward(x, gamma, beta)
    dx, _, _ = fn.batch_norm_backward(dout, cache)
    h = 1e-6
    rng = np.random.default_rng(0)
    for _ in range(5):
        direction = rng.standard_normal(x.shape)
        plus, _ = fn.batch_norm_forward(x + h * direction, gamma, beta)
        minus, _ = fn.batch_norm_forward(x - h * direction, gamma, beta)
        numeric = np.sum(dout * (plus - minus)) / (2 * h)
        assert np.sum(dx * direction) == pytest.approx(numeric, rel=1e-5, abs=1e-7)


# ----------------------------------------------------------------------------
# the naive gradient, and the structure the true one has


@pytest.mark.parametrize("shape", [(8, 4), (16, 3), (4, 3, 2, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_naive_gradient_differs_from_autograd(shape, seed):
    x, gamma, beta, dout = _batch(shape, seed)
    _, cache = fn.batch_norm_forward(x, gamma, beta)
    dx_naive, dgamma_naive, dbeta_naive = fn.batch_norm_backward_naive(dout, cache)
    _, dx_t, dgamma_t, dbeta_t = _torch_forward_and_grads(x, gamma, beta, dout)
    # scale each channel by std / gamma so channels of every scale weigh the same
    unscale = (cache.std / cache.gamma).reshape((1, -1) + (1,) * (x.ndim - 2))
    err = np.linalg.norm((dx_naive - dx_t) * unscale) / np.linalg.norm(dx_naive * unscale)
    assert err > 0.1
    # the parameter gradients do not pass through mu and var, so those are right
    _assert_close(dgamma_naive, dgamma_t)
    _assert_close(dbeta_naive, dbeta_t)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds)
def test_true_dx_sums_to_zero_over_the_batch_per_channel(shape, seed):
    """Shifting a channel's inputs by a constant leaves the output unchanged, so Σ dx = 0."""
    x, gamma, beta, dout = _batch(shape, seed)
    _, cache = fn.batch_norm_forward(x, gamma, beta)
    dx, _, _ = fn.batch_norm_backward(dout, cache)
    dx_naive, _, _ = fn.batch_norm_backward_naive(dout, cache)
    scale = _per_channel_sum(np.abs(dx_naive))                # size of the terms that cancel
    np.testing.assert_array_less(np.abs(_per_channel_sum(dx)), 1e-10 * scale + 1e-300)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds)
def test_true_dx_is_orthogonal_to_xhat_per_channel_when_eps_is_zero(shape, seed):
    """With ε = 0, scaling a channel's centred inputs leaves the output unchanged, so Σ dx·x̂ = 0."""
    x, gamma, beta, dout = _batch(shape, seed)
    _, cache = fn.batch_norm_forward(x, gamma, beta, eps=0.0)
    dx, _, _ = fn.batch_norm_backward(dout, cache)
    dx_naive, _, _ = fn.batch_norm_backward_naive(dout, cache)
    scale = _per_channel_sum(np.abs(dx_naive * cache.xhat))   # size of the terms that cancel
    np.testing.assert_array_less(np.abs(_per_channel_sum(dx * cache.xhat)), 1e-10 * scale + 1e-300)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds)
def test_true_dx_misses_orthogonality_by_exactly_the_eps_share_of_the_variance(shape, seed):
    """With ε > 0: Σ dx·x̂ = γ/√(σ²+ε) · m · mean(dout·x̂) · ε/(σ²+ε), since Σ x̂² = m σ²/(σ²+ε)."""
    x, gamma, beta, dout = _batch(shape, seed)
    eps = 1e-2                                     # large enough to matter at small scales
    _, cache = fn.batch_norm_forward(x, gamma, beta, eps=eps)
    dx, _, _ = fn.batch_norm_backward(dout, cache)
    mean_dout_xhat = _per_channel_sum(dout * cache.xhat) / cache.m
    expected = cache.gamma / cache.std * cache.m * mean_dout_xhat * eps / (cache.var + eps)
    actual = _per_channel_sum(dx * cache.xhat)
    np.testing.assert_allclose(actual, expected, rtol=1e-6,
                               atol=1e-9 * _per_channel_sum(np.abs(dx * cache.xhat)).max() + 1e-300)


@pytest.mark.parametrize("shape", [(8, 4), (4, 3, 2, 2)])
def test_naive_dx_neither_sums_to_zero_nor_is_orthogonal_to_xhat(shape):
    x, gamma, beta, dout = _batch(shape, seed=3)
    _, cache = fn.batch_norm_forward(x, gamma, beta, eps=0.0)
    dx_naive, _, _ = fn.batch_norm_backward_naive(dout, cache)
    size = _per_channel_sum(np.abs(dx_naive))
    assert np.all(np.abs(_per_channel_sum(dx_naive)) > 1e-3 * size)
    assert np.all(np.abs(_per_channel_sum(dx_naive * cache.xhat)) > 1e-3 * size)


# ----------------------------------------------------------------------------
# inference mode, running statistics, folding


@settings(max_examples=30, deadline=None)
@given(shape=shapes.map(lambda s: (s[0] - 1, *s[1:])), seed=seeds)
def test_inference_matches_torch_batch_norm_in_eval_mode_with_given_running_stats(shape, seed):
    x, gamma, beta, _ = _batch(shape, seed)      # N from 1: a batch of one is fine here
    rng = np.random.default_rng(seed + 1)
    running_mean = rng.standard_normal(shape[1]) * 5
    running_var = 10.0 ** rng.uniform(-3, 2, size=shape[1])
    out = fn.batch_norm_inference(x, gamma, beta, running_mean, running_var)
    expected = F.batch_norm(torch.tensor(x), torch.tensor(running_mean), torch.tensor(running_var),
                            weight=torch.tensor(gamma), bias=torch.tensor(beta), training=False, eps=EPS)
    _assert_close(out, expected.numpy())


def test_inference_with_the_batch_statistics_reproduces_training_mode():
    x, gamma, beta, _ = _batch((6, 3, 4), seed=11)
    out, cache = fn.batch_norm_forward(x, gamma, beta)
    _assert_close(fn.batch_norm_inference(x, gamma, beta, cache.mu, cache.var), out)


@pytest.mark.parametrize("momentum", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("shape", [(2, 4), (7, 4), (3, 2, 5), (2, 3, 2, 3)])
def test_update_running_stats_matches_torch_batchnorm_buffers_after_one_training_step(shape, momentum):
    torch.manual_seed(0)
    layer = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)](
        shape[1], momentum=momentum).double()
    rng = np.random.default_rng(1)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor(rng.standard_normal(shape[1])))
        layer.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, shape[1])))
    running_mean, running_var = layer.running_mean.numpy().copy(), layer.running_var.numpy().copy()
    x, *_ = _batch(shape, seed=2)

    layer.train()
    layer(torch.tensor(x))
    _, cache = fn.batch_norm_forward(x, np.ones(shape[1]), np.zeros(shape[1]))
    new_mean, new_var = fn.update_running_stats(running_mean, running_var, cache.mu, cache.var,
                                                cache.m, momentum=momentum)
    _assert_close(new_mean, layer.running_mean.numpy())
    _assert_close(new_var, layer.running_var.numpy())
    # the correction matters: with the biased variance the running estimate would be off
    biased = (1 - momentum) * running_var + momentum * cache.var
    assert not np.allclose(biased, layer.running_var.numpy(), rtol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_folded_linear_equals_linear_followed_by_eval_mode_batchnorm(bias):
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 4, bias=bias).double()
    bn = torch.nn.BatchNorm1d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(-2, 2)
        bn.bias.normal_()
        bn.running_mean.normal_(0, 3)
        bn.running_var.uniform_(0.01, 5)
    bn.eval()
    x = torch.randn(9, 5, dtype=torch.float64) * 3
    expected = bn(linear(x)).detach().numpy()

    w, b = fn.fold_batch_norm(linear.weight.detach().numpy(),
                              linear.bias.detach().numpy() if bias else None,
                              bn.weight.detach().numpy(), bn.bias.detach().numpy(),
                              bn.running_mean.numpy(), bn.running_var.numpy(), eps=bn.eps)
    assert w.shape == (4, 5) and b.shape == (4,)
    _assert_close(x.numpy() @ w.T + b, expected)


def test_folded_conv_equals_conv_followed_by_eval_mode_batchnorm():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 3, kernel_size=3).double()
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(-2, 2)
        bn.bias.normal_()
        bn.running_mean.normal_(0, 3)
        bn.running_var.uniform_(0.01, 5)
    bn.eval()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    expected = bn(conv(x)).detach().numpy()
    w, b = fn.fold_batch_norm(conv.weight.detach().numpy(), conv.bias.detach().numpy(),
                              bn.weight.detach().numpy(), bn.bias.detach().numpy(),
                              bn.running_mean.numpy(), bn.running_var.numpy(), eps=bn.eps)
    folded = F.conv2d(x, torch.tensor(w), torch.tensor(b)).numpy()
    _assert_close(folded, expected)


# ----------------------------------------------------------------------------
# validation at the boundary


def test_single_value_per_channel_in_training_mode_is_rejected_with_the_fix():
    message = ("BatchNorm needs more than one value per channel in training mode; got input of "
               "shape (1, 64). Use batch_norm_inference or a batch larger than 1.")
    with pytest.raises(ValueError, match=re.escape(message)):
        fn.batch_norm_forward(np.ones((1, 64)), np.ones(64), np.zeros(64))
    with pytest.raises(ValueError, match=r"more than one value per channel.*\(1, 3, 1, 1\)"):
        fn.batch_norm_forward(np.ones((1, 3, 1, 1)), np.ones(3), np.zeros(3))


def test_a_batch_of_one_with_spatial_extent_is_accepted_in_training_mode():
    x, gamma, beta, _ = _batch((1, 3, 4), seed=0)
    out, cache = fn.batch_norm_forward(x, gamma, beta)
    assert cache.m == 4 and np.all(np.isfinite(out))


@pytest.mark.parametrize("func", ["forward", "inference"])
def test_input_with_fewer_than_two_dims_is_rejected(func):
    with pytest.raises(ValueError, match=r"at least 2-D; got shape \(5,\)"):
        if func == "forward":
            fn.batch_norm_forward(np.ones(5), np.ones(5), np.zeros(5))
        else:
            fn.batch_norm_inference(np.ones(5), np.ones(5), np.zeros(5), np.zeros(5), np.ones(5))


@pytest.mark.parametrize("name", ["gamma", "beta"])
def test_parameter_shape_not_matching_the_channel_axis_names_both_sizes(name):
    params = {"gamma": np.ones(4), "beta": np.zeros(4)}
    params[name] = np.ones(5)
    with pytest.raises(ValueError, match=rf"{name} has shape \(5,\) but .* has 4 features/channels"):
        fn.batch_norm_forward(np.ones((3, 4, 2)), params["gamma"], params["beta"])


@pytest.mark.parametrize("name", ["running_mean", "running_var"])
def test_running_stat_shape_not_matching_the_channel_axis_is_rejected_in_inference(name):
    stats = {"running_mean": np.zeros(4), "running_var": np.ones(4)}
    stats[name] = np.ones(3)
    with pytest.raises(ValueError, match=rf"{name} has shape \(3,\) but .* has 4 features/channels"):
        fn.batch_norm_inference(np.ones((3, 4)), np.ones(4), np.zeros(4),
                                stats["running_mean"], stats["running_var"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("func", ["forward", "inference"])
def test_non_finite_input_is_rejected(bad, func):
    x = np.ones((4, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match="contains NaN or infinite values"):
        if func == "forward":
            fn.batch_norm_forward(x, np.ones(3), np.zeros(3))
        else:
            fn.batch_norm_inference(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))


def test_empty_batch_is_rejected():
    with pytest.raises(ValueError, match="empty input"):
        fn.batch_norm_forward(np.ones((0, 3)), np.ones(3), np.zeros(3))


def test_negative_eps_and_negative_running_var_are_rejected():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        fn.batch_norm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3), eps=-1e-5)
    with pytest.raises(ValueError, match="running_var has negative entries"):
        fn.batch_norm_inference(np.ones((4, 3)), np.ones(3), np.zeros(3), np.zeros(3),
                                np.array([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("backward", [fn.batch_norm_backward, fn.batch_norm_backward_naive,
                                      fn.batch_norm_backward_stepwise])
def test_backward_rejects_dout_of_the_wrong_shape(backward):
    _, cache = fn.batch_norm_forward(np.arange(12.0).reshape(4, 3), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"dout has shape \(3, 4\) but the forward input had shape \(4, 3\)"):
        backward(np.ones((3, 4)), cache)


def test_update_running_stats_rejects_momentum_none_and_single_values():
    stats = (np.zeros(3), np.ones(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"momentum=None .* pass momentum=1 / num_batches_tracked"):
        fn.update_running_stats(*stats, m=8, momentum=None)
    with pytest.raises(ValueError, match=r"m >= 2 .* got m=1"):
        fn.update_running_stats(*stats, m=1)
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\]"):
        fn.update_running_stats(*stats, m=8, momentum=1.5)
    with pytest.raises(ValueError, match=r"batch_mean has shape \(2,\) but there are 3 channels"):
        fn.update_running_stats(np.zeros(3), np.ones(3), np.zeros(2), np.ones(3), m=8)


def test_fold_rejects_parameters_that_do_not_match_the_output_features():
    with pytest.raises(ValueError, match=r"gamma has shape \(5,\) but there are 4 output features"):
        fn.fold_batch_norm(np.ones((4, 2)), np.zeros(4), np.ones(5), np.zeros(4), np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match=r"weight must have shape \(D_out, D_in\).*got shape \(4,\)"):
        fn.fold_batch_norm(np.ones(4), None, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))
