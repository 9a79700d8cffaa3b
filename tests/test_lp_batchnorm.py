"""LpBatchNorm1d: p = 2 is torch's BatchNorm1d in training mode, the ℓ1 and ℓ∞ scales are what
the docstring says, gradients pass gradcheck, eval mode uses the running estimates, errors name
the problem."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.layers import LpBatchNorm1d
from normlab.layers.lp_batchnorm import lp_scale

f64 = torch.float64


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), c=st.integers(1, 5), length=st.sampled_from([None, 3]), seed=st.integers(0, 2**16))
def test_p2_matches_torch_batchnorm_in_training_mode(n, c, length, seed):
    torch.manual_seed(seed)
    ours, theirs = LpBatchNorm1d(c, p=2, dtype=f64), nn.BatchNorm1d(c, dtype=f64)
    with torch.no_grad():
        for layer in (ours, theirs):
            layer.weight.copy_(torch.linspace(0.5, 2, c))
            layer.bias.copy_(torch.linspace(-1, 1, c))
    shape = (n, c) if length is None else (n, c, length)
    x = (torch.randn(shape, dtype=f64) * 3 + 1).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    out, ref = ours(x), theirs(x2)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn(shape, dtype=f64)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)


def test_l1_and_linf_scales_are_mean_and_max_absolute_deviation():
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 7.0]], dtype=f64)  # centred: [-2, 0, 2], [-2, -2, 4]
    c = x - x.mean(0)
    torch.testing.assert_close(lp_scale(c, 1), torch.tensor([4 / 3, 8 / 3], dtype=f64))
    torch.testing.assert_close(lp_scale(c, math.inf), torch.tensor([2.0, 4.0], dtype=f64))
    torch.testing.assert_close(lp_scale(c, 2), x.std(0, unbiased=False))
    l1, linf = torch.tensor([4 / 3, 8 / 3], dtype=f64), torch.tensor([2.0, 4.0], dtype=f64)
    for p, expected in [(1, c / l1), (math.inf, c / linf)]:
        layer = LpBatchNorm1d(2, p=p, eps=0.0, dtype=f64)
        torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_gradcheck_in_float64(p):
    torch.manual_seed(0)
    layer = LpBatchNorm1d(3, p=p, dtype=f64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    x = torch.randn(6, 3, dtype=f64, requires_grad=True)   # distinct values: max |x − μ| is differentiable
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))
    layer.eval()
    assert torch.autograd.gradcheck(lambda t: layer(t), (x,))


@pytest.mark.parametrize("p", [1, math.inf])
def test_running_estimates_and_eval_mode(p):
    torch.manual_seed(1)
    layer = LpBatchNorm1d(4, p=p, momentum=0.5, dtype=f64)
    batches = [torch.randn(8, 4, dtype=f64) * 2 + 3 for _ in range(3)]
    mean, scale = torch.zeros(4, dtype=f64), torch.ones(4, dtype=f64)
    for b in batches:
        layer(b)
        mean = 0.5 * mean + 0.5 * b.mean(0)
        scale = 0.5 * scale + 0.5 * lp_scale(b - b.mean(0), p)
    torch.testing.assert_close(layer.running_mean, mean)
    torch.testing.assert_close(layer.running_scale, scale)
    assert int(layer.num_batches_tracked) == 3
    layer.eval()
    x = torch.randn(1, 4, dtype=f64)                          # a batch of one is fine in eval mode
    torch.testing.assert_close(layer(x), (x - mean) / torch.sqrt(scale**2 + layer.eps))


def test_cumulative_average_when_momentum_is_none():
    layer = LpBatchNorm1d(2, p=1, momentum=None, dtype=f64)
    batches = [torch.randn(5, 2, dtype=f64) + k for k in range(4)]
    for b in batches:
        layer(b)
    torch.testing.assert_close(layer.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="p must be 1, 2 or math.inf"):
        LpBatchNorm1d(3, p=3)
    with pytest.raises(ValueError, match="num_features must be at least 1"):
        LpBatchNorm1d(0)
    with pytest.raises(ValueError, match="momentum must be in"):
        LpBatchNorm1d(3, momentum=1.5)
    layer = LpBatchNorm1d(3, p=1)
    with pytest.raises(ValueError, match="num_features=3 but got input of shape"):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match="2D input"):
        layer(torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="more than one value per feature"):
        layer(torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(torch.tensor([[float("nan"), 0.0, 1.0], [1.0, 2.0, 3.0]]))
    assert "p=inf" in repr(LpBatchNorm1d(2, p=math.inf))


def test_without_running_stats_eval_uses_the_batch():
    layer = LpBatchNorm1d(2, p=1, track_running_stats=False, affine=False, eps=0.0, dtype=f64).eval()
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=f64)
    torch.testing.assert_close(layer(x), torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=f64))
    assert layer.running_mean is None and layer.weight is None
