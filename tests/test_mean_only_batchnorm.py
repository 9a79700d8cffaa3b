"""MeanOnlyBatchNorm1d: centring in training mode, running mean as torch's BatchNorm1d keeps
it, a fixed shift in eval mode, and errors that name the problem."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.layers import MeanOnlyBatchNorm1d

f64 = torch.float64


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 8), c=st.integers(1, 5), length=st.sampled_from([None, 1, 3]),
       momentum=st.sampled_from([0.1, 0.5, None]), seed=st.integers(0, 2**16))
def test_running_mean_matches_torch_batchnorm_and_eval_is_a_shift(n, c, length, momentum, seed):
    torch.manual_seed(seed)
    ours, theirs = MeanOnlyBatchNorm1d(c, momentum=momentum, dtype=f64), nn.BatchNorm1d(c, momentum=momentum,
                                                                                       dtype=f64)
    with torch.no_grad():
        ours.bias.uniform_(-1, 1)
    shape = (n, c) if length is None else (n, c, length)
    dims = (0,) if length is None else (0, 2)
    view = (1, -1) if length is None else (1, -1, 1)
    for _ in range(3):
        x = torch.randn(shape, dtype=f64) * 3 + 1
        y = ours(x)
        theirs(x)
        torch.testing.assert_close(y, x - x.mean(dims, keepdim=True) + ours.bias.view(view))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    ours.eval()
    x = torch.randn(1, *shape[1:], dtype=f64)  # a batch of one is fine in eval mode
    torch.testing.assert_close(ours(x), x - ours.running_mean.view(view) + ours.bias.view(view))


def test_gradcheck_in_float64():
    layer = MeanOnlyBatchNorm1d(3, dtype=f64)
    x = torch.randn(5, 3, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_gradient_of_the_centring_sums_to_zero_over_the_batch():
    layer = MeanOnlyBatchNorm1d(4, affine=False)
    x = torch.randn(6, 4, requires_grad=True)
    (layer(x) * torch.randn(6, 4)).sum().backward()
    torch.testing.assert_close(x.grad.sum(0), torch.zeros(4), atol=1e-6, rtol=0)


def test_state_dict_names_follow_torch():
    assert list(MeanOnlyBatchNorm1d(3).state_dict()) == ["bias", "running_mean", "num_batches_tracked"]
    assert list(MeanOnlyBatchNorm1d(3, affine=False, track_running_stats=False).state_dict()) == []
    assert "momentum=0.1" in repr(MeanOnlyBatchNorm1d(3))


def test_without_running_stats_eval_uses_the_batch_mean():
    layer = MeanOnlyBatchNorm1d(2, affine=False, track_running_stats=False).eval()
    x = torch.randn(4, 2)
    torch.testing.assert_close(layer(x), x - x.mean(0))


def test_errors_name_the_problem():
    layer = MeanOnlyBatchNorm1d(3)
    with pytest.raises(ValueError, match="2D input"):
        layer(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="num_features=3"):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match="more than one value per channel in training mode"):
        layer(torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(torch.tensor([[1.0, float("inf"), 0.0], [0.0, 1.0, 2.0]]))
    assert int(layer.num_batches_tracked) == 0 and bool((layer.running_mean == 0).all())
    with pytest.raises(ValueError, match="track_running_stats=False"):
        MeanOnlyBatchNorm1d(3, track_running_stats=False).eval()(torch.randn(1, 3))
    with pytest.raises(ValueError, match="num_features"):
        MeanOnlyBatchNorm1d(0)
    with pytest.raises(ValueError, match="momentum"):
        MeanOnlyBatchNorm1d(3, momentum=1.5)
