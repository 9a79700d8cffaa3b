"""normlab.layers.DynamicTanh: γ·tanh(αx) + β (Zhu et al. 2025), drop-in where LayerNorm goes.

Its formula is the oracle (there is no torch built-in): outputs equal γ·tanh(αx)+β in float64,
the gradients pass ``gradcheck``, it takes LayerNorm's constructor and shapes, and bad input or
a bad α₀ raises an error that says what to do.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.layers import DynamicTanh, LayerNorm

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random_state(layer: DynamicTanh, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype) + 0.3)


@HYPOTHESIS
@given(lead=st.lists(st.integers(1, 3), max_size=2), normalized=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       affine=st.booleans(), bias=st.booleans(), alpha=st.sampled_from([0.05, 0.5, 1.0, 4.0]), seed=st.integers(0, 999))
def test_dynamic_tanh_equals_its_formula_for_all_shapes(lead, normalized, affine, bias, alpha, seed):
    layer = DynamicTanh(normalized, alpha_init=alpha, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    _random_state(layer, seed)
    x = torch.randn(*lead, *normalized, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3
    expected = torch.tanh(layer.alpha * x)
    if affine:
        expected = expected * layer.weight + (layer.bias if bias else 0.0)
    torch.testing.assert_close(layer(x), expected, rtol=1e-14, atol=1e-14)
    assert layer(x).shape == x.shape


def test_dynamic_tanh_at_initialization_is_tanh_of_alpha0_x():
    layer = DynamicTanh(5, dtype=torch.float64)
    x = torch.linspace(-4, 4, 15, dtype=torch.float64).reshape(3, 5)
    torch.testing.assert_close(layer(x), torch.tanh(0.5 * x), rtol=0, atol=0)
    assert layer.alpha.shape == (1,) and layer.alpha.item() == 0.5
    assert torch.equal(layer.weight, torch.ones(5, dtype=torch.float64))
    assert torch.equal(layer.bias, torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("affine, bias", [(True, True), (True, False), (False, True)])
def test_dynamic_tanh_passes_gradcheck_in_float64(affine, bias):
    layer = DynamicTanh((2, 3), alpha_init=0.7, elementwise_affine=affine, bias=bias, dtype=torch.float64)
    _random_state(layer, 0)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())

    def f(x, *p):
        with torch.no_grad():
            for target, value in zip(params, p):
                target.copy_(value)
        return torch.func.functional_call(layer, dict(zip([n for n, _ in layer.named_parameters()], p)), (x,))

    inputs = (x, *(p.detach().clone().requires_grad_(True) for p in params))
    assert torch.autograd.gradcheck(f, inputs)


def test_dynamic_tanh_gradients_of_alpha_gamma_beta_match_the_chain_rule():
    layer = DynamicTanh(4, alpha_init=0.8, dtype=torch.float64)
    _random_state(layer, 1)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 4, dtype=torch.float64)
    layer(x).backward(dy)
    a, g = layer.alpha.detach(), layer.weight.detach()
    u = torch.tanh(a * x.detach())
    sech2 = 1 - u**2
    torch.testing.assert_close(x.grad, dy * g * sech2 * a)
    torch.testing.assert_close(layer.alpha.grad, (dy * g * sech2 * x.detach()).sum().reshape(1))
    torch.testing.assert_close(layer.weight.grad, (dy * u).sum(0))
    torch.testing.assert_close(layer.bias.grad, dy.sum(0))


def test_dynamic_tanh_is_constructed_and_used_like_layernorm():
    for kwargs in ({}, {"elementwise_affine": False}, {"bias": False}):
        ln, dyt = LayerNorm((3, 8), **kwargs), DynamicTanh((3, 8), **kwargs)
        assert [n for n, _ in ln.named_parameters()] == [n for n, _ in dyt.named_parameters() if n != "alpha"]
        x = torch.randn(2, 5, 3, 8)
        assert dyt(x).shape == ln(x).shape
    net = nn.Sequential(nn.Linear(8, 8), DynamicTanh(8), nn.Linear(8, 2))
    assert net(torch.randn(4, 8)).shape == (4, 2)
    state = DynamicTanh(8, alpha_init=2.0).state_dict()
    fresh = DynamicTanh(8)
    fresh.load_state_dict(state)
    assert fresh.alpha.item() == 2.0 and set(state) == {"alpha", "weight", "bias"}
    assert "alpha_init=0.5" in repr(DynamicTanh(8))
    assert DynamicTanh(8, dtype=torch.float64).alpha.dtype == torch.float64


def test_dynamic_tanh_depends_on_each_element_alone():
    layer = DynamicTanh(6, dtype=torch.float64)
    x = torch.randn(2, 6, dtype=torch.float64)
    y = layer(x)
    x2 = x.clone()
    x2[0, 3] += 10.0
    changed = (layer(x2) != y)
    assert changed[0, 3] and changed.sum() == 1      # LayerNorm would move the whole row


@pytest.mark.parametrize("alpha", [0.0, -0.5, math.nan, math.inf, "0.5", True])
def test_dynamic_tanh_refuses_a_bad_alpha_init(alpha):
    with pytest.raises(ValueError, match="alpha_init must be a finite number > 0"):
        DynamicTanh(4, alpha_init=alpha)


@pytest.mark.parametrize("shape", [0, -2, (), (3, 0), 2.5])
def test_dynamic_tanh_refuses_a_bad_normalized_shape(shape):
    with pytest.raises((ValueError, TypeError), match="normalized_shape"):
        DynamicTanh(shape)


def test_dynamic_tanh_names_a_wrong_trailing_shape_and_the_fix():
    layer = DynamicTanh((3, 8))
    with pytest.raises(ValueError, match=r"normalized_shape=\(3, 8\).*last 2 dimension\(s\) are \(8, 3\).*"
                                         r"normalized_shape=\(8, 3\)"):
        layer(torch.randn(2, 8, 3))
    with pytest.raises(ValueError, match="normalized_shape"):
        layer(torch.randn(8))


def test_dynamic_tanh_refuses_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        DynamicTanh(4)(torch.arange(8).reshape(2, 4))
