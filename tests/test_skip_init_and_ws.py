"""normlab.layers.SkipInit, ScalarBias, ScalarMultiplier, WSLinear, WSConv2d (chapter 13).

Oracles: the formulas (x + α F(x); equations (1)-(2) of weight_standardization written out with
loops or NumPy), gradcheck in float64, hypothesis over shapes, and clear errors on bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.layers import (ScalarBias, ScalarMultiplier, SkipInit, WSConv2d, WSLinear, activation_gamma,
                            standardized_weight)

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- SkipInit


def test_skipinit_is_the_identity_at_initialization_and_alpha_receives_a_gradient():
    branch = nn.Sequential(nn.ReLU(), nn.Linear(6, 6)).double()
    block = SkipInit(branch).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    assert torch.equal(block(x), x)
    assert block.alpha.shape == (1,) and block.alpha.item() == 0.0
    dy = torch.randn(5, 6, dtype=torch.float64)
    block(x).backward(dy)
    torch.testing.assert_close(block.alpha.grad, (dy * branch(x)).sum().reshape(1))   # ∂L/∂α = <dy, F(x)>
    assert all(p.grad is None or torch.all(p.grad == 0) for p in branch.parameters())  # α = 0 blocks F's gradient


@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), alpha=st.floats(-2, 2), seed=st.integers(0, 99))
def test_skipinit_equals_its_formula_for_all_shapes(shape, alpha, seed):
    branch = nn.Tanh()
    block = SkipInit(branch, alpha_init=alpha, dtype=torch.float64)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(block(x), x + alpha * torch.tanh(x), rtol=1e-15, atol=1e-15)


def test_skipinit_passes_gradcheck_in_float64():
    branch = nn.Sequential(nn.Linear(3, 3), nn.Tanh()).double()
    block = SkipInit(branch, alpha_init=0.3, dtype=torch.float64)
    names = [n for n, _ in block.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in block.parameters())

    def f(x, *p):
        return torch.func.functional_call(block, dict(zip(names, p)), (x,))

    assert torch.autograd.gradcheck(f, (torch.randn(4, 3, dtype=torch.float64, requires_grad=True), *params))


def test_skipinit_state_dict_and_errors():
    block = SkipInit(nn.Linear(2, 2), alpha_init=0.5)
    assert set(block.state_dict()) == {"alpha", "branch.weight", "branch.bias"}
    with torch.no_grad():
        block.alpha.fill_(3.0)
    block.reset_parameters()
    assert block.alpha.item() == 0.5
    with pytest.raises(TypeError, match="nn.Module"):
        SkipInit(lambda x: x)
    with pytest.raises(ValueError, match="finite"):
        SkipInit(nn.Identity(), alpha_init=float("nan"))
    with pytest.raises(ValueError, match="same shape"):
        SkipInit(nn.Linear(2, 3))(torch.randn(1, 2))


def test_scalar_bias_and_multiplier():
    x = torch.randn(3, 4, dtype=torch.float64)
    bias, mult = ScalarBias(0.25, dtype=torch.float64), ScalarMultiplier(dtype=torch.float64)
    torch.testing.assert_close(bias(x), x + 0.25)
    torch.testing.assert_close(mult(x), x)
    assert bias.bias.shape == mult.weight.shape == (1,)
    for layer in (bias, mult):
        params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
        names = [n for n, _ in layer.named_parameters()]
        assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(layer, dict(zip(names, p)), (x,)),
                                        (x.clone().requires_grad_(True), *params))
    with pytest.raises(ValueError, match="finite"):
        ScalarBias(float("inf"))
    with pytest.raises(ValueError, match="finite"):
        ScalarMultiplier(True)


# ----------------------------------------------------------------------------- scaled weight standardization


def _ws_formula(w: np.ndarray, gain: np.ndarray, gamma: float, eps: float) -> np.ndarray:
    """Equation (2) written out per output unit with NumPy."""
    out = np.empty_like(w)
    for i in range(w.shape[0]):
        row = w[i].ravel()
        n = row.size
        mu = row.sum() / n
        var = ((row - mu) ** 2).sum() / n
        out[i] = (gain[i] * gamma * (row - mu) / math.sqrt(max(n * var, eps))).reshape(w.shape[1:])
    return out


@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4), gamma=st.sampled_from([1.0, 1.7139, 0.5]),
       eps=st.sampled_from([1e-4, 1e-2, 10.0]), seed=st.integers(0, 999))
def test_standardized_weight_equals_the_formula_for_all_shapes(shape, gamma, eps, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.3
    gain = torch.rand(shape[0], generator=gen, dtype=torch.float64) + 0.5
    got = standardized_weight(w, gain, gamma, eps)
    np.testing.assert_allclose(got.numpy(), _ws_formula(w.numpy(), gain.numpy(), gamma, eps), rtol=1e-12, atol=1e-13)


def test_ws_rows_have_zero_mean_and_norm_gain_times_gamma():
    layer = WSLinear(300, 20, gamma=activation_gamma("relu"), dtype=torch.float64)
    with torch.no_grad():
        layer.weight.mul_(37.0).add_(5.0)          # any scale and shift of W gives the same Ŵ
        layer.gain.uniform_(0.5, 2.0)
    w_hat = layer.standardized_weight()
    torch.testing.assert_close(w_hat.mean(dim=1), torch.zeros(20, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(w_hat.norm(dim=1), layer.gain * activation_gamma("relu"))
    x = torch.randn(20000, 300, dtype=torch.float64)
    var = layer(x).var(dim=0)                     # unit-variance inputs: Var[(Ŵx)_i] = (g_i γ)²
    torch.testing.assert_close(var, (layer.gain * layer.gamma).detach() ** 2, rtol=0.05, atol=0)


def test_relu_gamma_restores_unit_variance():
    assert activation_gamma("relu") == pytest.approx(1.71286, abs=1e-5)   # NFNets code: 1.7139, by sampling
    z = torch.randn(2_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert (activation_gamma("relu") * torch.relu(z)).var().item() == pytest.approx(1.0, rel=0.01)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        activation_gamma("gelu")


def test_ws_layers_match_torch_with_the_standardized_weight():
    lin = WSLinear(7, 4, dtype=torch.float64)
    x = torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(lin(x), nn.functional.linear(x, lin.standardized_weight(), lin.bias))
    conv = WSConv2d(3, 5, 3, padding=1, groups=1, dtype=torch.float64)
    img = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(conv(img), nn.functional.conv2d(img, conv.standardized_weight(), conv.bias, padding=1))
    expected = _ws_formula(conv.weight.detach().numpy(), np.ones(5), 1.0, 1e-4)
    np.testing.assert_allclose(conv.standardized_weight().detach().numpy(), expected, rtol=1e-12)
    assert set(lin.state_dict()) == {"weight", "bias", "gain"} and set(conv.state_dict()) == {"weight", "bias", "gain"}


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_ws_layers_pass_gradcheck_in_float64(kind):
    layer = (WSLinear(4, 3, gamma=1.7, dtype=torch.float64) if kind == "linear"
             else WSConv2d(2, 3, 2, dtype=torch.float64))
    with torch.no_grad():
        layer.gain.uniform_(0.5, 1.5)
    x = torch.randn(*((2, 4) if kind == "linear" else (2, 2, 3, 3)), dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in layer.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(layer, dict(zip(names, p)), (x,)),
                                    (x, *params))


def test_ws_errors_are_clear():
    with pytest.raises(ValueError, match="gamma"):
        WSLinear(2, 2, gamma=0)
    with pytest.raises(ValueError, match="eps"):
        WSConv2d(2, 2, 1, eps=-1.0)
    with pytest.raises(ValueError, match=r"\(\*, 3\)"):
        WSLinear(3, 2)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="N, 3, H, W"):
        WSConv2d(3, 2, 1)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="out, in"):
        standardized_weight(torch.randn(5))
    with pytest.raises(ValueError, match="gain must have shape"):
        standardized_weight(torch.randn(3, 2), torch.ones(2))
