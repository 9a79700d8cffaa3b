"""normlab.scale_invariance: the probes agree with autograd and with torch's SGD."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from normlab import models
from normlab import scale_invariance as si
from normlab.layers import BatchNorm1d


def _net(eps=0.0, seed=0):
    return models.mlp(5, (6, 4), 3, norm=partial(BatchNorm1d, eps=eps), seed=seed).double()


def _grads(net, x, y):
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    return {name: w.grad.clone() for name, w in si.scale_invariant_weights(net).items()}


def test_scale_invariant_weights_are_the_linears_before_batch_norm():
    assert list(si.scale_invariant_weights(_net())) == ["linear0.weight", "linear1.weight"]
    torch_bn = models.mlp(5, (6,), 3, norm=nn.BatchNorm1d)
    assert list(si.scale_invariant_weights(torch_bn)) == ["linear0.weight"]


def test_scale_invariant_weights_rejects_networks_without_batch_norm():
    with pytest.raises(ValueError, match="no Linear layer followed by BatchNorm"):
        si.scale_invariant_weights(models.mlp(5, (6,), 3))
    with pytest.raises(ValueError, match="normlab.models.mlp"):
        si.scale_invariant_weights(nn.Linear(3, 3))


def test_gradient_of_scaled_weights_is_gradient_over_c_and_orthogonal():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    net = _net()
    base = _grads(net, x, y)
    for name, w in si.scale_invariant_weights(net).items():
        assert si.radial_cosine(w.detach(), base[name]).abs().max() < 1e-12
    with torch.no_grad():
        for w in si.scale_invariant_weights(net).values():
            w.mul_(7.0)
    scaled = _grads(net, x, y)
    for name in base:
        torch.testing.assert_close(7.0 * scaled[name], base[name], rtol=1e-10, atol=1e-14)


def test_radial_cosine_is_not_zero_without_batch_norm():
    torch.manual_seed(0)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    net = models.mlp(5, (6,), 3, seed=0).double()
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    assert si.radial_cosine(net.linear0.weight.detach(), net.linear0.weight.grad).abs().max() > 1e-3


def test_effective_learning_rate_per_unit_and_per_layer():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(si.effective_learning_rate(w, 0.5), torch.tensor([0.5 / 25, 0.5 / 4]))
    torch.testing.assert_close(si.effective_learning_rate(w, 0.5, per_unit=False), torch.tensor(0.5 / 29))
    with pytest.raises(ValueError, match="lr must be positive"):
        si.effective_learning_rate(w, 0.0)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_norm_after_step_matches_torch_sgd_on_a_scale_invariant_weight(weight_decay):
    torch.manual_seed(1)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    net = _net()
    w = net.linear0.weight
    opt = torch.optim.SGD([w], lr=0.3, weight_decay=weight_decay)
    before = w.detach().norm().item()
    g = _grads(net, x, y)["linear0.weight"].norm().item()
    opt.step()
    assert math.isclose(w.detach().norm().item(), si.norm_after_step(before, g, 0.3, weight_decay), rel_tol=1e-12)


def test_equilibrium_relative_update_is_a_fixed_point_and_near_sqrt_2_eta_lambda():
    lr, wd, norm = 0.5, 0.01, 2.0
    rel = si.equilibrium_relative_update(lr, wd)
    assert math.isclose(si.norm_after_step(norm, rel * norm / lr, lr, wd), norm, rel_tol=1e-12)
    assert math.isclose(rel, math.sqrt(2 * lr * wd), rel_tol=lr * wd)
    with pytest.raises(ValueError, match="lr \\* weight_decay < 1"):
        si.equilibrium_relative_update(1.0, 1.0)
    assert np.isfinite(rel)
