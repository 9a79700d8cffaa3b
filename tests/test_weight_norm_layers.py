"""WeightNormLinear against torch's weight_norm parametrization, its gradient formulas
against autograd, and the two initializations (Salimans & Kingma; Arpit, Campos & Bengio)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.layers import (
    WeightNormLinear,
    data_dependent_init_,
    data_dependent_init_network_,
    scaled_weight_norm_gain,
    scaled_weight_norm_init_,
    weight_norm_grads,
)

f64 = torch.float64


def torch_twin(layer: WeightNormLinear) -> nn.Module:
    """torch's weight_norm on an nn.Linear, holding the same g, v and bias."""
    twin = nn.utils.parametrizations.weight_norm(
        nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=layer.v.dtype))
    with torch.no_grad():
        twin.parametrizations.weight.original0.copy_(layer.g.view(-1, 1))
        twin.parametrizations.weight.original1.copy_(layer.v)
        if layer.bias is not None:
            twin.bias.copy_(layer.bias)
    return twin


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), d_in=st.integers(1, 7), d_out=st.integers(1, 7), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matches_torch_weight_norm_outputs_and_gradients(n, d_in, d_out, bias, seed):
    torch.manual_seed(seed)
    layer = WeightNormLinear(d_in, d_out, bias=bias, dtype=f64)
    with torch.no_grad():
        layer.g.uniform_(-2, 2)  # any sign and length, not only the default g = ‖v‖
    twin = torch_twin(layer)
    x = torch.randn(n, d_in, dtype=f64)
    dy = torch.randn(n, d_out, dtype=f64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = layer(x1), twin(x2)
    torch.testing.assert_close(y1, y2)
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    torch.testing.assert_close(layer.g.grad, twin.parametrizations.weight.original0.grad.view(-1))
    torch.testing.assert_close(layer.v.grad, twin.parametrizations.weight.original1.grad)
    if bias:
        torch.testing.assert_close(layer.bias.grad, twin.bias.grad)


def test_default_init_computes_what_nn_linear_computes_with_the_same_seed():
    torch.manual_seed(3)
    linear = nn.Linear(6, 4)
    torch.manual_seed(3)
    layer = WeightNormLinear(6, 4)
    torch.testing.assert_close(layer.weight, linear.weight)
    torch.testing.assert_close(layer.bias, linear.bias)
    torch.testing.assert_close(layer.g, linear.weight.norm(dim=1))


def test_from_linear_keeps_the_function():
    linear = nn.Linear(5, 3)
    x = torch.randn(7, 5)
    torch.testing.assert_close(WeightNormLinear.from_linear(linear)(x), linear(x))


def test_gradcheck_in_float64():
    layer = WeightNormLinear(4, 3, dtype=f64)
    x = torch.randn(5, 4, dtype=f64, requires_grad=True)

    def f(x, g, v, b):
        return nn.functional.linear(x, v * (g / v.norm(dim=1)).unsqueeze(1), b)

    assert torch.autograd.gradcheck(lambda x: layer(x), (x,))
    params = tuple(p.detach().clone().requires_grad_() for p in (layer.g, layer.v, layer.bias))
    assert torch.autograd.gradcheck(f, (x, *params))


@settings(max_examples=25, deadline=None)
@given(d_in=st.integers(1, 8), d_out=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_closed_form_gradients_match_autograd(d_in, d_out, seed):
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(d_out, d_in, dtype=f64, generator=gen, requires_grad=True)
    g = torch.randn(d_out, dtype=f64, generator=gen, requires_grad=True)
    grad_w = torch.randn(d_out, d_in, dtype=f64, generator=gen)
    w = v * (g / v.norm(dim=1)).unsqueeze(1)
    (w * grad_w).sum().backward()
    grad_g, grad_v = weight_norm_grads(v.detach(), g.detach(), grad_w)
    torch.testing.assert_close(grad_g, g.grad)
    torch.testing.assert_close(grad_v, v.grad)
    # v ⊥ ∇v L, row by row
    torch.testing.assert_close((grad_v * v.detach()).sum(1), torch.zeros(d_out, dtype=f64), atol=1e-12, rtol=0)


def test_sgd_step_grows_the_norm_of_v_by_the_pythagorean_rule():
    torch.manual_seed(0)
    layer = WeightNormLinear(10, 5, dtype=f64)
    x, y = torch.randn(32, 10, dtype=f64), torch.randn(32, 5, dtype=f64)
    before = layer.v.detach().norm(dim=1) ** 2
    ((layer(x) - y) ** 2).mean().backward()
    grad_sq = layer.v.grad.norm(dim=1) ** 2
    lr = 0.7
    with torch.no_grad():
        layer.v -= lr * layer.v.grad
    after = layer.v.detach().norm(dim=1) ** 2
    torch.testing.assert_close(after, before + lr**2 * grad_sq, rtol=1e-12, atol=0)
    assert bool((after > before).all())


def test_train_and_eval_agree_and_a_batch_of_one_works():
    layer = WeightNormLinear(3, 2)
    x = torch.randn(1, 3)
    out = layer(x)
    layer.eval()
    torch.testing.assert_close(layer(x), out)
    assert layer(torch.randn(3)).shape == (2,)


def test_state_dict_names_and_shapes():
    sd = WeightNormLinear(4, 3).state_dict()
    assert list(sd) == ["g", "v", "bias"]
    assert sd["g"].shape == (3,) and sd["v"].shape == (3, 4)
    assert list(WeightNormLinear(4, 3, bias=False).state_dict()) == ["g", "v"]
    assert "bias=False" in repr(WeightNormLinear(4, 3, bias=False))


def test_output_is_invariant_to_rescaling_v():
    layer = WeightNormLinear(4, 3)
    x = torch.randn(6, 4)
    out = layer(x)
    with torch.no_grad():
        layer.v.mul_(torch.tensor([[3.0], [0.1], [7.0]]))
    torch.testing.assert_close(layer(x), out)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="in_features"):
        WeightNormLinear(0, 3)
    with pytest.raises(ValueError, match="last dimension must be 4"):
        WeightNormLinear(4, 3)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="WeightNormLinear"):
        data_dependent_init_(nn.Linear(3, 2), torch.randn(4, 3))
    with pytest.raises(ValueError, match="no bias"):
        data_dependent_init_(WeightNormLinear(3, 2, bias=False), torch.randn(4, 3))
    with pytest.raises(ValueError, match="N ≥ 2"):
        data_dependent_init_(WeightNormLinear(3, 2), torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        data_dependent_init_(WeightNormLinear(3, 2), torch.tensor([[1.0, float("nan"), 0.0]] * 3))
    with pytest.raises(ValueError, match="nonlinearity"):
        scaled_weight_norm_gain(4, 4, "tanh")
    with pytest.raises(ValueError, match="residual_blocks"):
        scaled_weight_norm_gain(4, 4, "linear", residual_blocks=0)
    with pytest.raises(ValueError, match="same shape"):
        weight_norm_grads(torch.randn(3, 4), torch.randn(3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="no WeightNormLinear"):
        data_dependent_init_network_(nn.Sequential(nn.Linear(2, 2)), torch.randn(3, 2))


def test_data_dependent_init_standardizes_the_batch_and_keeps_the_direction():
    torch.manual_seed(1)
    layer = WeightNormLinear(8, 5, dtype=f64)
    x = torch.randn(64, 8, dtype=f64) * 3 + 2
    direction = layer.v.detach() / layer.v.detach().norm(dim=1, keepdim=True)
    out = data_dependent_init_(layer, x)
    torch.testing.assert_close(out.mean(0), torch.zeros(5, dtype=f64), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(5, dtype=f64), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.v.detach() / layer.v.detach().norm(dim=1, keepdim=True), direction)
    torch.testing.assert_close(out, layer(x))


def test_data_dependent_init_of_a_network_standardizes_every_layer_in_turn():
    torch.manual_seed(2)
    net = nn.Sequential(WeightNormLinear(6, 16, dtype=f64), nn.ReLU(), WeightNormLinear(16, 16, dtype=f64),
                        nn.ReLU(), WeightNormLinear(16, 3, dtype=f64))
    x = torch.randn(100, 6, dtype=f64) * 5
    data_dependent_init_network_(net, x)
    h = x
    for module in net:
        h = module(h)
        if isinstance(module, WeightNormLinear):
            torch.testing.assert_close(h.mean(0), torch.zeros_like(h[0]), atol=1e-10, rtol=0)
            torch.testing.assert_close(h.std(0, unbiased=False), torch.ones_like(h[0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fan_in, fan_out", [(64, 64), (64, 16), (16, 64)])
def test_scaled_init_preserves_the_squared_norm_in_expectation(fan_in, fan_out):
    # E‖ReLU(W u)‖² = ‖u‖² with g = √(2 fan_in / fan_out): average over many draws of v.
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(fan_in, dtype=f64, generator=gen)
    layer = WeightNormLinear(fan_in, fan_out, dtype=f64)
    ratios = []
    for _ in range(400):
        scaled_weight_norm_init_(layer, "relu", generator=gen)
        with torch.no_grad():
            ratios.append(float(torch.relu(layer(u)).pow(2).sum() / u.pow(2).sum()))
    mean = sum(ratios) / len(ratios)
    assert abs(mean - 1) < 0.05
    assert torch.allclose(layer.g, torch.full((fan_out,), math.sqrt(2 * fan_in / fan_out), dtype=f64))
    assert bool((layer.bias == 0).all())


def test_scaled_gain_values():
    assert scaled_weight_norm_gain(100, 50, "relu") == pytest.approx(2.0)
    assert scaled_weight_norm_gain(100, 50, "linear") == pytest.approx(math.sqrt(2))
    assert scaled_weight_norm_gain(64, 64, "linear", residual_blocks=16) == pytest.approx(0.25)


def test_scaled_init_makes_v_orthogonal():
    layer = scaled_weight_norm_init_(WeightNormLinear(32, 8, dtype=f64), generator=torch.Generator().manual_seed(0))
    v = layer.v.detach()
    torch.testing.assert_close(v @ v.T, torch.eye(8, dtype=f64))
