"""Unitization1d (Huang & Yu 2020): α = 0 is BatchNorm1d, α = 1 puts each example's normalized vector on the
unit sphere, any α follows equations (1)-(5) of its module, gradients (α's included) pass gradcheck, the
state dict is BatchNorm1d's plus α, and bad input gets a clear error."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.layers import BatchNorm1d, Unitization1d

f64 = torch.float64


def _set_affine(layers, c):
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.linspace(0.5, 2, c, dtype=f64))
            layer.bias.copy_(torch.linspace(-1, 1, c, dtype=f64))


def _reference(x, alpha, gamma, beta, eps, mean=None, var=None):
    """Equations (1)-(5) written directly, with NumPy: batch statistics unless mean and var are given."""
    x = x.detach().numpy()
    if mean is None:
        mean, var = x.mean(0), x.var(0)  # NumPy's var is the biased one
    xhat = (x - mean) / (var + eps) ** 0.5
    s = (xhat**2).sum(1, keepdims=True)
    u = xhat * (alpha / (s + eps) ** 0.5 + 1 - alpha)
    return torch.from_numpy(u * gamma + beta)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), c=st.integers(1, 6), momentum=st.sampled_from([0.1, 0.3, None]),
       seed=st.integers(0, 2**16))
def test_alpha_zero_equals_batchnorm1d_in_train_and_eval_mode(n, c, momentum, seed):
    torch.manual_seed(seed)
    ours = Unitization1d(c, momentum=momentum, dtype=f64)
    theirs, normlab_bn = nn.BatchNorm1d(c, momentum=momentum, dtype=f64), BatchNorm1d(c, momentum=momentum, dtype=f64)
    _set_affine([ours, theirs, normlab_bn], c)
    for _ in range(3):  # three steps: the running estimates move away from (0, 1)
        x = torch.randn(n, c, dtype=f64) * 3 + 1
        out = ours(x)
        for oracle in (theirs, normlab_bn):
            torch.testing.assert_close(out, oracle(x), rtol=0, atol=1e-12)
            torch.testing.assert_close(ours.running_mean, oracle.running_mean, rtol=0, atol=1e-12)
            torch.testing.assert_close(ours.running_var, oracle.running_var, rtol=0, atol=1e-12)
            assert int(ours.num_batches_tracked) == int(oracle.num_batches_tracked)
    for layer in (ours, theirs, normlab_bn):
        layer.eval()
    x = torch.randn(n, c, dtype=f64) * 3 + 1
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(ours(x), normlab_bn(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_alpha_one_gives_each_example_a_unit_norm_vector_up_to_eps(eps):
    torch.manual_seed(0)
    layer = Unitization1d(7, eps=eps, affine=False, initial_alpha=1.0, dtype=f64)
    x = torch.randn(10, 7, dtype=f64) * 5 - 2
    u = layer(x)
    xhat = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps)
    s = (xhat**2).sum(1)
    torch.testing.assert_close(u.norm(dim=1) ** 2, s / (s + eps), rtol=0, atol=1e-12)  # = 1 − ε/(s + ε)
    assert torch.all((u.norm(dim=1) - 1).abs() <= eps / s.min())
    layer.eval()  # eval mode: the norm is computed with the running estimates
    xe = (x - layer.running_mean) / torch.sqrt(layer.running_var + eps)
    se = (xe**2).sum(1)
    torch.testing.assert_close(layer(x).norm(dim=1) ** 2, se / (se + eps), rtol=0, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), c=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_random_alpha_follows_the_equations_in_train_and_eval_mode(n, c, seed):
    torch.manual_seed(seed)
    layer = Unitization1d(c, momentum=0.2, dtype=f64)
    _set_affine([layer], c)
    with torch.no_grad():
        layer.alpha.uniform_(-1, 2)
    alpha, gamma, beta = (p.detach().numpy() for p in (layer.alpha, layer.weight, layer.bias))
    x = torch.randn(n, c, dtype=f64) * 2 + 0.5
    torch.testing.assert_close(layer(x), _reference(x, alpha, gamma, beta, layer.eps), rtol=0, atol=1e-12)
    m = x.numpy()
    torch.testing.assert_close(layer.running_mean, torch.from_numpy(0.2 * m.mean(0)), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var, torch.from_numpy(0.8 + 0.2 * m.var(0, ddof=1)), rtol=0,
                               atol=1e-12)  # BatchNorm1d's unbiased running variance
    layer.eval()
    x = torch.randn(n, c, dtype=f64)
    expected = _reference(x, alpha, gamma, beta, layer.eps, layer.running_mean.numpy(), layer.running_var.numpy())
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_in_float64_including_alpha(training):
    torch.manual_seed(1)
    layer = Unitization1d(4, dtype=f64)
    _set_affine([layer], 4)
    layer(torch.randn(8, 4, dtype=f64) * 2)  # running estimates away from (0, 1) for eval mode
    layer.train(training)
    x = torch.randn(6, 4, dtype=f64, requires_grad=True)
    alpha0 = torch.tensor([-0.5, 0.0, 0.7, 1.3], dtype=f64)

    def f(x, alpha, gamma, beta):
        params = {"alpha": alpha, "weight": gamma, "bias": beta}
        buffers = {k: v.clone() for k, v in layer.named_buffers()}
        return torch.func.functional_call(layer, {**params, **buffers}, (x,))

    inputs = (x, alpha0.clone().requires_grad_(), layer.weight.detach().clone().requires_grad_(),
              layer.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)


def test_alpha_gets_a_gradient_and_moves_under_sgd():
    torch.manual_seed(2)
    layer = Unitization1d(5, dtype=f64)
    x = torch.randn(16, 5, dtype=f64)
    (layer(x) * torch.randn(16, 5, dtype=f64)).sum().backward()
    assert layer.alpha.grad is not None and layer.alpha.grad.abs().sum() > 0


def test_state_dict_is_batchnorm1d_plus_alpha():
    layer, bn = Unitization1d(3, initial_alpha=0.25), nn.BatchNorm1d(3)
    keys = set(layer.state_dict())
    assert keys == set(bn.state_dict()) | {"alpha"}
    assert torch.equal(layer.alpha.detach(), torch.full((3,), 0.25))
    result = layer.load_state_dict(bn.state_dict(), strict=False)
    assert result.missing_keys == ["alpha"] and not result.unexpected_keys
    assert "initial_alpha=0.25" in repr(layer)
    with torch.no_grad():
        layer.alpha.fill_(3.0)
    layer.reset_parameters()
    assert torch.equal(layer.alpha.detach(), torch.full((3,), 0.25))


def test_bad_input_gets_a_clear_error():
    layer = Unitization1d(4)
    with pytest.raises(ValueError, match=r"2D input \(N, C\)"):
        layer(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="num_features=4"):
        layer(torch.randn(3, 5))
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer(torch.randn(1, 4))
    layer.eval()
    assert layer(torch.randn(1, 4)).shape == (1, 4)  # a single example is fine with running estimates
    with pytest.raises(ValueError, match="num_features"):
        Unitization1d(0)
    with pytest.raises(ValueError, match="initial_alpha"):
        Unitization1d(3, initial_alpha=float("nan"))


def test_learn_alpha_false_holds_alpha_in_a_buffer():
    layer = Unitization1d(3, initial_alpha=1.0, learn_alpha=False)
    assert "alpha" not in dict(layer.named_parameters()) and "alpha" in dict(layer.named_buffers())
    assert "alpha" in layer.state_dict() and "learn_alpha=False" in repr(layer)
    layer(torch.randn(5, 3)).sum().backward()
    assert torch.equal(layer.alpha, torch.ones(3))
