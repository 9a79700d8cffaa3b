"""The layers' forwards take their statistics from torch's fused kernels (issue 13, speed): they must
still compute the textbook formulas, checked here in float64 against the formulas written out."""

from __future__ import annotations

import pytest
import torch

from normlab import layers
from normlab.layers import BatchNormFunction, GroupNormFunction, LayerNormFunction
from normlab.layers._common import _fused_batch_mean_var


def _formula(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> tuple[torch.Tensor, ...]:
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    return mean, var, (x - mean) / torch.sqrt(var + eps)


@pytest.mark.parametrize("shape", [(8, 5), (512, 1024)], ids=str)
def test_fused_batch_mean_var_is_the_two_pass_formula(shape):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 7
    mean, var, _ = _formula(x, (0,), 0.0)
    got_mean, got_var = _fused_batch_mean_var(x)
    torch.testing.assert_close(got_mean, mean.flatten(), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got_var, var.flatten(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(4, 3, 6), (2, 3, 4, 5), (0, 3)], ids=str)
def test_fused_batch_mean_var_leaves_other_shapes_to_the_formula(shape):
    assert _fused_batch_mean_var(torch.randn(shape)) is None


@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6), (2, 3, 4, 5)], ids=str)
def test_batchnorm_function_is_the_formula(shape):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * 3 + 7
    weight, bias = torch.randn(2, shape[1], dtype=torch.float64, generator=generator)
    dims = (0,) + tuple(range(2, len(shape)))
    mean, var, xhat = _formula(x, dims, 1e-5)
    view = (-1,) + (1,) * (len(shape) - 2)
    output, got_mean, got_var = BatchNormFunction.apply(x, weight, bias, 1e-5)
    torch.testing.assert_close(output, xhat * weight.view(view) + bias.view(view), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_mean, mean.flatten(), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(got_var, var.flatten(), rtol=1e-12, atol=1e-14)


def test_batch_variance_far_below_eps_is_exact_for_the_running_estimate():
    # var ≪ ε: a variance recovered from 1/√(var + ε) would lose it; the running estimate keeps it
    x = 1 + 1e-6 * torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    layer = layers.BatchNorm1d(3, momentum=1.0, dtype=torch.float64)
    layer(x)
    torch.testing.assert_close(layer.running_var, x.var(0), rtol=1e-10, atol=0.0)


@pytest.mark.parametrize("shape, normalized_ndim", [((8, 64), 1), ((4, 5, 6), 2), ((512, 1024), 1)], ids=str)
def test_layernorm_fused_forward_is_the_formula(shape, normalized_ndim):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * 2 + 5
    weight = torch.randn(shape[-normalized_ndim:], dtype=torch.float64, generator=generator)
    bias = torch.randn(shape[-normalized_ndim:], dtype=torch.float64, generator=generator)
    dims = tuple(range(len(shape) - normalized_ndim, len(shape)))
    expected = _formula(x, dims, 1e-5)[2] * weight + bias
    got = LayerNormFunction.apply(x, normalized_ndim, weight, bias, 1e-5, True)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_function_with_statistics_hook_returns_the_output_alone():
    x = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    seen = []
    output = BatchNormFunction.apply(x, None, None, 1e-5, lambda input, mean, var: seen.append((mean, var)))
    output_b, mean, var = BatchNormFunction.apply(x, None, None, 1e-5)
    assert isinstance(output, torch.Tensor)
    torch.testing.assert_close(output, output_b, rtol=0, atol=0)
    torch.testing.assert_close(seen[0][0], mean, rtol=0, atol=0)
    torch.testing.assert_close(seen[0][1], var, rtol=0, atol=0)


@pytest.mark.parametrize("affine", [True, False])
def test_groupnorm_fused_forward_and_backward_are_the_formula(affine):
    generator = torch.Generator().manual_seed(5)
    x = (torch.randn(3, 8, 4, 5, dtype=torch.float64, generator=generator) * 2 + 3).requires_grad_()
    weight = torch.randn(8, dtype=torch.float64, generator=generator).requires_grad_() if affine else None
    bias = torch.randn(8, dtype=torch.float64, generator=generator).requires_grad_() if affine else None
    output = GroupNormFunction.apply(x, 4, weight, bias, 1e-5, False)
    assert isinstance(output, torch.Tensor)
    grouped = x.reshape(3, 4, -1)
    mean, var, xhat = _formula(grouped, (-1,), 1e-5)
    expected = xhat.view_as(x)
    if affine:
        expected = expected * weight.view(-1, 1, 1) + bias.view(-1, 1, 1)
    torch.testing.assert_close(output, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(x)
    inputs = (x, weight, bias) if affine else (x,)
    ours = torch.autograd.grad(output, inputs, grad)
    theirs = torch.autograd.grad(expected, inputs, grad)
    for got, want in zip(ours, theirs):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    output_b, _, _ = GroupNormFunction.apply(x, 4, weight, bias, 1e-5)  # the unfused path, with statistics
    torch.testing.assert_close(output_b, output, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(8, 4), (4, 4, 3, 3)], ids=str)
def test_small_batches_take_the_fused_step_with_the_same_running_estimates(momentum, shape):
    layer = (layers.BatchNorm1d if len(shape) == 2 else layers.BatchNorm2d)(4, momentum=momentum, dtype=torch.float64)
    assert layer._fusable(torch.zeros(shape, dtype=torch.float64))
    generator = torch.Generator().manual_seed(6)
    running_mean, running_var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    dims = (0,) + tuple(range(2, len(shape)))
    for step in range(1, 4):
        x = torch.randn(shape, dtype=torch.float64, generator=generator) * step + step
        output = layer(x)
        rate = 1.0 / step if momentum is None else momentum
        running_mean = (1 - rate) * running_mean + rate * x.mean(dims)
        running_var = (1 - rate) * running_var + rate * x.var(dims, correction=1)
        torch.testing.assert_close(output, _formula(x, dims, 1e-5)[2], rtol=1e-12, atol=1e-12)
    assert int(layer.num_batches_tracked) == 3
    torch.testing.assert_close(layer.running_mean, running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.running_var, running_var, rtol=1e-12, atol=1e-12)


def test_running_estimates_already_non_finite_are_left_to_the_unfused_step():
    """The guard of the fused step tests the running estimates after the kernel; estimates that
    were already NaN (loaded so) are not the batch's fault: no error, as without the fused step."""
    layer = layers.BatchNorm1d(3)
    layer.running_mean[1] = float("nan")
    layer(torch.randn(8, 3))
    assert int(layer.num_batches_tracked) == 1 and torch.isnan(layer.running_mean[1])
